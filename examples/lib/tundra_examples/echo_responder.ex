defmodule TundraExamples.EchoResponder do
  @moduledoc """
  Answers ICMP/ICMPv6 echo requests that arrive on a Tundra device, so the
  system's `ping` gets replies from Elixir.

  A GenServer that gets its device in `init/1` and serves it with the
  drain loop of `TundraExamples.Flow` (the shape the `Tundra` docs
  recommend); it stops when its device is gone. `serve/1` starts one for
  a device the caller already has.
  """
  use GenServer

  alias TundraExamples.{Flow, Icmp}

  @count 64

  @doc """
  Starts a responder on the device `spec` names (see
  `TundraExamples.device_spec/0`), with GenServer `opts`.
  """
  @spec start_link(TundraExamples.device_spec(), GenServer.options()) :: GenServer.on_start()
  def start_link(spec, opts \\ []), do: GenServer.start_link(__MODULE__, spec, opts)

  @doc """
  Starts a responder for `device`, which the caller owns, and hands the
  device to it.
  """
  @spec serve(Tundra.device()) :: {:ok, pid()} | {:error, term()}
  def serve(device), do: TundraExamples.serve(__MODULE__, device)

  @doc "Number of echo replies sent so far."
  @spec replies(GenServer.server()) :: non_neg_integer()
  def replies(server), do: GenServer.call(server, :replies)

  @impl true
  # Reading starts with :owned, once the device is ours.
  def init({:given, device}), do: {:ok, Flow.new(device, @count)}

  def init(spec) do
    with {:ok, {device, _name}} <- TundraExamples.open(spec, []),
         {:ok, flow} <- Flow.drain(Flow.new(device, @count), &answer/1) do
      {:ok, flow}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:replies, _from, flow), do: {:reply, flow.answered, flow}

  @impl true
  def handle_info(:owned, flow), do: drain(flow)

  def handle_info({:"$socket", device, :select, _}, %{device: device} = flow),
    do: drain(flow)

  defp drain(flow) do
    case Flow.selected(flow, &answer/1) do
      {:ok, flow} -> {:noreply, flow}
      {:error, _gone} -> {:stop, {:shutdown, :device_closed}, flow}
    end
  end

  defp answer(packets), do: for(p <- packets, {:ok, reply} <- [Icmp.echo_reply(p)], do: reply)
end

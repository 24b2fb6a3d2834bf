defmodule TundraExamples.EchoResponder do
  @moduledoc """
  Answers ICMP/ICMPv6 echo requests that arrive on a Tundra device: the
  recommended shape of a packet server, a GenServer driven by select
  notifications that drains the device whenever it is readable.
  """
  use GenServer

  alias TundraExamples.Icmp

  @doc """
  Starts a responder and hands it `device` (the caller must own it).
  """
  @spec serve(Tundra.device()) :: {:ok, pid()}
  def serve(device) do
    {:ok, pid} = GenServer.start_link(__MODULE__, device)
    :ok = Tundra.controlling_process(device, pid)
    GenServer.cast(pid, :owned)
    {:ok, pid}
  end

  @doc "Number of echo replies sent so far."
  @spec replies(pid()) :: non_neg_integer()
  def replies(pid), do: GenServer.call(pid, :replies)

  @impl true
  def init(device), do: {:ok, %{device: device, replies: 0}}

  @impl true
  def handle_cast(:owned, state), do: {:noreply, drain(state)}

  @impl true
  def handle_info({:"$socket", device, :select, _handle}, %{device: device} = state),
    do: {:noreply, drain(state)}

  @impl true
  def handle_call(:replies, _from, state), do: {:reply, state.replies, state}

  defp drain(%{device: device} = state) do
    case Tundra.recv(device, 65_535, :nowait) do
      {:ok, packet} ->
        case Icmp.echo_reply(packet) do
          {:ok, reply} ->
            :ok = Tundra.send(device, reply, :nowait)
            drain(%{state | replies: state.replies + 1})

          :ignore ->
            drain(state)
        end

      {:select, _info} ->
        state
    end
  end
end

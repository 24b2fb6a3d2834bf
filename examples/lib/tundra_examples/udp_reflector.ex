defmodule TundraExamples.UdpReflector do
  @moduledoc """
  Sends every UDP datagram that arrives on a Tundra device back where it
  came from: source and destination addresses and ports swapped, payload
  untouched. The benchmark's Elixir reflector.

  A GenServer that gets its device in `init/1` and serves it with the
  drain loop of `TundraExamples.Flow`: on each select notification it
  reads the waiting packets a batch at a time and answers each batch with
  one `Tundra.send_many/3`, with back-pressure when the device is full;
  it stops when its device is gone. `mode: :active` serves it in active
  mode instead (`active: 256`, a message per packet), and
  `mode: :active_batch` in active mode with a message per batch
  (`active_batch: true`), which `make bench` compares.

  Swapping leaves every checksum valid (the sums are order-independent),
  so the answer is built as iodata: a new header and the untouched rest of
  the original packet, written without copying it.
  """
  use GenServer

  alias TundraExamples.Flow

  @udp 17
  # Packets read per recv_many/3, or asked for at a time (active: n): the
  # best of 16, 64 and 256 measured with `make bench`.
  @count 256

  @doc """
  Starts a reflector on the device `spec` names (see
  `TundraExamples.device_spec/0`). Options: `mode: :drain` (the default),
  `:active` or `:active_batch`; `busy_poll:` microseconds (see
  `Tundra.setopts/2`); and GenServer options.
  """
  @spec start_link(TundraExamples.device_spec(), keyword()) :: GenServer.on_start()
  def start_link(spec, opts \\ []) do
    {mode, opts} = Keyword.pop(opts, :mode, :drain)
    {busy_poll, opts} = Keyword.pop(opts, :busy_poll, 0)
    GenServer.start_link(__MODULE__, {spec, mode, busy_poll}, opts)
  end

  @doc "The interface name of the reflector's device."
  @spec name(GenServer.server()) :: String.t()
  def name(server), do: GenServer.call(server, :name)

  @doc """
  The answer to `packet`: `{:ok, iodata}` for a UDP datagram (IPv4 without
  options, or IPv6 without extension headers), `:ignore` otherwise.
  """
  @spec turn_around(binary()) :: {:ok, iodata()} | :ignore
  def turn_around(
        <<0x45, head::binary-size(8), @udp, sum::16, src::binary-size(4), dst::binary-size(4),
          sport::16, dport::16, rest::binary>>
      ),
      do:
        {:ok,
         [
           <<0x45, head::binary, @udp, sum::16, dst::binary, src::binary, dport::16, sport::16>>,
           rest
         ]}

  def turn_around(
        <<6::4, head::bitstring-size(44), @udp, hops, src::binary-size(16), dst::binary-size(16),
          sport::16, dport::16, rest::binary>>
      ),
      do:
        {:ok,
         [
           <<6::4, head::bitstring, @udp, hops, dst::binary, src::binary, dport::16, sport::16>>,
           rest
         ]}

  def turn_around(_packet), do: :ignore

  @impl true
  def init({spec, mode, busy_poll}) do
    case TundraExamples.open(spec, []) do
      {:ok, {device, name}} ->
        state = %{flow: Flow.new(device, @count), name: name, mode: mode, busy_poll: busy_poll}
        # A given device is read once it is ours (:owned).
        if match?({:given, _}, spec), do: {:ok, state}, else: started(state, :ok)

      {:error, reason} ->
        {:stop, reason}
    end
  end

  # Starts reading, in the drain loop or by asking for the first count.
  defp started(%{busy_poll: busy_poll} = state, ok) when busy_poll > 0 do
    case Tundra.setopts(state.flow.device, busy_poll: busy_poll) do
      :ok -> started(%{state | busy_poll: 0}, ok)
      {:error, reason} -> result(state, {:error, reason}, ok)
    end
  end

  defp started(%{mode: :drain} = state, ok),
    do: result(state, Flow.drain(state.flow, &reflect/1), ok)

  defp started(%{mode: mode} = state, ok) when mode in [:active, :active_batch] do
    case Tundra.setopts(state.flow.device, active: @count, active_batch: mode == :active_batch) do
      :ok -> result(state, {:ok, state.flow}, ok)
      {:error, reason} -> result(state, {:error, reason}, ok)
    end
  end

  # `ok` is :ok for init/1's result, :noreply for handle_info/2's.
  defp result(state, {:ok, flow}, ok), do: {ok, %{state | flow: flow}}
  defp result(_state, {:error, reason}, :ok), do: {:stop, reason}
  defp result(state, {:error, _gone}, :noreply), do: {:stop, {:shutdown, :device_closed}, state}

  @impl true
  def handle_call(:name, _from, state), do: {:reply, state.name, state}

  @impl true
  def handle_info(:owned, state), do: started(state, :noreply)

  def handle_info({:"$socket", device, :select, _}, %{flow: %{device: device} = flow} = state) do
    handler = if state.mode == :drain, do: &reflect/1
    result(state, Flow.selected(flow, handler), :noreply)
  end

  def handle_info({:tundra, device, packet}, %{flow: %{device: device} = flow} = state),
    do: {:noreply, %{state | flow: Flow.reply(flow, reflect(Flow.batch(flow, packet)))}}

  def handle_info({:tundra_batch, device, packets}, %{flow: %{device: device} = flow} = state),
    do: {:noreply, %{state | flow: Flow.reply(flow, reflect(packets))}}

  def handle_info({:tundra_passive, device}, %{flow: %{device: device} = flow} = state),
    do: {:noreply, %{state | flow: Flow.ran_out(flow)}}

  def handle_info({:tundra_closed, device}, %{flow: %{device: device}} = state),
    do: {:stop, {:shutdown, :device_closed}, state}

  defp reflect(packets), do: for(p <- packets, {:ok, answer} <- [turn_around(p)], do: answer)
end

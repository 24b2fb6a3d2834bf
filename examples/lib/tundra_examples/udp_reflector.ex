defmodule TundraExamples.UdpReflector do
  @moduledoc """
  Sends every UDP datagram that arrives on a Tundra device back where it
  came from: source and destination addresses and ports swapped, payload
  untouched. The benchmark's Elixir reflector, written the way the
  `Tundra` docs recommend: a process driven by select notifications that
  drains the device whenever it is readable, a batch at a time, and
  answers each batch with one `Tundra.send_many/3`.

  Swapping leaves every checksum valid (the sums are order-independent),
  so the answer is built as iodata: a new header and the untouched rest of
  the original packet, written without copying it.
  """
  use GenServer

  @udp 17

  @doc "Starts a reflector and hands it `device` (the caller must own it)."
  @spec serve(Tundra.device()) :: {:ok, pid()}
  def serve(device) do
    {:ok, pid} = GenServer.start_link(__MODULE__, device)
    :ok = Tundra.controlling_process(device, pid)
    GenServer.cast(pid, :owned)
    {:ok, pid}
  end

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
  def init(device), do: {:ok, device}

  @impl true
  def handle_cast(:owned, device), do: {:noreply, drain(device)}

  @impl true
  def handle_info({:"$socket", device, :select, _handle}, device), do: {:noreply, drain(device)}

  defp drain(device) do
    case Tundra.recv_many(device, 64, :nowait) do
      {:ok, packets} ->
        send_answers(device, answers(packets))
        drain(device)

      {:select, _info} ->
        device
    end
  end

  defp answers([packet | rest]) do
    case turn_around(packet) do
      {:ok, answer} -> [answer | answers(rest)]
      :ignore -> answers(rest)
    end
  end

  defp answers([]), do: []

  # A datagram the device cannot take now is dropped, as a router would;
  # one the kernel refuses is skipped.
  defp send_answers(device, answers) do
    case Tundra.send_many(device, answers, :nowait) do
      {:error, {_refused, [_ | rest]}} -> send_answers(device, rest)
      _sent_or_full -> :ok
    end
  end
end

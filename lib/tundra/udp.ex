defmodule Tundra.UDP do
  @moduledoc """
  UDP segmentation offload for tunnels over Tundra devices (Linux), on
  OTP's `:socket`: the other half of a device's super-packets.

  A tunnel reads a device's packets in batches (`Tundra.recv_segments/2`)
  and sends each as a datagram; `UDP_SEGMENT` lets one `sendmsg` carry a
  *run* of equal-length datagrams (the last may be shorter), which the
  kernel cuts apart. On the way in, `UDP_GRO` makes the kernel hand over
  datagrams of one flow coalesced, with the length of each, ready for
  `Tundra.send_segments/4`. Both the tunnel example
  (`TundraExamples.UdpTunnel`) and the WireGuard package use this module.

      :ok = Tundra.UDP.enable_gro(socket)
      runs = Tundra.UDP.runs([{packet1, byte_size(packet1)}, ...])
      for run <- runs, do: Tundra.UDP.send_run(socket, destination, run)

      {:ok, {source, data, size}} = Tundra.UDP.recv(socket)
      datagrams = Tundra.UDP.split(data, size)

  Without offload (before Linux 5.0 for GRO, 4.18 for GSO, or `offload:
  false` in `runs/2`), each run is one datagram and each read one.
  """

  # UDP_SEGMENT (cmsg) and UDP_GRO (option and cmsg), linux/udp.h.
  @udp_segment 103
  @udp_gro 104
  @sol_udp 17
  # A UDP_SEGMENT send holds at most 64 datagrams and what one IP packet
  # can carry (65,535 bytes less the IPv4 and UDP headers, less a margin).
  @max_count 64
  @max_bytes 65_000

  @typedoc """
  Datagrams that leave in one send: their data, the length of each but
  perhaps the last (shorter), how many, their bytes, and whether a
  datagram may still join (not once a shorter one did).
  """
  @type run ::
          {iodata(), size :: pos_integer(), count :: pos_integer(), bytes :: pos_integer(),
           :open | :closed}

  @typedoc "Where a datagram goes: `:socket`'s address, or `nil` on a connected socket."
  @type destination :: :socket.sockaddr_in() | :socket.sockaddr_in6() | nil

  @doc "Turns `UDP_GRO` on: reads hand over coalesced datagrams (no error where the kernel lacks it)."
  @spec enable_gro(:socket.socket()) :: :ok
  def enable_gro(socket) do
    _ = :socket.setopt_native(socket, {@sol_udp, @udp_gro}, 1)
    :ok
  end

  @doc """
  Reads what waits on `socket` without blocking: the source address, the
  data (coalesced datagrams, if `UDP_GRO` is on) and the length of each
  datagram in it (the last may be shorter). `{:select, info}` when nothing
  waits, as `:socket.recvmsg/5` with `:nowait`.
  """
  @spec recv(:socket.socket()) ::
          {:ok, {:socket.sockaddr() | nil, binary(), pos_integer()}}
          | {:select, :socket.select_info()}
          | {:error, term()}
  def recv(socket) do
    case :socket.recvmsg(socket, 65_535, 64, [], :nowait) do
      {:ok, %{iov: [data], ctrl: ctrl} = message} ->
        {:ok, {Map.get(message, :addr), data, segment_size(ctrl, data)}}

      {:ok, %{iov: iov, ctrl: ctrl} = message} ->
        data = IO.iodata_to_binary(iov)
        {:ok, {Map.get(message, :addr), data, segment_size(ctrl, data)}}

      other ->
        other
    end
  end

  # UDP_GRO says how long each coalesced datagram is; without it, one.
  defp segment_size([%{level: :udp, type: @udp_gro, data: <<size::32-native>>} | _], _data),
    do: size

  defp segment_size([_ | rest], data), do: segment_size(rest, data)
  defp segment_size([], data), do: max(byte_size(data), 1)

  @doc "The datagrams of `data` (as `recv/1` gives it), each `size` bytes but perhaps the last."
  @spec split(binary(), pos_integer()) :: [binary()]
  def split(data, size) when byte_size(data) <= size, do: [data]

  def split(data, size) do
    <<datagram::binary-size(size), rest::binary>> = data
    [datagram | split(rest, size)]
  end

  @doc """
  Adds a datagram (`data` of `length` bytes) to `run` (or starts one with
  `nil`): `{:joined, run}`, or `:apart` when it cannot join (longer than
  the run's datagrams, the run closed or full).
  """
  @spec join(run() | nil, iodata(), pos_integer()) :: {:joined, run()} | :apart
  def join(nil, data, length), do: {:joined, {[data], length, 1, length, :open}}

  def join({pieces, size, count, bytes, :open}, data, length)
      when length <= size and count < @max_count and bytes + length <= @max_bytes do
    # A shorter datagram can only be the last.
    open = if length == size, do: :open, else: :closed
    {:joined, {[pieces, data], size, count + 1, bytes + length, open}}
  end

  def join(_run, _data, _length), do: :apart

  @doc """
  `datagrams` (data and length of each) in order, as runs: one datagram
  each without `offload`.
  """
  @spec runs([{iodata(), pos_integer()}], boolean()) :: [run()]
  def runs(datagrams, offload \\ true)

  def runs(datagrams, false),
    do: for({data, length} <- datagrams, do: {data, length, 1, length, :closed})

  def runs(datagrams, true) do
    {done, open} =
      Enum.reduce(datagrams, {[], nil}, fn {data, length}, {done, run} ->
        case join(run, data, length) do
          {:joined, run} -> {done, run}
          :apart -> {[run | done], elem(join(nil, data, length), 1)}
        end
      end)

    Enum.reverse(if open, do: [open | done], else: done)
  end

  @doc """
  Sends `run` to `destination` in one `sendmsg` (`UDP_SEGMENT` for more
  than one datagram), without blocking; the bytes sent, 0 if the socket
  could not take them now (a datagram lost, as a full queue loses one).
  """
  @spec send_run(:socket.socket(), destination(), run()) :: non_neg_integer()
  def send_run(socket, destination, {data, size, count, bytes, _open}) do
    ctrl =
      if count > 1, do: [%{level: :udp, type: @udp_segment, data: <<size::16-native>>}], else: []

    message = %{iov: List.flatten([data]), ctrl: ctrl}
    message = if destination, do: Map.put(message, :addr, destination), else: message

    case :socket.sendmsg(socket, message, :nowait) do
      :ok ->
        bytes

      {:select, {info, _rest}} ->
        _ = :socket.cancel(socket, info)
        0

      {:select, info} ->
        _ = :socket.cancel(socket, info)
        0

      {:error, _} ->
        0
    end
  end
end

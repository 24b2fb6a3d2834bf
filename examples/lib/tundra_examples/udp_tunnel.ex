defmodule TundraExamples.UdpTunnel do
  @moduledoc """
  One end of a point-to-point IP-over-UDP tunnel: every packet the kernel
  routes into the local TUN device is sent to the other end as one UDP
  datagram, and every datagram from the other end is written to the device.
  Run one end on each host (see `examples/udp_tunnel.exs`).

  No encryption, no authentication beyond accepting datagrams only from the
  configured remote address: an illustration of the data path, not a VPN.

  By default (`offload: true`, Linux) it moves a whole super-packet per
  call on both sides: the device is an offload device read with
  `Tundra.recv_segments/2`, whose batches go out in one `:socket.sendmsg/2`
  each with `UDP_SEGMENT` (the kernel cuts them into one datagram per
  packet), and the socket has `UDP_GRO` on, so that datagrams arrive
  coalesced and go to the device with `Tundra.send_segments/4`, which
  writes runs of TCP segments as one super-packet. With `offload: false`
  it is the plain path: the drain loop of `TundraExamples.Flow` on the
  device and `:gen_udp` in active mode, one datagram per packet. (`io:
  :packets` takes the plain path on an offload device too, which then
  hands the drain loop ordinary packets cut from its super-packets.)

  One GenServer owns both the device and the socket. A packet that cannot
  be passed on (a full socket buffer, a device that cannot take it) is
  dropped, as a router drops what its queues cannot hold; TCP and the
  other end's protocols recover. It stops when its device is gone.
  """
  use GenServer

  alias TundraExamples.Flow

  @count 64
  @buffer 4 * 1024 * 1024

  @typedoc "Where the tunnel's UDP socket listens and where it sends."
  @type endpoint :: {:inet.ip_address(), :inet.port_number()}

  @typedoc """
  The tunnel device (`Tundra.create/2`'s address and options, e.g.
  `dstaddr:` the other end's tunnel address, `mtu:` small enough for a
  packet plus 28 bytes of UDP/IPv4 to fit the path, and `offload:`,
  default `true`; plus `io: :segments | :packets`, see above), the local
  endpoint to bind and the remote one to send to.
  """
  @type config :: {Tundra.address(), [Tundra.create_option()], endpoint(), endpoint()}

  @doc "Starts a tunnel end; `opts` are GenServer options."
  @spec start_link(config(), GenServer.options()) :: GenServer.on_start()
  def start_link(config, opts \\ []), do: GenServer.start_link(__MODULE__, config, opts)

  @doc "The interface name of the tunnel's device."
  @spec name(GenServer.server()) :: String.t()
  def name(server), do: GenServer.call(server, :name)

  @doc """
  The largest read from the device (a batch, or a packet) since the last
  call, in bytes: larger than the MTU when super-packets arrive.
  """
  @spec largest_read(GenServer.server()) :: non_neg_integer()
  def largest_read(server), do: GenServer.call(server, :largest_read)

  @doc "`Tundra.setopts/2` on the tunnel's device."
  @spec setopts(GenServer.server(), keyword()) :: :ok | {:error, Tundra.setopts_error()}
  def setopts(server, opts), do: GenServer.call(server, {:setopts, opts})

  @impl true
  def init({address, opts, local, remote}) do
    offload = Keyword.get(opts, :offload, true)
    {io, opts} = Keyword.pop(opts, :io, if(offload, do: :segments, else: :packets))
    opts = Keyword.put(opts, :offload, offload)

    with {:ok, {device, name}} <- Tundra.create(address, opts),
         {:ok, socket} <- open_socket(io, local),
         state = %{device: device, name: name, socket: socket, remote: remote, io: io, largest: 0},
         {:ok, state} <- connect(state) do
      start(state)
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp open_socket(:packets, {ip, port}) do
    :gen_udp.open(port, [:binary, ip: ip, active: @count, recbuf: @buffer, sndbuf: @buffer])
  end

  defp open_socket(:segments, {ip, port}) do
    family = if tuple_size(ip) == 4, do: :inet, else: :inet6

    with {:ok, socket} <- :socket.open(family, :dgram, :udp),
         :ok <- :socket.setopt(socket, {:socket, :rcvbuf}, @buffer),
         :ok <- :socket.setopt(socket, {:socket, :sndbuf}, @buffer),
         :ok <- Tundra.UDP.enable_gro(socket),
         :ok <- :socket.bind(socket, %{family: family, addr: ip, port: port}) do
      {:ok, socket}
    end
  end

  # The segments path's socket talks to the other end only: connected,
  # each send needs no address (and the kernel no route lookup), and
  # datagrams from elsewhere never arrive.
  defp connect(%{io: :segments, socket: socket, remote: {ip, port}} = state) do
    family = if tuple_size(ip) == 4, do: :inet, else: :inet6

    case :socket.connect(socket, %{family: family, addr: ip, port: port}) do
      :ok -> {:ok, state}
      {:error, reason} -> {:error, reason}
    end
  end

  defp connect(state), do: {:ok, state}

  defp start(%{io: :packets} = state) do
    state = Map.put(state, :flow, Flow.new(state.device, @count))

    case forward_plain(state) do
      {:ok, state} -> {:ok, state}
      {:stop, reason} -> {:stop, reason}
    end
  end

  defp start(%{io: :segments} = state) do
    with {:ok, state} <- device_to_socket(state), do: socket_to_device(state)
  end

  @impl true
  def handle_call(:name, _from, state), do: {:reply, state.name, state}

  def handle_call(:largest_read, _from, state) do
    largest = max(state.largest, Process.delete(:largest_read) || 0)
    {:reply, largest, %{state | largest: 0}}
  end

  def handle_call({:setopts, opts}, _from, state),
    do: {:reply, Tundra.setopts(state.device, opts), state}

  @impl true
  def handle_info({:"$socket", device, :select, _}, %{device: device, io: :packets} = state) do
    case forward_plain(state) do
      {:ok, state} -> {:noreply, state}
      {:stop, reason} -> {:stop, reason, state}
    end
  end

  def handle_info({:"$socket", device, :select, _}, %{device: device} = state) do
    case device_to_socket(state) do
      {:ok, state} -> {:noreply, state}
      {:stop, reason} -> {:stop, reason, state}
    end
  end

  def handle_info({:"$socket", socket, :select, _}, %{socket: socket} = state) do
    case socket_to_device(state) do
      {:ok, state} -> {:noreply, state}
      {:stop, reason} -> {:stop, reason, state}
    end
  end

  def handle_info({:udp, socket, ip, port, packet}, %{socket: socket, remote: {ip, port}} = state) do
    # A device that cannot take a packet now drops it, like a full queue.
    _ = Tundra.send(state.device, packet, :nowait)
    {:noreply, state}
  end

  def handle_info({:udp, _socket, _ip, _port, _packet}, state), do: {:noreply, state}

  def handle_info({:udp_passive, socket}, %{socket: socket} = state) do
    :ok = :inet.setopts(socket, active: @count)
    {:noreply, state}
  end

  # Plain: device packets to the other end, each as one datagram (the
  # drain loop with nothing to answer on the device itself).
  defp forward_plain(%{socket: socket, remote: {ip, port}} = state) do
    # A datagram the network refuses is a lost packet, as on any tunnel.
    send_out = fn packets ->
      for p <- packets, do: _ = :gen_udp.send(socket, ip, port, p)
      # The handler cannot change the state: note the size aside.
      largest = Enum.reduce(packets, Process.get(:largest_read, 0), &max(byte_size(&1), &2))
      Process.put(:largest_read, largest)
      []
    end

    case Flow.drain(state.flow, send_out) do
      {:ok, flow} -> {:ok, %{state | flow: flow}}
      {:error, _gone} -> {:stop, {:shutdown, :device_closed}}
    end
  end

  # Offload: device batches to the other end, one UDP_SEGMENT send each
  # (Tundra.UDP), until the device has nothing (which arms its select).
  # Packets that come one at a time (TCP's ACKs, mostly) join the run in
  # hand while they are as long as its packets (the last may be shorter),
  # so a train of them leaves in one send too.
  defp device_to_socket(state, held \\ nil) do
    case Tundra.recv_segments(state.device, :nowait) do
      {:ok, {data, size}} when byte_size(data) == size ->
        state = %{state | largest: max(state.largest, size)}

        case Tundra.UDP.join(held, data, size) do
          {:joined, held} ->
            device_to_socket(state, held)

          :apart ->
            send_run(state, held)
            device_to_socket(state, elem(Tundra.UDP.join(nil, data, size), 1))
        end

      {:ok, {data, size}} ->
        send_run(state, held)
        count = div(byte_size(data) + size - 1, size)
        send_run(state, {data, size, count, byte_size(data), :closed})
        device_to_socket(%{state | largest: max(state.largest, byte_size(data))})

      {:select, _info} ->
        send_run(state, held)
        {:ok, state}

      {:error, _gone} ->
        {:stop, {:shutdown, :device_closed}}
    end
  end

  # A run the socket cannot take now is lost, as on any tunnel.
  defp send_run(_state, nil), do: :ok

  defp send_run(%{socket: socket}, run) do
    _ = Tundra.UDP.send_run(socket, nil, run)
    :ok
  end

  # Offload: (coalesced) datagrams from the other end to the device, until
  # the socket has nothing (which arms its select). (Each read is already
  # one super-packet's worth: the sending end's device makes super-packets
  # no larger than one UDP_SEGMENT send, and UDP_GRO puts them back
  # together; merging reads would only copy them again.)
  defp socket_to_device(%{device: device, socket: socket} = state) do
    case Tundra.UDP.recv(socket) do
      {:ok, {_source, data, size}} ->
        # A device that cannot take them now drops them, like a full queue.
        _ = Tundra.send_segments(device, data, size, :nowait)
        socket_to_device(state)

      {:select, _info} ->
        {:ok, state}

      # An ICMP error for an earlier send (the other end not up yet).
      {:error, reason} when reason in [:econnrefused, :ehostunreach, :enetunreach] ->
        socket_to_device(state)

      {:error, reason} ->
        {:stop, {:shutdown, reason}}
    end
  end
end

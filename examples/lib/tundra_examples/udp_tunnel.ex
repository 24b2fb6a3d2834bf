defmodule TundraExamples.UdpTunnel do
  @moduledoc """
  One end of a point-to-point IP-over-UDP tunnel: every packet the kernel
  routes into the local TUN device is sent to the other end as one UDP
  datagram, and every datagram from the other end is written to the device.
  Run one end on each host (see `examples/udp_tunnel.exs`).

  No encryption, no authentication beyond accepting datagrams only from the
  configured remote address: an illustration of the data path, not a VPN.

  One GenServer owns both the device and the socket: the device is read
  with the drain loop of `TundraExamples.Flow` (on each select
  notification), datagrams arrive as `{:udp, ...}` messages from a socket
  in active mode with a count. A packet that cannot be passed on (a full
  socket buffer, a device that cannot take it) is dropped, as a router
  drops what its queues cannot hold; TCP and the other end's protocols
  recover. It stops when its device is gone.
  """
  use GenServer

  alias TundraExamples.Flow

  @count 64

  @typedoc "Where the tunnel's UDP socket listens and where it sends."
  @type endpoint :: {:inet.ip_address(), :inet.port_number()}

  @typedoc """
  The tunnel device (`Tundra.create/2`'s address and options, e.g.
  `dstaddr:` the other end's tunnel address and `mtu:` small enough for a
  packet plus 28 bytes of UDP/IPv4 to fit the path), the local endpoint to
  bind and the remote one to send to.
  """
  @type config :: {Tundra.address(), [Tundra.create_option()], endpoint(), endpoint()}

  @doc "Starts a tunnel end; `opts` are GenServer options."
  @spec start_link(config(), GenServer.options()) :: GenServer.on_start()
  def start_link(config, opts \\ []), do: GenServer.start_link(__MODULE__, config, opts)

  @doc "The interface name of the tunnel's device."
  @spec name(GenServer.server()) :: String.t()
  def name(server), do: GenServer.call(server, :name)

  @impl true
  def init({address, opts, {local_ip, local_port}, remote}) do
    with {:ok, {device, name}} <- Tundra.create(address, opts),
         {:ok, socket} <-
           :gen_udp.open(local_port, [
             :binary,
             ip: local_ip,
             active: @count,
             recbuf: 4 * 1024 * 1024,
             sndbuf: 4 * 1024 * 1024
           ]) do
      state = %{flow: Flow.new(device, @count), name: name, socket: socket, remote: remote}
      forward(state)
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:name, _from, state), do: {:reply, state.name, state}

  @impl true
  def handle_info({:"$socket", device, :select, _}, %{flow: %{device: device}} = state) do
    case forward(state) do
      {:ok, state} -> {:noreply, state}
      {:stop, reason} -> {:stop, reason, state}
    end
  end

  def handle_info({:udp, socket, ip, port, packet}, %{socket: socket, remote: {ip, port}} = state) do
    # A device that cannot take a packet now drops it, like a full queue.
    _ = Tundra.send(state.flow.device, packet, :nowait)
    {:noreply, state}
  end

  def handle_info({:udp, _socket, _ip, _port, _packet}, state), do: {:noreply, state}

  def handle_info({:udp_passive, socket}, %{socket: socket} = state) do
    :ok = :inet.setopts(socket, active: @count)
    {:noreply, state}
  end

  # Device packets to the other end, each as one datagram: the drain
  # loop with nothing to answer on the device itself.
  defp forward(%{socket: socket, remote: {ip, port}} = state) do
    # A datagram the network refuses is a lost packet, as on any tunnel.
    send_out = fn packets ->
      for p <- packets, do: _ = :gen_udp.send(socket, ip, port, p)
      []
    end

    case Flow.drain(state.flow, send_out) do
      {:ok, flow} -> {:ok, %{state | flow: flow}}
      {:error, _gone} -> {:stop, {:shutdown, :device_closed}}
    end
  end
end

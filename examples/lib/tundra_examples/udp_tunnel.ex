defmodule TundraExamples.UdpTunnel do
  @moduledoc """
  One end of a point-to-point IP-over-UDP tunnel: every packet the kernel
  routes into the local TUN device is sent to the other end as one UDP
  datagram, and every datagram from the other end is written to the device.
  Run one end on each host (see `examples/udp_tunnel.exs`).

  No encryption, no authentication beyond accepting datagrams only from the
  configured remote address: an illustration of the data path, not a VPN.

  One process owns both the device and the socket. Device packets arrive
  through select notifications and are drained in batches with
  `Tundra.recv_many/3`; datagrams arrive as `{:udp, ...}` messages from a
  socket in `{:active, n}` mode.
  """
  use GenServer

  @batch 64
  @active 64

  @typedoc "Where the tunnel's UDP socket listens and where it sends."
  @type endpoint :: {:inet.ip_address(), :inet.port_number()}

  @doc """
  Creates the tunnel device (`address`, `opts` as for `Tundra.create/2`,
  e.g. `dstaddr:` the other end's tunnel address and `mtu:` small enough
  for a packet plus 28 bytes of UDP/IPv4 to fit the path), binds `local`
  and starts relaying to `remote`. Returns the server and the device name.
  """
  @spec start_link(String.t(), keyword(), endpoint(), endpoint()) ::
          {:ok, pid(), String.t()} | {:error, term()}
  def start_link(address, opts, local, remote) do
    with {:ok, pid} <- GenServer.start_link(__MODULE__, {address, opts, local, remote}),
         name when is_binary(name) <- GenServer.call(pid, :name) do
      {:ok, pid, name}
    end
  end

  @impl true
  def init({address, opts, {local_ip, local_port}, remote}) do
    with {:ok, {device, name}} <- Tundra.create(address, opts),
         {:ok, socket} <-
           :gen_udp.open(local_port, [
             :binary,
             ip: local_ip,
             active: @active,
             recbuf: 4 * 1024 * 1024,
             sndbuf: 4 * 1024 * 1024
           ]) do
      state = %{device: device, name: name, socket: socket, remote: remote}
      {:ok, drain_device(state)}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:name, _from, state), do: {:reply, state.name, state}

  @impl true
  def handle_info({:"$socket", device, :select, _}, %{device: device} = state),
    do: {:noreply, drain_device(state)}

  def handle_info({:udp, socket, ip, port, packet}, %{socket: socket, remote: {ip, port}} = state) do
    # A device that cannot take a packet now drops it, like a full queue.
    _ = Tundra.send(state.device, packet, :nowait)
    {:noreply, state}
  end

  def handle_info({:udp, _socket, _ip, _port, _packet}, state), do: {:noreply, state}

  def handle_info({:udp_passive, socket}, %{socket: socket} = state) do
    :ok = :inet.setopts(socket, active: @active)
    {:noreply, state}
  end

  defp drain_device(%{device: device, socket: socket, remote: {ip, port}} = state) do
    case Tundra.recv_many(device, @batch, :nowait) do
      {:ok, packets} ->
        # A datagram the network refuses is a lost packet, as on any tunnel.
        Enum.each(packets, &:gen_udp.send(socket, ip, port, &1))
        drain_device(state)

      {:select, _} ->
        state
    end
  end
end

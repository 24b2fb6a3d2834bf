defmodule TundraWireGuard.Interface do
  @moduledoc false
  # One WireGuard interface: a GenServer that owns the Tundra device and
  # the UDP sockets (TundraWireGuard.Sockets) and does their I/O and the
  # clock; what the protocol does with each event is
  # TundraWireGuard.Protocol's, which returns the actions to carry out.
  #
  # Device to network: batches from the device (a super-packet's segments
  # from `Tundra.recv_segments/2` on an offload device, else
  # `Tundra.recv_many/3`) go to the protocol, whose datagrams leave in
  # runs of one `UDP_SEGMENT` send each. Network to device: coalesced
  # datagrams (`UDP_GRO`) go to the protocol, whose packets are written
  # with `Tundra.send_many/3`, which gives the kernel runs of one TCP flow
  # as one super-packet again.
  #
  # The protocol's timers: while it has one set (`Protocol.wake_at/1`), a
  # `:wake` message comes at that time, at most `@tick` later.

  use GenServer

  alias TundraWireGuard.{Protocol, Sockets}

  require Logger

  # Reads per turn before letting other messages in (the other direction).
  @turn 16
  # Timers are looked at at least this often while one is set.
  @tick 100

  @doc false
  def default_timers, do: Protocol.default_timers()

  # --- Starting -----------------------------------------------------------

  @impl true
  def init({config, opts}) do
    Process.flag(:trap_exit, true)
    offload = Keyword.get(opts, :offload, true)
    now = now()

    protocol_opts = [
      now: now,
      wall_offset: System.system_time(:millisecond) - now,
      mtu: config.mtu || 1420,
      timers: Keyword.get(opts, :timers, [])
    ]

    # What can fail without touching the system first; each failure is
    # named with what it concerns (see TundraWireGuard.format_error/1).
    with {:ok, protocol} <- Protocol.new(config, protocol_opts),
         :ok <- can_be_addressless(config, opts),
         {:ok, sockets} <- listen(config.listen_port || 0, offload),
         {:ok, {device, name}} <- create_device(config, opts, offload),
         :ok <- add_routes(device, config.peers, server_opts(opts)) do
      state = %{
        device: device,
        name: name,
        offload: offload,
        sockets: sockets,
        protocol: protocol,
        turn_handshakes: 0,
        wake: nil,
        fwmark: 0,
        # Whether this interface routes peers' allowed IPs to its device
        # (wg-quick does that itself).
        routes: Keyword.get(opts, :routes, true),
        # Where the device's changes go (its server's socket, if given).
        server_opts: server_opts(opts),
        uapi: nil
      }

      state = start_uapi(state, Keyword.get(opts, :uapi, "/var/run/wireguard"))

      state = step(state, &Protocol.start(&1, now))

      with {:ok, state} <- from_device(state, @turn), {:ok, state} <- from_sockets(state) do
        {:ok, state}
      else
        {:stop, reason, _state} -> {:stop, reason}
      end
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  # wg-quick starts its userspace implementation with no address and adds
  # them itself. A Tundra device is made with one, so such a device is
  # made with a placeholder that is removed at once; only directly (as
  # root): tundra_server makes a device only with an address delegated
  # to its caller.
  @placeholder {{169, 254, 0, 1}, 32}

  defp can_be_addressless(%{addresses: []}, opts) do
    if opts[:via] == :server, do: {:error, :no_address}, else: :ok
  end

  defp can_be_addressless(_config, _opts), do: :ok

  defp listen(port, offload) do
    case Sockets.open(port, offload) do
      {:ok, sockets} -> {:ok, sockets}
      {:error, reason} -> {:error, {:listen_port, port, reason}}
    end
  end

  defp create_device(%{addresses: []} = config, opts, offload) do
    {ip, _length} = @placeholder
    opts = Keyword.put(opts, :via, :direct)

    with {:ok, {device, name}} <-
           create_device(%{config | addresses: [@placeholder]}, opts, offload) do
      case Tundra.remove_address(device, ip, server_opts(opts)) do
        :ok ->
          {:ok, {device, name}}

        {:error, reason} ->
          _ = Tundra.close(device)
          {:error, {:address, @placeholder, reason}}
      end
    end
    |> case do
      # Not privileged: the server's way needs an address.
      {:error, {:device, _name, reason}} when reason in [:eperm, :eacces] -> {:error, :no_address}
      other -> other
    end
  end

  defp create_device(%{addresses: [{ip, length} | more]} = config, opts, offload) do
    device_opts =
      [prefix: length, mtu: config.mtu || 1420, offload: offload, link_events: true] ++
        Keyword.take(opts, [:name, :netns, :via, :socket_path])

    with {:ok, {device, name}} <- device(Tundra.create(ip, device_opts), opts[:name]),
         :ok <- add_addresses(device, more, server_opts(opts)) do
      {:ok, {device, name}}
    end
  end

  defp device({:error, reason}, name), do: {:error, {:device, name, reason}}
  defp device(made, _name), do: made

  defp server_opts(opts), do: Keyword.take(opts, [:socket_path])

  defp add_addresses(device, addresses, server_opts) do
    Enum.reduce_while(addresses, :ok, fn {ip, length}, :ok ->
      case Tundra.add_address(device, ip, [prefix: length] ++ server_opts) do
        :ok -> {:cont, :ok}
        {:error, reason} -> {:halt, {:error, {:address, {ip, length}, reason}}}
      end
    end)
  end

  # A route for every allowed prefix, so the kernel sends what a peer may
  # receive to the device; those the addresses already route (`:eexist`)
  # are there. A default route (/0) is left out: it would route the
  # tunnel's own datagrams into the tunnel (wg-quick avoids that with
  # policy routing, which is the host's business).
  defp add_routes(device, peers, server_opts) do
    peers
    |> Enum.flat_map(& &1.allowed_ips)
    |> Enum.reject(fn {_ip, length} -> length == 0 end)
    |> Enum.reduce_while(:ok, fn prefix, :ok ->
      case Tundra.add_route(device, prefix, server_opts) do
        :ok -> {:cont, :ok}
        {:error, :eexist} -> {:cont, :ok}
        {:error, reason} -> {:halt, {:error, {:route, prefix, reason}}}
      end
    end)
  end

  # The UAPI socket, if asked for. One that cannot be made is logged: the
  # interface carries traffic without it.
  defp start_uapi(state, false), do: state

  defp start_uapi(state, dir) do
    path = TundraWireGuard.UAPI.Listener.path(dir, state.name)

    case TundraWireGuard.UAPI.Listener.start_link({self(), path}) do
      {:ok, pid} ->
        %{state | uapi: pid}

      {:error, reason} ->
        Logger.warning("WireGuard interface #{state.name}: no UAPI socket: #{inspect(reason)}")
        state
    end
  end

  # --- Calls ---------------------------------------------------------------

  @impl true
  def handle_call(:info, _from, state), do: {:reply, info(state), state}

  def handle_call({:uapi, :get}, _from, state) do
    configuration = Protocol.configuration(state.protocol)

    {:reply, TundraWireGuard.UAPI.format_get(configuration, state.sockets.port, state.fwmark),
     state}
  end

  def handle_call({:uapi, {:set, change}}, _from, state) do
    case configure(state, change) do
      {:ok, state} -> {:reply, TundraWireGuard.UAPI.reply(0), state}
      {:error, errno} -> {:reply, TundraWireGuard.UAPI.reply(errno), state}
    end
  end

  def handle_call({:configure, change}, _from, state) do
    case configure(state, change) do
      {:ok, state} -> {:reply, :ok, state}
      {:error, errno} -> {:reply, {:error, errno}, state}
    end
  end

  def handle_call(:configuration, _from, state) do
    configuration =
      state.protocol
      |> Protocol.configuration()
      |> Map.merge(%{listen_port: state.sockets.port, fwmark: state.fwmark})

    {:reply, configuration, state}
  end

  def handle_call({:rebind, port}, _from, state) do
    :ok = Sockets.close(state.sockets)

    case Sockets.open(port, state.offload) do
      {:ok, sockets} ->
        state = %{state | sockets: sockets}

        case from_sockets(state) do
          {:ok, state} -> {:reply, {:ok, sockets.port}, state}
          {:stop, reason, state} -> {:stop, reason, {:error, reason}, state}
        end

      {:error, reason} ->
        {:stop, {:shutdown, reason}, {:error, reason}, state}
    end
  end

  # A change of configuration, all or nothing: the protocol's part is
  # worked out first (it touches nothing), then the port and the mark;
  # only when both took does anything change, then the device's routes.
  defp configure(state, change) do
    now = now()

    fwmark = Map.get(change, :fwmark, state.fwmark)

    with {:ok, protocol, actions} <- Protocol.configure(state.protocol, change, now),
         {:ok, sockets} <- rebind(state, change[:listen_port], fwmark),
         :ok <- if(sockets == state.sockets, do: mark(sockets, change[:fwmark]), else: :ok) do
      old = allowed(state.protocol)
      state = %{state | protocol: protocol, sockets: sockets, fwmark: fwmark}

      if state.routes, do: reroute(state, old, allowed(protocol))
      Enum.each(actions, &carry_out(state, &1))
      {:ok, arm_wake(state)}
    end
  end

  # New sockets on a new port carry the mark; the old ones are closed only
  # when the new ones are ready.
  defp rebind(state, port, _fwmark) when port in [nil, state.sockets.port],
    do: {:ok, state.sockets}

  defp rebind(state, port, fwmark) do
    with {:ok, sockets} <- Sockets.open(port, state.offload),
         :ok <- mark_new(sockets, fwmark) do
      :ok = Sockets.close(state.sockets)
      send(self(), :read_sockets)
      {:ok, sockets}
    end
  end

  defp mark_new(_sockets, 0), do: :ok

  defp mark_new(sockets, fwmark) do
    with {:error, reason} <- mark(sockets, fwmark) do
      :ok = Sockets.close(sockets)
      {:error, reason}
    end
  end

  # SO_MARK on every socket (it needs CAP_NET_ADMIN): what wg-quick's
  # full tunnel routes by; 0 is none.
  defp mark(_sockets, nil), do: :ok

  defp mark(sockets, mark) do
    Enum.reduce_while(Sockets.all(sockets), :ok, fn socket, :ok ->
      case :socket.setopt_native(socket, {1, 36}, <<mark::32-native>>) do
        :ok -> {:cont, :ok}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
  end

  defp allowed(protocol) do
    for peer <- Protocol.configuration(protocol).peers,
        prefix <- peer.allowed_ips,
        elem(prefix, 1) != 0,
        into: MapSet.new(),
        do: prefix
  end

  # The device's routes follow the peers' allowed IPs (not default
  # routes: see add_routes/2). Failures are logged: the routes are the
  # host's view, the configuration took.
  defp reroute(state, old, new) do
    for prefix <- MapSet.difference(old, new) do
      _ = Tundra.remove_route(state.device, prefix, state.server_opts)
    end

    for prefix <- MapSet.difference(new, old) do
      case Tundra.add_route(state.device, prefix, state.server_opts) do
        result when result in [:ok, {:error, :eexist}] ->
          :ok

        {:error, reason} ->
          Logger.warning(
            "WireGuard interface #{state.name}: cannot route #{inspect(prefix)}: #{inspect(reason)}"
          )
      end
    end

    :ok
  end

  defp info(state) do
    state.protocol
    |> Protocol.info(now())
    |> Map.merge(%{name: state.name, listen_port: state.sockets.port})
  end

  # --- Messages ------------------------------------------------------------

  @impl true
  def handle_info({:"$socket", device, :select, _}, %{device: device} = state),
    do: result(from_device(state, @turn))

  def handle_info({:"$socket", socket, :select, _}, state),
    do: result(from_socket(%{state | turn_handshakes: 0}, socket, @turn))

  def handle_info(:device_more, state), do: result(from_device(state, @turn))
  def handle_info(:read_sockets, state), do: result(from_sockets(state))

  def handle_info({:socket_more, socket}, state),
    do: result(from_socket(%{state | turn_handshakes: 0}, socket, @turn))

  def handle_info(:wake, state) do
    state = %{state | wake: nil}
    now = now()
    {:noreply, step(state, &Protocol.tick(&1, now))}
  end

  def handle_info({:tundra_link, device, :removed}, %{device: device} = state),
    do: device_gone(state, :removed)

  def handle_info({:tundra_link, _device, _event}, state), do: {:noreply, state}

  def handle_info({:EXIT, pid, reason}, %{uapi: pid} = state) do
    Logger.warning(
      "WireGuard interface #{state.name}: its UAPI socket stopped: #{inspect(reason)}"
    )

    {:noreply, %{state | uapi: nil}}
  end

  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}
  def handle_info(_other, state), do: {:noreply, state}

  # The device went: deleted from outside (the link event, or EBADFD on a
  # read of an fd whose interface is gone), or failed. Said, then the
  # interface stops for its supervisor to start it again.
  defp device_gone(state, reason) do
    what =
      if reason in [:removed, :ebadfd],
        do: "its device was deleted (ip link del?)",
        else: "its device failed (#{inspect(reason)})"

    Logger.warning(
      "WireGuard interface #{state.name}: #{what}; the interface stops (a supervisor starts it again)"
    )

    {:stop, {:shutdown, :device_deleted}, state}
  end

  defp result({:ok, state}), do: {:noreply, state}
  defp result({:stop, reason, state}), do: {:stop, reason, state}

  # --- The protocol's steps, carried out -------------------------------------

  # Runs one protocol step, carries out its actions, and makes sure the
  # protocol's timers are looked at in time.
  defp step(state, fun) do
    {protocol, actions} = fun.(state.protocol)
    state = %{state | protocol: protocol}
    Enum.each(actions, &carry_out(state, &1))
    arm_wake(state)
  end

  defp carry_out(state, {:send, endpoint, datagrams}),
    do: _ = Sockets.send(state.sockets, endpoint, datagrams)

  defp carry_out(state, {:deliver, packets}) do
    # A device that cannot take them now drops them, like a full queue.
    _ =
      case Tundra.send_many(state.device, packets, :nowait) do
        {:select, {info, _rest}} -> Tundra.cancel(state.device, info)
        _ -> :ok
      end
  end

  # A `:wake` at the protocol's next deadline, at most @tick from now;
  # while one is armed, no other (it looks again when it comes).
  defp arm_wake(%{wake: nil} = state) do
    case Protocol.wake_at(state.protocol) do
      nil ->
        state

      at ->
        delay = at |> Kernel.-(now()) |> max(0) |> min(@tick)
        %{state | wake: Process.send_after(self(), :wake, delay)}
    end
  end

  defp arm_wake(state), do: state

  # --- Device to network ---------------------------------------------------

  defp from_device(state, 0) do
    send(self(), :device_more)
    {:ok, state}
  end

  defp from_device(state, turns) do
    case read_device(state) do
      {:ok, packets, one_flow?} ->
        now = now()

        state
        |> step(&Protocol.from_device(&1, packets, one_flow?, now))
        |> from_device(turns - 1)

      :select ->
        {:ok, state}

      {:error, reason} ->
        device_gone(state, reason)
    end
  end

  defp read_device(%{offload: true, device: device}) do
    case Tundra.recv_segments(device, :nowait) do
      {:ok, {data, size}} -> {:ok, Tundra.UDP.split(data, size), true}
      {:select, _} -> :select
      {:error, reason} -> {:error, reason}
    end
  end

  defp read_device(%{device: device}) do
    case Tundra.recv_many(device, 64, :nowait) do
      {:ok, packets} -> {:ok, packets, false}
      {:select, _} -> :select
      {:error, reason} -> {:error, reason}
    end
  end

  # --- Network to device ---------------------------------------------------

  defp from_sockets(state) do
    Enum.reduce_while(Sockets.all(state.sockets), {:ok, state}, fn
      socket, {:ok, state} ->
        case from_socket(%{state | turn_handshakes: 0}, socket, @turn) do
          {:ok, state} -> {:cont, {:ok, state}}
          stop -> {:halt, stop}
        end
    end)
  end

  # A turn ended with datagrams still waiting: if many of its messages
  # were handshakes, they are queueing up faster than they are served,
  # and the interface is under load for a while.
  defp from_socket(state, socket, 0) do
    send(self(), {:socket_more, socket})

    protocol =
      if Protocol.backlog?(state.protocol, state.turn_handshakes),
        do: Protocol.backlog(state.protocol, now()),
        else: state.protocol

    {:ok, %{state | protocol: protocol, turn_handshakes: 0}}
  end

  defp from_socket(state, socket, turns) do
    if socket in Sockets.all(state.sockets) do
      case Tundra.UDP.recv(socket) do
        {:ok, {%{addr: ip, port: port}, data, size}} ->
          datagrams = Tundra.UDP.split(data, size)
          now = now()

          %{state | turn_handshakes: state.turn_handshakes + handshakes(datagrams)}
          |> step(&Protocol.from_network(&1, {ip, port}, datagrams, now))
          |> from_socket(socket, turns - 1)

        {:ok, _other} ->
          from_socket(state, socket, turns - 1)

        {:select, _} ->
          {:ok, state}

        # An ICMP error for something sent earlier: nothing to do.
        {:error, reason} when reason in [:econnrefused, :ehostunreach, :enetunreach, :emsgsize] ->
          from_socket(state, socket, turns - 1)

        {:error, :closed} ->
          {:ok, state}

        {:error, reason} ->
          {:stop, {:shutdown, reason}, state}
      end
    else
      # A socket replaced by `rebind`.
      {:ok, state}
    end
  end

  # Handshake messages (types 1 to 3) among `datagrams`.
  defp handshakes([<<type, _::binary>> | rest]) when type in 1..3, do: 1 + handshakes(rest)
  defp handshakes([_ | rest]), do: handshakes(rest)
  defp handshakes([]), do: 0

  defp now, do: System.monotonic_time(:millisecond)

  @impl true
  def terminate(_reason, state) do
    if state.uapi, do: GenServer.stop(state.uapi, :shutdown, 5_000)
    _ = Tundra.close(state.device)
    :ok
  end
end

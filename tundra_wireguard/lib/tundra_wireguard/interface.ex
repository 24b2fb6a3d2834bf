defmodule TundraWireGuard.Interface do
  @moduledoc false
  # One WireGuard interface: a GenServer owning the Tundra device, the UDP
  # sockets (one per family, on the same port) and every peer's state.
  #
  # Device to network: batches from the device (a super-packet's segments
  # from `Tundra.recv_segments/2` on an offload device, else
  # `Tundra.recv_many/3`) are routed by destination to a peer, sealed with
  # its current session and sent, equal-size ciphertexts in one
  # `UDP_SEGMENT` send each. Network to device: coalesced datagrams
  # (`UDP_GRO`) are opened one by one, checked (replay window, allowed
  # source) and written with `Tundra.send_many/3`, which gives the kernel
  # runs of one TCP flow as one super-packet again.
  #
  # Timers are deadlines kept in each peer (monotonic milliseconds) and
  # looked at by one `:tick` message, armed only while a deadline is set;
  # setting one is a map update, so the data path can do it per batch.

  use GenServer

  import Bitwise

  alias TundraWireGuard.{AllowedIPs, Crypto, Noise, RateLimiter, Replay}

  require Logger

  # UDP_SEGMENT (cmsg) and UDP_GRO (option and cmsg), linux/udp.h.
  @udp_segment 103
  @udp_gro 104
  @buffer 4 * 1024 * 1024
  # A UDP_SEGMENT send holds at most 64 datagrams and what one IP packet
  # can carry (65,535 bytes less the IPv4 and UDP headers).
  @gso_count 64
  @gso_bytes 65_507
  # Reads per turn before letting other messages in (the other direction).
  @turn 16
  # How long a backlog of handshakes keeps the interface under load.
  @load_time 1_000
  # Packets kept while a handshake is under way (per peer, newest kept).
  @staged_max 128
  @transport_header 16
  @reject_after_messages (1 <<< 64) - (1 <<< 13) - 1

  @default_timers %{
    rekey_after_time: 120_000,
    reject_after_time: 180_000,
    rekey_attempt_time: 90_000,
    rekey_timeout: 5_000,
    rekey_jitter: 334,
    keepalive_timeout: 10_000,
    cookie_lifetime: 120_000,
    rekey_after_messages: 1 <<< 60,
    reject_after_messages: @reject_after_messages,
    # Handshake messages in one turn of reading, with more still waiting,
    # at which the interface is under load for a second (0: always): a
    # backlog, as wireguard-go and the kernel judge load by their
    # handshake queue. Under load, handshakes need a cookie (mac2) and are
    # rate-limited per source.
    handshake_load: 8
  }

  @doc false
  def default_timers, do: @default_timers

  # --- Starting -----------------------------------------------------------

  @impl true
  def init({config, opts}) do
    Process.flag(:trap_exit, true)
    timers = Map.merge(@default_timers, Map.new(Keyword.get(opts, :timers, [])))
    identity = Noise.identity(config.private_key)

    # What can fail without touching the system first; each failure is
    # named with what it concerns (see TundraWireGuard.format_error/1).
    with {:ok, peers} <- peers(identity, config.peers),
         :ok <- has_address(config),
         {:ok, sockets, handshake_sockets, port} <-
           listen(config.listen_port || 0, offload?(opts)),
         {:ok, {device, name}} <- create_device(config, opts),
         :ok <- add_routes(device, config.peers) do
      state = %{
        device: device,
        name: name,
        offload: offload?(opts),
        mtu: config.mtu || 1420,
        sockets: sockets,
        handshake_sockets: handshake_sockets,
        port: port,
        identity: identity,
        peers: Map.new(peers, &{&1.keys.public, &1}),
        indices: %{},
        routes:
          AllowedIPs.new(
            for p <- config.peers, prefix <- p.allowed_ips, do: {prefix, p.public_key}
          ),
        timers: timers,
        cookie_secret: {:crypto.strong_rand_bytes(32), now()},
        load_until: nil,
        turn_handshakes: 0,
        limiter: RateLimiter.new(),
        limiter_gc: nil,
        tick: nil,
        drops: %{}
      }

      # Peers with a persistent keepalive speak first (as wg does), which
      # starts their handshake.
      state =
        Enum.reduce(Map.values(state.peers), state, fn peer, state ->
          if peer.persistent_keepalive, do: send_keepalive(state, peer, now()), else: state
        end)

      state = arm_tick(state)

      with {:ok, state} <- from_device(state, @turn), {:ok, state} <- from_sockets(state) do
        {:ok, state}
      else
        {:stop, reason, _state} -> {:stop, reason}
      end
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp offload?(opts), do: Keyword.get(opts, :offload, true)

  defp peers(identity, configured) do
    Enum.reduce_while(configured, {:ok, []}, fn p, {:ok, acc} ->
      case Noise.peer_keys(identity, p.public_key) do
        {:ok, keys} ->
          {:cont, {:ok, [new_peer(keys, p) | acc]}}

        :error ->
          {:halt, {:error, {:invalid_public_key, Base.encode64(p.public_key)}}}
      end
    end)
  end

  defp new_peer(keys, p) do
    %{
      keys: keys,
      retired: [],
      psk: p.preshared_key || <<0::256>>,
      endpoint: resolve(p.endpoint),
      persistent_keepalive: p.persistent_keepalive && p.persistent_keepalive * 1000,
      handshake: nil,
      last_initiation_sent: nil,
      last_initiation_consumed: nil,
      last_timestamp: <<0::96>>,
      cookie: nil,
      current: nil,
      previous: nil,
      next: nil,
      asked_rekey: false,
      staged: [],
      staged_count: 0,
      retransmit_at: nil,
      keepalive_at: nil,
      new_handshake_at: nil,
      zero_at: nil,
      persistent_at: nil,
      rx_bytes: 0,
      tx_bytes: 0,
      handshakes: 0,
      last_handshake: nil,
      keepalives_sent: 0,
      keepalives_received: 0
    }
  end

  # Host names were resolved when the configuration was read.
  defp resolve(nil), do: nil
  defp resolve({ip, port}) when is_tuple(ip), do: {ip, port}

  # wg-quick allows an interface without an address; a Tundra device is
  # made with one (create/2 takes it), so here one is required.
  defp has_address(%{addresses: []}), do: {:error, :no_address}
  defp has_address(_config), do: :ok

  defp listen(port, offload) do
    case open_sockets(port, offload) do
      {:ok, sockets, handshake_sockets, port} -> {:ok, sockets, handshake_sockets, port}
      {:error, reason} -> {:error, {:listen_port, port, reason}}
    end
  end

  defp create_device(%{addresses: [{ip, length} | more]} = config, opts) do
    device_opts =
      [prefix: length, mtu: config.mtu || 1420, offload: offload?(opts), link_events: true] ++
        Keyword.take(opts, [:name, :netns, :via, :socket_path])

    with {:ok, {device, name}} <- device(Tundra.create(ip, device_opts), opts[:name]),
         :ok <- add_addresses(device, more) do
      {:ok, {device, name}}
    end
  end

  defp device({:error, reason}, name), do: {:error, {:device, name, reason}}
  defp device(made, _name), do: made

  defp add_addresses(device, addresses) do
    Enum.reduce_while(addresses, :ok, fn {ip, length}, :ok ->
      case Tundra.add_address(device, ip, prefix: length) do
        :ok -> {:cont, :ok}
        {:error, reason} -> {:halt, {:error, {:address, {ip, length}, reason}}}
      end
    end)
  end

  # A route for every allowed prefix, so the kernel sends what a peer may
  # receive to the device; those the addresses already route (`:eexist`)
  # are there. A default route (/0) is left out: it would route the
  # tunnel's own datagrams into the tunnel (wg-quick avoids that with
  # policy routing, which is the host's business, not this example's).
  defp add_routes(device, peers) do
    peers
    |> Enum.flat_map(& &1.allowed_ips)
    |> Enum.reject(fn {_ip, length} -> length == 0 end)
    |> Enum.reduce_while(:ok, fn prefix, :ok ->
      case Tundra.add_route(device, prefix) do
        :ok -> {:cont, :ok}
        {:error, :eexist} -> {:cont, :ok}
        {:error, reason} -> {:halt, {:error, {:route, prefix, reason}}}
      end
    end)
  end

  # Per family, a socket for transport data and, beside it on the same
  # port, one that the kernel steers every other message to (a reuseport
  # group with a BPF program, see TundraWireGuard.Native): a flood of
  # handshake messages fills only the second one's queue and never
  # delays or drops data. Where the kernel refuses that, one socket.
  defp open_sockets(port, offload) do
    with {:ok, v4, v4_handshakes} <- open_family(:inet, port, offload),
         {:ok, %{port: port}} <- :socket.sockname(v4) do
      # IPv6 on the same port when the host has it.
      {v6, v6_handshakes} =
        case open_family(:inet6, port, offload) do
          {:ok, v6, v6_handshakes} -> {v6, v6_handshakes}
          {:error, _} -> {nil, nil}
        end

      handshakes = Enum.reject([v4_handshakes, v6_handshakes], &is_nil/1)
      {:ok, %{4 => v4, 6 => v6}, handshakes, port}
    end
  end

  defp open_family(family, port, offload) do
    with {:ok, port} <- claim_port(family, port),
         {:ok, data} <- open_socket(family, port, offload) do
      case open_socket(family, port, offload) do
        {:ok, handshakes} ->
          if steered?(data) do
            {:ok, data, handshakes}
          else
            # Unsteered, the second socket would take data at random.
            _ = :socket.close(handshakes)
            {:ok, data, nil}
          end

        {:error, _} ->
          {:ok, data, nil}
      end
    end
  end

  defp steered?(socket) do
    case :socket.getopt(socket, {:otp, :fd}) do
      {:ok, fd} -> TundraWireGuard.Native.steer_handshakes(fd)
      {:error, _} -> false
    end
  end

  # The port, free of every other socket: bound once without
  # SO_REUSEPORT, which fails if anyone holds it (with SO_REUSEPORT or
  # not), so that the group below is only ever this interface's.
  defp claim_port(family, port) do
    with {:ok, probe} <- :socket.open(family, :dgram, :udp) do
      result =
        with :ok <- v6only(probe, family),
             :ok <- :socket.bind(probe, %{family: family, addr: any(family), port: port}),
             {:ok, %{port: port}} <- :socket.sockname(probe),
             do: {:ok, port}

      _ = :socket.close(probe)
      result
    end
  end

  defp any(:inet), do: {0, 0, 0, 0}
  defp any(:inet6), do: {0, 0, 0, 0, 0, 0, 0, 0}

  defp open_socket(family, port, offload) do
    any = any(family)

    with {:ok, socket} <- :socket.open(family, :dgram, :udp),
         :ok <- :socket.setopt(socket, {:socket, :rcvbuf}, @buffer),
         :ok <- :socket.setopt(socket, {:socket, :sndbuf}, @buffer),
         :ok <- :socket.setopt(socket, {:socket, :reuseport}, true),
         :ok <- v6only(socket, family),
         :ok <- gro(socket, offload),
         :ok <- bind(socket, %{family: family, addr: any, port: port}) do
      {:ok, socket}
    end
  end

  defp bind(socket, address) do
    case :socket.bind(socket, address) do
      :ok ->
        :ok

      {:error, reason} ->
        _ = :socket.close(socket)
        {:error, reason}
    end
  end

  defp v6only(_socket, :inet), do: :ok
  defp v6only(socket, :inet6), do: :socket.setopt(socket, {:ipv6, :v6only}, true)

  defp gro(_socket, false), do: :ok

  defp gro(socket, true) do
    # Without UDP_GRO (before Linux 5.0) datagrams arrive one by one.
    _ = :socket.setopt_native(socket, {17, @udp_gro}, 1)
    :ok
  end

  # --- Calls ---------------------------------------------------------------

  @impl true
  def handle_call(:info, _from, state), do: {:reply, info(state), state}

  def handle_call({:rebind, port}, _from, state) do
    for socket <- all_sockets(state), do: _ = :socket.close(socket)

    case open_sockets(port, state.offload) do
      {:ok, sockets, handshake_sockets, port} ->
        state = %{state | sockets: sockets, handshake_sockets: handshake_sockets, port: port}

        case from_sockets(state) do
          {:ok, state} -> {:reply, {:ok, port}, state}
          {:stop, reason, state} -> {:stop, reason, {:error, reason}, state}
        end

      {:error, reason} ->
        {:stop, {:shutdown, reason}, {:error, reason}, state}
    end
  end

  defp info(state) do
    now = now()

    %{
      name: state.name,
      public_key: state.identity.public,
      listen_port: state.port,
      drops: state.drops,
      peers:
        for {public, p} <- state.peers do
          %{
            public_key: public,
            endpoint: p.endpoint,
            handshakes: p.handshakes,
            last_handshake: p.last_handshake,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            keepalives_sent: p.keepalives_sent,
            keepalives_received: p.keepalives_received,
            session: p.current != nil and sendable?(state, p.current, now, 0),
            staged: p.staged_count
          }
        end
    }
  end

  # --- Messages ------------------------------------------------------------

  @impl true
  def handle_info({:"$socket", device, :select, _}, %{device: device} = state),
    do: result(from_device(state, @turn))

  def handle_info({:"$socket", socket, :select, _}, state),
    do: result(from_socket(%{state | turn_handshakes: 0}, socket, @turn))

  def handle_info(:device_more, state), do: result(from_device(state, @turn))

  def handle_info({:socket_more, socket}, state),
    do: result(from_socket(%{state | turn_handshakes: 0}, socket, @turn))

  def handle_info(:tick, state) do
    state = %{state | tick: nil}
    now = now()
    state = Enum.reduce(Map.keys(state.peers), state, &fire_timers(&2, &1, now))
    {:noreply, arm_tick(state)}
  end

  def handle_info(:limiter_gc, state), do: {:noreply, gc_limiter(state, now())}

  def handle_info({:tundra_link, device, :removed}, %{device: device} = state),
    do: device_gone(state, :removed)

  def handle_info({:tundra_link, _device, _event}, state), do: {:noreply, state}
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

  # --- Device to network ---------------------------------------------------

  defp from_device(state, 0) do
    send(self(), :device_more)
    {:ok, state}
  end

  defp from_device(state, turns) do
    case read_device(state) do
      {:ok, packets, one_flow?} ->
        state |> route_out(packets, one_flow?, now()) |> from_device(turns - 1)

      :select ->
        {:ok, state}

      {:error, reason} ->
        device_gone(state, reason)
    end
  end

  defp read_device(%{offload: true, device: device}) do
    case Tundra.recv_segments(device, :nowait) do
      {:ok, {data, size}} -> {:ok, split(data, size), true}
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

  # The segments of one super-packet share their destination.
  defp route_out(state, [first | _] = packets, true, now),
    do: to_peer(state, AllowedIPs.destination(state.routes, first), packets, now)

  # Otherwise each packet is routed once, runs to one peer kept together.
  defp route_out(state, packets, false, now) do
    packets
    |> Enum.map(&{AllowedIPs.destination(state.routes, &1), &1})
    |> Enum.chunk_by(&elem(&1, 0))
    |> Enum.reduce(state, fn [{peer, _} | _] = run, state ->
      to_peer(state, peer, Enum.map(run, &elem(&1, 1)), now)
    end)
  end

  defp to_peer(state, nil, packets, _now), do: drop(state, :no_peer, length(packets))

  defp to_peer(state, public, packets, now) do
    peer = Map.fetch!(state.peers, public)
    send_packets(state, peer, packets, now)
  end

  # Seals and sends `packets` with the peer's current session, or keeps
  # them for when a handshake has made one (and starts it).
  defp send_packets(state, peer, packets, now) do
    count = length(packets)
    session = peer.current

    if session != nil and peer.endpoint != nil and sendable?(state, session, now, count) do
      {datagrams, session} = seal_all(session, packets, state.mtu)
      bytes = transmit(state, peer.endpoint, datagrams)
      data? = Enum.any?(packets, &(&1 != <<>>))
      keepalives = if data?, do: 0, else: count

      peer = %{
        peer
        | current: session,
          tx_bytes: peer.tx_bytes + bytes,
          keepalives_sent: peer.keepalives_sent + keepalives
      }

      peer =
        peer
        |> sent_authenticated(now)
        |> then(&if(data?, do: sent_data(&1, state, now), else: &1))

      state = put_peer(state, peer)
      # Keep the key fresh: a new handshake well before this one expires.
      if session.counter > state.timers.rekey_after_messages or
           (session.initiator and now - session.born > state.timers.rekey_after_time),
         do: begin_handshake(state, peer, now, false),
         else: state
    else
      peer = stage(peer, packets)
      state = put_peer(state, peer)
      begin_handshake(state, peer, now, false)
    end
  end

  defp sendable?(state, session, now, count) do
    now - session.born < state.timers.reject_after_time and
      session.counter + count <= state.timers.reject_after_messages
  end

  defp stage(peer, packets) do
    staged = Enum.reverse(packets, peer.staged)
    count = peer.staged_count + length(packets)

    if count > @staged_max,
      do: %{peer | staged: Enum.take(staged, @staged_max), staged_count: @staged_max},
      else: %{peer | staged: staged, staged_count: count}
  end

  defp flush_staged(state, %{staged: []}, _now), do: state

  defp flush_staged(state, peer, now) do
    packets = Enum.reverse(peer.staged)
    peer = %{peer | staged: [], staged_count: 0}
    send_packets(put_peer(state, peer), peer, packets, now)
  end

  # Each packet padded to a multiple of 16 (never past the MTU), sealed
  # under the next counter: `{iov, length}` per datagram.
  defp seal_all(session, packets, mtu) do
    {datagrams, counter} =
      Enum.map_reduce(packets, session.counter, fn packet, counter ->
        padding = padding(byte_size(packet), mtu)

        {ciphertext, tag} =
          :crypto.crypto_one_time_aead(
            :chacha20_poly1305,
            session.send,
            <<0::32, counter::64-little>>,
            [packet, <<0::size(padding)-unit(8)>>],
            <<>>,
            true
          )

        header = <<4, 0, 0, 0, session.remote::32-little, counter::64-little>>
        {{[header, ciphertext, tag], @transport_header + byte_size(ciphertext) + 16}, counter + 1}
      end)

    {datagrams, %{session | counter: counter}}
  end

  defp padding(length, mtu) do
    last = if length > mtu, do: rem(length, mtu), else: length
    (min(last + 15 &&& bnot(15), mtu) - last) |> max(0)
  end

  # Sends datagrams to `endpoint`: runs of equal length (the last of a run
  # may be shorter) as one UDP_SEGMENT send. Returns the bytes sent. A
  # datagram the socket cannot take now is lost, as a full queue drops.
  defp transmit(state, {ip, port}, datagrams) do
    family = if tuple_size(ip) == 4, do: 4, else: 6

    case Map.fetch!(state.sockets, family) do
      nil ->
        0

      socket ->
        address = %{family: if(family == 4, do: :inet, else: :inet6), addr: ip, port: port}

        datagrams
        |> runs(state.offload)
        |> Enum.reduce(0, fn run, total -> total + send_run(socket, address, run) end)
    end
  end

  defp runs(datagrams, false), do: for({iov, length} <- datagrams, do: {iov, length, 1, length})

  defp runs(datagrams, true) do
    {done, open} =
      Enum.reduce(datagrams, {[], nil}, fn {iov, length}, {done, open} ->
        case open do
          {parts, size, count, bytes, :open}
          when length <= size and count < @gso_count and bytes + length <= @gso_bytes ->
            state = if length == size, do: :open, else: :closed
            {done, {[iov | parts], size, count + 1, bytes + length, state}}

          nil ->
            {done, {[iov], length, 1, length, :open}}

          _ ->
            {[open | done], {[iov], length, 1, length, :open}}
        end
      end)

    [open | done]
    |> Enum.reject(&is_nil/1)
    |> Enum.reverse()
    |> Enum.map(fn {parts, size, count, bytes, _} ->
      {Enum.reverse(parts), size, count, bytes}
    end)
  end

  defp send_run(socket, address, {iov, size, count, bytes}) do
    ctrl =
      if count > 1, do: [%{level: :udp, type: @udp_segment, data: <<size::16-native>>}], else: []

    case :socket.sendmsg(socket, %{addr: address, iov: List.flatten(iov), ctrl: ctrl}, :nowait) do
      :ok ->
        bytes

      {:select, info} ->
        _ = :socket.cancel(socket, info)
        0

      {:error, _} ->
        0
    end
  end

  # --- Network to device ---------------------------------------------------

  defp all_sockets(state),
    do: Enum.reject(Map.values(state.sockets), &is_nil/1) ++ state.handshake_sockets

  defp from_sockets(state) do
    Enum.reduce_while(all_sockets(state), {:ok, state}, fn
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

    state =
      if state.turn_handshakes >= max(state.timers.handshake_load, 1),
        do: %{state | load_until: now() + @load_time},
        else: state

    {:ok, %{state | turn_handshakes: 0}}
  end

  defp from_socket(state, socket, turns) do
    if socket in all_sockets(state) do
      case :socket.recvmsg(socket, 65_535, 64, [], :nowait) do
        {:ok, %{addr: %{addr: ip, port: port}, iov: [data], ctrl: ctrl}} ->
          state
          |> receive_datagrams({ip, port}, data, segment_size(ctrl, data), now())
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

  defp segment_size([%{level: :udp, type: @udp_gro, data: <<size::32-native>>} | _], _data),
    do: size

  defp segment_size([_ | rest], data), do: segment_size(rest, data)
  defp segment_size([], data), do: max(byte_size(data), 1)

  defp receive_datagrams(state, source, data, size, now) do
    {state, packets, peers} =
      data
      |> split(size)
      |> Enum.reduce({state, [], []}, fn datagram, acc -> datagram(acc, source, datagram, now) end)

    state = deliver(state, Enum.reverse(packets))

    # Packets kept for a session that became usable in this batch.
    peers
    |> Enum.uniq()
    |> Enum.reduce(state, fn public, state ->
      flush_staged(state, Map.fetch!(state.peers, public), now)
    end)
  end

  defp datagram({state, packets, touched}, source, <<4, 0, 0, 0, _::binary>> = datagram, now)
       when byte_size(datagram) >= 32 do
    <<_::32, receiver::32-little, counter::64-little, sealed::binary>> = datagram

    with {:ok, public} <- fetch(state.indices, receiver, :unknown_index),
         peer = Map.fetch!(state.peers, public),
         {:ok, slot, session} <- session_for(peer, receiver),
         :ok <- receivable(state, session, counter, now),
         {:ok, plaintext} <- open(session, counter, sealed) do
      session = %{session | replay: Replay.accept(session.replay, counter)}
      {peer, confirmed?} = received_with(peer, slot, session)
      peer = %{peer | endpoint: source, rx_bytes: peer.rx_bytes + byte_size(datagram)}
      peer = received_authenticated(peer, now)
      touched = if confirmed?, do: [public | touched], else: touched

      case inner_packet(plaintext) do
        :keepalive ->
          peer = %{peer | keepalives_received: peer.keepalives_received + 1}
          {maybe_rekey_on_receive(put_peer(state, peer), peer, session, now), packets, touched}

        {:ok, packet} ->
          peer = received_data(peer, state, now)
          state = maybe_rekey_on_receive(put_peer(state, peer), peer, session, now)

          if AllowedIPs.source(state.routes, packet) == public,
            do: {state, [packet | packets], touched},
            else: {drop(state, :source_not_allowed), packets, touched}

        :error ->
          {drop(put_peer(state, peer), :malformed), packets, touched}
      end
    else
      {:drop, reason} -> {drop(state, reason), packets, touched}
    end
  end

  defp datagram({state, packets, touched}, source, <<type, 0, 0, 0, _::binary>> = message, now)
       when (type == 1 and byte_size(message) == 148) or (type == 2 and byte_size(message) == 92) or
              (type == 3 and byte_size(message) == 64) do
    {handshake_message(state, source, type, message, now), packets, touched}
  end

  defp datagram({state, packets, touched}, _source, _datagram, _now),
    do: {drop(state, :malformed), packets, touched}

  defp fetch(map, key, reason) do
    case Map.fetch(map, key) do
      {:ok, value} -> {:ok, value}
      :error -> {:drop, reason}
    end
  end

  defp session_for(peer, index) do
    Enum.find_value([:current, :next, :previous], {:drop, :unknown_index}, fn slot ->
      case Map.fetch!(peer, slot) do
        %{local: ^index} = session -> {:ok, slot, session}
        _ -> nil
      end
    end)
  end

  defp receivable(state, session, counter, now) do
    cond do
      now - session.born >= state.timers.reject_after_time -> {:drop, :expired}
      counter >= state.timers.reject_after_messages -> {:drop, :expired}
      not Replay.fresh?(session.replay, counter) -> {:drop, :replayed}
      true -> :ok
    end
  end

  defp open(session, counter, sealed) do
    case Crypto.open(session.recv, counter, sealed, <<>>) do
      {:ok, plaintext} -> {:ok, plaintext}
      :error -> {:drop, :unauthentic}
    end
  end

  # The first packet under the responder's new session confirms it: it
  # becomes current (the handshake is complete).
  defp received_with(peer, :next, session) do
    peer = %{retire(peer, :previous) | previous: peer.current, current: session, next: nil}
    {handshake_complete(%{peer | asked_rekey: false}), true}
  end

  defp received_with(peer, slot, session), do: {Map.put(peer, slot, session), false}

  defp retire(peer, slot) do
    case Map.fetch!(peer, slot) do
      nil -> peer
      %{local: index} -> Map.update!(%{peer | slot => nil}, :retired, &[index | &1])
    end
  end

  # An IP packet with its padding cut off, or a keepalive (nothing).
  defp inner_packet(<<>>), do: :keepalive

  defp inner_packet(<<4::4, ihl::4, _::8, total::16, _::binary>> = plaintext)
       when ihl >= 5 and total >= ihl * 4 and total <= byte_size(plaintext),
       do: {:ok, binary_part(plaintext, 0, total)}

  defp inner_packet(<<6::4, _::28, payload::16, _::binary>> = plaintext)
       when 40 + payload <= byte_size(plaintext),
       do: {:ok, binary_part(plaintext, 0, 40 + payload)}

  defp inner_packet(_plaintext), do: :error

  defp deliver(state, []), do: state

  defp deliver(%{device: device} = state, packets) do
    # A device that cannot take them now drops them, like a full queue.
    _ =
      case Tundra.send_many(device, packets, :nowait) do
        {:select, {info, _rest}} -> Tundra.cancel(device, info)
        _ -> :ok
      end

    state
  end

  # Initiating again, as the initiator, before the session's last minute.
  defp maybe_rekey_on_receive(state, peer, session, now) do
    t = state.timers

    if session.initiator and not peer.asked_rekey and
         now - session.born > t.reject_after_time - t.keepalive_timeout - t.rekey_timeout do
      state = put_peer(state, %{peer | asked_rekey: true})
      begin_handshake(state, Map.fetch!(state.peers, peer.keys.public), now, false)
    else
      state
    end
  end

  # --- Handshakes ----------------------------------------------------------

  defp handshake_message(state, source, type, message, now) do
    state = %{state | turn_handshakes: state.turn_handshakes + 1}

    cond do
      not Noise.mac1_valid?(message, state.identity.mac1_key) and type != 3 ->
        drop(state, :mac1)

      type == 3 ->
        cookie_reply(state, message)

      true ->
        state = rotate_cookie_secret(state, now)
        under_load? = under_load?(state, now)
        cookie = if under_load?, do: cookie_for(state, source)

        cond do
          not under_load? ->
            handshake(state, source, type, message, now)

          not Noise.mac2_valid?(message, cookie) ->
            # Prove your address first: a cookie for it, bound to this mac1.
            <<_::32, sender::32-little, _::binary>> = message
            reply = Noise.cookie_reply(state.identity, sender, Noise.mac1(message), cookie)

            transmit(state, source, [{[reply], byte_size(reply)}])
            drop(state, :cookie_sent)

          true ->
            case limit(state, source, now) do
              {:ok, state} -> handshake(state, source, type, message, now)
              {:drop, state} -> drop(state, :rate_limited)
            end
        end
    end
  end

  defp handshake(state, source, 1, message, now) do
    static_shared = fn public ->
      case Map.fetch(state.peers, public) do
        {:ok, peer} -> {:ok, peer.keys.static_shared}
        :error -> :error
      end
    end

    with {:ok, initiation} <- Noise.consume_initiation(state.identity, message, static_shared),
         peer = Map.fetch!(state.peers, initiation.peer),
         true <- initiation.timestamp > peer.last_timestamp,
         true <-
           peer.last_initiation_consumed == nil or now - peer.last_initiation_consumed >= 20,
         index = new_index(state),
         {:ok, body, keys} <- Noise.response(initiation, peer.psk, index, Crypto.generate()) do
      {response, _mac1} =
        Noise.seal_macs(body, peer.keys.mac1_key, fresh_cookie(peer, state, now))

      session = new_session(index, keys, false, now)
      # Our own initiation, if any, is superseded (as in wireguard-go);
      # its retransmit timer stays until the new session is confirmed.
      # The new session waits in `next` for the initiator's first packet;
      # an older unconfirmed one and the previous session go (as in
      # wireguard-go's BeginSymmetricSession).
      peer =
        %{peer | retired: []}
        |> retire(:next)
        |> retire(:previous)
        |> drop_handshake()

      peer = %{
        peer
        | next: session,
          endpoint: source,
          last_timestamp: initiation.timestamp,
          last_initiation_consumed: now
      }

      peer = peer |> received_authenticated(now) |> session_derived(state, now)
      peer = sent_authenticated(peer, now)
      state = put_peer(state, peer)
      state = %{state | indices: Map.put(state.indices, index, peer.keys.public)}
      transmit(state, source, [{[response], byte_size(response)}])
      state
    else
      _ -> drop(state, :handshake_refused)
    end
  end

  defp handshake(state, source, 2, <<_::64, receiver::32-little, _::binary>> = message, now) do
    with {:ok, public} <- Map.fetch(state.indices, receiver),
         peer = Map.fetch!(state.peers, public),
         %{state: %{index: ^receiver} = initiation} <- peer.handshake,
         {:ok, keys} <- Noise.consume_response(state.identity, initiation, peer.psk, message) do
      session = new_session(receiver, keys, true, now)
      peer = %{peer | retired: [], handshake: nil}

      # A session of ours that the peer never confirmed becomes the
      # previous one (it may still carry its packets); else the current.
      peer =
        if peer.next != nil,
          do: %{(peer |> retire(:previous) |> retire(:current)) | previous: peer.next, next: nil},
          else: %{retire(peer, :previous) | previous: peer.current}

      peer = %{peer | current: session, endpoint: source, asked_rekey: false}

      peer =
        peer
        |> received_authenticated(now)
        |> session_derived(state, now)
        |> handshake_complete()

      state = put_peer(state, peer)
      # The responder learns the session is confirmed from our first
      # packet: what waited, or a keepalive.
      if peer.staged == [],
        do: send_keepalive(state, peer, now),
        else: flush_staged(state, peer, now)
    else
      _ -> drop(state, :handshake_refused)
    end
  end

  defp cookie_reply(state, <<_::32, receiver::32-little, _::binary>> = message) do
    with {:ok, public} <- Map.fetch(state.indices, receiver),
         peer = Map.fetch!(state.peers, public),
         %{state: %{index: ^receiver}, mac1: mac1} <- peer.handshake,
         {:ok, cookie} <- Noise.consume_cookie_reply(peer.keys, message, mac1) do
      put_peer(state, %{peer | cookie: {cookie, now()}})
    else
      _ -> drop(state, :cookie_refused)
    end
  end

  defp fresh_cookie(%{cookie: {cookie, at}}, state, now)
       when now - at < state.timers.cookie_lifetime,
       do: cookie

  defp fresh_cookie(_peer, _state, _now), do: nil

  # Sends an initiation (a new one, or `retry` of the one under way).
  defp begin_handshake(state, peer, now, retry) do
    t = state.timers

    cond do
      peer.endpoint == nil ->
        state

      not retry and peer.last_initiation_sent != nil and
          now - peer.last_initiation_sent < t.rekey_timeout ->
        state

      true ->
        index = new_index(state)

        {:ok, body, initiation} =
          Noise.initiation(
            state.identity,
            peer.keys,
            index,
            Crypto.generate(),
            Crypto.tai64n(System.os_time(:nanosecond))
          )

        {message, mac1} =
          Noise.seal_macs(body, peer.keys.mac1_key, fresh_cookie(peer, state, now))

        started =
          case peer.handshake do
            %{started: started} when retry -> started
            _ -> now
          end

        peer = %{
          drop_handshake(%{peer | retired: []})
          | handshake: %{state: initiation, mac1: mac1, started: started}
        }

        peer = %{
          peer
          | last_initiation_sent: now,
            retransmit_at: now + t.rekey_timeout + :rand.uniform(t.rekey_jitter) - 1
        }

        peer = peer |> sent_authenticated(now) |> traversed(now)
        state = put_peer(state, peer)
        state = %{state | indices: Map.put(state.indices, index, peer.keys.public)}
        transmit(state, peer.endpoint, [{[message], byte_size(message)}])
        arm_tick(state)
    end
  end

  defp drop_handshake(%{handshake: %{state: %{index: index}}} = peer),
    do: %{peer | handshake: nil, retired: [index | peer.retired]}

  defp drop_handshake(peer), do: peer

  defp new_session(index, keys, initiator, now) do
    %{
      local: index,
      remote: keys.remote_index,
      send: keys.send,
      recv: keys.recv,
      counter: 0,
      replay: Replay.new(),
      born: now,
      initiator: initiator
    }
  end

  defp new_index(state) do
    index = :rand.uniform(0xFFFFFFFF)
    if Map.has_key?(state.indices, index), do: new_index(state), else: index
  end

  # Under load while handshakes queue up (see `from_socket/3`).
  defp under_load?(%{timers: %{handshake_load: 0}}, _now), do: true
  defp under_load?(%{load_until: until}, now), do: until != nil and now < until

  # The cookie for an address: a MAC of it under a secret that changes
  # every two minutes.
  defp cookie_for(%{cookie_secret: {secret, _born}}, {ip, port}),
    do: Crypto.mac(secret, [ip_bytes(ip), <<port::16>>])

  defp rotate_cookie_secret(%{cookie_secret: {_, born}} = state, now) do
    if now - born >= state.timers.cookie_lifetime,
      do: %{state | cookie_secret: {:crypto.strong_rand_bytes(32), now}},
      else: state
  end

  defp ip_bytes({a, b, c, d}), do: <<a, b, c, d>>
  defp ip_bytes(ip), do: for(w <- Tuple.to_list(ip), into: <<>>, do: <<w::16>>)

  defp limit(state, {ip, _port}, now) do
    {allowed, limiter} = RateLimiter.allow(state.limiter, ip, now)
    state = arm_limiter_gc(%{state | limiter: limiter})
    if allowed, do: {:ok, state}, else: {:drop, state}
  end

  # The limiter's idle entries are collected every second while it has
  # any, whatever the peers' timers.
  defp arm_limiter_gc(%{limiter_gc: nil} = state) do
    if RateLimiter.size(state.limiter) > 0,
      do: %{state | limiter_gc: Process.send_after(self(), :limiter_gc, RateLimiter.interval())},
      else: state
  end

  defp arm_limiter_gc(state), do: state

  defp gc_limiter(state, now) do
    arm_limiter_gc(%{state | limiter: RateLimiter.collect(state.limiter, now), limiter_gc: nil})
  end

  # --- Timers --------------------------------------------------------------

  # After sending a packet with data: a new handshake if nothing comes
  # back in time.
  defp sent_data(peer, state, now) do
    t = state.timers

    %{
      peer
      | new_handshake_at: peer.new_handshake_at || now + t.keepalive_timeout + t.rekey_timeout
    }
  end

  # After receiving a packet with data: a keepalive if we send nothing.
  defp received_data(peer, state, now),
    do: %{peer | keepalive_at: peer.keepalive_at || now + state.timers.keepalive_timeout}

  defp sent_authenticated(peer, now), do: traversed(%{peer | keepalive_at: nil}, now)

  defp received_authenticated(peer, now),
    do: traversed(%{peer | new_handshake_at: nil}, now)

  defp traversed(%{persistent_keepalive: nil} = peer, _now), do: peer
  defp traversed(peer, now), do: %{peer | persistent_at: now + peer.persistent_keepalive}

  defp session_derived(peer, state, now),
    do: %{peer | zero_at: now + 3 * state.timers.reject_after_time}

  defp handshake_complete(peer) do
    %{
      peer
      | retransmit_at: nil,
        handshakes: peer.handshakes + 1,
        last_handshake: System.system_time(:millisecond)
    }
  end

  defp fire_timers(state, public, now) do
    Enum.reduce(
      [:zero_at, :retransmit_at, :keepalive_at, :new_handshake_at, :persistent_at],
      state,
      fn timer, state ->
        peer = Map.fetch!(state.peers, public)

        case Map.fetch!(peer, timer) do
          at when is_integer(at) and at <= now ->
            fire(timer, put_peer(state, %{peer | timer => nil}), now, public)

          _ ->
            state
        end
      end
    )
  end

  defp fire(:zero_at, state, _now, public) do
    peer = Map.fetch!(state.peers, public)
    peer = %{peer | retired: []}
    peer = peer |> retire(:current) |> retire(:previous) |> retire(:next) |> drop_handshake()
    put_peer(state, %{peer | staged: [], staged_count: 0})
  end

  defp fire(:retransmit_at, state, now, public) do
    peer = Map.fetch!(state.peers, public)

    case peer.handshake do
      %{started: started} ->
        if now - started >= state.timers.rekey_attempt_time do
          # Given up: what waited is dropped; the keys go in a while.
          peer = drop_handshake(%{peer | retired: []})
          zero_at = peer.zero_at || now + 3 * state.timers.reject_after_time
          put_peer(state, %{peer | staged: [], staged_count: 0, zero_at: zero_at})
        else
          begin_handshake(state, peer, now, true)
        end

      nil ->
        # Our initiation was superseded by the peer's: try again unless
        # that session was confirmed meanwhile (which stops this timer).
        begin_handshake(state, peer, now, true)
    end
  end

  defp fire(:keepalive_at, state, now, public),
    do: send_keepalive(state, Map.fetch!(state.peers, public), now)

  defp fire(:new_handshake_at, state, now, public),
    do: begin_handshake(state, Map.fetch!(state.peers, public), now, false)

  defp fire(:persistent_at, state, now, public),
    do: send_keepalive(state, Map.fetch!(state.peers, public), now)

  defp send_keepalive(state, peer, now) do
    if peer.staged == [],
      do: send_packets(state, peer, [<<>>], now),
      else: flush_staged(state, peer, now)
  end

  defp arm_tick(%{tick: nil} = state) do
    if Enum.any?(Map.values(state.peers), &pending?/1) do
      %{state | tick: Process.send_after(self(), :tick, tick_interval(state))}
    else
      state
    end
  end

  defp arm_tick(state), do: state

  defp pending?(peer) do
    peer.retransmit_at != nil or peer.keepalive_at != nil or peer.new_handshake_at != nil or
      peer.zero_at != nil or peer.persistent_at != nil
  end

  # Timers are checked this often: a tenth of the shortest, at most 100 ms.
  defp tick_interval(state), do: max(min(div(state.timers.rekey_timeout, 10), 100), 5)

  # --- State ---------------------------------------------------------------

  # A peer back into the state, its retired session and handshake indices
  # out of the index table.
  defp put_peer(state, %{retired: [_ | _] = retired} = peer) do
    put_peer(%{state | indices: Map.drop(state.indices, retired)}, %{peer | retired: []})
  end

  defp put_peer(state, peer) do
    arm_tick(%{state | peers: Map.put(state.peers, peer.keys.public, peer)})
  end

  defp drop(state, reason, count \\ 1),
    do: %{state | drops: Map.update(state.drops, reason, count, &(&1 + count))}

  defp split(data, size) when byte_size(data) <= size, do: [data]

  defp split(data, size) do
    <<packet::binary-size(size), rest::binary>> = data
    [packet | split(rest, size)]
  end

  defp now, do: System.monotonic_time(:millisecond)

  @impl true
  def terminate(_reason, state) do
    _ = Tundra.close(state.device)
    :ok
  end
end

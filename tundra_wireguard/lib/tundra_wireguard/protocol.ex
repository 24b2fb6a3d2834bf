defmodule TundraWireGuard.Protocol do
  @moduledoc false
  # WireGuard's protocol as pure state transitions
  # (wireguard.com/protocol, and the timers of the paper's section 6): each
  # function takes the state, an event and `now` (monotonic milliseconds),
  # and returns the new state and the actions that follow, in order:
  #
  #   {:send, {ip, port}, [{iodata, length}]}  datagrams to send there
  #   {:deliver, [packet]}                    IP packets for the device
  #
  # and `wake_at/1` says when `tick/2` is next due. It does no I/O and reads
  # no clock: the interface (TundraWireGuard.Interface) does both, and the
  # tests drive it with a clock of their own. The wall clock, which
  # handshake timestamps and `last_handshake` need, is `now` plus the
  # offset given to `new/2`. Randomness (keys, indices, jitter) comes from
  # `:crypto` and `:rand`.
  #
  # Peers' timers are deadlines kept in each peer, looked at by `tick/2`;
  # setting one is a map update, so the data path can do it per batch.

  import Bitwise

  alias TundraWireGuard.{AllowedIPs, Config, Crypto, Noise, RateLimiter, Replay}

  # Packets kept while a handshake is under way (per peer, newest kept).
  @staged_max 128
  @transport_header 16
  @reject_after_messages (1 <<< 64) - (1 <<< 13) - 1
  # How long a backlog of handshakes keeps the interface under load.
  @load_time 1_000

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

  @type action ::
          {:send, {:inet.ip_address(), :inet.port_number()}, [{iodata(), non_neg_integer()}]}
          | {:deliver, [binary()]}

  @type t :: map()

  @doc false
  def default_timers, do: @default_timers

  @doc """
  The state of an interface of `config` (a `TundraWireGuard.Config`), at
  `now`; `wall_offset` is what to add to `now` for the wall clock in
  milliseconds; `mtu` the device's. `timers` overrides protocol constants
  (tests).
  """
  @spec new(map(), keyword()) :: {:ok, t()} | {:error, term()}
  def new(config, opts) do
    now = Keyword.fetch!(opts, :now)
    timers = Map.merge(@default_timers, Map.new(Keyword.get(opts, :timers, [])))
    # No key yet (wg-quick's userspace implementation starts without
    # one and is given it with the peers): nothing is served until then.
    identity = config.private_key && Noise.identity(config.private_key)

    with {:ok, peers} <- peers(identity, config.peers) do
      {:ok,
       %{
         identity: identity,
         mtu: Keyword.get(opts, :mtu, 1420),
         peers: Map.new(peers, &{&1.keys.public, &1}),
         indices: %{},
         routes:
           AllowedIPs.new(
             for p <- config.peers, prefix <- p.allowed_ips, do: {prefix, p.public_key}
           ),
         timers: timers,
         wall_offset: Keyword.get(opts, :wall_offset, 0),
         cookie_secret: {:crypto.strong_rand_bytes(32), now},
         load_until: nil,
         limiter: RateLimiter.new(),
         limiter_gc_at: nil,
         drops: %{},
         out: []
       }}
    end
  end

  @doc "Peers with a persistent keepalive speak first (as wg does), which starts their handshake."
  @spec start(t(), integer()) :: {t(), [action()]}
  def start(state, now) do
    state
    |> then(fn state ->
      Enum.reduce(Map.values(state.peers), state, fn peer, state ->
        if peer.persistent_keepalive, do: send_keepalive(state, peer, now), else: state
      end)
    end)
    |> done()
  end

  @doc """
  Packets the device gave: sealed for the peer whose allowed IPs hold
  their destination (`one_flow?`: they share one, as a super-packet's
  segments do), or kept while a handshake makes a session.
  """
  @spec from_device(t(), [binary()], boolean(), integer()) :: {t(), [action()]}
  def from_device(state, packets, one_flow?, now),
    do: state |> route_out(packets, one_flow?, now) |> done()

  @doc "Datagrams that came from `source` (a GRO batch is one call)."
  @spec from_network(t(), {:inet.ip_address(), :inet.port_number()}, [binary()], integer()) ::
          {t(), [action()]}
  def from_network(state, source, datagrams, now),
    do: state |> receive_datagrams(source, datagrams, now) |> done()

  @doc """
  Handshake messages are waiting faster than they are served (a read turn
  ended with more waiting): the interface is under load for a while.
  """
  @spec backlog(t(), integer()) :: t()
  def backlog(state, now), do: %{state | load_until: now + @load_time}

  @doc "Whether a read turn that held `handshakes` handshake messages shows a backlog."
  @spec backlog?(t(), non_neg_integer()) :: boolean()
  def backlog?(state, handshakes), do: handshakes >= max(state.timers.handshake_load, 1)

  @doc "Fires the timers due at `now`."
  @spec tick(t(), integer()) :: {t(), [action()]}
  def tick(state, now) do
    state = Enum.reduce(Map.keys(state.peers), state, &fire_timers(&2, &1, now))

    state =
      if state.limiter_gc_at != nil and state.limiter_gc_at <= now do
        limiter = RateLimiter.collect(state.limiter, now)
        next = if RateLimiter.size(limiter) > 0, do: now + RateLimiter.interval()
        %{state | limiter: limiter, limiter_gc_at: next}
      else
        state
      end

    done(state)
  end

  @peer_timers [:zero_at, :retransmit_at, :keepalive_at, :new_handshake_at, :persistent_at]

  @doc "When `tick/2` is next due (monotonic milliseconds), or `nil`."
  @spec wake_at(t()) :: integer() | nil
  def wake_at(state) do
    peers =
      for {_, peer} <- state.peers, timer <- @peer_timers, at = peer[timer], at != nil, do: at

    case [state.limiter_gc_at | peers] |> Enum.reject(&is_nil/1) do
      [] -> nil
      deadlines -> Enum.min(deadlines)
    end
  end

  @doc "What `TundraWireGuard.info/1` says of the protocol's state at `now`."
  @spec info(t(), integer()) :: map()
  def info(state, now) do
    %{
      public_key: state.identity && state.identity.public,
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

  # --- Configuration (the UAPI's get and set) --------------------------------

  @typedoc """
  A change of configuration, as a UAPI `set` says it: each key given, in
  order. Peers: `public_key` first, then what changes for that peer.
  """
  @type change :: %{
          optional(:private_key) => <<_::256>>,
          optional(:listen_port) => :inet.port_number(),
          optional(:fwmark) => non_neg_integer(),
          optional(:replace_peers) => true,
          peers: [peer_change()]
        }

  @type peer_change :: %{
          required(:public_key) => <<_::256>>,
          optional(:remove) => true,
          optional(:update_only) => true,
          optional(:preshared_key) => <<_::256>>,
          optional(:endpoint) => {:inet.ip_address(), :inet.port_number()},
          optional(:persistent_keepalive) => non_neg_integer(),
          optional(:replace_allowed_ips) => true,
          optional(:allowed_ips) => [AllowedIPs.prefix()]
        }

  @doc """
  The configuration, as a UAPI `get` reports it: the private key, and per
  peer its keys, endpoint, last handshake (wall clock, milliseconds),
  transfer, persistent keepalive (seconds) and allowed IPs.
  """
  @spec configuration(t()) :: map()
  def configuration(state) do
    %{
      private_key: state.identity && state.identity.private,
      peers:
        for {public, p} <- Enum.sort_by(state.peers, fn {public, _} -> public end) do
          %{
            public_key: public,
            preshared_key: p.psk,
            endpoint: p.endpoint,
            last_handshake: p.last_handshake,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive: div(p.persistent_keepalive || 0, 1000),
            allowed_ips: p.allowed
          }
        end
    }
  end

  @doc """
  Applies a configuration change at `now`, all or nothing: peers added,
  changed or removed (the others' sessions untouched), a new private key
  (which ends every session: they rest on the old one). `{:error,
  :einval}` for a peer whose public key cannot be one (a small-order
  point) or is this interface's own.
  """
  @spec configure(t(), change(), integer()) :: {:ok, t(), [action()]} | {:error, :einval}
  def configure(state, change, now) do
    with {:ok, state} <- set_private_key(state, change[:private_key]) do
      state = if change[:replace_peers], do: remove_all_peers(state), else: state
      # Which peer holds each allowed IP, so that one given to a peer
      # leaves its holder without a look at every peer (a change of
      # thousands of peers stays linear). An entry may name a peer that
      # no longer holds it, or is gone: taking it from that one is a no-op.
      owners =
        for {public, p} <- state.peers, prefix <- p.allowed, into: %{}, do: {prefix, public}

      change.peers
      |> Enum.reduce_while({:ok, state, owners}, fn peer_change, {:ok, state, owners} ->
        case change_peer(state, owners, peer_change, now) do
          {:ok, state, owners} -> {:cont, {:ok, state, owners}}
          error -> {:halt, error}
        end
      end)
      |> case do
        {:ok, state, _owners} ->
          {state, actions} = state |> rebuild_routes() |> done()
          {:ok, state, actions}

        error ->
          error
      end
    end
  end

  defp set_private_key(state, nil), do: {:ok, state}
  defp set_private_key(%{identity: %{private: key}} = state, key), do: {:ok, state}
  # A key of zeros clears it (`wg set private-key /dev/null`); peers'
  # keys rest on it, so only while there are none.
  defp set_private_key(%{peers: peers} = state, <<0::256>>) when peers == %{},
    do: {:ok, %{state | identity: nil}}

  defp set_private_key(_state, <<0::256>>), do: {:error, :einval}

  defp set_private_key(state, key) do
    identity = Noise.identity(key)

    # Every peer's keys rest on ours: made again, every session ended.
    Enum.reduce_while(state.peers, {:ok, %{state | identity: identity}}, fn {public, peer},
                                                                            {:ok, state} ->
      case Noise.peer_keys(identity, public) do
        {:ok, keys} ->
          {:cont, {:ok, put_peer(state, %{end_sessions(peer) | keys: keys})}}

        :error ->
          {:halt, {:error, :einval}}
      end
    end)
  end

  defp end_sessions(peer) do
    peer = %{peer | retired: []}
    peer = peer |> retire(:current) |> retire(:previous) |> retire(:next) |> drop_handshake()
    %{peer | staged: [], staged_count: 0, zero_at: nil, retransmit_at: nil}
  end

  defp remove_all_peers(state),
    do: Enum.reduce(Map.keys(state.peers), state, &remove_peer(&2, &1))

  defp remove_peer(state, public) do
    case Map.fetch(state.peers, public) do
      {:ok, peer} ->
        peer = end_sessions(peer)
        state = %{state | indices: Map.drop(state.indices, peer.retired)}
        %{state | peers: Map.delete(state.peers, public)}

      :error ->
        state
    end
  end

  defp change_peer(state, owners, %{public_key: public} = change, now) do
    existing = Map.get(state.peers, public)

    cond do
      change[:remove] ->
        {:ok, remove_peer(state, public), owners}

      existing == nil and change[:update_only] ->
        {:ok, state, owners}

      # A peer's keys are made from ours: none yet, no peer (a UAPI
      # `set` gives the private key before the peers).
      state.identity == nil ->
        {:error, :einval}

      public == state.identity.public ->
        {:error, :einval}

      existing == nil ->
        case Noise.peer_keys(state.identity, public) do
          {:ok, keys} ->
            blank = %{
              public_key: public,
              preshared_key: nil,
              allowed_ips: [],
              endpoint: nil,
              persistent_keepalive: nil
            }

            update_peer(state, owners, new_peer(keys, blank), change, now)

          :error ->
            {:error, :einval}
        end

      true ->
        update_peer(state, owners, existing, change, now)
    end
  end

  defp update_peer(state, owners, peer, change, now) do
    # Replaced before added to, whatever order the keys came in.
    peer = if change[:replace_allowed_ips], do: %{peer | allowed: []}, else: peer

    peer =
      Enum.reduce(change, peer, fn
        {:preshared_key, psk}, peer ->
          %{peer | psk: psk}

        {:endpoint, endpoint}, peer ->
          %{peer | endpoint: endpoint}

        {:persistent_keepalive, 0}, peer ->
          %{peer | persistent_keepalive: nil, persistent_at: nil}

        {:persistent_keepalive, seconds}, peer ->
          %{peer | persistent_keepalive: seconds * 1000}

        {:allowed_ips, prefixes}, peer ->
          %{peer | allowed: Enum.uniq(peer.allowed ++ Enum.map(prefixes, &Config.network/1))}

        _other, peer ->
          peer
      end)

    # An allowed IP belongs to one peer: given to this one, it leaves its
    # holder (as in wg).
    public = peer.keys.public

    {state, owners} =
      change
      |> Map.get(:allowed_ips, [])
      |> Enum.reduce({state, owners}, fn prefix, {state, owners} ->
        prefix = Config.network(prefix)

        state =
          case Map.fetch(owners, prefix) do
            {:ok, holder} when holder != public -> take_allowed(state, holder, prefix)
            _ -> state
          end

        {state, Map.put(owners, prefix, public)}
      end)

    state = put_peer(state, peer)

    # A persistent keepalive set now starts at once, as wg's does.
    state =
      if peer.persistent_keepalive != nil and Map.has_key?(change, :persistent_keepalive),
        do: send_keepalive(state, peer, now),
        else: state

    {:ok, state, owners}
  end

  defp take_allowed(state, holder, prefix) do
    case Map.fetch(state.peers, holder) do
      {:ok, p} -> put_peer(state, %{p | allowed: List.delete(p.allowed, prefix)})
      :error -> state
    end
  end

  defp rebuild_routes(state) do
    routes = for {public, peer} <- state.peers, prefix <- peer.allowed, do: {prefix, public}

    %{state | routes: AllowedIPs.new(routes)}
  end

  # The actions a step made, in order, and the state without them.
  defp done(state), do: {%{state | out: []}, Enum.reverse(state.out)}

  defp emit(state, action), do: %{state | out: [action | state.out]}

  defp peers(nil, []), do: {:ok, []}
  defp peers(nil, [_ | _]), do: {:error, :no_private_key}

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
      allowed: p.allowed_ips,
      endpoint: p.endpoint,
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

  # --- Device to network ---------------------------------------------------

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
      bytes = datagrams |> Enum.map(&elem(&1, 1)) |> Enum.sum()
      state = emit(state, {:send, peer.endpoint, datagrams})
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

  # --- Network to device ---------------------------------------------------

  defp receive_datagrams(state, source, datagrams, now) do
    {state, packets, peers} =
      Enum.reduce(datagrams, {state, [], []}, fn datagram, acc ->
        datagram(acc, source, datagram, now)
      end)

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
      {peer, confirmed?} = received_with(peer, slot, session, state, now)
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
  defp received_with(peer, :next, session, state, now) do
    peer = %{retire(peer, :previous) | previous: peer.current, current: session, next: nil}
    {handshake_complete(%{peer | asked_rekey: false}, state, now), true}
  end

  defp received_with(peer, slot, session, _state, _now),
    do: {Map.put(peer, slot, session), false}

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
  defp deliver(state, packets), do: emit(state, {:deliver, packets})

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
    cond do
      state.identity == nil ->
        drop(state, :handshake_refused)

      not Noise.mac1_valid?(message, state.identity.mac1_key) and type != 3 ->
        drop(state, :mac1)

      type == 3 ->
        cookie_reply(state, message, now)

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

            state
            |> emit({:send, source, [{[reply], byte_size(reply)}]})
            |> drop(:cookie_sent)

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
      emit(state, {:send, source, [{[response], byte_size(response)}]})
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
        |> handshake_complete(state, now)

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

  defp cookie_reply(state, <<_::32, receiver::32-little, _::binary>> = message, now) do
    with {:ok, public} <- Map.fetch(state.indices, receiver),
         peer = Map.fetch!(state.peers, public),
         %{state: %{index: ^receiver}, mac1: mac1} <- peer.handshake,
         {:ok, cookie} <- Noise.consume_cookie_reply(peer.keys, message, mac1) do
      put_peer(state, %{peer | cookie: {cookie, now}})
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
            Crypto.tai64n((now + state.wall_offset) * 1_000_000)
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
        emit(state, {:send, peer.endpoint, [{[message], byte_size(message)}]})
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

  # Under load while handshakes queue up (see `backlog/2`).
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
    collect_at = state.limiter_gc_at || now + RateLimiter.interval()
    state = %{state | limiter: limiter, limiter_gc_at: collect_at}
    if allowed, do: {:ok, state}, else: {:drop, state}
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

  defp handshake_complete(peer, state, now) do
    %{
      peer
      | retransmit_at: nil,
        handshakes: peer.handshakes + 1,
        last_handshake: now + state.wall_offset
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

  # --- State ---------------------------------------------------------------

  # A peer back into the state, its retired session and handshake indices
  # out of the index table.
  defp put_peer(state, %{retired: [_ | _] = retired} = peer) do
    put_peer(%{state | indices: Map.drop(state.indices, retired)}, %{peer | retired: []})
  end

  defp put_peer(state, peer), do: %{state | peers: Map.put(state.peers, peer.keys.public, peer)}

  defp drop(state, reason, count \\ 1),
    do: %{state | drops: Map.update(state.drops, reason, count, &(&1 + count))}
end

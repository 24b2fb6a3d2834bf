defmodule TundraWireGuard.ProtocolCoreTest do
  # The protocol without I/O (TundraWireGuard.Protocol), driven on a wire
  # and a clock of the test's own (TundraWireGuard.Sim): every timer and
  # limit at the protocol's own values, in milliseconds of real time.
  use ExUnit.Case, async: true

  import Bitwise

  alias TundraWireGuardTest.Sim

  # A session from A to B, made by A's first packet.
  defp session(opts \\ []) do
    sim = Sim.new([:a, :b], opts)
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b, "hello")])
    {[hello], sim} = Sim.take_delivered(sim, :b)
    assert hello == Sim.packet(sim, :a, :b, "hello")
    {_, sim} = Sim.take_sent(sim, :a)
    {_, sim} = Sim.take_sent(sim, :b)
    sim
  end

  defp transport?(<<4, 0, 0, 0, _::binary>>), do: true
  defp transport?(_), do: false

  defp initiations(sent), do: for({_, _, <<1, 0, 0, 0, _::binary>>} <- sent, do: 1) |> length()

  defp counter(<<4, 0, 0, 0, _receiver::32, counter::64-little, _::binary>>), do: counter
  defp receiver(<<4, 0, 0, 0, receiver::32-little, _::binary>>), do: receiver

  test "a first packet makes a session and then goes through, once" do
    sim = session()
    assert Sim.peer(sim, :a, :b).handshakes == 1
    assert Sim.peer(sim, :b, :a).handshakes == 1
    assert Sim.peer(sim, :a, :b).session
  end

  test "an initiation nobody answers is sent again every 5 s, with jitter, and given up at 90 s" do
    sim = %{Sim.new([:a, :b]) | hold: true}
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b)])
    sim = Sim.advance(sim, 120_000)
    {sent, _sim} = Sim.take_sent(sim, :a)
    times = initiations(sent)
    # One at once, then every 5 s (plus up to a third of a second) until
    # 90 s: 18 or 19 in all, and none after.
    assert times in 18..19, "#{times} initiations"
    assert Sim.peer(sim, :a, :b).staged == 0, "what waited is dropped once given up"
    sim = Sim.advance(sim, 60_000)
    {later, _} = Sim.take_sent(sim, :a)
    assert initiations(later) == times
  end

  test "the initiator makes a new session after 120 s of use" do
    sim = session()
    # Traffic every 10 s, both ways: no keepalives, no lost sessions.
    sim =
      Enum.reduce(1..13, sim, fn _, sim ->
        sim
        |> Sim.advance(10_000)
        |> Sim.from_device(:a, [Sim.packet(sim, :a, :b)])
        |> Sim.from_device(:b, [Sim.packet(sim, :b, :a)])
      end)

    assert Sim.peer(sim, :a, :b).handshakes == 2
  end

  test "and after rekey_after_messages packets" do
    sim = session(timers: [rekey_after_messages: 10])
    # Initiations are at least rekey_timeout (5 s) apart.
    sim = Sim.advance(sim, 5_001)
    packets = for i <- 1..12, do: Sim.packet(sim, :a, :b, "#{i}")
    sim = Sim.from_device(sim, :a, packets)
    assert Sim.peer(sim, :a, :b).handshakes == 2
  end

  test "no packet goes out under a session past reject_after_messages, counting each of a batch" do
    sim = session(timers: [reject_after_messages: 20, rekey_after_messages: 1_000])
    # The session has sent one packet; a batch of 25 would pass 20.
    sim = %{sim | hold: true}
    sim = Sim.from_device(sim, :a, for(i <- 1..25, do: Sim.packet(sim, :a, :b, "#{i}")))
    {sent, sim} = Sim.take_sent(sim, :a)
    old = for {_, _, d} <- sent, transport?(d), do: counter(d)
    assert Enum.all?(old, &(&1 < 20)), "counters #{inspect(old)}"
    # Single packets up to the limit, and not one past it.
    sim = Sim.from_device(sim, :a, for(i <- 1..30, do: Sim.packet(sim, :a, :b, "#{i}")))
    {sent, _sim} = Sim.take_sent(sim, :a)
    counters = for {_, _, d} <- sent, transport?(d), do: counter(d)
    assert Enum.all?(counters, &(&1 < 20)), "counters #{inspect(counters)}"
  end

  test "no packet goes out under a session past reject_after_time (180 s)" do
    sim = %{session() | hold: true}
    sim = Sim.advance(sim, 180_000)
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b)])
    {sent, _} = Sim.take_sent(sim, :a)
    assert Enum.filter(sent, fn {_, _, d} -> transport?(d) end) == []
    refute Sim.peer(sim, :a, :b).session
  end

  test "keys are zeroed after three times reject_after_time without a new session" do
    sim = %{session() | hold: true}
    sim = Sim.advance(sim, 3 * 180_000 + 1_000)
    a = sim.ends.a
    peer = a.peers[Sim.public(sim, :b)]
    assert {peer.current, peer.previous, peer.next} == {nil, nil, nil}
    assert a.indices == %{}
  end

  test "one-way traffic is answered by a keepalive after 10 s" do
    sim = session()
    {_, sim} = Sim.take_sent(sim, :b)
    sim = Sim.advance(sim, 9_000)
    {none, sim} = Sim.take_sent(sim, :b)
    assert none == []
    sim = Sim.advance(sim, 1_500)
    {[{:a, _, keepalive}], sim} = Sim.take_sent(sim, :b)
    assert transport?(keepalive)
    # 32 bytes: a header and an empty, authenticated payload.
    assert byte_size(keepalive) == 32
    assert Sim.peer(sim, :a, :b).keepalives_received == 1
  end

  test "a persistent keepalive starts the handshake and then keeps the path open" do
    sim = Sim.new([:a, :b], keepalive: %{a: 25})
    # At start, A speaks first: a handshake, and its keepalive.
    assert Sim.peer(sim, :a, :b).handshakes == 1
    {_, sim} = Sim.take_sent(sim, :a)
    sim = Sim.advance(sim, 100_000)
    {sent, _} = Sim.take_sent(sim, :a)
    keepalives = for {_, _, d} <- sent, transport?(d), byte_size(d) == 32, do: d
    # Every 25 s while A sends nothing else (and a fresh session, at 120 s,
    # is not due yet).
    assert length(keepalives) == 4, "#{length(keepalives)} keepalives in 100 s"
  end

  test "after a new session, datagrams sealed under the old one are still accepted, both ways" do
    sim = session(timers: [rekey_after_messages: 3])
    # A datagram each way under the first session, held back on the wire.
    sim = %{sim | hold: true}
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b, "late to b")])
    sim = Sim.from_device(sim, :b, [Sim.packet(sim, :b, :a, "late to a")])
    late = for {to, from, d} <- sim.wire, transport?(d), do: {to, from, d}
    assert [{:b, _, to_b}, {:a, _, _}] = late
    first_session = receiver(to_b)
    sim = %{sim | hold: false, wire: []}
    # Initiations are at least rekey_timeout (5 s) apart; then enough
    # traffic for a new session, which B confirms.
    sim = Sim.advance(sim, 5_001)
    sim = Sim.from_device(sim, :a, for(i <- 1..4, do: Sim.packet(sim, :a, :b, "#{i}")))
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b, "new")])
    assert Sim.peer(sim, :a, :b).handshakes >= 2
    {delivered, sim} = Sim.take_delivered(sim, :b)
    assert Sim.packet(sim, :a, :b, "new") in delivered
    newest = List.last(for {:a, {:b, _, d}} <- sim.sent, transport?(d), do: d)
    assert receiver(newest) != first_session
    {_, sim} = Sim.take_delivered(sim, :a)
    # The held ones arrive now: still taken, as the previous session's,
    # by the responder (B) and by the initiator (A).
    sim =
      Enum.reduce(late, sim, fn {to, from, d}, sim ->
        Sim.step(sim, to, &TundraWireGuard.Protocol.from_network(&1, from, [d], sim.now))
      end)

    {to_b, _} = Sim.take_delivered(sim, :b)
    assert to_b == [Sim.packet(sim, :a, :b, "late to b")]
    {to_a, _} = Sim.take_delivered(sim, :a)
    assert to_a == [Sim.packet(sim, :b, :a, "late to a")]
  end

  test "a packet from one peer with another peer's source address is dropped" do
    sim = Sim.new([:a, :b, :c])
    # A session from C to B first, so that B knows C.
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b)])
    {[_], sim} = Sim.take_delivered(sim, :b)
    # A (a peer of B) sends a packet whose source is C's address.
    forged = Sim.ipv4(Sim.tunnel(3), Sim.tunnel(2), "from c, really a")
    sim = Sim.from_device(sim, :a, [forged])
    {delivered, sim} = Sim.take_delivered(sim, :b)
    assert delivered == []
    assert Sim.drops(sim, :b)[:source_not_allowed] == 1
    # A source no peer owns, likewise.
    stranger = Sim.ipv4({10, 99, 99, 99}, Sim.tunnel(2), "nobody's")
    sim = Sim.from_device(sim, :a, [stranger])
    assert Sim.drops(sim, :b)[:source_not_allowed] == 2
  end

  test "a handshake response with a wrong mac1 is dropped and makes no session" do
    sim = %{Sim.new([:a, :b]) | hold: true}
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b)])
    [{:b, from, initiation}] = sim.wire
    sim = %{sim | wire: []}

    sim =
      Sim.step(sim, :b, &TundraWireGuard.Protocol.from_network(&1, from, [initiation], sim.now))

    [{:a, b_from, response}] = sim.wire
    sim = %{sim | wire: []}
    # mac1 is the 16 bytes before the last 16.
    at = byte_size(response) - 32
    <<head::binary-size(at), byte, tail::binary>> = response
    bad = <<head::binary, bxor(byte, 1), tail::binary>>
    sim = Sim.step(sim, :a, &TundraWireGuard.Protocol.from_network(&1, b_from, [bad], sim.now))
    assert Sim.drops(sim, :a)[:mac1] == 1
    refute Sim.peer(sim, :a, :b).session
    assert Sim.peer(sim, :a, :b).handshakes == 0
    # The right one still works.
    sim =
      Sim.step(sim, :a, &TundraWireGuard.Protocol.from_network(&1, b_from, [response], sim.now))

    assert Sim.peer(sim, :a, :b).handshakes == 1
  end

  test "under load a handshake needs a cookie, which the initiator comes back with" do
    sim = Sim.new([:a, :b], timers_for: %{b: [handshake_load: 0]})
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b)])
    assert Sim.drops(sim, :b)[:cookie_sent] == 1
    assert Sim.peer(sim, :a, :b).handshakes == 0
    # The next attempt (after 5 s) carries the cookie's mac2.
    sim = Sim.advance(sim, 5_500)
    assert Sim.peer(sim, :a, :b).handshakes == 1
    {delivered, _} = Sim.take_delivered(sim, :b)
    assert length(delivered) == 1
  end

  test "under load each source gets a burst of 5 and 20 a second" do
    sim = Sim.new([:a, :b], timers: [handshake_load: 0])
    b = sim.ends.b
    # Initiations from a stranger, with a valid mac1 and (after a cookie
    # reply) mac2, from one address.
    alias TundraWireGuard.{Crypto, Noise}
    {_, private} = Crypto.generate()
    stranger = Noise.identity(private)
    {:ok, keys} = Noise.peer_keys(stranger, b.identity.public)
    source = {{192, 0, 2, 7}, 4444}

    initiation = fn cookie ->
      stamp = Crypto.tai64n(System.os_time(:nanosecond))
      {:ok, body, _} = Noise.initiation(stranger, keys, 5, Crypto.generate(), stamp)
      Noise.seal_macs(body, keys.mac1_key, cookie)
    end

    {message, mac1} = initiation.(nil)

    {b, [{:send, ^source, [{reply, _}]}]} =
      TundraWireGuard.Protocol.from_network(b, source, [message], 0)

    {:ok, cookie} = Noise.consume_cookie_reply(keys, IO.iodata_to_binary(reply), mac1)
    messages = for _ <- 1..30, do: elem(initiation.(cookie), 0)
    {b, _} = TundraWireGuard.Protocol.from_network(b, source, messages, 0)
    drops = TundraWireGuard.Protocol.info(b, 0).drops
    # Five got through to the (refused: not a peer) handshake, the rest not.
    assert drops[:handshake_refused] == 5
    assert drops[:rate_limited] == 25
    # A second later, 20 more.
    {b, _} = TundraWireGuard.Protocol.from_network(b, source, messages, 1_000)
    assert TundraWireGuard.Protocol.info(b, 1_000).drops[:handshake_refused] == 10
    # The table forgets the source once it has been idle a second.
    assert TundraWireGuard.Protocol.wake_at(b) != nil
    {b, []} = TundraWireGuard.Protocol.tick(b, 3_000)
    assert TundraWireGuard.RateLimiter.size(b.limiter) == 0
  end

  test "roaming: a peer's endpoint is where its last authentic datagram came from" do
    sim = session()
    moved = {{10, 0, 0, 77}, 4_000}
    sim = %{sim | hold: true}
    sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b, "from elsewhere")])
    [{:b, _from, datagram}] = sim.wire
    sim = %{sim | wire: [], hold: false}

    sim =
      Sim.step(sim, :b, &TundraWireGuard.Protocol.from_network(&1, moved, [datagram], sim.now))

    assert Sim.peer(sim, :b, :a).endpoint == moved
    # A forged datagram from elsewhere moves nothing.
    forged = <<4, 0, 0, 0, 0::32, 99::64-little, :crypto.strong_rand_bytes(40)::binary>>
    elsewhere = {{10, 0, 0, 88}, 5_000}

    sim =
      Sim.step(sim, :b, &TundraWireGuard.Protocol.from_network(&1, elsewhere, [forged], sim.now))

    assert Sim.peer(sim, :b, :a).endpoint == moved
  end

  describe "configuration changes (the UAPI's set)" do
    alias TundraWireGuard.Protocol

    defp keyless,
      do: %{private_key: nil, listen_port: nil, addresses: [], mtu: 1420, peers: []}

    defp key, do: elem(:crypto.generate_key(:ecdh, :x25519), 0)

    defp allowed(state) do
      Map.new(Protocol.configuration(state).peers, &{&1.public_key, &1.allowed_ips})
    end

    test "without a private key: no peers, no handshakes; the key comes, then the peers" do
      {:ok, state} = Protocol.new(keyless(), now: 0)
      assert Protocol.configuration(state).private_key == nil
      assert {:error, :einval} = Protocol.configure(state, %{peers: [%{public_key: key()}]}, 0)

      initiation = <<1, 0, 0, 0>> <> :crypto.strong_rand_bytes(144)
      {state, []} = Protocol.from_network(state, {{10, 0, 0, 1}, 1}, [initiation], 0)
      assert Protocol.info(state, 0).drops == %{handshake_refused: 1}

      {private, _} =
        :crypto.generate_key(:ecdh, :x25519) |> then(fn {pub, priv} -> {priv, pub} end)

      peer = key()

      change = %{
        private_key: private,
        peers: [%{public_key: peer, allowed_ips: [{{10, 1, 0, 0}, 16}]}]
      }

      assert {:ok, state, []} = Protocol.configure(state, change, 0)
      assert Protocol.configuration(state).private_key == private
      assert allowed(state) == %{peer => [{{10, 1, 0, 0}, 16}]}
      # A key of zeros clears the key only while there are no peers.
      assert {:error, :einval} =
               Protocol.configure(state, %{private_key: <<0::256>>, peers: []}, 0)
    end

    test "an allowed IP given to a peer leaves its holder, in one change or across changes" do
      sim = session()
      [p1, p2, p3] = for _ <- 1..3, do: key()
      net = fn n -> {{10, 50, n, 0}, 24} end

      change = %{
        peers: [
          %{public_key: p1, allowed_ips: [net.(1), net.(2), net.(1)]},
          %{public_key: p2, allowed_ips: [net.(2), net.(3)]}
        ]
      }

      {:ok, a, _} = Protocol.configure(sim.ends[:a], change, sim.now)
      # Given twice to p1, held once; net 2 moved to p2 within the change.
      assert allowed(a)[p1] == [net.(1)]
      assert allowed(a)[p2] == [net.(2), net.(3)]

      {:ok, a, _} =
        Protocol.configure(a, %{peers: [%{public_key: p3, allowed_ips: [net.(3), net.(1)]}]}, 0)

      assert allowed(a)[p1] == []
      assert allowed(a)[p2] == [net.(2)]
      assert allowed(a)[p3] == [net.(3), net.(1)]
      # A removed holder is no obstacle.
      {:ok, a, _} = Protocol.configure(a, %{peers: [%{public_key: p3, remove: true}]}, 0)

      {:ok, a, _} =
        Protocol.configure(a, %{peers: [%{public_key: p1, allowed_ips: [net.(3)]}]}, 0)

      assert allowed(a)[p1] == [net.(3)]
      # The session with b, untouched by all of it, still carries packets.
      sim = %{sim | ends: %{sim.ends | a: a}}
      assert Sim.peer(sim, :a, :b).session
      sim = Sim.from_device(sim, :a, [Sim.packet(sim, :a, :b, "still")])
      assert {[_still], _} = Sim.take_delivered(sim, :b)
      assert Sim.peer(sim, :a, :b).handshakes == 1
    end

    test "a change of many peers is work linear in their number" do
      # Counted in reductions (the VM's count, not a clock): 4 times the
      # peers must cost about 4 times the work; a look at every peer for
      # each peer's allowed IPs cost about 16 times.
      {private, _} =
        :crypto.generate_key(:ecdh, :x25519) |> then(fn {pub, priv} -> {priv, pub} end)

      {:ok, state} = Protocol.new(%{keyless() | private_key: private}, now: 0)

      work =
        for n <- [250, 1_000] do
          peers =
            for i <- 1..n,
                do: %{
                  public_key: key(),
                  allowed_ips: [{{10, 60 + div(i, 250), rem(i, 250), 1}, 32}]
                }

          {:reductions, before} = Process.info(self(), :reductions)
          {:ok, _, _} = Protocol.configure(state, %{peers: peers}, 0)
          {:reductions, later} = Process.info(self(), :reductions)
          later - before
        end

      [small, large] = work
      assert large < 7 * small, "work #{inspect(work)}"
    end
  end
end

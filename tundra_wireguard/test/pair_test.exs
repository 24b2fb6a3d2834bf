defmodule TundraWireGuard.PairTest do
  # Two Elixir WireGuard interfaces, each device in a namespace of its own,
  # their UDP sockets on this namespace's loopback (through a recording
  # relay where a test needs the datagrams): the protocol's timers
  # (shortened), roaming, cookies and hostile input.
  use ExUnit.Case, async: false

  import Bitwise
  import TundraWireGuardTest.Lab

  alias TundraWireGuard, as: WireGuard

  @moduletag :privileged
  @moduletag timeout: 120_000
  @loopback {127, 0, 0, 1}

  # A in namespace :ns_a at 10.91.N.1, fd91:N::1; B likewise at .2/::2.
  # B listens; A knows B's endpoint (the relay's with `relay: true`).
  defp pair(opts \\ []) do
    n = rem(System.unique_integer([:positive]), 200) + 1
    ns_a = netns()
    ns_b = netns()
    {ka, pa} = keypair()
    {kb, pb} = keypair()
    a_addr = "10.91.#{n}.1"
    b_addr = "10.91.#{n}.2"
    a6 = "fd91:#{n}::1"
    b6 = "fd91:#{n}::2"

    b_conf =
      conf(kb, ["#{b_addr}/24", "#{b6}/64"], [
        %{public: pa, allowed: ["#{a_addr}/32", "#{a6}/128"], keepalive: opts[:b_keepalive]}
      ])

    b =
      start_interface(b_conf,
        netns: ns_b,
        name: "wgb",
        timers: opts[:b_timers] || opts[:timers] || []
      )

    b_port = WireGuard.info(b).listen_port

    # A's port must be known to the relay before A sends: pick it here.
    a_port = free_port()

    {relay, endpoint} =
      if opts[:relay] do
        {relay, relay_port} = relay(@loopback, {@loopback, a_port}, {@loopback, b_port})
        {relay, "127.0.0.1:#{relay_port}"}
      else
        {nil, "127.0.0.1:#{b_port}"}
      end

    a_conf =
      conf(
        ka,
        ["#{a_addr}/24", "#{a6}/64"],
        [
          %{
            public: pb,
            allowed: ["#{b_addr}/32", "#{b6}/128"],
            endpoint: endpoint,
            keepalive: opts[:a_keepalive]
          }
        ],
        port: a_port
      )

    a =
      start_interface(a_conf,
        netns: ns_a,
        name: "wga",
        timers: opts[:a_timers] || opts[:timers] || []
      )

    %{
      a: a,
      b: b,
      ns_a: ns_a,
      ns_b: ns_b,
      pa: pa,
      pb: pb,
      a_addr: a_addr,
      b_addr: b_addr,
      a6: a6,
      b6: b6,
      relay: relay
    }
  end

  test "ping both ways over IPv4 and IPv6, a full-MTU packet, TCP both ways" do
    p = pair()
    assert_tunnel(p, 8_000_000)
    assert peer_info(p.a, p.pb).handshakes == 1
  end

  test "rekeys under traffic without losing the TCP stream, and refuses expired keys" do
    # A new handshake after 1 s (the initiator, when sending), keys
    # refused after 2.5 s: a stream of 5 s needs several sessions.
    timers = [
      rekey_after_time: 1_000,
      reject_after_time: 2_500,
      keepalive_timeout: 400,
      rekey_timeout: 300
    ]

    p = pair(timers: timers, relay: true)
    {sent, received} = tcp_transfer(p.ns_a, p.ns_b, p.b_addr, 6_000_000, chunk: 30_000, pause: 25)
    assert sent == received
    assert peer_info(p.a, p.pb).handshakes >= 3
    assert peer_info(p.b, p.pa).handshakes >= 3
    # Retired sessions leave the index table: at most current, previous,
    # next and a handshake under way.
    assert map_size(:sys.get_state(p.a).protocol.indices) <= 4
    assert map_size(:sys.get_state(p.b).protocol.indices) <= 4

    # A transport datagram of the first session, long expired: refused.
    [old | _] = for {:to_b, <<4, _::binary>> = d} <- captured(p.relay), do: d
    before = WireGuard.info(p.b).drops
    inject(p.relay, :to_b, old)

    assert eventually(fn ->
             drops = WireGuard.info(p.b).drops

             Map.get(drops, :expired, 0) + Map.get(drops, :unknown_index, 0) >
               Map.get(before, :expired, 0) + Map.get(before, :unknown_index, 0)
           end)

    # And new traffic makes a new session.
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 2)
    assert peer_info(p.a, p.pb).session
  end

  test "a new session after rekey_after_messages, and none used past reject_after_messages" do
    # Rekeying after 300 messages (each side counts what it sends)...
    # (A new initiation waits rekey_timeout after the last: the stream
    # is paced to last a few of those.)
    p = pair(timers: [rekey_after_messages: 300, rekey_timeout: 100])
    {sent, received} = tcp_transfer(p.ns_a, p.ns_b, p.b_addr, 3_000_000, chunk: 16_000, pause: 10)
    assert sent == received
    assert peer_info(p.a, p.pb).handshakes >= 3

    # ...and, with no rekeying before, a session refused for sending
    # after 1,000 messages: the packets wait for a new handshake.
    p = pair(timers: [reject_after_messages: 1_000, rekey_timeout: 100])
    {sent, received} = tcp_transfer(p.ns_a, p.ns_b, p.b_addr, 3_000_000, chunk: 16_000, pause: 10)
    assert sent == received
    assert peer_info(p.a, p.pb).handshakes >= 2
  end

  test "an initiation nobody answers is retried, then given up after rekey_attempt_time" do
    # Retries every 200 ms (plus jitter) for 3 s: ten or more on an idle
    # machine, so three come also when a loaded one delays the timers.
    # (protocol_core_test checks the exact times on a simulated clock.)
    timers = [rekey_timeout: 200, rekey_attempt_time: 3_000]
    p = pair(timers: timers, relay: true)
    # The relay swallows everything: B never hears of A.
    forward(p.relay, false)
    initiations = fn -> length(for {:to_b, <<1, _::binary>>} <- captured(p.relay), do: 1) end

    # A ping starts the handshake; the initiation goes out again and again.
    _ = ping(p.ns_a, p.b_addr, count: 1, wait: 1)
    assert eventually(fn -> initiations.() >= 3 end, 5_000)

    # After rekey_attempt_time A stops (and drops what waited).
    assert eventually(fn -> peer_info(p.a, p.pb).staged == 0 end, 10_000)
    settled = initiations.()
    Process.sleep(1_000)
    assert initiations.() == settled
    refute peer_info(p.a, p.pb).session
  end

  test "keys are zeroed after three times the reject time without a handshake" do
    p =
      pair(
        timers: [
          reject_after_time: 500,
          rekey_after_time: 300,
          rekey_timeout: 200,
          keepalive_timeout: 200
        ]
      )

    assert {0, _} = ping(p.ns_a, p.b_addr, count: 1)
    # Unusable after the reject time...
    assert eventually(fn -> not peer_info(p.a, p.pb).session end, 5_000)
    assert eventually(fn -> not peer_info(p.b, p.pa).session end, 5_000)
    # The session's index answers while it lives, and is forgotten after.
    assert eventually(fn -> :sys.get_state(p.a).protocol.indices == %{} end, 5_000)
    assert eventually(fn -> :sys.get_state(p.b).protocol.indices == %{} end, 5_000)
  end

  test "keepalive: one-way traffic is answered by a keepalive" do
    p = pair(timers: [keepalive_timeout: 300])
    # A speaks first (B has no endpoint for it until then).
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 1)

    # UDP from B to A only, to a socket in A's namespace that never answers.
    {:ok, sink} =
      :gen_udp.open(9999, [:binary, ip: ip(p.a_addr), netns: "/var/run/netns/#{p.ns_a}"])

    {:ok, source} = :gen_udp.open(0, [:binary, netns: "/var/run/netns/#{p.ns_b}"])
    sent_before = peer_info(p.a, p.pb).keepalives_sent
    received_before = peer_info(p.b, p.pa).keepalives_received
    for _ <- 1..5, do: :ok = :gen_udp.send(source, ip(p.a_addr), 9999, "one way")

    assert eventually(
             fn -> peer_info(p.a, p.pb).keepalives_sent > sent_before end,
             5_000
           )

    assert eventually(
             fn -> peer_info(p.b, p.pa).keepalives_received > received_before end,
             5_000
           )

    :gen_udp.close(sink)
    :gen_udp.close(source)
  end

  test "a persistent keepalive starts the handshake and keeps packets flowing" do
    p = pair(a_keepalive: 1)
    assert eventually(fn -> peer_info(p.a, p.pb).handshakes == 1 end, 5_000)
    count = peer_info(p.b, p.pa).keepalives_received
    # One a second, with nothing else sent: two more come (waited for,
    # since a loaded machine may delay them).
    assert eventually(fn -> peer_info(p.b, p.pa).keepalives_received >= count + 2 end, 10_000)
  end

  test "roaming: the initiator's UDP port changes mid-stream, the stream goes on" do
    p = pair()
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 1)

    midway = fn ->
      {:ok, port} = WireGuard.rebind(p.a, 0)
      send(self(), {:new_port, port})
    end

    {sent, received} =
      tcp_transfer(p.ns_a, p.ns_b, p.b_addr, 4_000_000, chunk: 20_000, pause: 5, midway: midway)

    assert sent == received
    assert_received {:new_port, port}
    assert peer_info(p.b, p.pa).endpoint == {@loopback, port}
  end

  test "under load the responder asks for a cookie, and the initiator comes back with it" do
    # B is always under load: every handshake needs a valid mac2.
    p = pair(b_timers: [handshake_load: 0], a_timers: [rekey_timeout: 300])
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 2, wait: 5)
    assert Map.get(WireGuard.info(p.b).drops, :cookie_sent, 0) >= 1
    assert peer_info(p.a, p.pb).handshakes == 1
  end

  test "a hundred handshakes a second are no load: no peer is asked for a cookie" do
    # Load is a backlog of handshakes waiting, not a count: a stranger's
    # 100 valid-mac1 initiations a second (15 KB/s) are served at once.
    p = pair()
    b_info = WireGuard.info(p.b)
    alias TundraWireGuard.{Crypto, Noise}
    {_, stranger_private} = Crypto.generate()
    stranger = Noise.identity(stranger_private)
    {:ok, b_keys} = Noise.peer_keys(stranger, b_info.public_key)
    {:ok, socket} = :gen_udp.open(0, [:binary, ip: @loopback, active: false])

    sender =
      Task.async(fn ->
        for _ <- 1..200 do
          stamp = Crypto.tai64n(System.os_time(:nanosecond))
          {:ok, body, _} = Noise.initiation(stranger, b_keys, 5, Crypto.generate(), stamp)
          {message, _} = Noise.seal_macs(body, b_keys.mac1_key, nil)
          :ok = :gen_udp.send(socket, @loopback, b_info.listen_port, message)
          Process.sleep(10)
        end
      end)

    assert eventually(fn -> Map.get(WireGuard.info(p.b).drops, :handshake_refused, 0) >= 20 end)
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 2)
    Task.await(sender, 30_000)
    assert Map.get(WireGuard.info(p.b).drops, :cookie_sent, 0) == 0
    assert peer_info(p.a, p.pb).handshakes == 1
  end

  test "a flood of handshakes from a stranger is rate-limited per address" do
    p = pair(b_timers: [handshake_load: 0])
    b_info = WireGuard.info(p.b)
    alias TundraWireGuard.{Crypto, Noise}

    {_, stranger_private} = Crypto.generate()
    stranger = Noise.identity(stranger_private)
    {:ok, b_keys} = Noise.peer_keys(stranger, b_info.public_key)
    {:ok, socket} = :gen_udp.open(0, [:binary, ip: @loopback, active: false])

    initiation = fn cookie ->
      stamp = Crypto.tai64n(System.os_time(:nanosecond))
      {:ok, body, _} = Noise.initiation(stranger, b_keys, 5, Crypto.generate(), stamp)
      Noise.seal_macs(body, b_keys.mac1_key, cookie)
    end

    # Without a cookie: a cookie reply, which the stranger can open.
    {message, mac1} = initiation.(nil)
    :ok = :gen_udp.send(socket, @loopback, b_info.listen_port, message)
    {:ok, {_, _, reply}} = :gen_udp.recv(socket, 0, 5_000)
    {:ok, cookie} = Noise.consume_cookie_reply(b_keys, reply, mac1)

    # With it: at most a burst of 5 and 20 a second get through to the
    # (expensive) handshake; the rest are dropped.
    for _ <- 1..100 do
      {message, _} = initiation.(cookie)
      :ok = :gen_udp.send(socket, @loopback, b_info.listen_port, message)
    end

    assert eventually(fn ->
             drops = WireGuard.info(p.b).drops
             Map.get(drops, :rate_limited, 0) + Map.get(drops, :handshake_refused, 0) >= 100
           end)

    assert Map.get(WireGuard.info(p.b).drops, :rate_limited, 0) >= 50
    # A stranger's initiation is refused (it is not a peer), and no
    # response goes back to it.
    assert {:error, :timeout} = :gen_udp.recv(socket, 0, 200)

    # B's peer has no timer running (no endpoint, no keepalive), yet the
    # limiter forgets the stranger once it has been idle a second.
    protocol = :sys.get_state(p.b).protocol
    timers = [:zero_at, :retransmit_at, :keepalive_at, :new_handshake_at, :persistent_at]
    assert for({_, peer} <- protocol.peers, t <- timers, peer[t] != nil, do: t) == []
    assert TundraWireGuard.RateLimiter.size(protocol.limiter) == 1

    assert eventually(
             fn ->
               TundraWireGuard.RateLimiter.size(:sys.get_state(p.b).protocol.limiter) == 0
             end,
             5_000
           )
  end

  test "a flood of junk initiations at a 1 Gbit/s link's rate leaves a peer's traffic flowing" do
    # 148-byte initiations on a 1 Gbit/s Ethernet link: 148 + 8 (UDP) +
    # 20 (IPv4) + 18 (Ethernet header and FCS) + 20 (preamble and gap) =
    # 214 bytes on the wire, 584,000 a second; from 256 source ports, so
    # that the kernel coalesces none of them. The flooder is built first:
    # a first build (a clean checkout, a loaded machine) takes longer than
    # the wait for its effect below.
    flooder = flooder()
    p = pair()
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 1)
    b_port = WireGuard.info(p.b).listen_port

    flood =
      Task.async(fn ->
        System.cmd(flooder, ~w(flood --from 127.0.0.1 --to 127.0.0.1 --port #{b_port}
             --rate 584000 --seconds 8 --flows 256))
      end)

    assert eventually(fn -> Map.get(WireGuard.info(p.b).drops, :mac1, 0) > 10_000 end)
    {_, output} = ping(p.ns_a, p.b_addr, count: 20, args: ["-i", "0.1"])
    {flooded, 0} = Task.await(flood, 30_000)
    [_, received] = Regex.run(~r/(\d+) received/, output)
    assert String.to_integer(received) >= 18, "#{output}\n#{flooded}"
    # Every junk message cost only the cheap check.
    drops = WireGuard.info(p.b).drops
    assert Map.get(drops, :handshake_refused, 0) == 0, inspect(drops)
  end

  # tundra_bench's flood command, built (once) from this repository.
  defp flooder do
    bench = Path.expand("../../native", __DIR__)
    {_, 0} = System.cmd("cargo", ~w(build --quiet --release -p tundra_bench), cd: bench)
    Path.join(bench, "target/release/tundra_bench")
  end

  test "random and mutated datagrams never crash the receiver, reach its device, or get an answer" do
    p = pair(relay: true)
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 3)
    {sent, received} = tcp_transfer(p.ns_a, p.ns_b, p.b_addr, 200_000)
    assert sent == received
    real = for {:to_b, d} <- captured(p.relay), do: d
    assert Enum.any?(real, &match?(<<4, _::binary>>, &1))

    # From now on the relay only records: nothing legitimate reaches B,
    # so B's device must get nothing more once what was on its way has
    # arrived, and B must answer none of what follows. (B may still send
    # a keepalive of its own, on its timer: that is not an answer.)
    forward(p.relay, false)
    rx_before = settled(fn -> rx_packets(p.ns_b, "wgb") end)
    seen_before = length(captured(p.relay))
    drops_before = WireGuard.info(p.b).drops |> Map.values() |> Enum.sum()

    injected = for _ <- 1..2_000, do: hostile(real)
    for datagram <- injected, do: inject(p.relay, :to_b, datagram)
    # The relay handles its messages in order: once it answers, all sent.
    _ = captured(p.relay)

    # Every one of them dropped (and counted as such).
    assert eventually(fn ->
             drops = WireGuard.info(p.b).drops |> Map.values() |> Enum.sum()
             drops >= drops_before + 2_000
           end)

    assert Process.alive?(p.b)
    assert rx_packets(p.ns_b, "wgb") == rx_before

    answers =
      for {:to_a, <<type, _::binary>>} <- Enum.drop(captured(p.relay), seen_before),
          type in [2, 3],
          do: type

    # No handshake response (a replayed initiation is old). A cookie reply
    # only to a real handshake message replayed, whose mac1 is right,
    # while the flood keeps B under load, as the protocol says.
    replayed =
      Enum.count(injected, &(match?(<<t, _::binary>> when t in [1, 2], &1) and &1 in real))

    assert Enum.count(answers, &(&1 == 2)) == 0
    assert Enum.count(answers, &(&1 == 3)) <= replayed

    # The real session still works.
    forward(p.relay, true)
    assert {0, _} = ping(p.ns_a, p.b_addr, count: 2)
  end

  # What `read.()` gives once it gives the same twice, 200 ms apart.
  defp settled(read, last \\ nil) do
    now = read.()

    if now == last do
      now
    else
      Process.sleep(200)
      settled(read, now)
    end
  end

  # A datagram a hostile sender could make: random bytes, random bodies
  # behind real message types, and real datagrams replayed, with bits
  # flipped, cut short or made longer.
  defp hostile(real) do
    original = Enum.random(real)

    case :rand.uniform(7) do
      1 ->
        :crypto.strong_rand_bytes(:rand.uniform(1500) - 1)

      2 ->
        type = Enum.random(1..4)
        size = Enum.random([148, 92, 64, 32, 33, 1452, :rand.uniform(200)])
        <<type, 0, 0, 0, :crypto.strong_rand_bytes(max(size - 4, 0))::binary>>

      3 ->
        original

      4 ->
        Enum.reduce(1..:rand.uniform(8), original, fn _, d ->
          flip(d, :rand.uniform(bit_size(d)) - 1)
        end)

      5 ->
        binary_part(original, 0, :rand.uniform(byte_size(original)) - 1)

      6 ->
        original <> :crypto.strong_rand_bytes(:rand.uniform(64))

      7 ->
        # A real header (live index, fresh counter) and a forged body.
        <<4, 0, 0, 0, index::binary-4, _::binary>> = ensure_transport(original, real)

        <<4, 0, 0, 0, index::binary, :rand.uniform(1 <<< 40)::64-little,
          :crypto.strong_rand_bytes(16 + :rand.uniform(200))::binary>>
    end
  end

  defp ensure_transport(<<4, _::binary>> = d, _real), do: d
  defp ensure_transport(_, real), do: Enum.find(real, &match?(<<4, _::binary>>, &1))

  defp flip(data, bit) do
    <<before::bitstring-size(bit), b::1, rest::bitstring>> = data
    <<before::bitstring, 1 - b::1, rest::bitstring>>
  end
end

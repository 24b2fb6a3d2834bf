defmodule TundraWireGuard.ProtocolTest do
  # The handshake, replay window, cryptokey routing and configuration
  # format, without devices.
  use ExUnit.Case, async: true

  import Bitwise

  alias TundraWireGuard.{AllowedIPs, Config, Crypto, Noise, Replay}

  defp identities do
    {_, a} = Crypto.generate()
    {_, b} = Crypto.generate()
    alice = Noise.identity(a)
    bob = Noise.identity(b)
    {:ok, bob_seen_by_alice} = Noise.peer_keys(alice, bob.public)
    {:ok, alice_seen_by_bob} = Noise.peer_keys(bob, alice.public)
    {alice, bob, bob_seen_by_alice, alice_seen_by_bob}
  end

  defp handshake(psk_initiator, psk_responder) do
    {alice, bob, bob_keys, alice_keys} = identities()
    stamp = Crypto.tai64n(System.os_time(:nanosecond))
    {:ok, body, state} = Noise.initiation(alice, bob_keys, 11, Crypto.generate(), stamp)
    {initiation, mac1} = Noise.seal_macs(body, bob_keys.mac1_key, nil)
    assert byte_size(initiation) == 148
    assert Noise.mac1_valid?(initiation, bob.mac1_key)
    assert Noise.mac1(initiation) == mac1

    lookup = fn public ->
      if public == alice.public, do: {:ok, alice_keys.static_shared}, else: :error
    end

    {:ok, consumed} = Noise.consume_initiation(bob, initiation, lookup)
    assert consumed.peer == alice.public
    assert consumed.timestamp == stamp
    assert consumed.remote_index == 11

    {:ok, body, bob_session} = Noise.response(consumed, psk_responder, 22, Crypto.generate())
    {response, _} = Noise.seal_macs(body, alice_keys.mac1_key, nil)
    assert byte_size(response) == 92
    assert Noise.mac1_valid?(response, alice.mac1_key)
    {Noise.consume_response(alice, state, psk_initiator, response), bob_session}
  end

  describe "the handshake" do
    test "both ends derive each other's transport keys, with and without a preshared key" do
      for psk <- [<<0::256>>, :crypto.strong_rand_bytes(32)] do
        {{:ok, alice_session}, bob_session} = handshake(psk, psk)
        assert alice_session.send == bob_session.recv
        assert alice_session.recv == bob_session.send
        assert alice_session.send != alice_session.recv
        assert alice_session.remote_index == 22
        assert bob_session.remote_index == 11
      end
    end

    test "a preshared key that differs makes the response fail" do
      assert elem(handshake(<<1::256>>, <<2::256>>), 0) == :error
    end

    test "an initiation to someone else, or from a stranger, is refused" do
      {alice, bob, bob_keys, _alice_keys} = identities()
      {_, carol_private} = Crypto.generate()
      carol = Noise.identity(carol_private)
      stamp = Crypto.tai64n(System.os_time(:nanosecond))
      {:ok, body, _} = Noise.initiation(alice, bob_keys, 1, Crypto.generate(), stamp)
      {initiation, _} = Noise.seal_macs(body, bob_keys.mac1_key, nil)

      # mac1 is keyed by the receiver's public key: Carol's check fails.
      refute Noise.mac1_valid?(initiation, carol.mac1_key)
      # Carol cannot decrypt the static key meant for Bob.
      assert Noise.consume_initiation(carol, initiation, fn _ -> {:ok, <<1::256>>} end) == :error
      # Bob, who does not know Alice, refuses it.
      assert Noise.consume_initiation(bob, initiation, fn _ -> :error end) == :error
    end

    test "mac2 is bound to the cookie, and a cookie reply to the mac1 it answers" do
      {alice, bob, bob_keys, _} = identities()
      stamp = Crypto.tai64n(System.os_time(:nanosecond))
      {:ok, body, _} = Noise.initiation(alice, bob_keys, 7, Crypto.generate(), stamp)
      {first, mac1} = Noise.seal_macs(body, bob_keys.mac1_key, nil)
      cookie = :crypto.strong_rand_bytes(16)

      reply = Noise.cookie_reply(bob, 7, Noise.mac1(first), cookie)
      assert byte_size(reply) == 64
      assert Noise.consume_cookie_reply(bob_keys, reply, mac1) == {:ok, cookie}
      # Bound to the mac1 of the message it answers.
      assert Noise.consume_cookie_reply(bob_keys, reply, :crypto.strong_rand_bytes(16)) == :error

      {second, _} = Noise.seal_macs(body, bob_keys.mac1_key, cookie)
      assert Noise.mac2_valid?(second, cookie)
      refute Noise.mac2_valid?(first, cookie)
      refute Noise.mac2_valid?(second, :crypto.strong_rand_bytes(16))
    end
  end

  describe "the replay window" do
    test "accepts each counter once, in any order within the window, nothing older" do
      window = Enum.reduce([5, 3, 4, 0], Replay.new(), &Replay.accept(&2, &1))
      for seen <- [0, 3, 4, 5], do: refute(Replay.fresh?(window, seen))
      for unseen <- [1, 2, 6, 100_000], do: assert(Replay.fresh?(window, unseen))

      window = Replay.accept(window, 5000)
      refute Replay.fresh?(window, 5000 - Replay.size())
      assert Replay.fresh?(window, 5000 - Replay.size() + 1)
      refute Replay.fresh?(window, 1)
    end

    test "a jump to near 2^64 builds no huge number" do
      window = Replay.accept(Replay.new(), 3)
      window = Replay.accept(window, (1 <<< 64) - (1 <<< 13) - 2)
      {_, seen} = window
      assert seen == 1
    end

    test "agrees with a set of seen counters, on random sequences" do
      for _ <- 1..50 do
        counters = for _ <- 1..400, do: :rand.uniform(3000) - 1

        Enum.reduce(counters, {Replay.new(), MapSet.new(), -1}, fn counter, {window, seen, top} ->
          expected = not MapSet.member?(seen, counter) and top - counter < Replay.size()
          assert Replay.fresh?(window, counter) == expected

          if expected,
            do: {Replay.accept(window, counter), MapSet.put(seen, counter), max(top, counter)},
            else: {window, seen, top}
        end)
      end
    end
  end

  describe "cryptokey routing" do
    test "the longest allowed prefix wins; a prefix given twice belongs to the last" do
      table =
        AllowedIPs.new([
          {{{10, 0, 0, 0}, 8}, :a},
          {{{10, 1, 0, 0}, 16}, :b},
          {{{10, 1, 2, 3}, 32}, :c},
          {{{10, 9, 9, 9}, 8}, :d},
          {{{0, 0, 0, 0, 0, 0, 0, 0}, 0}, :v6default},
          {{{0xFD00, 0, 0, 0, 0, 0, 0, 0}, 64}, :e}
        ])

      assert AllowedIPs.lookup(table, 4, ip4(10, 1, 2, 3)) == :c
      assert AllowedIPs.lookup(table, 4, ip4(10, 1, 7, 7)) == :b
      # 10.0.0.0/8 was given to :a, then (as 10.9.9.9/8) to :d.
      assert AllowedIPs.lookup(table, 4, ip4(10, 200, 0, 1)) == :d
      assert AllowedIPs.lookup(table, 4, ip4(192, 168, 0, 1)) == nil
      assert AllowedIPs.lookup(table, 6, 0xFD00 <<< 112 ||| 5) == :e
      assert AllowedIPs.lookup(table, 6, 0x2001 <<< 112) == :v6default
    end

    test "reads destination and source from IPv4 and IPv6 headers" do
      table =
        AllowedIPs.new([
          {{{10, 0, 0, 1}, 32}, :src4},
          {{{10, 0, 0, 2}, 32}, :dst4},
          {{{0xFD00, 0, 0, 0, 0, 0, 0, 1}, 128}, :src6},
          {{{0xFD00, 0, 0, 0, 0, 0, 0, 2}, 128}, :dst6}
        ])

      v4 = <<0x45, 0, 0, 20, 0::32, 64, 17, 0::16, 10, 0, 0, 1, 10, 0, 0, 2>>
      v6 = <<6::4, 0::28, 0::16, 17, 64, 0xFD00::16, 0::96, 1::16, 0xFD00::16, 0::96, 2::16>>
      assert AllowedIPs.destination(table, v4) == :dst4
      assert AllowedIPs.source(table, v4) == :src4
      assert AllowedIPs.destination(table, v6) == :dst6
      assert AllowedIPs.source(table, v6) == :src6
      assert AllowedIPs.destination(table, <<>>) == nil
      assert AllowedIPs.source(table, <<0x45, 0>>) == nil
    end

    defp ip4(a, b, c, d), do: a <<< 24 ||| b <<< 16 ||| c <<< 8 ||| d
  end

  describe "wg-quick configuration" do
    @private "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
    @public "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

    test "reads what wg-quick reads" do
      text = """
      # a comment
      [Interface]
      PrivateKey = #{@private}
      Address = 10.0.0.1/24, fd00::1/64
      Address = 10.0.1.1
      ListenPort = 51820
      MTU = 1420
      DNS = 10.0.0.53
      PostUp = iptables -A FORWARD -i %i -j ACCEPT

      [Peer]
      PublicKey = #{@public}
      PresharedKey = #{@private}
      AllowedIPs = 10.0.0.2/32, fd00::2/128
      AllowedIPs = 192.168.7.0/24
      Endpoint = [fd00:1::2]:51821
      PersistentKeepalive = 25

      [peer]
      publickey = #{Base.encode64(<<1::256>>)}
      endpoint = 192.0.2.1:7
      """

      assert {:ok, config} = Config.parse(text)
      assert config.private_key == Base.decode64!(@private)

      assert config.addresses == [
               {{10, 0, 0, 1}, 24},
               {{0xFD00, 0, 0, 0, 0, 0, 0, 1}, 64},
               {{10, 0, 1, 1}, 32}
             ]

      assert config.listen_port == 51_820
      assert config.mtu == 1420
      assert config.ignored == ["DNS", "PostUp"]

      assert [first, second] = config.peers
      assert first.public_key == Base.decode64!(@public)
      assert first.preshared_key == Base.decode64!(@private)

      assert first.allowed_ips == [
               {{10, 0, 0, 2}, 32},
               {{0xFD00, 0, 0, 0, 0, 0, 0, 2}, 128},
               {{192, 168, 7, 0}, 24}
             ]

      assert first.endpoint == {{0xFD00, 1, 0, 0, 0, 0, 0, 2}, 51_821}
      assert first.persistent_keepalive == 25
      assert second.endpoint == {{192, 0, 2, 1}, 7}
      assert second.allowed_ips == []
      assert second.persistent_keepalive == nil
    end

    test "says which line is wrong, and why" do
      assert Config.parse("[Interface]\nPrivateKey = nope\n") ==
               {:error, {2, "not a base64 key of 32 bytes"}}

      assert {:error, {3, "unknown key" <> _}} =
               Config.parse("[Interface]\nPrivateKey = #{@private}\nColour = blue\n")

      assert {:error, {1, "no [Interface] section"}} = Config.parse("")

      assert {:error, {1, "PrivateKey is required"}} =
               Config.parse("[Interface]\nListenPort = 1\n")

      assert {:error, {4, "not an address/prefix: 10.0.0.300"}} =
               Config.parse(
                 "[Interface]\nPrivateKey = #{@private}\n[Peer]\nAllowedIPs = 10.0.0.300\n"
               )

      assert {:error, {4, "PublicKey is required"}} =
               Config.parse(
                 "[Interface]\nPrivateKey = #{@private}\n\n[Peer]\nAllowedIPs = 10.0.0.1\n"
               )

      assert {:error, {5, "not an endpoint" <> _}} =
               Config.parse(
                 "[Interface]\nPrivateKey = #{@private}\n[Peer]\nPublicKey = #{@public}\nEndpoint = 10.0.0.1\n"
               )

      assert {:error, {2, "out of range"}} = Config.parse("[Interface]\nListenPort = 70000\n")
    end

    test "an endpoint that does not resolve is an error with its line, as wg gives" do
      for host <- ["999.1.1.1", "no-such-host.invalid"] do
        text = "[Interface]\nPrivateKey = #{@private}\n[Peer]\nPublicKey = #{@public}\n"

        assert Config.parse(text <> "Endpoint = #{host}:51820\n") ==
                 {:error, {5, "cannot resolve #{host} (Endpoint)"}}
      end
    end

    test "allowed IPs with host bits stand for their network, as wg takes them" do
      text = """
      [Interface]
      PrivateKey = #{@private}
      Address = 10.8.0.77/16
      [Peer]
      PublicKey = #{@public}
      AllowedIPs = 10.8.0.77/16, fd00::1:2/64, 10.9.9.9/0, 10.1.2.3/32
      """

      assert {:ok, %{addresses: [{{10, 8, 0, 77}, 16}], peers: [peer]}} = Config.parse(text)

      assert peer.allowed_ips == [
               {{10, 8, 0, 0}, 16},
               {{0xFD00, 0, 0, 0, 0, 0, 0, 0}, 64},
               {{0, 0, 0, 0}, 0},
               {{10, 1, 2, 3}, 32}
             ]
    end

    test "long lists parse with work linear in their length" do
      # On one line and on a line each. Work is counted in reductions (the
      # VM's own count, not a clock): 10 times the prefixes must cost
      # about 10 times the work; quadratic appends cost about 100 times.
      head = "[Interface]\nPrivateKey = #{@private}\n[Peer]\nPublicKey = #{@public}\n"
      prefixes = fn n -> for i <- 0..(n - 1), do: "10.#{div(i, 256)}.#{rem(i, 256)}.0/24" end

      layouts = [
        fn list -> "AllowedIPs = " <> Enum.join(list, ", ") <> "\n" end,
        fn list -> Enum.map_join(list, &"AllowedIPs = #{&1}\n") end
      ]

      for layout <- layouts do
        work =
          for n <- [2_000, 20_000] do
            text = head <> layout.(prefixes.(n))
            {:reductions, before} = Process.info(self(), :reductions)
            assert {:ok, %{peers: [peer]}} = Config.parse(text)
            {:reductions, later} = Process.info(self(), :reductions)
            assert length(peer.allowed_ips) == n
            assert hd(peer.allowed_ips) == {{10, 0, 0, 0}, 24}
            later - before
          end

        [small, large] = work
        assert large < 20 * small, "#{large} reductions for 20,000, #{small} for 2,000"
      end
    end
  end
end

defmodule TundraWireGuard.InteropTest do
  # The Elixir peer against implementations no one here wrote, boringtun
  # and Debian's wireguard-go (userspace, configured with `wg`), each in a
  # namespace of its own reached over a veth pair: the Elixir device in
  # another namespace, its sockets in this one.
  use ExUnit.Case, async: false

  import TundraWireGuardTest.Lab

  alias TundraWireGuard, as: WireGuard

  @moduletag :privileged
  @moduletag :interop
  @moduletag timeout: 120_000

  # Elixir: 10.92.N.1 / fd92:N::1 in ns_a. The other: .2 / ::2 in ns_b,
  # its UDP on 192.168.(100+N).2; this namespace's end of the veth .1.
  defp lab(opts) do
    n = rem(System.unique_integer([:positive]), 100) + 1
    ns_a = netns()
    ns_b = netns()
    here = "192.168.#{100 + n}.1"
    there = "192.168.#{100 + n}.2"
    :ok = veth(ns_b, here, there)
    {ka, pa} = keypair()
    {kb, pb} = keypair()
    a_addr = "10.92.#{n}.1"
    b_addr = "10.92.#{n}.2"
    a6 = "fd92:#{n}::1"
    b6 = "fd92:#{n}::2"
    a_port = free_port()
    b_port = 51_000 + n
    # The other's socket, /var/run/wireguard/NAME.sock, is the machine's:
    # the name carries this run's pid, so that two runs at once differ.
    impl = Keyword.get(opts, :impl, :boringtun)
    name = "t#{if impl == :boringtun, do: "b", else: "g"}#{System.pid()}n#{n}"

    {relay, a_endpoint} =
      if opts[:relay] do
        {relay, port} = relay(ip(here), {ip(here), a_port}, {ip(there), b_port})
        {relay, "#{here}:#{port}"}
      else
        {nil, "#{there}:#{b_port}"}
      end

    other_peer = %{public: pa, allowed: ["#{a_addr}/32", "#{a6}/128"]}

    other_peer =
      if opts[:elixir] == :responder,
        do: Map.put(other_peer, :endpoint, "#{here}:#{a_port}"),
        else: other_peer

    :ok = userspace_peer(impl, ns_b, name, kb, b_port, ["#{b_addr}/24", "#{b6}/64"], [other_peer])

    elixir_peer = %{public: pb, allowed: ["#{b_addr}/32", "#{b6}/128"]}

    elixir_peer =
      if opts[:elixir] == :responder,
        do: elixir_peer,
        else: Map.put(elixir_peer, :endpoint, a_endpoint)

    a =
      start_interface(conf(ka, ["#{a_addr}/24", "#{a6}/64"], [elixir_peer], port: a_port),
        netns: ns_a,
        name: "wge"
      )

    %{
      a: a,
      ns_a: ns_a,
      ns_b: ns_b,
      pb: pb,
      a_addr: a_addr,
      b_addr: b_addr,
      a6: a6,
      b6: b6,
      relay: relay,
      n: n,
      other: name
    }
  end

  for impl <- [:boringtun, :wireguard_go], role <- [:initiator, :responder] do
    test "Elixir as #{role} with #{impl}: ping both ways over IPv4 and IPv6, full-MTU packets, TCP both ways" do
      l = lab(elixir: unquote(role), impl: unquote(impl))

      # The initiator speaks first (the responder has no endpoint for it).
      if unquote(role) == :initiator,
        do: assert({0, _} = ping(l.ns_a, l.b_addr)),
        else: assert({0, _} = ping(l.ns_b, l.a_addr))

      assert_tunnel(l, 4_000_000)
      assert peer_info(l.a, l.pb).handshakes >= 1
    end
  end

  test "a packet from a source outside the peer's allowed IPs is dropped" do
    # boringtun's device also has 10.92.N.99, which Elixir does not allow
    # for it; boringtun will encrypt what comes from it, Elixir drops it.
    l = lab(elixir: :initiator)
    assert {0, _} = ping(l.ns_a, l.b_addr, count: 1)
    spoofed = "10.92.#{l.n}.99"
    {_, 0} = in_ns(l.ns_b, ~w(ip addr add #{spoofed}/32 dev #{l.other}))

    rx_before = rx_packets(l.ns_a, "wge")
    assert {status, _} = ping(l.ns_b, l.a_addr, count: 2, wait: 1, args: ["-I", spoofed])
    assert status != 0
    # Nothing of it reached the device.
    assert rx_packets(l.ns_a, "wge") == rx_before
    assert Map.get(WireGuard.info(l.a).drops, :source_not_allowed, 0) >= 2

    # The same from its allowed address goes through.
    assert {0, _} = ping(l.ns_b, l.a_addr, count: 1)
  end

  test "a replayed datagram (captured on the wire, sent again) is dropped" do
    l = lab(elixir: :initiator, relay: true)
    assert {0, _} = ping(l.ns_a, l.b_addr, count: 3)

    from_boringtun =
      for {:to_a, <<4, _::binary>> = d} <- captured(l.relay), byte_size(d) > 32, do: d

    assert from_boringtun != []

    rx_before = rx_packets(l.ns_a, "wge")
    replayed_before = Map.get(WireGuard.info(l.a).drops, :replayed, 0)
    inject(l.relay, :to_a, List.last(from_boringtun))

    assert eventually(fn ->
             Map.get(WireGuard.info(l.a).drops, :replayed, 0) == replayed_before + 1
           end)

    assert rx_packets(l.ns_a, "wge") == rx_before
  end
end

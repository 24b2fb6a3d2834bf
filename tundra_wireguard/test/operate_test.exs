defmodule TundraWireGuard.OperateTest do
  # TundraWireGuard operated as WireGuard is: `wg-quick` brings it up with
  # bin/tundra-wg as its userspace implementation, `wg` reads and changes
  # it while it carries traffic, `wg-quick down` removes it; its peers are
  # wireguard-go and boringtun. Each interface (the launcher's VM: device
  # and sockets) lives in a namespace of the test's own, reached over veth
  # pairs from the peers' namespaces; names carry this run's pid.
  use ExUnit.Case, async: false

  import TundraWireGuardTest.Lab

  @moduletag :privileged
  @moduletag :interop
  @moduletag timeout: 180_000

  defp lab do
    n = rem(System.unique_integer([:positive]), 100) + 1
    ns_a = netns()
    ns_b = netns()
    :ok = link(ns_a, "10.98.#{n}.1", ns_b, "10.98.#{n}.2")
    {ka, pa} = keypair()
    {kb, pb} = keypair()

    %{
      n: n,
      ns_a: ns_a,
      ns_b: ns_b,
      ka: ka,
      pa: pa,
      kb: kb,
      pb: pb,
      name: "tq#{System.pid()}n#{n}"
    }
  end

  defp conf_text(l, allowed, endpoint \\ nil) do
    """
    [Interface]
    PrivateKey = #{l.ka}
    Address = 10.97.#{l.n}.1/24, fd97:#{l.n}::1/64
    ListenPort = #{51_000 + l.n}

    [Peer]
    PublicKey = #{l.pb}
    AllowedIPs = #{allowed}
    Endpoint = #{endpoint || "10.98.#{l.n}.2"}:51820
    """
  end

  defp up(l, text) do
    file = conf_file(l.name, text)
    # Taken down by the test's end if the test did not (the namespace's
    # processes are killed with it too).
    on_exit(fn -> in_ns(l.ns_a, ~w(ip link del #{l.name})) end)
    assert {0, out} = wg_quick(l.ns_a, "up", file)
    assert out =~ "tundra-wg #{l.name}"
    file
  end

  test "wg-quick up and down, wg show's counters, a peer added at runtime beside a running TCP stream" do
    l = lab()
    n = l.n

    :ok =
      userspace_peer(
        :wireguard_go,
        l.ns_b,
        "tg#{System.pid()}b#{n}",
        l.kb,
        51_820,
        [
          "10.97.#{n}.2/24",
          "fd97:#{n}::2/64"
        ],
        [%{public: l.pa, allowed: ["10.97.#{n}.1/32", "fd97:#{n}::1/128"]}]
      )

    file = up(l, conf_text(l, "10.97.#{n}.2/32, fd97:#{n}::2/128"))
    socket = "/var/run/wireguard/#{l.name}.sock"
    assert File.exists?(socket)

    assert {0, _} = ping(l.ns_a, "10.97.#{n}.2")
    assert {0, _} = ping(l.ns_a, "fd97:#{n}::2")
    first = wg_dump(l.name)[l.pb]
    assert first.latest_handshake > 0
    assert first.rx > 0 and first.tx > 0
    assert first.endpoint == "10.98.#{n}.2:51820"

    # Bad requests on its socket change nothing, and the tunnel carries on.
    for request <- [
          "set=1\ncolour=blue\n\n",
          "set=1\npublic_key=#{String.duplicate("0", 63)}\n\n"
        ] do
      {:ok, s} = :socket.open(:local, :stream, :default)
      :ok = :socket.connect(s, %{family: :local, path: socket})
      :ok = :socket.send(s, request)
      assert {:ok, "errno=" <> _} = :socket.recv(s, 0, 5_000)
      :socket.close(s)
    end

    assert {0, _} = ping(l.ns_a, "10.97.#{n}.2")

    # A TCP stream to B, held in its middle while a peer C (boringtun) is
    # added with `wg set` and carries a ping.
    ns_c = netns()
    :ok = link(l.ns_a, "10.99.#{n}.1", ns_c, "10.99.#{n}.2")
    {kc, pc} = keypair()

    :ok =
      userspace_peer(
        :boringtun,
        ns_c,
        "tb#{System.pid()}c#{n}",
        kc,
        51_820,
        ["10.97.#{n}.3/24"],
        [
          %{public: l.pa, allowed: ["10.97.#{n}.1/32"]}
        ]
      )

    test = self()

    stream =
      Task.async(fn ->
        tcp_transfer(l.ns_a, l.ns_b, "10.97.#{n}.2", 4_000_000,
          midway: fn ->
            send(test, :midway)

            receive do
              :go -> :ok
            end
          end
        )
      end)

    assert_receive :midway, 60_000

    assert {_, 0} = System.cmd("wg", ~w(set #{l.name} peer #{pc} allowed-ips 10.97.#{n}.3/32
                 endpoint 10.99.#{n}.2:51820))

    assert {0, _} = ping(l.ns_a, "10.97.#{n}.3")
    send(stream.pid, :go)
    {sent, received} = Task.await(stream, 120_000)
    assert sent == received

    peers = wg_dump(l.name)
    assert peers[pc].latest_handshake > 0
    # B's session went on: no new handshake, its counters grew.
    assert peers[l.pb].latest_handshake == first.latest_handshake
    assert peers[l.pb].tx > first.tx + 4_000_000
    assert peers[l.pb].rx > first.rx

    # Down: the device, the socket and the interface's VM go.
    assert {0, _} = wg_quick(l.ns_a, "down", file)
    assert {_, status} = in_ns(l.ns_a, ~w(ip link show #{l.name}))
    assert status != 0
    assert eventually(fn -> not File.exists?(socket) end)
    assert eventually(fn -> System.cmd("ip", ["netns", "pids", l.ns_a]) == {"", 0} end)
  end

  test "a full tunnel: wg-quick's fwmark keeps the tunnel's own datagrams out of it" do
    l = lab()
    n = l.n

    # B's endpoint is reached by A's default route (the mark matters only
    # there: wg-quick's rules leave more specific routes of the main table
    # alone). wireguard-go answers from the address it was sent to.
    :ok =
      userspace_peer(
        :wireguard_go,
        l.ns_b,
        "tg#{System.pid()}f#{n}",
        l.kb,
        51_820,
        [
          "10.97.#{n}.2/24"
        ],
        [%{public: l.pa, allowed: ["10.97.#{n}.1/32"]}]
      )

    {_, 0} = in_ns(l.ns_b, ~w(ip addr add 10.94.#{n}.2/32 dev lo))
    {_, 0} = in_ns(l.ns_b, ~w(ip addr add 10.95.#{n}.2/32 dev lo))
    {_, 0} = in_ns(l.ns_a, ~w(ip route add default via 10.98.#{n}.2))

    file = up(l, conf_text(l, "0.0.0.0/0", "10.94.#{n}.2"))
    {mark, 0} = System.cmd("wg", ["show", l.name, "fwmark"])
    assert String.trim(mark) == "0xca6c"

    # Everything the main table has only its default route for goes
    # through the tunnel: an address of B's that the tunnel alone reaches.
    assert {0, _} = ping(l.ns_a, "10.97.#{n}.2")
    before = rx_packets(l.ns_a, l.name)
    assert {0, _} = ping(l.ns_a, "10.95.#{n}.2", count: 2)
    assert rx_packets(l.ns_a, l.name) >= before + 2

    # Without the mark, the sealed datagrams are routed into the tunnel
    # again: nothing arrives. With it back, everything does.
    assert {_, 0} = System.cmd("wg", ~w(set #{l.name} fwmark 0))
    assert {status, _} = ping(l.ns_a, "10.95.#{n}.2", count: 2, wait: 1)
    assert status != 0
    assert {_, 0} = System.cmd("wg", ~w(set #{l.name} fwmark 51820))
    assert {0, _} = ping(l.ns_a, "10.95.#{n}.2")

    assert {0, _} = wg_quick(l.ns_a, "down", file)
    {rules, 0} = in_ns(l.ns_a, ~w(ip -4 rule show))
    refute rules =~ "51820"
  end
end

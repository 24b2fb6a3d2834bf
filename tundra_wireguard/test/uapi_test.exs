defmodule TundraWireGuard.UAPITest do
  # The UAPI socket, driven by `wg` itself (wireguard-tools) and by a
  # hostile client: an interface in a namespace of the test's own, its
  # socket in /var/run/wireguard (the one folder `wg` looks in), named
  # after this run, so that two runs at once differ.
  use ExUnit.Case, async: false
  @moduletag :privileged
  @moduletag timeout: 120_000

  import TundraWireGuardTest.Lab
  alias TundraWireGuard, as: WireGuard

  defp hex(key), do: Base.encode16(key, case: :lower)

  defp wg(args) do
    {out, status} = System.cmd("wg", args, stderr_to_stdout: true)
    {status, out}
  end

  # An interface with one peer, and its socket.
  defp interface(n) do
    ns = netns()
    {private, _public} = keypair()
    {_, peer} = keypair()
    name = "wgu#{System.pid()}#{n}"
    text = conf(private, ["10.96.#{n}.1/24"], [%{public: peer, allowed: ["10.96.#{n}.2/32"]}])
    pid = start_interface(text, netns: ns, name: name, uapi: "/var/run/wireguard")
    socket = "/var/run/wireguard/#{name}.sock"
    assert eventually(fn -> File.exists?(socket) end)
    %{pid: pid, name: name, socket: socket, peer: peer, ns: ns, n: n}
  end

  # A request as raw bytes on the socket; what comes back before it closes
  # (or the deadline).
  defp raw(socket, bytes, wait \\ 5_000) do
    {:ok, s} = :socket.open(:local, :stream, :default)
    :ok = :socket.connect(s, %{family: :local, path: socket})
    _ = :socket.send(s, bytes)
    reply = read_all(s, <<>>, System.monotonic_time(:millisecond) + wait)
    :socket.close(s)
    reply
  end

  defp read_all(s, acc, deadline) do
    left = deadline - System.monotonic_time(:millisecond)

    case left > 0 and :socket.recv(s, 0, left) do
      {:ok, data} ->
        acc = acc <> data
        if String.ends_with?(acc, "\n\n"), do: acc, else: read_all(s, acc, deadline)

      _ ->
        acc
    end
  end

  test "wg show, showconf, set and syncconf drive it" do
    i = interface(1)
    assert {0, out} = wg(["show", i.name])
    assert out =~ "interface: #{i.name}"
    assert out =~ "listening port: #{WireGuard.info(i.pid).listen_port}"
    assert out =~ "peer: #{i.peer}"
    assert out =~ "allowed ips: 10.96.1.2/32"

    # A peer added at runtime, with an endpoint and a keepalive.
    {_, added} = keypair()

    assert {0, _} = wg(~w(set #{i.name} peer #{added} allowed-ips 10.96.1.3/32,10.96.1.128/25
                   endpoint 127.0.0.1:9 persistent-keepalive 25))

    assert {0, out} = wg(["show", i.name])
    assert out =~ "peer: #{added}"
    assert out =~ "endpoint: 127.0.0.1:9"
    assert out =~ "allowed ips: 10.96.1.3/32, 10.96.1.128/25"
    assert out =~ "persistent keepalive: every 25 seconds"
    # ... and routed to the device (the interface follows allowed IPs).
    {routes, 0} = in_ns(i.ns, ~w(ip route show dev #{i.name}))
    assert routes =~ "10.96.1.128/25"

    # showconf gives what syncconf takes; a file without the added peer
    # removes it, and leaves the first one alone.
    assert {0, conf} = wg(["showconf", i.name])
    assert conf =~ "[Peer]\nPublicKey = #{added}"

    first_only =
      String.split(conf, "[Peer]") |> Enum.reject(&(&1 =~ added)) |> Enum.join("[Peer]")

    file = Path.join(System.tmp_dir!(), "#{i.name}.conf")
    File.write!(file, first_only)
    on_exit(fn -> File.rm(file) end)
    assert {0, _} = wg(["syncconf", i.name, file])
    assert {0, out} = wg(["show", i.name])
    refute out =~ added
    assert out =~ i.peer
    {routes, 0} = in_ns(i.ns, ~w(ip route show dev #{i.name}))
    refute routes =~ "10.96.1.128/25"

    assert {0, _} = wg(~w(set #{i.name} peer #{i.peer} remove))
    assert WireGuard.configuration(i.pid).peers == []
  end

  test "the socket is 0600 and the interface's user's, and goes with the interface" do
    i = interface(2)
    {:ok, stat} = File.stat(i.socket)
    assert Bitwise.band(stat.mode, 0o777) == 0o600
    assert stat.uid == 0
    GenServer.stop(i.pid, :shutdown)
    refute File.exists?(i.socket)
  end

  test "bad requests are answered with an errno, and change nothing" do
    i = interface(3)
    before = WireGuard.configuration(i.pid)
    key = hex(:crypto.strong_rand_bytes(32))
    {_, peer_b64} = keypair()
    peer = hex(Base.decode64!(peer_b64))

    bad = [
      # Not a request; a line that is not key=value; an unknown key.
      "hello\n\n",
      "set=1\nthis is not a line\n\n",
      "set=1\ncolour=blue\n\n",
      # Keys of the wrong length or not hex.
      "set=1\nprivate_key=#{String.slice(key, 0, 62)}\n\n",
      "set=1\nprivate_key=#{String.replace(key, ~r/^../, "zz")}\n\n",
      # Out of range, or not a number.
      "set=1\nlisten_port=70000\n\n",
      "set=1\npublic_key=#{peer}\npersistent_keepalive_interval=-1\n\n",
      # A peer key before any public_key; a half-good request (the first
      # peer fine, the second bad): nothing of it applies.
      "set=1\nendpoint=127.0.0.1:9\n\n",
      "set=1\npublic_key=#{peer}\nallowed_ip=10.96.3.9/32\npublic_key=#{peer}\nendpoint=nowhere\n\n",
      # An allowed IP that is not one.
      "set=1\npublic_key=#{peer}\nallowed_ip=10.96.3.300/32\n\n"
    ]

    for request <- bad do
      assert raw(i.socket, request) =~ ~r/^errno=[1-9]\d*\n\n$/, inspect(request)
    end

    assert WireGuard.configuration(i.pid) == before

    # An allowed IP with host bits stands for its network, as wg and the
    # kernel take it.
    assert raw(i.socket, "set=1\npublic_key=#{peer}\nallowed_ip=10.96.3.77/24\n\n") ==
             "errno=0\n\n"

    added = Enum.find(WireGuard.configuration(i.pid).peers, &(hex(&1.public_key) == peer))
    assert added.allowed_ips == [{{10, 96, 3, 0}, 24}]
  end

  test "oversized, slow and foreign clients lose their connection; the socket serves others" do
    i = interface(4)
    # Five megabytes of a request that never ends.
    assert raw(i.socket, "set=1\n" <> String.duplicate("listen_port=1\n", 400_000), 10_000) =~
             "errno=90"

    # A client that sends half a request and stops: closed at the deadline.
    {:ok, slow} = :socket.open(:local, :stream, :default)
    :ok = :socket.connect(slow, %{family: :local, path: i.socket})
    :ok = :socket.send(slow, "get=1\n")
    assert {:error, :closed} = :socket.recv(slow, 0, 15_000)
    :socket.close(slow)

    # Another user, let in by a mode opened by mistake: the server checks
    # the peer itself, and closes without an answer.
    File.chmod!(i.socket, 0o666)

    client = """
    {:ok, s} = :socket.open(:local, :stream, :default)
    :ok = :socket.connect(s, %{family: :local, path: "#{i.socket}"})
    _ = :socket.send(s, "get=1\\n\\n")
    IO.puts("reply: " <> inspect(:socket.recv(s, 0, 5_000)))
    """

    {out, status} =
      System.cmd(
        "setpriv",
        ~w(--reuid=65534 --regid=65534 --clear-groups env HOME=/tmp) ++
          [System.find_executable("elixir"), "-e", client],
        stderr_to_stdout: true
      )

    File.chmod!(i.socket, 0o600)
    assert status == 0, out
    assert out =~ ~r/reply: {:error, :(closed|econnreset)}/
    refute out =~ "private_key"

    # Meanwhile and after: served.
    assert {0, out} = wg(["show", i.name])
    assert out =~ "interface: #{i.name}"
    assert Process.alive?(i.pid)
  end
end

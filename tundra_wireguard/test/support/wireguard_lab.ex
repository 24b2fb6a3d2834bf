defmodule TundraWireGuardTest.Lab do
  @moduledoc false
  # The WireGuard tests' bench: network namespaces of their own (named
  # tundra-wg<n>-<VM's OS pid>, so that scripts/netns removes those a
  # killed run left), veth pairs from the test run's namespace into them,
  # boringtun (a WireGuard peer no one here wrote) configured with `wg`,
  # TCP transfers with a hash, and a UDP relay that records what passes
  # and can send it again. Every address is on a device made here.

  import ExUnit.Assertions
  import ExUnit.Callbacks, only: [on_exit: 1]

  alias TundraWireGuard, as: WireGuard

  @doc """
  A new namespace with its loopback up, removed when the test ends, with
  the processes still in it (an interface `wg-quick` left running when a
  test failed).
  """
  def netns do
    name = "tundra-wg#{System.unique_integer([:positive])}-#{System.pid()}"
    {_, 0} = System.cmd("ip", ["netns", "add", name])

    on_exit(fn ->
      {pids, _} = System.cmd("ip", ["netns", "pids", name])

      for pid <- String.split(pids),
          do: System.cmd("kill", ["-KILL", pid], stderr_to_stdout: true)

      System.cmd("ip", ["netns", "del", name])
    end)

    {_, 0} = in_ns(name, ~w(ip link set lo up))
    name
  end

  @doc "A veth pair between two namespaces: `ip_a`/24 in `ns_a`, `ip_b`/24 in `ns_b`."
  def link(ns_a, ip_a, ns_b, ip_b) do
    a = "tl#{System.unique_integer([:positive])}"
    b = a <> "p"
    {_, 0} = in_ns(ns_a, ~w(ip link add #{a} type veth peer name #{b} netns #{ns_b}))
    {_, 0} = in_ns(ns_a, ~w(ip addr add #{ip_a}/24 dev #{a}))
    {_, 0} = in_ns(ns_a, ~w(ip link set #{a} up))
    {_, 0} = in_ns(ns_b, ~w(ip addr add #{ip_b}/24 dev #{b}))
    {_, 0} = in_ns(ns_b, ~w(ip link set #{b} up))
    :ok
  end

  @doc """
  `wg-quick ACTION FILE` in `ns` with this package's `bin/tundra-wg` as
  its userspace implementation (in the test build): `{status, output}`.
  """
  def wg_quick(ns, action, file) do
    launcher = Path.expand("../../bin/tundra-wg", __DIR__)

    {out, status} =
      System.cmd(
        "ip",
        ["netns", "exec", ns, "wg-quick", action, file],
        stderr_to_stdout: true,
        env: [{"WG_QUICK_USERSPACE_IMPLEMENTATION", launcher}, {"MIX_ENV", "test"}]
      )

    {status, out}
  end

  @doc "A configuration file NAME.conf (mode 0600, as wg-quick wants), removed when the test ends."
  def conf_file(name, text) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "tundra-wgq-#{System.pid()}-#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)
    path = Path.join(dir, "#{name}.conf")
    File.write!(path, text)
    File.chmod!(path, 0o600)
    path
  end

  @doc """
  `wg show NAME dump`'s peers: public key (base64) => `%{endpoint,
  latest_handshake, rx, tx}`.
  """
  def wg_dump(name) do
    {out, 0} = System.cmd("wg", ["show", name, "dump"], stderr_to_stdout: true)
    [_interface | peers] = String.split(out, "\n", trim: true)

    Map.new(peers, fn line ->
      [public, _psk, endpoint, _allowed, handshake, rx, tx, _keepalive] = String.split(line, "\t")

      {public,
       %{
         endpoint: endpoint,
         latest_handshake: String.to_integer(handshake),
         rx: String.to_integer(rx),
         tx: String.to_integer(tx)
       }}
    end)
  end

  @doc "A command in a namespace: `{output, status}`."
  def in_ns(ns, [command | args]) do
    System.cmd("ip", ["netns", "exec", ns, command | args], stderr_to_stdout: true)
  end

  @doc """
  A veth pair from this namespace into `ns`: `here` on this end, `there`
  on the other, both in `prefix` (IPv4 strings).
  """
  def veth(ns, here, there, prefix \\ 24) do
    local = "tw#{System.unique_integer([:positive])}"
    remote = local <> "p"
    {_, 0} = System.cmd("ip", ~w(link add #{local} type veth peer name #{remote} netns #{ns}))
    on_exit(fn -> System.cmd("ip", ~w(link del #{local})) end)
    {_, 0} = System.cmd("ip", ~w(addr add #{here}/#{prefix} dev #{local}))
    {_, 0} = System.cmd("ip", ~w(link set #{local} up))
    {_, 0} = in_ns(ns, ~w(ip addr add #{there}/#{prefix} dev #{remote}))
    {_, 0} = in_ns(ns, ~w(ip link set #{remote} up))
    :ok
  end

  @doc "A UDP port free now (on `ip`)."
  def free_port(ip \\ {127, 0, 0, 1}) do
    {:ok, socket} = :gen_udp.open(0, ip: ip)
    {:ok, port} = :inet.port(socket)
    :gen_udp.close(socket)
    port
  end

  @doc "An address tuple from text."
  def ip(text) do
    {:ok, ip} = :inet.parse_address(String.to_charlist(text))
    ip
  end

  @doc "A key pair, base64: `{private, public}`."
  def keypair do
    private = WireGuard.generate_private_key()
    {private, WireGuard.public_key(private)}
  end

  @doc "A wg-quick configuration's text."
  def conf(private, addresses, peers, opts \\ []) do
    port = if opts[:port], do: "ListenPort = #{opts[:port]}\n", else: ""

    peer_sections =
      for peer <- peers do
        endpoint = if peer[:endpoint], do: "Endpoint = #{peer[:endpoint]}\n", else: ""
        psk = if peer[:psk], do: "PresharedKey = #{peer[:psk]}\n", else: ""

        keepalive =
          if peer[:keepalive], do: "PersistentKeepalive = #{peer[:keepalive]}\n", else: ""

        "[Peer]\nPublicKey = #{peer.public}\nAllowedIPs = #{Enum.join(peer.allowed, ", ")}\n" <>
          endpoint <> psk <> keepalive
      end

    "[Interface]\nPrivateKey = #{private}\nAddress = #{Enum.join(addresses, ", ")}\n#{port}" <>
      "MTU = #{opts[:mtu] || 1420}\n\n" <> Enum.join(peer_sections, "\n")
  end

  @doc "Starts an interface from configuration text, stopped when the test ends."
  def start_interface(text, opts) do
    {:ok, config} = WireGuard.parse_config(text)
    # No UAPI socket unless a test asks: /var/run/wireguard is the
    # machine's, and another run's interfaces may have the same names.
    {:ok, pid} = WireGuard.start_link(config, Keyword.put_new(opts, :uapi, false))
    # Not linked to the test's end: stop it ourselves, before the
    # namespaces go.
    Process.unlink(pid)

    on_exit(fn ->
      if Process.alive?(pid), do: GenServer.stop(pid, :shutdown)
    end)

    pid
  end

  @doc "The peer `public` (base64) as an interface sees it."
  def peer_info(pid, public) do
    key = Base.decode64!(public)
    Enum.find(WireGuard.info(pid).peers, &(&1.public_key == key))
  end

  @doc "Runs ping in `ns`; `{status, output}`."
  def ping(ns, address, opts \\ []) do
    family = if String.contains?(address, ":"), do: "-6", else: "-4"
    count = Keyword.get(opts, :count, 3)
    extra = Keyword.get(opts, :args, [])

    args =
      [family, "-c", "#{count}", "-i", "0.2", "-W", "#{Keyword.get(opts, :wait, 5)}"] ++
        extra ++ [address]

    {output, status} = in_ns(ns, ["ping" | args])
    {status, output}
  end

  @doc """
  Asserts that a tunnel between namespaces `ns_a` (addresses `a_addr`,
  `a6`) and `ns_b` (`b_addr`, `b6`) carries ping both ways over IPv4 and
  IPv6, full-MTU packets (1420) with don't-fragment both ways, and
  `tcp_bytes` of TCP each way with the same hash at both ends.
  """
  def assert_tunnel(t, tcp_bytes) do
    assert {0, _} = ping(t.ns_a, t.b_addr)
    assert {0, _} = ping(t.ns_b, t.a_addr)
    assert {0, _} = ping(t.ns_a, t.b6)
    assert {0, _} = ping(t.ns_b, t.a6)

    # 1392 + 8 + 20 = 1420 (IPv4), 1372 + 8 + 40 = 1420 (IPv6): the MTU.
    assert {0, out} = ping(t.ns_a, t.b_addr, args: ["-s", "1392", "-M", "do"])
    assert out =~ "1400 bytes from"
    assert {0, _} = ping(t.ns_b, t.a_addr, args: ["-s", "1392", "-M", "do"])
    assert {0, _} = ping(t.ns_a, t.b6, args: ["-s", "1372", "-M", "do"])
    assert {0, _} = ping(t.ns_b, t.a6, args: ["-s", "1372", "-M", "do"])

    {sent, received} = tcp_transfer(t.ns_a, t.ns_b, t.b_addr, tcp_bytes)
    assert sent == received
    {sent, received} = tcp_transfer(t.ns_b, t.ns_a, t.a6, tcp_bytes)
    assert sent == received
  end

  @doc "Packets written into interface `name` (in `ns`) by its program."
  def rx_packets(ns, name) do
    {out, 0} = in_ns(ns, ["cat", "/sys/class/net/#{name}/statistics/rx_packets"])
    String.to_integer(String.trim(out))
  end

  @doc """
  Sends `bytes` of random data over TCP from `from_ns` to `to_address`
  (listening in `to_ns`), `chunk` bytes per send with `pause` ms between
  (and `midway.()` run halfway). Returns `{sent_sha256, received_sha256}`.
  """
  def tcp_transfer(from_ns, to_ns, to_address, bytes, opts \\ []) do
    chunk = Keyword.get(opts, :chunk, 65_536)
    pause = Keyword.get(opts, :pause, 0)
    midway = Keyword.get(opts, :midway, fn -> :ok end)
    ip = ip(to_address)
    family = if tuple_size(ip) == 4, do: :inet, else: :inet6

    {:ok, listen} =
      :gen_tcp.listen(0, [
        family,
        :binary,
        active: false,
        ip: ip,
        netns: "/var/run/netns/#{to_ns}"
      ])

    {:ok, port} = :inet.port(listen)

    receiver =
      Task.async(fn ->
        {:ok, conn} = :gen_tcp.accept(listen, 30_000)
        hash = receive_all(conn, :crypto.hash_init(:sha256))
        :gen_tcp.close(listen)
        hash
      end)

    {:ok, conn} =
      :gen_tcp.connect(
        ip,
        port,
        [family, :binary, active: false, netns: "/var/run/netns/#{from_ns}"],
        30_000
      )

    chunks = div(bytes + chunk - 1, chunk)

    sent =
      Enum.reduce(1..chunks, :crypto.hash_init(:sha256), fn n, hash ->
        data = :crypto.strong_rand_bytes(min(chunk, bytes - (n - 1) * chunk))
        :ok = :gen_tcp.send(conn, data)
        if n == div(chunks, 2), do: midway.()
        if pause > 0, do: Process.sleep(pause)
        :crypto.hash_update(hash, data)
      end)

    :ok = :gen_tcp.close(conn)
    {:crypto.hash_final(sent), Task.await(receiver, 120_000)}
  end

  defp receive_all(conn, hash) do
    case :gen_tcp.recv(conn, 0, 30_000) do
      {:ok, data} -> receive_all(conn, :crypto.hash_update(hash, data))
      {:error, :closed} -> :crypto.hash_final(hash)
    end
  end

  # --- Other implementations ------------------------------------------------------------

  @doc "Where boringtun-cli is (scripts/wireguard-peer installs it), or nil."
  def boringtun_path do
    [
      System.get_env("TUNDRA_BORINGTUN"),
      Path.expand(
        "../_build/tools/bin/boringtun-cli",
        __DIR__ |> Path.dirname() |> Path.dirname()
      )
    ]
    |> Enum.find(&(&1 && File.exists?(&1)))
    |> Kernel.||(System.find_executable("boringtun-cli"))
  end

  @doc """
  What the interop tests need and this machine lacks (scripts/wireguard-peer
  installs it all): boringtun-cli, wireguard-go, wg, wg-quick, nft.
  """
  def missing_tools do
    found = %{
      "boringtun-cli" => boringtun_path(),
      "wireguard-go" => System.find_executable("wireguard-go"),
      "wg" => System.find_executable("wg"),
      "wg-quick" => System.find_executable("wg-quick"),
      "nft" => System.find_executable("nft")
    }

    for {tool, nil} <- found, do: tool
  end

  @doc """
  Starts a WireGuard implementation no one here wrote, `impl`
  (`:boringtun` or `:wireguard_go`), in `ns` as interface `name`, and
  configures it with `wg`: `private` key, `port`, `addresses` (CIDR
  strings) and `peers` (`%{public, allowed, endpoint}`). Stopped when the
  test ends (or when this VM does: the wrapper kills it when its standard
  input closes). Its UAPI socket is in the machine's /var/run/wireguard:
  `name` must be unique to the run.
  """
  def userspace_peer(impl, ns, name, private, port, addresses, peers) do
    start_userspace(impl, ns, name)
    key_file = Path.join(System.tmp_dir!(), "#{name}.key")
    File.write!(key_file, private <> "\n")
    File.chmod!(key_file, 0o600)

    peer_args =
      Enum.flat_map(peers, fn peer ->
        ["peer", peer.public, "allowed-ips", Enum.join(peer.allowed, ",")] ++
          if(peer[:endpoint], do: ["endpoint", peer.endpoint], else: [])
      end)

    {out, status} =
      in_ns(ns, ["wg", "set", name, "private-key", key_file, "listen-port", "#{port}" | peer_args])

    File.rm(key_file)
    if status != 0, do: raise("wg set: #{out}")

    for address <- addresses do
      args =
        if String.contains?(address, ":"),
          do: [address, "dev", name, "nodad"],
          else: [address, "dev", name]

      {_, 0} = in_ns(ns, ["ip", "addr", "add" | args])
    end

    {_, 0} = in_ns(ns, ~w(ip link set #{name} mtu 1420 up))
    :ok
  end

  defp start_userspace(impl, ns, name) do
    socket = "/var/run/wireguard/#{name}.sock"

    command =
      case impl do
        :boringtun ->
          path = boringtun_path() || raise "boringtun-cli not found: run scripts/wireguard-peer"
          "#{path} #{name} --foreground --disable-drop-privileges -l /dev/null"

        :wireguard_go ->
          # Debian's refuses to run beside a kernel that has the module
          # unless told; -f: in the foreground, for the wrapper to stop.
          "env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error " <>
            "wireguard-go -f #{name} >/dev/null 2>&1"
      end

    wrapper = "ip netns exec #{ns} #{command} & pid=$!; echo $pid; read _; kill $pid"
    port_ref = Port.open({:spawn_executable, "/bin/sh"}, [:binary, args: ["-c", wrapper]])

    on_exit(fn ->
      if Port.info(port_ref), do: Port.close(port_ref)
      # The socket goes with the process; wait so names can be reused.
      wait_gone(socket, 50)
    end)

    true = eventually(fn -> File.exists?(socket) end, 10_000)
    port_ref
  end

  defp wait_gone(_path, 0), do: :ok

  defp wait_gone(path, tries) do
    if File.exists?(path), do: Process.sleep(20) && wait_gone(path, tries - 1), else: :ok
  end

  # --- A relay that records -------------------------------------------------

  @doc """
  A UDP relay in this namespace between two WireGuard endpoints: what
  comes from `a` goes to `b` and the other way, each datagram recorded.
  Returns `{pid, port}`: configure `a` to send to `127.0.0.1:port`-like
  address of the relay (it answers from the same port).
  """
  def relay(ip, a, b) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, socket} = :gen_udp.open(0, [:binary, ip: ip, active: true, recbuf: 4_194_304])
        {:ok, port} = :inet.port(socket)
        send(parent, {:relay_port, self(), port})
        relay_loop(socket, a, b, [], true)
      end)

    on_exit(fn -> Process.exit(pid, :kill) end)

    receive do
      {:relay_port, ^pid, port} -> {pid, port}
    end
  end

  defp relay_loop(socket, a, b, seen, forward) do
    receive do
      {:udp, ^socket, ip, port, data} ->
        {to, direction} = if {ip, port} == a, do: {b, :to_b}, else: {a, :to_a}
        if forward, do: :gen_udp.send(socket, elem(to, 0), elem(to, 1), data)
        relay_loop(socket, a, b, [{direction, data} | seen], forward)

      {:captured, from} ->
        send(from, {:captured, Enum.reverse(seen)})
        relay_loop(socket, a, b, seen, forward)

      {:forward, on} ->
        relay_loop(socket, a, b, seen, on)

      {:inject, direction, data} ->
        {ip, port} = if direction == :to_b, do: b, else: a
        :ok = :gen_udp.send(socket, ip, port, data)
        relay_loop(socket, a, b, seen, forward)
    end
  end

  @doc "What the relay has seen: `[{:to_a | :to_b, datagram}]`, oldest first."
  def captured(relay) do
    send(relay, {:captured, self()})

    receive do
      {:captured, seen} -> seen
    end
  end

  @doc "Sends `datagram` from the relay towards `:to_a` or `:to_b`."
  def inject(relay, direction, datagram), do: send(relay, {:inject, direction, datagram})

  @doc "Stops (false) or resumes (true) forwarding; recording goes on."
  def forward(relay, on), do: send(relay, {:forward, on})

  @doc """
  Whether `fun` becomes true within `limit_ms` (looked at every 10 ms; a
  bound on waiting, not an assertion on timing).
  """
  def eventually(fun, limit_ms \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + limit_ms
    wait(fun, deadline)
  end

  defp wait(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(10) && wait(fun, deadline)
    end
  end
end

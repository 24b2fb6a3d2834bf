defmodule TundraWireGuard.UnprivilegedTest do
  # WireGuard without root, as the README's recipe says, for real: the
  # test (root) starts tundra_server with a delegation to a group of its
  # own, makes a member, and the member runs bin/tundra-wg from a checkout
  # of its own: its device comes from the server, its UAPI socket is in a
  # folder of the member's, linked into /var/run/wireguard; `wg` (the
  # member's and root's) drives it and wireguard-go is its peer.
  # Everything made is removed after.
  use ExUnit.Case, async: false

  import TundraWireGuardTest.Lab

  @moduletag :privileged
  @moduletag :interop
  @moduletag timeout: 180_000

  setup do
    n = rem(System.unique_integer([:positive]), 100) + 1
    run = System.pid()
    group = "tundrawg#{run}"
    member = "tundrawm#{run}"
    # Root-only folders for the server, one of the member's for its socket.
    dir = "/run/tundra-wgtest-#{run}-#{n}"
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o755)
    on_exit(fn -> File.rm_rf!(dir) end)

    on_exit(fn ->
      System.cmd("userdel", ["--force", member], stderr_to_stdout: true)
      System.cmd("groupdel", [group], stderr_to_stdout: true)
    end)

    {_, 0} = System.cmd("groupadd", [group], stderr_to_stdout: true)
    nologin = ["--no-create-home", "--shell", "/usr/sbin/nologin"]
    {_, 0} = System.cmd("useradd", nologin ++ ["-G", group, member], stderr_to_stdout: true)

    config = Path.join(dir, "server.conf")
    File.write!(config, "allow group:#{group} 10.97.0.0/16 fd97::/16\n")

    ns_a = netns()
    ns_b = netns()
    :ok = link(ns_a, "10.98.#{n}.1", ns_b, "10.98.#{n}.2")
    socket = start_server(ns_a, dir, group, config)

    uapi = Path.join(dir, "uapi")
    File.mkdir_p!(uapi)
    {_, 0} = System.cmd("chown", ["#{member}:", uapi])
    File.chmod!(uapi, 0o700)

    %{
      n: n,
      dir: dir,
      member: member,
      ns_a: ns_a,
      ns_b: ns_b,
      socket: socket,
      uapi: uapi,
      launcher: checkout(dir, member)
    }
  end

  defp start_server(ns, dir, group, config) do
    socket = Path.join(dir, "tundra.sock")
    native = Path.expand("../../native", __DIR__)
    target = Path.join(native, "target")

    {out, status} =
      System.cmd(
        "cargo",
        ~w(build --release --quiet -p tundra_server --manifest-path) ++
          [Path.join(native, "Cargo.toml")],
        env: [{"CARGO_TARGET_DIR", target}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    binary = Path.join([target, "release", "tundra_server"])

    args =
      ["netns", "exec", ns, binary, "--socket", socket, "--group", group, "--config", config] ++
        ["--state-dir", Path.join(dir, "state")]

    port =
      Port.open({:spawn_executable, System.find_executable("ip")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args
      ])

    {:os_pid, _} = Port.info(port, :os_pid)
    assert eventually(fn -> File.exists?(socket) end), "tundra_server did not start"
    # It is in the namespace: killed with the namespace's processes.
    socket
  end

  # The member's own checkout, built (a copy of this one's sources and
  # test build, the member's: the checkout may be under /root). Built, it
  # needs no cargo: the member's PATH has none.
  defp checkout(dir, member) do
    repo = Path.expand("../..", __DIR__)
    copy = Path.join(dir, "checkout")
    File.mkdir_p!(Path.join(copy, "tundra_wireguard/_build"))

    sources =
      ~w(mix.exs lib native tundra_wireguard/mix.exs tundra_wireguard/lib tundra_wireguard/bin
         tundra_wireguard/native tundra_wireguard/test/support)

    {_, 0} =
      System.cmd("bash", [
        "-c",
        "set -o pipefail; tar -c --exclude=target -C \"$1\" \"${@:3}\" | tar -x -C \"$2\"",
        "bash",
        repo,
        copy | sources
      ])

    {_, 0} =
      System.cmd("cp", [
        "-a",
        Path.join(repo, "tundra_wireguard/_build/test"),
        Path.join(copy, "tundra_wireguard/_build/")
      ])

    {_, 0} = System.cmd("chown", ["-R", "#{member}:", copy])
    Path.join(copy, "tundra_wireguard/bin/tundra-wg")
  end

  # bin/tundra-wg as the member (in the foreground, so that the test
  # holds it), in the namespace; returns its port.
  defp launcher(ctx, args) do
    path =
      Enum.join(Enum.uniq([Path.dirname(System.find_executable("mix")), "/usr/bin", "/bin"]), ":")

    argv =
      ["netns", "exec", ctx.ns_a, "runuser", "-u", ctx.member, "--"] ++
        ["env", "HOME=/tmp", "MIX_ENV=test", "PATH=#{path}", ctx.launcher, "-f"] ++ args

    Port.open({:spawn_executable, System.find_executable("ip")}, [
      :binary,
      :exit_status,
      :stderr_to_stdout,
      {:line, 4096},
      args: argv
    ])
  end

  # The VM's next line that starts with "ready", or how it ended, with
  # what it printed before (a log line says why).
  defp ready(port, seen \\ []) do
    receive do
      {^port, {:data, {:eol, "ready " <> name}}} -> {:ready, name}
      {^port, {:data, {:eol, line}}} -> ready(port, [line | seen])
      {^port, {:exit_status, status}} -> {:exit, status, Enum.reverse(seen)}
    after
      60_000 -> {:timeout, Enum.reverse(seen)}
    end
  end

  defp as_member(ctx, command) do
    System.cmd("runuser", ["-u", ctx.member, "--" | command], stderr_to_stdout: true)
  end

  test "a group member's interface: device from the server, wg through a linked socket, a peer added at runtime",
       ctx do
    n = ctx.n
    name = "tunwg#{System.pid()}"
    {ka, pa} = keypair()
    {kb, pb} = keypair()

    :ok =
      userspace_peer(
        :wireguard_go,
        ctx.ns_b,
        "tg#{System.pid()}u#{n}",
        kb,
        51_820,
        [
          "10.97.#{n}.2/24"
        ],
        [%{public: pa, allowed: ["10.97.#{n}.1/32"]}]
      )

    # The member's configuration, readable by the member only.
    file = Path.join(ctx.dir, "#{name}.conf")

    File.write!(file, """
    [Interface]
    PrivateKey = #{ka}
    Address = 10.97.#{n}.1/24

    [Peer]
    PublicKey = #{pb}
    AllowedIPs = 10.97.#{n}.2/32
    Endpoint = 10.98.#{n}.2:51820
    """)

    {_, 0} = System.cmd("chown", ["#{ctx.member}:", file])
    File.chmod!(file, 0o600)

    # The administrator's part of the recipe: the name, linked.
    link = "/var/run/wireguard/#{name}.sock"
    File.mkdir_p!("/var/run/wireguard")
    File.rm(link)
    :ok = File.ln_s(Path.join(ctx.uapi, "#{name}.sock"), link)
    on_exit(fn -> File.rm(link) end)
    on_exit(fn -> in_ns(ctx.ns_a, ~w(ip link del #{name})) end)

    port =
      launcher(ctx, [
        "--config",
        file,
        "--uapi",
        ctx.uapi,
        "--socket-path",
        ctx.socket,
        name
      ])

    assert ready(port) == {:ready, name}

    # The device is the server's work, for the member.
    {uid, 0} = System.cmd("id", ["-u", ctx.member])
    {owner, 0} = in_ns(ctx.ns_a, ["cat", "/sys/class/net/#{name}/owner"])
    assert String.trim(owner) == String.trim(uid)

    assert {0, _} = ping(ctx.ns_a, "10.97.#{n}.2")

    # wg, as the member and as root, through the link.
    assert {out, 0} = as_member(ctx, ["wg", "show", name])
    assert out =~ "peer: #{pb}"
    assert out =~ "latest handshake"
    assert wg_dump(name)[pb].rx > 0

    # A peer added at runtime by the member: its allowed IPs routed to the
    # device through the server (they are delegated).
    {_, pc} = keypair()

    assert {_, 0} =
             as_member(ctx, ~w(wg set #{name} peer #{pc} allowed-ips 10.97.#{100 + n}.0/24))

    assert eventually(fn ->
             {routes, 0} = in_ns(ctx.ns_a, ~w(ip route show dev #{name}))
             routes =~ "10.97.#{100 + n}.0/24"
           end)

    # The first peer's session goes on.
    assert {0, _} = ping(ctx.ns_a, "10.97.#{n}.2")

    # The link goes, the interface with it, its socket too.
    {_, 0} = in_ns(ctx.ns_a, ~w(ip link del #{name}))
    assert {:exit, 0, _log} = ready(port)
    refute File.exists?(Path.join(ctx.uapi, "#{name}.sock"))
  end
end

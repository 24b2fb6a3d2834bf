defmodule Tundra.ServerTest do
  # The unprivileged path, for real: the test (root, in the test run's own
  # network namespace) starts tundra_server, makes a group and two users,
  # and starts second VMs as those users. Everything made is removed after.
  use ExUnit.Case, async: false
  @moduletag :privileged
  @moduletag timeout: 180_000

  import TundraTest.Net
  alias TundraTest.SecondVM

  setup_all do
    # Names of this run's own (see TundraTest.Leftovers).
    n = TundraTest.Env.run_id()
    group = "tundratest#{n}"
    member = "tundram#{n}"
    outsider = "tundrao#{n}"
    # The server wants a socket folder only root may write to.
    dir = "/run/tundra-exunit-#{n}"
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o755)
    on_exit(fn -> File.rm_rf!(dir) end)
    socket = Path.join(dir, "tundra.sock")
    config = Path.join(dir, "server.conf")

    # Members may use these ranges, and nothing else.
    File.write!(config, """
    allow group:#{group} 10.93.0.0/16 fd93::/16
    """)

    on_exit(fn ->
      # --force: a second VM of the user may still be exiting.
      for user <- [member, outsider],
          do: System.cmd("userdel", ["--force", user], stderr_to_stdout: true)

      System.cmd("groupdel", [group], stderr_to_stdout: true)
    end)

    {_, 0} = System.cmd("groupadd", [group], stderr_to_stdout: true)
    nologin = ["--no-create-home", "--shell", "/usr/sbin/nologin"]
    {_, 0} = System.cmd("useradd", nologin ++ ["-G", group, member], stderr_to_stdout: true)
    {_, 0} = System.cmd("useradd", nologin ++ [outsider], stderr_to_stdout: true)

    server = start_server(socket, group, config)
    on_exit(fn -> stop_server(server) end)

    vm_root = SecondVM.prepare()
    on_exit(fn -> File.rm_rf!(vm_root) end)

    %{socket: socket, member: member, outsider: outsider, vm: vm_root, server: server}
  end

  defp server_binary do
    native = Path.expand("native")
    target = Path.join(native, "target")

    {out, status} =
      System.cmd(
        "cargo",
        [
          "build",
          "--release",
          "--quiet",
          "-p",
          "tundra_server",
          "--manifest-path",
          Path.join(native, "Cargo.toml")
        ],
        env: [{"CARGO_TARGET_DIR", target}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    Path.join([target, "release", "tundra_server"])
  end

  # Returns the server's OS pid: the port itself closes when the setup_all
  # process exits, before on_exit runs, so the pid is what stops it.
  defp start_server(socket, group, config) do
    port =
      Port.open({:spawn_executable, server_binary()}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: [
          "--socket",
          socket,
          "--group",
          group,
          "--config",
          config,
          "--state-dir",
          Path.join(Path.dirname(socket), "state")
        ]
      ])

    {:os_pid, pid} = Port.info(port, :os_pid)
    assert eventually(fn -> File.exists?(socket) end), "tundra_server did not start"
    {pid, socket, port}
  end

  defp stop_server({pid, socket, _port}) do
    System.cmd("kill", ["-TERM", "#{pid}"], stderr_to_stdout: true)
    # On SIGTERM the server removes its socket and exits.
    assert eventually(fn -> not File.exists?(socket) end), "tundra_server left its socket"
  end

  # Runs in the member's VM: two devices from the server, an echo responder
  # on each, then waits for stdin to close.
  @member_code ~S"""
  [socket] = System.argv()
  direct = Tundra.create("10.93.9.2", via: :direct)
  {:ok, {d4, n4}} = Tundra.create("10.93.0.2", dstaddr: "10.93.0.1", socket_path: socket)
  {:ok, {d6, n6}} = Tundra.create("fd93::2", dstaddr: "fd93::1", socket_path: socket)
  {:ok, _} = TundraExamples.EchoResponder.serve(d4)
  {:ok, _} = TundraExamples.EchoResponder.serve(d6)
  IO.puts("READY #{n4} #{n6} #{inspect(direct)}")
  IO.read(:line)
  """

  test "a group member's unprivileged VM gets devices that answer ping and go with the VM",
       ctx do
    vm = SecondVM.start(ctx.vm, ctx.member, @member_code, [ctx.socket])
    ["READY", n4, n6, direct] = String.split(SecondVM.line(vm, "READY"), " ", parts: 4)

    # The VM really is unprivileged: direct creation is refused.
    assert direct == "{:error, :eacces}"
    {uid, 0} = System.cmd("id", ["-u", ctx.member])

    for name <- [n4, n6] do
      assert interface_exists?(name)
      assert File.read!("/sys/class/net/#{name}/owner") == uid
    end

    assert {0, out4} = ping("10.93.0.1", 2)
    assert out4 =~ "2 received"
    assert {0, out6} = ping("fd93::1", 2)
    assert out6 =~ "2 received"

    SecondVM.stop(vm)
    assert eventually(fn -> not interface_exists?(n4) and not interface_exists?(n6) end)
  end

  # Runs in the member's VM: a device made through the server, without a
  # name, by an owner that is killed (or closes it) and at once made again
  # with the same address, as a supervised child that restarts. Closes
  # run at a low priority, so on a saturated machine the old device
  # may take seconds to go: create/2 waits for it within its timeout,
  # which is given room here (what is tested is that it gets it back).
  @recreate_code ~S"""
  [socket] = System.argv()
  parent = self()

  results =
    for i <- 1..20 do
      owner =
        spawn(fn ->
          made =
            Tundra.create("10.93.70.2",
              dstaddr: "10.93.70.1",
              socket_path: socket,
              timeout: 60_000
            )

          if rem(i, 2) == 1, do: with({:ok, {dev, _}} <- made, do: Tundra.close(dev))
          send(parent, {:made, made})
          Process.sleep(:infinity)
        end)

      receive do
        {:made, made} ->
          Process.exit(owner, :kill)
          with {:ok, _} <- made, do: :ok
      end
    end

  IO.puts("RESULT #{inspect(Enum.frequencies(results))}")
  """

  test "an owner killed (or closing) and made again at once without a name gets its address back",
       ctx do
    result = SecondVM.run(ctx.vm, ctx.member, @recreate_code, "RESULT", [ctx.socket])
    assert result == "RESULT %{ok: 20}"
  end

  @create_code ~S"""
  [socket] = System.argv()
  IO.puts("RESULT " <> inspect(Tundra.create("10.93.5.2", socket_path: socket)))
  """

  # One create, of the kind argv names; the warning Tundra logs, then the
  # result.
  @explain_code ~S"""
  [socket, kind] = System.argv()

  result =
    case kind do
      "create" -> Tundra.create("10.93.6.2", socket_path: socket)
      "undelegated" -> Tundra.create("10.94.6.2", socket_path: socket)
      "name" -> Tundra.create("10.93.7.2", socket_path: socket, name: "eth7")
      "direct" -> Tundra.create("10.93.8.2", via: :direct)
    end

  Logger.flush()
  IO.puts("RESULT " <> inspect(result))
  """

  # What a user's program gets for `kind`: its result, and the warning.
  defp explained(ctx, user, socket, kind, opts \\ []) do
    vm = SecondVM.start(ctx.vm, user, @explain_code, [socket, kind], opts)
    lines = SecondVM.lines_until(vm, "RESULT")
    SecondVM.stop(vm)
    {List.last(lines), Enum.join(lines, "\n")}
  end

  test "each cause behind :eacces and :enoent is named, with what to do", ctx do
    group = "tundratest#{TundraTest.Env.run_id()}"

    # Not in the server's group at all.
    {result, said} = explained(ctx, ctx.outsider, ctx.socket, "create")
    assert result == "RESULT {:error, :eacces}"
    assert said =~ "is not in group #{group}"
    assert said =~ "usermod -aG #{group} #{ctx.outsider}"

    # In it in the user database, but not in this (older) session.
    {result, said} = explained(ctx, ctx.member, ctx.socket, "create", stale_groups: true)
    assert result == "RESULT {:error, :eacces}"
    assert said =~ "is in group #{group}"
    assert said =~ "log in again"

    # An address not delegated, a name outside the prefix: the server says.
    {result, said} = explained(ctx, ctx.member, ctx.socket, "undelegated")
    assert result == "RESULT {:error, :eacces}"
    assert said =~ "10.94.6.2/32 is not inside a range delegated to uid"

    {result, said} = explained(ctx, ctx.member, ctx.socket, "name")
    assert result == "RESULT {:error, :eacces}"
    assert said =~ ~s(start with "tun")

    # Directly, without privilege.
    {result, said} = explained(ctx, ctx.member, ctx.socket, "direct")
    assert result in ["RESULT {:error, :eacces}", "RESULT {:error, :eperm}"]
    assert said =~ "needs root or CAP_NET_ADMIN"

    # No server at the socket tried.
    missing = "/tmp/tundra-no-server-#{System.pid()}-#{System.unique_integer([:positive])}.sock"
    {result, said} = explained(ctx, ctx.member, missing, "create")
    assert result == "RESULT {:error, :enoent}"
    assert said =~ "no tundra_server listens at #{missing}"
  end

  test "a user outside the group gets :eacces, even if the socket's mode lets them in", ctx do
    assert SecondVM.run(ctx.vm, ctx.outsider, @create_code, "RESULT", [ctx.socket]) ==
             "RESULT {:error, :eacces}"

    # With the file mode opened up, the server's own peer check refuses.
    File.chmod!(ctx.socket, 0o666)

    try do
      assert SecondVM.run(ctx.vm, ctx.outsider, @create_code, "RESULT", [ctx.socket]) ==
               "RESULT {:error, :eacces}"
    after
      File.chmod!(ctx.socket, 0o660)
    end
  end

  @outside_code ~S"""
  [socket] = System.argv()
  outside = Tundra.create("10.94.0.2", socket_path: socket)
  inside = Tundra.create("10.93.11.2", dstaddr: "10.93.11.1", socket_path: socket)
  IO.puts("RESULT " <> inspect({outside, elem(inside, 0)}))
  """

  test "a member gets only addresses delegated to its group", ctx do
    assert SecondVM.run(ctx.vm, ctx.member, @outside_code, "RESULT", [ctx.socket]) ==
             "RESULT {{:error, :eacces}, :ok}"
  end

  test "create/2 gives up at its timeout when the server is stopped, connect included",
       %{server: {pid, socket, _port}} do
    # A stopped server accepts nothing: fill its queue of connections, so
    # that a connect would wait for it (with no timeout, before).
    System.cmd("kill", ["-STOP", "#{pid}"])
    queued = fill_accept_queue(socket)

    try do
      tasks =
        for n <- 1..12 do
          Task.async(fn ->
            Tundra.create("10.93.20.#{n}", via: :server, socket_path: socket, timeout: 1000)
          end)
        end

      # Twelve calls at once: none may hold a dirty scheduler past its
      # timeout (a bound on waiting here, not a timing assertion).
      for task <- tasks do
        assert Task.yield(task, 15_000) == {:ok, {:error, :etimedout}}
      end

      assert {:ok, _} = File.read("/proc/self/status")
    after
      Enum.each(queued, &:socket.close/1)
      System.cmd("kill", ["-CONT", "#{pid}"])
    end

    # Served again once it has worked through the queued connections (a
    # create retries while they hold root's connection slots).
    assert {:ok, {dev, _}} = Tundra.create("10.93.21.2", via: :server, socket_path: socket)
    :ok = Tundra.close(dev)
  end

  defp fill_accept_queue(path, queued \\ []) do
    {:ok, sock} = :socket.open(:local, :stream, :default)

    case :socket.connect(sock, %{family: :local, path: path}, :nowait) do
      :ok ->
        if length(queued) > 10_000, do: flunk("the accept queue never filled")
        fill_accept_queue(path, [sock | queued])

      _full ->
        :socket.close(sock)
        queued
    end
  end

  test "devices from the server are never inherited by ports spawned meanwhile", ctx do
    test = self()

    # Another process spawns short-lived OS processes all the while.
    spawner = spawn_link(fn -> spawn_ports(test, System.find_executable("sleep")) end)

    devices =
      for n <- 1..40 do
        assert {:ok, {dev, name}} =
                 Tundra.create("10.93.30.#{n}", via: :server, socket_path: ctx.socket)

        {dev, name}
      end

    send(spawner, :stop)
    assert_receive :stopped, 5_000

    for {dev, _} <- devices do
      {:ok, %{fd: fd}} = Tundra.info(dev)
      [_, flags] = Regex.run(~r/^flags:\s+(\d+)/m, File.read!("/proc/self/fdinfo/#{fd}"))

      assert Bitwise.band(String.to_integer(flags, 8), 0o2000000) != 0,
             "fd #{fd} not close-on-exec"
    end

    spawned = collect_spawned([])
    assert spawned != []

    for pid <- spawned, fd <- open_fds_of(pid) do
      refute File.read_link("/proc/#{pid}/fd/#{fd}") == {:ok, "/dev/net/tun"},
             "process #{pid} inherited a device"
    end

    for {dev, _} <- devices, do: :ok = Tundra.close(dev)

    assert eventually(fn ->
             Enum.all?(devices, fn {_, name} -> not interface_exists?(name) end)
           end)
  end

  defp spawn_ports(test, sleep) do
    port = Port.open({:spawn_executable, sleep}, args: ["3"])
    {:os_pid, pid} = Port.info(port, :os_pid)
    send(test, {:spawned, pid})

    receive do
      :stop -> send(test, :stopped)
    after
      0 -> spawn_ports(test, sleep)
    end
  end

  # A process may have exited since it was listed.
  defp open_fds_of(pid) do
    case File.ls("/proc/#{pid}/fd") do
      {:ok, fds} -> fds
      {:error, _} -> []
    end
  end

  # The OS pids of the spawned processes that are still alive.
  defp collect_spawned(acc) do
    receive do
      {:spawned, pid} -> collect_spawned([pid | acc])
    after
      0 -> Enum.filter(acc, &File.exists?("/proc/#{&1}/fd"))
    end
  end

  test "a multi-queue device comes with all its queues in one reply", ctx do
    for {queues, n} <- [{2, 14}, {4, 15}] do
      assert {:ok, {devs, name}} =
               Tundra.create("10.97.#{n}.2",
                 dstaddr: "10.97.#{n}.1",
                 queues: queues,
                 via: :server,
                 socket_path: ctx.socket
               )

      assert length(devs) == queues
      assert interface_exists?(name)
      TundraTest.Flows.assert_spread(devs, n, queues)
    end
  end

  test "with no server listening, create says :enoent", ctx do
    missing = "/tmp/tundra-no-server-#{System.pid()}-#{System.unique_integer([:positive])}.sock"

    assert SecondVM.run(ctx.vm, ctx.member, @create_code, "RESULT", [missing]) ==
             "RESULT {:error, :enoent}"
  end

  test "via: :server works for root too, with the same result shape", ctx do
    assert {:ok, {dev, name}} =
             Tundra.create("10.93.6.2",
               dstaddr: "10.93.6.1",
               via: :server,
               socket_path: ctx.socket
             )

    assert {:ok, %{name: ^name, owner: owner}} = Tundra.info(dev)
    assert owner == self()

    assert {:error, {:invalid_option, {:mtu, 1}}} =
             Tundra.create("10.93.7.2", mtu: 1, via: :server)
  end

  # A 0.x client's create, made from Elixir with :socket: the 160-byte
  # request, the 32-byte reply and the device fd (SCM_RIGHTS), which lands
  # in this VM and is handed to adopt/2.
  defp legacy_create(socket_path, addr, dstaddr) do
    field = fn text -> text <> :binary.copy(<<0>>, 46 - byte_size(text)) end

    request =
      <<0::32-native, 0::32, 152::64-native, field.(addr)::binary, field.(dstaddr)::binary,
        field.("")::binary, 0::16, 0::32-native>>

    {:ok, sock} = :socket.open(:local, :stream, :default)
    :ok = :socket.connect(sock, %{family: :local, path: socket_path})
    :ok = :socket.send(sock, request)
    {:ok, %{iov: [reply], ctrl: ctrl}} = :socket.recvmsg(sock, 32, 64, [], 5_000)
    :socket.close(sock)

    <<0::32-native, _::32, 24::64-native, name::binary-size(16)>> = reply
    [%{level: :socket, type: :rights, data: <<fd::32-native, _::binary>>}] = ctrl
    {fd, hd(:binary.split(name, <<0>>))}
  end

  test "a 0.x client's device (tun_pi header) works through adopt/2, one packet or many", ctx do
    # Active mode: the echo responder answers ping.
    {fd, name} = legacy_create(ctx.socket, "fd94:1::2", "fd94:1::1")
    assert {:ok, {dev, ^name}} = Tundra.adopt(fd, dup: false)
    {:ok, responder} = TundraExamples.EchoResponder.serve(dev)
    assert {0, _} = ping("fd94:1::1", 2)
    assert TundraExamples.EchoResponder.replies(responder) == 2

    # Batches: the UDP reflector's drain loop uses recv_many/3 and
    # send_many/3 (and adopts the fd itself).
    {fd, name} = legacy_create(ctx.socket, "10.94.2.2", "10.94.2.1")
    spec = {:adopt, fd, dup: false}
    {:ok, reflector} = TundraExamples.UdpReflector.start_link(spec, mode: :drain)
    assert TundraExamples.UdpReflector.name(reflector) == name

    {:ok, sock} =
      :gen_udp.open(0, [:binary, ip: {10, 94, 2, 2}, active: false, recbuf: 1_000_000])

    for i <- 1..10, do: :ok = :gen_udp.send(sock, {10, 94, 2, 1}, 9000, "pi #{i}")

    for i <- 1..10 do
      assert {:ok, {{10, 94, 2, 1}, 9000, got}} = :gen_udp.recv(sock, 0, 5_000)
      assert got == "pi #{i}"
    end
  end

  # Runs in the member's VM: a device from the server, changed through the
  # server (within the delegation, and twice beyond it), then answering
  # ping; waits for stdin to close.
  @change_code ~S"""
  [socket] = System.argv()
  s = [socket_path: socket]
  {:ok, {dev, name}} = Tundra.create("10.93.40.2", [dstaddr: "10.93.40.1", up: false] ++ s)
  results = [
    Tundra.set(dev, [up: true, mtu: 1400] ++ s),
    Tundra.add_address(dev, "10.93.41.2", [prefix: 24] ++ s),
    Tundra.add_address(dev, "fd93:42::2", [dstaddr: "fd93:42::1"] ++ s),
    Tundra.add_route(dev, "10.93.43.0/24", s),
    Tundra.add_address(dev, "10.93.46.2", s),
    Tundra.remove_address(dev, "10.93.46.2", s),
    Tundra.add_address(dev, "10.50.0.2", s),
    Tundra.add_route(dev, "10.93.45.0/24", s),
    Tundra.set(dev, [mtu: 1] ++ s)
  ]
  {:ok, _} = TundraExamples.EchoResponder.serve(dev)
  IO.puts("READY #{name} #{inspect(results)}")
  IO.read(:line)
  """

  test "a member's VM changes its device through the server, within what is delegated", ctx do
    # Root's device, whose prefix route the member must not shadow.
    assert {:ok, {root_dev, _}} = Tundra.create("10.93.45.1", prefix: 24)

    vm = SecondVM.start(ctx.vm, ctx.member, @change_code, [ctx.socket])
    ["READY", name, results] = String.split(SecondVM.line(vm, "READY"), " ", parts: 3)

    assert results ==
             inspect([
               :ok,
               :ok,
               :ok,
               :ok,
               :ok,
               :ok,
               {:error, :eacces},
               {:error, :eaddrinuse},
               {:error, {:invalid_option, {:mtu, 1}}}
             ])

    addresses = System.cmd("ip", ["addr", "show", name]) |> elem(0)
    assert addresses =~ "mtu 1400"
    assert addresses =~ "10.93.41.2/24"
    assert addresses =~ "fd93:42::2 peer fd93:42::1"
    refute addresses =~ "10.93.46.2"
    refute addresses =~ "10.50.0.2"

    for peer <- ["10.93.40.1", "10.93.41.9", "fd93:42::1", "10.93.43.9"] do
      assert {0, _} = ping(peer, 1)
    end

    SecondVM.stop(vm)
    assert eventually(fn -> not interface_exists?(name) end)
    :ok = Tundra.close(root_dev)
  end

  @attach_code ~S"""
  [name] = System.argv()
  result = Tundra.attach(name)

  # A change needs the server, which does not listen at the default socket.
  change =
    with {:ok, {dev, ^name}} <- result do
      set = Tundra.set(dev, mtu: 1400)
      {:ok, _} = TundraExamples.EchoResponder.serve(dev)
      set
    end

  shown = with {:ok, _} <- result, do: :ok
  IO.puts("READY #{inspect(shown)} #{inspect(Tundra.create("10.93.52.2"))} #{inspect(change)}")
  IO.read(:line)
  """

  test "a persistent device made for a user is opened by that user's VM, no server needed",
       ctx do
    name = "tpers#{rem(System.unique_integer([:positive]), 10_000)}"

    assert {:ok, {dev, ^name}} =
             Tundra.create("10.93.50.2",
               dstaddr: "10.93.50.1",
               name: name,
               persist: true,
               owner: ctx.member
             )

    on_exit(fn -> System.cmd("ip", ["link", "del", name], stderr_to_stdout: true) end)
    :ok = Tundra.close(dev)
    assert interface_exists?(name)

    # Anyone else is refused by the kernel.
    # (Both may open /dev/net/tun, as on most distributions.)
    outsider = SecondVM.start(ctx.vm, ctx.outsider, @attach_code, [name], open_tun: true)
    assert SecondVM.line(outsider, "READY") =~ "READY {:error, :eperm}"
    SecondVM.stop(outsider)

    # Where /dev/net/tun is 0600, not even the owner may open it.
    vm = SecondVM.start(ctx.vm, ctx.member, @attach_code, [name])
    assert SecondVM.line(vm, "READY") =~ "READY {:error, :eacces}"
    SecondVM.stop(vm)

    # The owner's VM attaches; with no server at the default socket, it
    # could not have been given a device any other way, and a change
    # (which needs the server) says the server is not there.
    vm = SecondVM.start(ctx.vm, ctx.member, @attach_code, [name], open_tun: true)
    assert SecondVM.line(vm, "READY") == "READY :ok {:error, :enoent} {:error, :enoent}"
    assert {0, _} = ping("10.93.50.1", 2)

    SecondVM.stop(vm)
    # Once the VM is gone no fd holds the device, which stays.
    assert eventually(fn -> File.read("/sys/class/net/#{name}/carrier") == {:ok, "0\n"} end)
    assert interface_exists?(name)
    assert System.cmd("ip", ["addr", "show", name]) |> elem(0) =~ "10.93.50.2 peer 10.93.50.1"
  end

  test "a persistent device made without :owner or :group is its creator's, not everyone's",
       ctx do
    name = "tpriv#{rem(System.unique_integer([:positive]), 10_000)}"

    assert {:ok, {dev, ^name}} =
             Tundra.create("10.93.51.2", dstaddr: "10.93.51.1", name: name, persist: true)

    on_exit(fn -> System.cmd("ip", ["link", "del", name], stderr_to_stdout: true) end)
    :ok = Tundra.close(dev)

    # An outsider who may open /dev/net/tun cannot read root's device.
    outsider = SecondVM.start(ctx.vm, ctx.outsider, @attach_code, [name], open_tun: true)
    assert SecondVM.line(outsider, "READY") =~ "READY {:error, :eperm}"
    SecondVM.stop(outsider)
    assert File.read!("/sys/class/net/#{name}/owner") == "0\n"

    # Root still attaches it.
    assert {:ok, {again, ^name}} = Tundra.attach(name)
    :ok = Tundra.close(again)
  end

  # Runs in the member's VM: an offload device from the server, and one
  # whose fd root passes over a Unix socket (adopted); each answers ping.
  @offload_code ~S"""
  [socket, path] = System.argv()
  {:ok, {dev, name}} =
    Tundra.create("10.93.60.2", dstaddr: "10.93.60.1", offload: true, socket_path: socket)

  {:ok, %{offload: served}} = Tundra.info(dev)
  {:ok, _} = TundraExamples.EchoResponder.serve(dev)
  {:ok, listener} = :socket.open(:local, :stream, :default)
  :ok = :socket.bind(listener, %{family: :local, path: path})
  :ok = :socket.listen(listener)
  IO.puts("LISTENING")
  {:ok, conn} = :socket.accept(listener, 10_000)
  {:ok, %{ctrl: [%{data: <<fd::32-native, _::binary>>}]}} = :socket.recvmsg(conn, 1, 64, [], 10_000)
  {:ok, {adopted, adopted_name}} = Tundra.adopt(fd, dup: false)
  {:ok, %{offload: adopted_offload}} = Tundra.info(adopted)
  {:ok, _} = TundraExamples.EchoResponder.serve(adopted)
  IO.puts("READY #{name} #{Enum.join(served, ",")} #{adopted_name} #{Enum.join(adopted_offload, ",")}")
  IO.read(:line)
  """

  test "offload devices: from the server, and adopted by an unprivileged VM", ctx do
    path = "/tmp/tundra-fdpass-#{System.pid()}-#{System.unique_integer([:positive])}.sock"
    on_exit(fn -> File.rm(path) end)
    vm = SecondVM.start(ctx.vm, ctx.member, @offload_code, [ctx.socket, path])
    SecondVM.line(vm, "LISTENING")

    # Root's offload device, handed over as an fd.
    {:ok, {dev, _}} = Tundra.create("10.93.61.2", dstaddr: "10.93.61.1", offload: true)
    {:ok, %{fd: fd}} = Tundra.info(dev)
    {:ok, sock} = :socket.open(:local, :stream, :default)
    :ok = :socket.connect(sock, %{family: :local, path: path})
    rights = %{level: :socket, type: :rights, data: <<fd::32-native>>}
    :ok = :socket.sendmsg(sock, %{iov: ["x"], ctrl: [rights]})

    ["READY", _name, served, _adopted_name, adopted] =
      String.split(SecondVM.line(vm, "READY"), " ", parts: 5)

    for offloads <- [served, adopted] do
      assert "csum" in String.split(offloads, ",") and offloads =~ "tso4", offloads
    end

    :ok = Tundra.close(dev)
    assert {0, _} = ping("10.93.60.1", 2)
    assert {0, _} = ping("10.93.61.1", 2)
    :socket.close(sock)
    SecondVM.stop(vm)
  end
end

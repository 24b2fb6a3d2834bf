defmodule TundraWireGuard.RunnerTest do
  # examples/wireguard.exs as a user runs it: from this package's folder,
  # in a network namespace of the test's own, its standard input kept open
  # (as `tail -f file |` or a terminal keeps it).
  use ExUnit.Case, async: false
  @moduletag :privileged
  @moduletag timeout: 120_000

  import TundraWireGuardTest.Lab

  # The runner in `ns`, reading the port's input; its output lines come
  # as port messages.
  defp runner(ns, conf) do
    mix = System.find_executable("mix")

    script =
      ~s(cd #{File.cwd!()} && exec ip netns exec #{ns} #{mix} run examples/wireguard.exs #{conf})

    port = Port.open({:spawn, "sh -c '#{script}' 2>&1"}, [:binary, :exit_status, {:line, 4096}])
    on_exit(fn -> if Port.info(port), do: Port.close(port) end)
    port
  end

  defp line(port, wanted, seen \\ []) do
    receive do
      {^port, {:data, {_, text}}} ->
        if text =~ wanted, do: text, else: line(port, wanted, [text | seen])

      {^port, {:exit_status, status}} ->
        flunk(
          "exited (#{status}) before #{inspect(wanted)}: #{Enum.reverse(seen) |> Enum.join("\n")}"
        )
    after
      60_000 ->
        flunk("no #{inspect(wanted)} in a minute: #{Enum.reverse(seen) |> Enum.join("\n")}")
    end
  end

  defp write_conf(text) do
    path =
      Path.join(
        System.tmp_dir!(),
        "wgrun#{System.pid()}#{System.unique_integer([:positive])}.conf"
      )

    File.write!(path, text)
    on_exit(fn -> File.rm(path) end)
    path
  end

  test "a show on its input is answered at once, while the input stays open" do
    ns = netns()
    {private, _} = keypair()
    {_, peer} = keypair()

    conf =
      write_conf(conf(private, ["10.95.1.1/24"], [%{public: peer, allowed: ["10.95.1.2/32"]}]))

    port = runner(ns, conf)
    assert line(port, ~r/^ready /) =~ "ready"
    Port.command(port, "show\n")
    assert line(port, ~r/^interface: /) =~ "interface"
    assert line(port, "peer: #{peer}") =~ peer
  end

  test "a start that fails says what failed, with what, in one line" do
    ns = netns()
    {private, _} = keypair()
    # The UDP port taken (in the runner's namespace) before it starts.
    {_, 0} = in_ns(ns, ~w(ip link set lo up))

    holder =
      Port.open(
        {:spawn,
         "ip netns exec #{ns} python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((\"0.0.0.0\",51999)); print(\"bound\",flush=True); sys.stdin.read()'"},
        [:binary, {:line, 256}]
      )

    on_exit(fn -> if Port.info(holder), do: Port.close(holder) end)
    assert_receive {^holder, {:data, {:eol, "bound"}}}, 10_000
    conf = write_conf(conf(private, ["10.95.2.1/24"], [], port: 51_999))

    assert line(runner(ns, conf), "wireguard.exs") =~
             "cannot start: UDP port 51999 is in use (ListenPort)"

    no_key = write_conf("[Interface]\nAddress = 10.95.2.1/24\n")
    assert line(runner(ns, no_key), "wireguard.exs") =~ ~r/#{no_key}:1: .*PrivateKey/
  end

  test "a supervised interface whose device is deleted says so, and is started again" do
    import ExUnit.CaptureLog
    ns = netns()
    {private, _} = keypair()
    {_, peer} = keypair()
    text = conf(private, ["10.95.3.1/24"], [%{public: peer, allowed: ["10.95.3.2/32"]}])
    {:ok, config} = TundraWireGuard.parse_config(text)
    name = "wgdel#{rem(System.pid() |> String.to_integer(), 10_000)}"
    child = {TundraWireGuard, config: config, name: name, netns: ns, server: :wg_deleted}
    first = start_supervised!(child)

    log =
      capture_log(fn ->
        {_, 0} = in_ns(ns, ~w(ip link del #{name}))

        assert eventually(fn ->
                 pid = Process.whereis(:wg_deleted)
                 is_pid(pid) and pid != first and TundraWireGuard.info(pid).name == name
               end)
      end)

    assert log =~ "WireGuard interface #{name}: its device was deleted"
  end
end

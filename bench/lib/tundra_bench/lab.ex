defmodule TundraBench.Lab do
  @moduledoc false
  # What the tunnel benchmarks share: two namespaces joined by a veth pair
  # (the "internet" between two tunnel ends), iperf3 TCP between them, and
  # the UDP drop counters of their stacks.

  @doc "Makes namespaces `a` and `b` joined by a veth pair with the underlay's addresses (/30)."
  def make_namespaces({a, b}, {ua, ub}) do
    veth = "tbv#{rem(System.unique_integer([:positive]), 100_000)}"

    cmds = [
      ~w(ip netns add #{a}),
      ~w(ip netns add #{b}),
      ~w(ip link add #{veth}a type veth peer name #{veth}b),
      ~w(ip link set #{veth}a netns #{a}),
      ~w(ip link set #{veth}b netns #{b}),
      ~w(ip -n #{a} addr add #{ua}/30 dev #{veth}a),
      ~w(ip -n #{b} addr add #{ub}/30 dev #{veth}b),
      ~w(ip -n #{a} link set #{veth}a up),
      ~w(ip -n #{b} link set #{veth}b up),
      ~w(ip -n #{a} link set lo up),
      ~w(ip -n #{b} link set lo up)
    ]

    for [exe | args] = cmd <- cmds do
      {out, status} = System.cmd(exe, args, stderr_to_stdout: true)
      if status != 0, do: raise("#{Enum.join(cmd, " ")}: #{out}")
    end

    :ok
  end

  @doc "Removes both namespaces (and so the veth pair)."
  def delete_namespaces({a, b}) do
    System.cmd("ip", ["netns", "del", a], stderr_to_stdout: true)
    System.cmd("ip", ["netns", "del", b], stderr_to_stdout: true)
    :ok
  end

  @doc """
  iperf3 TCP for `seconds`, client in `a`, server in `b` at `server_addr`
  (with `reverse: true` the server sends): `{Mbit/s received, TCP
  retransmits}`.
  """
  def iperf(a, b, server_addr, seconds, opts \\ []) do
    server =
      Port.open({:spawn_executable, System.find_executable("ip")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ~w(netns exec #{b} iperf3 --server --one-off --bind #{server_addr})
      ])

    Process.sleep(300)
    reverse = if opts[:reverse], do: ["--reverse"], else: []

    {out, status} =
      System.cmd(
        "ip",
        ~w(netns exec #{a} iperf3 --client #{server_addr} --time #{seconds} --connect-timeout 3000 --json) ++
          reverse,
        stderr_to_stdout: true
      )

    # --one-off makes it exit after the test; stop it anyway if the client failed.
    with {:os_pid, pid} <- Port.info(server, :os_pid),
         do: System.cmd("kill", ["#{pid}"], stderr_to_stdout: true)

    received = Regex.run(~r/"sum_received":\s*\{[^}]*?"bits_per_second":\s*([0-9.e+]+)/s, out)
    retransmits = Regex.run(~r/"sum_sent":\s*\{[^}]*?"retransmits":\s*(\d+)/s, out)

    case {received, retransmits} do
      {[_, bps], [_, count]} when status == 0 ->
        {elem(Float.parse(bps), 0) / 1.0e6, String.to_integer(count)}

      _ ->
        raise "iperf3 failed (#{status}): #{out}"
    end
  end

  @doc """
  UDP datagrams a namespace's stack dropped so far: received into a full
  socket buffer, not sent for a full one, or in error (/proc/net/snmp).
  """
  def udp_drops(ns) do
    {snmp, 0} = System.cmd("ip", ~w(netns exec #{ns} cat /proc/net/snmp))

    case for("Udp: " <> fields <- String.split(snmp, "\n"), do: String.split(fields)) do
      [names, values] ->
        counters = Map.new(Enum.zip(names, Enum.map(values, &String.to_integer/1)))
        Enum.sum(for key <- ~w(InErrors RcvbufErrors SndbufErrors), do: Map.get(counters, key, 0))

      _ ->
        0
    end
  end

  @doc """
  Starts a userspace WireGuard no one here wrote, `kind` (`:boringtun` or
  Debian's `:wireguard_go`), as interface `name` in namespace `ns`, and
  waits for its UAPI socket: `{port, os_pid}` (`Native.stop/1` ends it).
  """
  def start_userspace_wireguard(kind, ns, name) do
    socket = "/var/run/wireguard/#{name}.sock"

    command =
      case kind do
        # scripts/wireguard-peer (run by scripts/bench) builds the pinned version there.
        :boringtun ->
          "#{Path.expand("_build/tools/bin/boringtun-cli")} #{name} --foreground " <>
            "--disable-drop-privileges -l /dev/null"

        # Debian's, from apt; it refuses to run beside a kernel with the
        # module unless told.
        :wireguard_go ->
          "env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=error " <>
            "wireguard-go -f #{name} >/dev/null 2>&1"
      end

    script = """
    ip netns exec #{ns} #{command} & pid=$!
    for i in $(seq 200); do [ -S #{socket} ] && break; sleep 0.05; done
    echo "ready $pid"
    read _
    kill $pid
    wait $pid
    """

    TundraBench.Native.start(["sh", "-c", script])
  end
end

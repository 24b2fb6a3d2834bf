defmodule TundraBench.Tunnel do
  @moduledoc false
  # A real tunnel: two namespaces joined by a veth pair (the "internet"),
  # one tunnel end in each, iperf3 TCP through the tunnel. Elixir ends
  # (examples/udp_tunnel.exs, one VM per namespace) against raw Rust
  # relays, each plain (a system call per packet on both sides) and with
  # offload (TUN super-packets, UDP_SEGMENT/UDP_GRO). Also the CPU time
  # both ends take per GB moved.

  alias TundraBench.{Native, Stats}

  @underlay {"192.168.250.1", "192.168.250.2"}
  @overlay {"10.251.0.1", "10.251.0.2"}
  @port 7000
  @mtu 1400

  def run(opts) do
    suffix = System.unique_integer([:positive])
    ns = {"tundra-bench-a-#{suffix}", "tundra-bench-b-#{suffix}"}

    try do
      make_namespaces(ns)

      kinds = [:raw, :elixir, :raw_offload, :elixir_offload]

      samples =
        for round <- 1..opts[:rounds] do
          # Alternating order, so that neither side always runs first.
          sides = if rem(round, 2) == 1, do: kinds, else: Enum.reverse(kinds)
          Map.new(sides, &{&1, measure(&1, ns, opts[:tunnel_seconds])})
        end

      median = fn kind, key -> Stats.median(Enum.map(samples, &get_in(&1, [kind, key]))) end
      mbps = Map.new(kinds, &{&1, median.(&1, :mbps)})
      cpu = Map.new(kinds, &{&1, median.(&1, :cpu_per_gb)})
      retransmits = Map.new(kinds, &{&1, median.(&1, :retransmits)})
      drops = Map.new(kinds, &{&1, median.(&1, :udp_drops)})

      for kind <- kinds do
        IO.puts(
          "  tunnel #{kind}: #{Float.round(mbps[kind], 1)} Mbit/s, " <>
            "#{Float.round(cpu[kind], 2)} CPU s/GB, #{round(retransmits[kind])} TCP retransmits, " <>
            "#{round(drops[kind])} UDP datagrams dropped"
        )
      end

      [
        %{
          section: :tunnel,
          raw: mbps.raw,
          elixir: mbps.elixir,
          ratio: Stats.ratio(mbps.elixir, mbps.raw),
          raw_offload: mbps.raw_offload,
          elixir_offload: mbps.elixir_offload,
          offload_ratio: Stats.ratio(mbps.elixir_offload, mbps.raw_offload),
          offload_gain: Stats.ratio(mbps.elixir_offload, mbps.elixir),
          cpu_per_gb: cpu,
          retransmits: retransmits,
          udp_drops: drops
        }
      ]
    after
      {a, b} = ns
      System.cmd("ip", ["netns", "del", a], stderr_to_stdout: true)
      System.cmd("ip", ["netns", "del", b], stderr_to_stdout: true)
    end
  end

  defp make_namespaces({a, b}) do
    {ua, ub} = @underlay
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
  end

  # Starts both tunnel ends of one kind, runs iperf3 through them, stops them.
  defp measure(kind, {a, b}, seconds) do
    {ua, ub} = @underlay
    {oa, ob} = @overlay

    ends = [
      start_end(kind, a, oa, ob, "#{ua}:#{@port}", "#{ub}:#{@port}"),
      start_end(kind, b, ob, oa, "#{ub}:#{@port}", "#{ua}:#{@port}")
    ]

    try do
      pids = Enum.map(ends, fn {port, _} -> elem(Port.info(port, :os_pid), 1) end)
      cpu_before = Enum.map(pids, &Stats.cpu_seconds/1)
      drops_before = udp_drops(a) + udp_drops(b)
      {mbps, retransmits} = iperf(a, b, ob, seconds)
      cpu = Enum.sum(Enum.map(pids, &Stats.cpu_seconds/1)) - Enum.sum(cpu_before)
      gigabytes = mbps * seconds / 8 / 1000

      %{
        mbps: mbps,
        cpu_per_gb: cpu / max(gigabytes, 1.0e-9),
        retransmits: retransmits,
        udp_drops: udp_drops(a) + udp_drops(b) - drops_before
      }
    after
      Enum.each(ends, &Native.stop/1)
    end
  end

  defp start_end(raw, ns, address, peer, local, remote) when raw in [:raw, :raw_offload] do
    command = if raw == :raw, do: "relay", else: "relay-offload"

    Native.start(
      ~w(ip netns exec #{ns}) ++
        [Native.path("tundra_bench"), command] ++
        ~w(--address #{address} --dstaddr #{peer} --prefix 32 --mtu #{@mtu} --bind #{local} --remote #{remote})
    )
  end

  defp start_end(elixir, ns, address, peer, local, remote)
       when elixir in [:elixir, :elixir_offload] do
    plain = if elixir == :elixir, do: ["--plain"], else: []

    Native.start(
      ~w(ip netns exec #{ns} mix run examples/udp_tunnel.exs) ++
        ~w(--address #{address} --peer #{peer} --mtu #{@mtu} --local #{local} --remote #{remote}) ++
        plain,
      60_000
    )
  end

  # Mbit/s that the iperf3 server in b received from the client in a.
  defp iperf(a, b, server_addr, seconds) do
    server =
      Port.open({:spawn_executable, System.find_executable("ip")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ~w(netns exec #{b} iperf3 --server --one-off --bind #{server_addr})
      ])

    Process.sleep(300)

    {out, status} =
      System.cmd(
        "ip",
        ~w(netns exec #{a} iperf3 --client #{server_addr} --time #{seconds} --connect-timeout 3000 --json),
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

  # UDP datagrams a namespace's stack dropped so far: received into a full
  # socket buffer, not sent for a full one, or in error (/proc/net/snmp).
  defp udp_drops(ns) do
    {snmp, 0} = System.cmd("ip", ~w(netns exec #{ns} cat /proc/net/snmp))

    case for("Udp: " <> fields <- String.split(snmp, "\n"), do: String.split(fields)) do
      [names, values] ->
        counters = Map.new(Enum.zip(names, Enum.map(values, &String.to_integer/1)))
        Enum.sum(for key <- ~w(InErrors RcvbufErrors SndbufErrors), do: Map.get(counters, key, 0))

      _ ->
        0
    end
  end
end

defmodule TundraBench.WireGuard do
  @moduledoc false
  # WireGuard through a real "internet": two namespaces joined by a veth
  # pair, a WireGuard interface in each, iperf3 TCP through them, both
  # ways. Pairs of ends: boringtun in both (the reference) against the
  # Elixir peer (tundra_wireguard/examples/wireguard.exs, its own VM) in
  # namespace a with boringtun in b; and Elixir in both against Debian's
  # wireguard-go in both. Both ends' CPU time per GB moved beside each.

  alias TundraBench.{Lab, Native, Stats}

  @underlay {"192.168.252.1", "192.168.252.2"}
  @overlay {"10.252.0.1", "10.252.0.2"}
  @port 51_820
  # Each pair: {what runs in a, what runs in b}.
  @pairs %{
    boringtun: {:boringtun, :boringtun},
    elixir: {:elixir, :boringtun},
    elixir_pair: {:elixir, :elixir},
    wireguard_go: {:wireguard_go, :wireguard_go}
  }
  @kinds [:boringtun, :elixir, :wireguard_go, :elixir_pair]

  def run(opts) do
    suffix = System.unique_integer([:positive])

    ns =
      {"tundra-bench-wa-#{suffix}-#{System.pid()}", "tundra-bench-wb-#{suffix}-#{System.pid()}"}

    dir = Path.join(System.tmp_dir!(), "tundra-bench-wg-#{suffix}")
    File.mkdir_p!(dir)

    try do
      :ok = Lab.make_namespaces(ns, @underlay)
      keys = {keypair(), keypair()}
      kinds = @kinds

      samples =
        for round <- 1..opts[:rounds] do
          sides = if rem(round, 2) == 1, do: kinds, else: Enum.reverse(kinds)
          Map.new(sides, &{&1, measure(@pairs[&1], ns, keys, dir, opts[:tunnel_seconds], suffix)})
        end

      median = fn kind, key -> Stats.median(Enum.map(samples, &get_in(&1, [kind, key]))) end

      stats =
        for kind <- kinds,
            key <- [:up, :down, :up_cpu, :down_cpu, :up_rtx, :down_rtx],
            into: %{},
            do: {{kind, key}, median.(kind, key)}

      for kind <- kinds do
        IO.puts(
          "  wireguard #{kind}: a->b #{Float.round(stats[{kind, :up}], 1)} Mbit/s " <>
            "(#{Float.round(stats[{kind, :up_cpu}], 2)} CPU s/GB, #{round(stats[{kind, :up_rtx}])} rtx), " <>
            "b->a #{Float.round(stats[{kind, :down}], 1)} Mbit/s " <>
            "(#{Float.round(stats[{kind, :down_cpu}], 2)} CPU s/GB, #{round(stats[{kind, :down_rtx}])} rtx)"
        )
      end

      [%{section: :wireguard, stats: stats}]
    after
      Lab.delete_namespaces(ns)
      File.rm_rf(dir)
    end
  end

  defp keypair do
    {public, private} = :crypto.generate_key(:ecdh, :x25519)
    {Base.encode64(private), Base.encode64(public)}
  end

  # One pair of ends up, iperf3 both ways, both ends down.
  defp measure({kind_a, kind_b}, {a, b}, {ka, kb}, dir, seconds, suffix) do
    {_ua, ub} = @underlay
    {oa, ob} = @overlay
    # The UAPI sockets in /var/run/wireguard are the machine's: names of
    # this run's own.
    id = rem(suffix, 100_000)

    ends = [
      start_end(kind_a, a, "wga#{id}", ka, kb, oa, ob, "#{ub}:#{@port}", dir),
      start_end(kind_b, b, "wgb#{id}", kb, ka, ob, oa, nil, dir)
    ]

    try do
      pids = Enum.map(ends, & &1.os_pid)
      # A first handshake, so that the measurement does not include it.
      {_, 0} = System.cmd("ip", ~w(netns exec #{a} ping -c 3 -i 0.2 -W 5 #{ob}))
      up = sample(pids, fn -> Lab.iperf(a, b, ob, seconds) end, seconds)
      down = sample(pids, fn -> Lab.iperf(a, b, ob, seconds, reverse: true) end, seconds)

      %{
        up: up.mbps,
        up_cpu: up.cpu_per_gb,
        up_rtx: up.retransmits,
        down: down.mbps,
        down_cpu: down.cpu_per_gb,
        down_rtx: down.retransmits
      }
    after
      Enum.each(ends, &stop_end/1)
    end
  end

  defp sample(pids, iperf, seconds) do
    before = Enum.map(pids, &Stats.cpu_seconds/1)
    {mbps, retransmits} = iperf.()
    cpu = Enum.sum(Enum.map(pids, &Stats.cpu_seconds/1)) - Enum.sum(before)

    %{
      mbps: mbps,
      retransmits: retransmits,
      cpu_per_gb: cpu / max(mbps * seconds / 8 / 1000, 1.0e-9)
    }
  end

  # boringtun or wireguard-go as interface `name`, configured with wg: its
  # peer is the other key, allowed `peer/32`, at `endpoint` (if given).
  defp start_end(kind, ns, name, {private, _}, {_, peer_public}, address, peer, endpoint, dir)
       when kind in [:boringtun, :wireguard_go] do
    {port, os_pid} = Lab.start_userspace_wireguard(kind, ns, name)
    key = Path.join(dir, "#{name}.key")
    File.write!(key, private <> "\n")
    File.chmod!(key, 0o600)
    endpoint = if endpoint, do: ["endpoint", endpoint], else: []

    run!(
      ~w(ip netns exec #{ns} wg set #{name} private-key #{key} listen-port #{@port} peer #{peer_public} allowed-ips #{peer}/32) ++
        endpoint
    )

    run!(~w(ip -n #{ns} addr add #{address}/24 dev #{name}))
    run!(~w(ip -n #{ns} link set #{name} mtu 1420 up))
    %{port: port, os_pid: String.to_integer(os_pid), name: name}
  end

  defp start_end(:elixir, ns, name, {private, _}, {_, peer_public}, address, peer, endpoint, dir) do
    conf = Path.join(dir, "#{name}.conf")

    File.write!(conf, """
    [Interface]
    PrivateKey = #{private}
    Address = #{address}/24
    ListenPort = #{@port}
    MTU = 1420

    [Peer]
    PublicKey = #{peer_public}
    AllowedIPs = #{peer}/32
    #{if endpoint, do: "Endpoint = #{endpoint}"}
    """)

    # The package's runner, from its folder, built by scripts/bench.
    runner = "cd tundra_wireguard && MIX_ENV=prod exec mix run examples/wireguard.exs #{conf}"
    {port, _name} = Native.start(["ip", "netns", "exec", ns, "sh", "-c", runner], 60_000)

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    %{port: port, os_pid: os_pid, name: name}
  end

  defp stop_end(%{port: port, os_pid: os_pid}) do
    # The Elixir end exits when its stdin closes; the boringtun wrapper
    # kills boringtun and waits for it.
    Native.stop({port, os_pid})
  end

  defp run!([exe | args] = cmd) do
    {out, status} = System.cmd(exe, args, stderr_to_stdout: true)
    if status != 0, do: raise("#{Enum.join(cmd, " ")}: #{out}")
    :ok
  end
end

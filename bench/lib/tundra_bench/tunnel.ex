defmodule TundraBench.Tunnel do
  @moduledoc false
  # A real tunnel: two namespaces joined by a veth pair (the "internet"),
  # one tunnel end in each, iperf3 TCP through the tunnel. Elixir ends
  # (examples/udp_tunnel.exs, one VM per namespace) against raw Rust
  # relays, each plain (a system call per packet on both sides) and with
  # offload (TUN super-packets, UDP_SEGMENT/UDP_GRO). Also the CPU time
  # both ends take per GB moved.

  alias TundraBench.{Lab, Native, Stats}

  @underlay {"192.168.250.1", "192.168.250.2"}
  @overlay {"10.251.0.1", "10.251.0.2"}
  @port 7000
  @mtu 1400

  def run(opts) do
    suffix = System.unique_integer([:positive])
    ns = {"tundra-bench-a-#{suffix}-#{System.pid()}", "tundra-bench-b-#{suffix}-#{System.pid()}"}

    try do
      Lab.make_namespaces(ns, @underlay)

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
      Lab.delete_namespaces(ns)
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
      drops_before = Lab.udp_drops(a) + Lab.udp_drops(b)
      {mbps, retransmits} = Lab.iperf(a, b, ob, seconds)
      cpu = Enum.sum(Enum.map(pids, &Stats.cpu_seconds/1)) - Enum.sum(cpu_before)
      gigabytes = mbps * seconds / 8 / 1000

      %{
        mbps: mbps,
        cpu_per_gb: cpu / max(gigabytes, 1.0e-9),
        retransmits: retransmits,
        udp_drops: Lab.udp_drops(a) + Lab.udp_drops(b) - drops_before
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
end

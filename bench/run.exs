# Tundra's benchmark. Run it with `make bench` (scripts/bench), which builds
# the Rust reference programs and runs this inside a network namespace of
# its own; nothing here touches the host's interfaces.
#
#   make bench                          # everything, 3 rounds
#   make bench ARGS="--only reflector --rounds 5"
#
# Sections: reflector (packets/s and ping latency), creation, tunnel,
# wireguard (the WireGuard package against boringtun), wireguard_peers
# (1,000 peers: adding, listing, memory, beside wireguard-go and boringtun),
# scheduler (heartbeat delay during the largest calls).
usage = """
usage: make bench ARGS="[options]"

  --only SECTION        reflector, creation, tunnel, wireguard, wireguard_peers
                        or scheduler
                        (repeatable; default all)
  --rounds N            rounds per comparison, alternating sides (3)
  --seconds S           load generator run per reflector sample (2.0)
  --pings N             pings per side and round (500)
  --create-count N      devices per creation sample (200)
  --fleet N             owners in the bring-up/teardown fleet (1000)
  --tunnel-seconds N    iperf3 run per tunnel and WireGuard sample (5)
  --no-write            print the table, do not write bench/results/
"""

{opts, rest, invalid} =
  OptionParser.parse(System.argv(),
    strict: [
      help: :boolean,
      only: :keep,
      rounds: :integer,
      seconds: :float,
      pings: :integer,
      create_count: :integer,
      fleet: :integer,
      tunnel_seconds: :integer,
      no_write: :boolean
    ]
  )

only = Keyword.get_values(opts, :only)
known = ["reflector", "creation", "tunnel", "wireguard", "wireguard_peers", "scheduler"]

cond do
  opts[:help] ->
    IO.puts(usage)
    System.halt(0)

  rest != [] or invalid != [] or Enum.any?(only, &(&1 not in known)) ->
    IO.puts(:stderr, "bad arguments: #{Enum.join(System.argv(), " ")}\n\n" <> usage)
    System.halt(1)

  true ->
    :ok
end

opts =
  Keyword.merge(
    [
      rounds: 3,
      seconds: 2.0,
      pings: 500,
      create_count: 200,
      fleet: 1000,
      tunnel_seconds: 5,
      command: Enum.join(["make bench" | System.argv()], " ")
    ],
    opts
  )

sections = [
  {"reflector", &TundraBench.Reflector.run/1},
  {"creation", &TundraBench.Creation.run/1},
  {"tunnel", &TundraBench.Tunnel.run/1},
  {"wireguard", &TundraBench.WireGuard.run/1},
  {"wireguard_peers", &TundraBench.WireGuardPeers.run/1},
  {"scheduler", &TundraBench.Scheduler.run/1}
]

rows =
  for {name, run} <- sections, only == [] or name in only, reduce: [] do
    rows ->
      IO.puts("== #{name}")
      rows ++ run.(opts)
  end

if opts[:no_write],
  do: IO.puts(TundraBench.Report.markdown(rows, opts)),
  else: TundraBench.Report.write(rows, opts)

defmodule TundraBench.Report do
  @moduledoc false
  # The results table: printed, and written as Markdown to bench/results/
  # with a description of the machine it ran on.

  alias TundraBench.Stats

  @results Path.expand("../../results", __DIR__)

  def write(rows, opts) do
    text = markdown(rows, opts)
    File.mkdir_p!(@results)
    stamp = Calendar.strftime(DateTime.utc_now(), "%Y-%m-%d-%H%M")
    path = Path.join(@results, "#{stamp}.md")
    File.write!(path, text)
    File.write!(Path.join(@results, "latest.md"), text)
    IO.puts("\n" <> text)
    IO.puts("written to #{Path.relative_to_cwd(path)} and bench/results/latest.md")
  end

  def markdown(rows, opts) do
    """
    # Tundra benchmark results

    #{DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601()}, `#{opts[:command]}`

    ## Machine

    #{machine()}

    Every comparison ran both sides in this one invocation, alternating which
    went first, #{opts[:rounds]} rounds each (direct creation: #{2 * opts[:rounds]}, after an
    uncounted warm-up of each side); the tables give the medians. Ratios
    are Elixir/Tundra over raw Rust (higher is better for rates).

    #{sections(rows)}
    """
  end

  defp sections(rows) do
    [
      reflector(for r <- rows, r.section == :reflector, do: r),
      multi_queue(for r <- rows, r.section == :multi_queue, do: r),
      gen_udp(for r <- rows, r.section == :gen_udp, do: r),
      latency(for r <- rows, r.section == :latency, do: r),
      creation(rows),
      tunnel(for r <- rows, r.section == :tunnel, do: r),
      wireguard(for r <- rows, r.section == :wireguard, do: r),
      wireguard_peers(for r <- rows, r.section == :wireguard_peers, do: r),
      scheduler(for r <- rows, r.section == :scheduler, do: r),
      unmet(rows)
    ]
    |> Enum.reject(&(&1 == ""))
    |> Enum.join("\n")
  end

  defp reflector([]), do: ""

  defp reflector(rows) do
    """
    ## Reflector packets/s (UDP, window of 64 in flight)

    The Elixir reflector (`TundraExamples.UdpReflector`) as the drain loop
    the docs recommend (`recv_many/3` per select, one `send_many/3` per
    batch; target ≥ 0.95 of raw Rust, CPU per packet ≤ 1.1×), and in
    active mode (`active: 256`), a message per packet or per batch
    (`active_batch: true`; target for either ≥ 0.9 of the drain loop).

    | family | payload | raw Rust pps | drain loop pps | drain/raw | active pps | active/drain | by batch pps | batch/drain | CPU µs/packet: raw, drain (×raw), active, by batch |
    |---|---:|---:|---:|---:|---:|---:|---:|---:|---|
    #{Enum.map_join(rows, "\n", &"| #{&1.family} | #{&1.payload} B | #{int(&1.raw)} | #{int(&1.drain)} | #{ratio(Stats.ratio(&1.drain, &1.raw), 0.95)} | #{int(&1.elixir)} | #{ratio(&1.active_over_drain, 0.9)} | #{int(&1.batch)} | #{ratio(&1.batch_over_drain, 0.9)} | #{&1.raw_cpu_us}, #{&1.drain_cpu_us} (#{at_most(Stats.ratio(&1.drain_cpu_us, &1.raw_cpu_us), 1.1)}), #{&1.elixir_cpu_us}, #{&1.batch_cpu_us} |")}

    CPU µs/packet: CPU time (user + system) of the reflecting process per
    packet reflected: the raw reflector's process, or the whole Elixir VM.
    On a machine of two CPUs or more the reflecting side (the raw
    reflector, or the VM with one scheduler online) runs on CPU 0 and the
    load generator on CPU 1.

    The drain loop with `busy_poll` (`Tundra.setopts/2`: a read that finds
    nothing keeps looking before it arms a select):

    | family | payload | drain loop pps | with busy_poll | pps ×drain | CPU µs/packet, drain → busy_poll |
    |---|---:|---:|---:|---:|---|
    #{Enum.map_join(rows, "\n", &"| #{&1.family} | #{&1.payload} B | #{int(&1.drain)} | #{int(&1.busy)} (#{&1.busy_poll} µs) | #{two(&1.busy_over_drain)} | #{&1.drain_cpu_us} → #{&1.busy_cpu_us} |")}
    """
  end

  defp gen_udp([]), do: ""

  defp gen_udp([g]) do
    """
    ## OTP's `:gen_udp`, active and passive (the reference for active mode)

    A `:gen_udp` echo server on loopback, IPv4, 64 B, the same load generator.

    | passive pps | active pps (`active: 256`) | active/passive | CPU µs/packet passive, active |
    |---:|---:|---:|---|
    | #{int(g.passive)} | #{int(g.active)} | #{two(g.ratio)} | #{g.passive_cpu_us}, #{g.active_cpu_us} |
    """
  end

  defp multi_queue([]), do: ""

  defp multi_queue(rows) do
    """
    ## Multi-queue reflector (IPv4, 64 B, #{hd(rows).flows} flows, a drain-loop reflector per queue)

    | queues | pps | CPU µs/packet |
    |---:|---:|---:|
    #{Enum.map_join(rows, "\n", &"| #{&1.queues} | #{int(&1.pps)} | #{&1.cpu_us} |")}

    The load generator (one thread) and the VM share the machine's cores;
    see the README for what these numbers allow to conclude.
    """
  end

  defp latency([]), do: ""

  defp latency(rows) do
    """
    ## Ping round trip (ms)

    | family | pings per side | raw p50 | raw p99 | Elixir p50 | Elixir p99 | p50 Elixir/raw | lost |
    |---|---:|---:|---:|---:|---:|---:|---:|
    #{Enum.map_join(rows, "\n", &"| #{&1.family} | #{&1.count} | #{&1.raw_p50} | #{&1.raw_p99} | #{&1.elixir_p50} | #{&1.elixir_p99} | #{at_most(Stats.ratio(&1.elixir_p50, &1.raw_p50), 1.3)} | #{&1.lost} |")}
    """
  end

  defp creation(rows) do
    direct = Enum.find(rows, &(&1.section == :create_direct))
    server = Enum.find(rows, &(&1.section == :create_server))
    fleet = Enum.find(rows, &(&1.section == :fleet))

    if direct == nil and server == nil and fleet == nil do
      ""
    else
      """
      ## Creation and teardown

      | measure | raw Rust | Elixir/Tundra | ratio or target |
      |---|---:|---:|---:|
      #{direct && "| devices created/s, direct, one after another (#{direct.count}) | #{int(direct.raw)} | #{int(direct.elixir)} | #{ratio(direct.ratio, 0.7)} |"}
      #{server && "| devices created/s through tundra_server (#{server.count}) | | #{int(server.elixir)} | #{target(server.elixir >= 500, "≥ 500/s")} |"}
      #{fleet && fleet_rows(fleet)}
      """
      |> String.replace(~r/\n\n+/, "\n")
    end
  end

  defp fleet_rows(f) do
    """
    | #{f.count} owners each creating a device at once: time until all up | | #{f.bring_up_ms} ms | |
    | VM memory per live device (growth of `:erlang.memory(:total)` over the devices) | | #{f.bytes_per_device} B | |
    | size of one owner process (`Process.info/2` :memory; its heap may come from memory the VM already had, so it can exceed the growth above) | | #{f.owner_bytes} B | |
    | teardown rate, #{f.count} owners exiting at once (raw: #{f.count} fds closed by 512 threads at once) | #{int(f.raw_teardown_per_second)}/s | #{int(f.teardown_per_second)}/s | #{target(f.teardown_per_second >= 1000, "≥ 1000/s")}, ratio #{Float.round(f.teardown_per_second / f.raw_teardown_per_second, 2)} |
    | worst delay of a 1 ms heartbeat during teardown | | #{f.worst_heartbeat_ms} ms | #{target(f.worst_heartbeat_ms <= 5, "≤ 5 ms")} |
    """
    |> String.trim_trailing()
  end

  defp tunnel([]), do: ""

  defp tunnel([t]) do
    cpu = fn kind ->
      "#{Float.round(t.cpu_per_gb[kind], 2)} s, #{round(t.retransmits[kind])} rtx, " <>
        "#{round(t.udp_drops[kind])} drops"
    end

    """
    ## IP-over-UDP tunnel, iperf3 TCP through it

    In brackets: both ends' CPU time per GB moved, the TCP retransmits
    iperf3 counted, and the UDP datagrams the two namespaces' stacks
    dropped (full socket buffers, errors), medians per run.

    | path | raw Rust relays | Elixir ends (examples/udp_tunnel.exs) | ratio |
    |---|---:|---:|---:|
    | plain (a system call per packet) | #{Float.round(t.raw, 1)} Mbit/s (#{cpu.(:raw)}) | #{Float.round(t.elixir, 1)} Mbit/s (#{cpu.(:elixir)}) | #{ratio(t.ratio, 0.7)} |
    | offload (TUN super-packets, UDP_SEGMENT/UDP_GRO) | #{Float.round(t.raw_offload, 1)} Mbit/s (#{cpu.(:raw_offload)}) | #{Float.round(t.elixir_offload, 1)} Mbit/s (#{cpu.(:elixir_offload)}) | #{ratio(t.offload_ratio, 0.9)} |
    | Elixir offload over Elixir plain | | | #{ratio(t.offload_gain, 3.0)} |
    """
  end

  defp wireguard([]), do: ""

  defp wireguard([%{stats: s}]) do
    cell = fn kind, way ->
      if s[{kind, way}] do
        "#{Float.round(s[{kind, way}], 1)} Mbit/s (#{Float.round(s[{kind, cpu_key(way)}], 2)} s, " <>
          "#{round(s[{kind, rtx_key(way)}])} rtx)"
      else
        "–"
      end
    end

    row = fn way, label, ours, reference, target ->
      "| #{label} | #{cell.(reference, way)} | #{cell.(ours, way)} | " <>
        "#{ratio(Stats.ratio(s[{ours, way}], s[{reference, way}]), target)} |"
    end

    """
    ## WireGuard, iperf3 TCP through it

    Two namespaces joined by a veth pair, a WireGuard interface in each.
    Pairs: boringtun 0.7.1 in both; the Elixir peer
    (`tundra_wireguard/examples/wireguard.exs`, offload path) in namespace a
    with boringtun in b; Debian's wireguard-go (0.0.20220316) in both; the
    Elixir peer in both. In brackets: both ends' CPU time per GB moved, and
    the TCP retransmits iperf3 counted; medians per run.

    | direction | reference | Elixir | ratio |
    |---|---:|---:|---:|
    #{row.(:up, "a → b, Elixir ↔ boringtun over boringtun ↔ boringtun (the Elixir end encrypts)", :elixir, :boringtun, 1.0)}
    #{row.(:down, "b → a, the same (the Elixir end decrypts)", :elixir, :boringtun, 1.0)}
    #{row.(:up, "a → b, Elixir ↔ Elixir over wireguard-go ↔ wireguard-go", :elixir_pair, :wireguard_go, 5.5)}
    #{row.(:down, "b → a, the same", :elixir_pair, :wireguard_go, 5.5)}
    """
  end

  defp wireguard_peers([]), do: ""

  defp wireguard_peers([%{stats: s, peers: peers}]) do
    ms = fn kind, key ->
      if s[{kind, key}], do: "#{Float.round(s[{kind, key}] * 1.0, 1)} ms", else: "–"
    end

    bytes = fn kind, key -> if s[{kind, key}], do: "#{round(s[{kind, key}])} B", else: "–" end

    row = fn label, cell, key ->
      "| #{label} | #{cell.(:wireguard_go, key)} | #{cell.(:boringtun, key)} | #{cell.(:elixir, key)} |"
    end

    """
    ## WireGuard with #{peers} peers

    One interface in a namespace of its own, given #{peers} peers (a public
    key and a /32 each, no endpoint: nothing is sent) in one request;
    medians per run. Memory: the process's RSS after less before, per
    peer; for the Elixir interface also its process's own memory.

    | #{peers} peers | wireguard-go (Debian) | boringtun 0.7.1 | Elixir |
    |---|---:|---:|---:|
    #{row.("added through the UAPI (`wg addconf`)", ms, :uapi_ms)}
    #{row.("added through Elixir (`TundraWireGuard.configure/2`)", ms, :elixir_ms)}
    #{row.("`wg show` of them all", ms, :show_ms)}
    #{row.("memory per peer (RSS)", bytes, :rss_per_peer)}
    #{row.("memory per peer (the interface process)", bytes, :state_per_peer)}
    """
  end

  defp cpu_key(:up), do: :up_cpu
  defp cpu_key(:down), do: :down_cpu
  defp rtx_key(:up), do: :up_rtx
  defp rtx_key(:down), do: :down_rtx

  # For every target this run missed: what the profiles of this data path
  # showed, and what would reach the target (README, "Performance").
  defp unmet(rows) do
    reflector = for r <- rows, r.section == :reflector, do: r
    latency = for r <- rows, r.section == :latency, do: r
    tunnel = for r <- rows, r.section == :tunnel, do: r

    notes =
      [
        Enum.any?(
          reflector,
          &(below?(Stats.ratio(&1.drain, &1.raw), 0.95) or
              above?(Stats.ratio(&1.drain_cpu_us, &1.raw_cpu_us), 1.1))
        ) &&
          """
          - **Drain loop against raw Rust.** `perf record -g` of the VM under
            this load: about 78% of its CPU is the kernel's work for the
            packets (the same `read`/`write` per packet the raw reflector
            makes, `strace -c` counts them), 8.5% the BEAM's own (the
            scheduler waking, spinning and sleeping, message handling),
            5% libc, 4.5% the NIF, 2% JITted Elixir. The difference to raw
            Rust is per batch, not per packet: each select message costs
            the poll thread's `epoll_wait` return, a futex wake of a
            scheduler, a last `read` that finds nothing and the re-arming
            `epoll_ctl`; with 64 packets in flight a batch holds only a
            few packets. Polling the device before arming the select
            (`busy_poll`, the second table) did not move it: with 64
            packets in flight the next ones come later than 50 µs, and
            pinned (the reflecting side alone on its CPU) the raw
            reflector gains more from a core of its own than the VM does.
            Reaching 0.95 (and 1.1× CPU) needs fewer wakeups per packet:
            batches that grow with load (a deeper window does).
          """,
        Enum.any?(
          reflector,
          &(below?(&1.active_over_drain, 0.9) or below?(&1.batch_over_drain, 0.9))
        ) &&
          """
          - **Active mode against the drain loop.** Active mode's packets
            are read by a reader process per device, which the select
            message wakes and which sends them on to the owner: one more
            process wakeup and message per batch than the drain loop,
            where the owner reads itself. `active_batch: true` saves the
            per-packet messages (one message per read) but not that hop.
            OTP's own `:gen_udp` shows no such gap only because its port
            reads for its owner without a process in between (and its
            passive mode is much slower than Tundra's drain loop: the
            table above). Reaching 0.9 needs the NIF to read for the owner
            directly, without the reader process.
          """,
        Enum.any?(latency, &above?(Stats.ratio(&1.elixir_p50, &1.raw_p50), 1.3)) &&
          """
          - **Ping latency.** A traced echo: the BEAM's poll thread returns
            from `epoll_wait`, then wakes a sleeping scheduler (a futex),
            which runs the owner, which reads: two thread wakeups where the
            raw reflector, blocked in `read`, has one; that hop is most of
            the difference. `+sbwt`/`+swt` (how long schedulers spin
            before sleeping) moved it within the noise; `+IOs` concerns
            ports, not NIF selects. Reaching 1.3× needs a scheduler that is
            awake when the packet comes (busy-waiting, at the cost of a
            core) or the reading done on the poll thread's wakeup itself,
            which OTP does not offer NIFs.
          """,
        Enum.any?(
          for(r <- rows, r.section == :wireguard, do: r),
          &below?(Stats.ratio(&1.stats[{:elixir_pair, :up}], &1.stats[{:wireguard_go, :up}]), 5.5)
        ) &&
          """
          - **WireGuard Elixir ↔ Elixir against wireguard-go.** `perf` of an
            Elixir end sending: one scheduler busy (the interface is one
            process), 27% OpenSSL (the AEAD, and per call its context
            set-up and clean-up: `:crypto` has no reusable AEAD context),
            23% kernel, 38% the BEAM and JITted Elixir, 7% libc (half of it
            copies). Both ends, iperf3 and the kernel already use the two
            cores, so an end spread over more schedulers cannot move this
            machine's number; what would is less CPU per packet: AEAD over
            a whole batch in one native call (as wireguard-go and the
            kernel do), which is not `:crypto`'s, and fewer copies.
          """,
        Enum.any?(tunnel, &below?(&1.offload_ratio, 0.9)) &&
          """
          - **Offload tunnel against the Rust relay.** `perf record -g` of
            the sending end during iperf3: 64% kernel (the copies into
            and out of the super-packets, which the Rust relay makes
            too), 17% the BEAM scheduler's spin loop plus 7% in
            `sched_yield`, 5% checksums, 3% `memmove`. VM flags
            `+sbwt none +sbwtdcpu none +sbwtdio none` take ~15% off the
            CPU per GB but did not move the throughput (three runs each
            way, within the noise). The structural difference: the Rust
            relay has a thread per direction, the Elixir end one process
            for both, since a device has one owner who alone reads and
            writes it; the two directions of a TCP stream (data one way,
            ACKs the other) wait for each other there. Reaching 0.9
            steadily needs a process per direction, which needs a way to
            let a second process write to a device.
          """
      ]
      |> Enum.filter(& &1)

    if notes == [] do
      ""
    else
      "## Targets not met: what the profiles say\n\n" <> Enum.join(notes)
    end
  end

  defp below?(nil, _goal), do: false
  defp below?(ratio, goal), do: ratio < goal
  defp above?(nil, _goal), do: false
  defp above?(ratio, goal), do: ratio > goal

  defp scheduler([]), do: ""

  defp scheduler(rows) do
    """
    ## Scheduler: worst delay of a 1 ms heartbeat (target ≤ 5 ms)

    In a VM with one normal scheduler (`+S 1:1`), so a call that holds it
    delays everything else; worst of the rounds.

    | during | worst delay | call took |
    |---|---:|---:|
    #{Enum.map_join(rows, "\n", &"| #{&1.label} | #{&1.worst_ms} ms #{target(&1.worst_ms <= 5, "≤ 5 ms")} | #{&1.taken_ms} ms |")}
    """
  end

  defp int(nil), do: "-"
  defp int(x), do: x |> round() |> Integer.to_string()

  defp ratio(nil, _), do: "-"

  defp ratio(r, goal),
    do: "#{:erlang.float_to_binary(r, decimals: 2)} #{target(r >= goal, "≥ #{goal}")}"

  # A ratio whose target is a ceiling (CPU, latency).
  defp at_most(nil, _), do: "-"

  defp at_most(r, goal),
    do: "#{two(r)}× #{target(r <= goal, "≤ #{goal}×")}"

  defp two(nil), do: "-"
  defp two(r), do: :erlang.float_to_binary(r / 1, decimals: 2)

  defp target(true, text), do: "(#{text}: met)"
  defp target(false, text), do: "(#{text}: **not met**)"

  def machine do
    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, info} ->
          Regex.run(~r/model name\s*:\s*(.*)/, info, capture: :all_but_first)
          |> List.wrap()
          |> List.first()

        _ ->
          nil
      end

    mem =
      case File.read("/proc/meminfo") do
        {:ok, info} ->
          [kb] = Regex.run(~r/MemTotal:\s*(\d+)/, info, capture: :all_but_first)
          "#{div(String.to_integer(kb), 1024 * 1024)} GiB"

        _ ->
          "?"
      end

    {kernel, 0} = System.cmd("uname", ["-srm"])
    {rustc, _} = System.cmd("rustc", ["--version"])

    """
    - CPU: #{cpu || "?"}, #{System.schedulers_online()} cores online
    - memory: #{mem}
    - kernel: #{String.trim(kernel)}
    - Erlang/OTP #{System.otp_release()} (ERTS #{:erlang.system_info(:version)}), Elixir #{System.version()}
    - #{String.trim(rustc)}
    """
    |> String.trim_trailing()
  end
end

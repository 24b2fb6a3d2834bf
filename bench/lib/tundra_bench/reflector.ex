defmodule TundraBench.Reflector do
  @moduledoc false
  # Reflector packets/s and ping latency: the Elixir reflector
  # (TundraExamples.UdpReflector in active mode, and as a recv_many drain
  # loop; TundraExamples.EchoResponder) against the raw Rust reflector,
  # measured in turns in the same run.

  alias TundraBench.{Native, Stats}
  alias TundraExamples.{EchoResponder, UdpReflector}

  @families [
    {"IPv4",
     %{
       raw: {"10.61.0.1", "10.61.0.2"},
       elixir: {"10.61.1.1", "10.61.1.2"},
       echo: {"10.61.2.1", "10.61.2.2"},
       drain: {"10.61.3.1", "10.61.3.2"},
       batch: {"10.61.4.1", "10.61.4.2"},
       busy: {"10.61.5.1", "10.61.5.2"}
     }, 32},
    {"IPv6",
     %{
       raw: {"fd00:61::1", "fd00:61::2"},
       elixir: {"fd00:61:1::1", "fd00:61:1::2"},
       echo: {"fd00:61:2::1", "fd00:61:2::2"},
       drain: {"fd00:61:3::1", "fd00:61:3::2"},
       batch: {"fd00:61:4::1", "fd00:61:4::2"},
       busy: {"fd00:61:5::1", "fd00:61:5::2"}
     }, 128}
  ]

  @payloads [64, 1400]
  @window 64
  # The busy_poll of the drain loop's second row (µs).
  @busy_poll 50

  def run(opts) do
    pinned(fn -> single_queue(opts) end) ++ multi_queue(opts) ++ pinned(fn -> gen_udp(opts) end)
  end

  # Where the machine has two CPUs or more, the reflecting side (this VM,
  # one scheduler online, or the raw reflector) runs on CPU 0 and the load
  # generator on CPU 1, so that they do not take each other's time: on two
  # shared cores that blurred every ratio by ±0.1 between runs. The VM's
  # threads and schedulers are given back afterwards.
  defp pinned(fun) do
    if cpus() >= 2 do
      vm = System.pid()
      schedulers = :erlang.system_info(:schedulers_online)
      _ = :erlang.system_flag(:schedulers_online, 1)
      {_, 0} = System.cmd("taskset", ["-a", "-p", "-c", "0", vm])

      try do
        fun.()
      after
        {_, 0} = System.cmd("taskset", ["-a", "-p", "-c", "0-#{cpus() - 1}", vm])
        _ = :erlang.system_flag(:schedulers_online, schedulers)
      end
    else
      fun.()
    end
  end

  defp cpus, do: :erlang.system_info(:logical_processors_available) |> max_known()

  defp max_known(n) when is_integer(n), do: n
  defp max_known(_unknown), do: 1

  # The generator's CPU: CPU 1 where the reflecting side is pinned.
  defp on_generator_cpu(command) do
    if cpus() >= 2, do: ["taskset", "-c", "1" | command], else: command
  end

  defp single_queue(opts) do
    for {family, addrs, prefix} <- @families do
      raw = start_raw(addrs.raw, prefix)
      elixir = start_elixir(UdpReflector, addrs.elixir, prefix, mode: :active)
      drain = start_elixir(UdpReflector, addrs.drain, prefix, mode: :drain)
      batch = start_elixir(UdpReflector, addrs.batch, prefix, mode: :active_batch)
      # The drain loop again, its reads looking 50 µs before a select.
      busy = start_elixir(UdpReflector, addrs.busy, prefix, mode: :drain, busy_poll: @busy_poll)
      echo = start_elixir(EchoResponder, addrs.echo, prefix, [])
      # Whose CPU time a side's packets cost: the raw reflector process, or
      # this whole VM (its schedulers, poller, reader thread and any
      # busy-waiting).
      os_pids = %{
        raw: raw |> elem(0) |> Port.info(:os_pid) |> elem(1),
        elixir: System.pid(),
        drain: System.pid(),
        batch: System.pid(),
        busy: System.pid()
      }

      try do
        pps =
          for payload <- @payloads do
            pps_row(family, payload, addrs, os_pids, opts)
          end

        pps ++ [latency_row(family, addrs, opts)]
      after
        Native.stop(raw)
        Enum.each([elixir, drain, batch, busy, echo], &GenServer.stop/1)
      end
    end
    |> List.flatten()
  end

  # One interface with 1, 2 or 4 queues, a drain-loop reflector per queue,
  # against a load generator sending 64 flows (source ports) at once: the
  # kernel spreads the flows over the queues.
  @queue_counts [1, 2, 4]
  @flows 64

  defp multi_queue(opts) do
    samples =
      for _round <- 1..opts[:rounds], queues <- @queue_counts do
        {:ok, {devices, _name}} =
          Tundra.create("10.62.0.1", dstaddr: "10.62.0.2", prefix: 32, queues: queues)

        servers =
          for dev <- devices do
            {:ok, pid} = TundraExamples.serve(UdpReflector, dev)
            pid
          end

        try do
          {queues, loadgen({"10.62.0.1", "10.62.0.2"}, 64, System.pid(), opts, @flows)}
        after
          Enum.each(servers, &GenServer.stop/1)
        end
      end

    for queues <- @queue_counts do
      mine = for {^queues, sample} <- samples, do: sample
      pps = Stats.median(Enum.map(mine, & &1.pps))
      cpu = Stats.median(Enum.map(mine, & &1.cpu_us))

      IO.puts(
        "  multi-queue reflector, #{queues} queue(s), #{@flows} flows: #{round(pps)} pps (#{cpu} µs CPU/packet)"
      )

      %{section: :multi_queue, queues: queues, flows: @flows, pps: pps, cpu_us: cpu}
    end
  end

  # OTP's own UDP in both modes, for what active mode costs there: a
  # `:gen_udp` echo server on loopback, passive (a `recv/2` loop) and
  # active (`active: 256`, re-armed on `udp_passive`), against the same
  # load generator. IPv4, 64 B.
  defp gen_udp(opts) do
    samples =
      for round <- 1..opts[:rounds] do
        modes = if rem(round, 2) == 1, do: [:passive, :active], else: [:active, :passive]

        Map.new(modes, fn mode ->
          server = TundraBench.GenUdpEcho.start({127, 0, 0, 2}, 9000, mode)

          try do
            {mode, loadgen({"127.0.0.1", "127.0.0.2"}, 64, System.pid(), opts)}
          after
            TundraBench.GenUdpEcho.stop(server)
          end
        end)
      end

    median = fn mode, key -> Stats.median(Enum.map(samples, & &1[mode][key])) end
    passive = median.(:passive, :pps)
    active = median.(:active, :pps)

    IO.puts(
      "  gen_udp echo: passive #{round(passive)} pps (#{median.(:passive, :cpu_us)} µs), " <>
        "active #{round(active)} pps (#{median.(:active, :cpu_us)} µs)"
    )

    [
      %{
        section: :gen_udp,
        passive: passive,
        active: active,
        passive_cpu_us: median.(:passive, :cpu_us),
        active_cpu_us: median.(:active, :cpu_us),
        ratio: Stats.ratio(active, passive)
      }
    ]
  end

  defp start_raw({address, peer}, prefix) do
    # On the reflecting side's CPU, as the VM's reflectors (see pinned/1).
    pin = if cpus() >= 2, do: ["taskset", "-c", "0"], else: []

    Native.start(
      pin ++
        [
          Native.path("tundra_bench"),
          "reflect",
          "--address",
          address,
          "--dstaddr",
          peer,
          "--prefix",
          "#{prefix}"
        ]
    )
  end

  # The serving process creates and owns the device; stopping it removes
  # the device.
  defp start_elixir(server, {address, peer}, prefix, opts) do
    {:ok, pid} = server.start_link({:create, address, dstaddr: peer, prefix: prefix}, opts)
    pid
  end

  defp pps_row(family, payload, addrs, os_pids, opts) do
    samples =
      for round <- 1..opts[:rounds] do
        # Each side goes first in turn.
        sides =
          Enum.take(Stream.drop(Stream.cycle([:raw, :elixir, :drain, :batch, :busy]), round), 5)

        Map.new(sides, fn side -> {side, loadgen(addrs[side], payload, os_pids[side], opts)} end)
      end

    median = fn side, key -> Stats.median(Enum.map(samples, & &1[side][key])) end
    raw = median.(:raw, :pps)
    elixir = median.(:elixir, :pps)
    drain = median.(:drain, :pps)
    raw_cpu = median.(:raw, :cpu_us)
    elixir_cpu = median.(:elixir, :cpu_us)
    drain_cpu = median.(:drain, :cpu_us)
    batch = median.(:batch, :pps)
    batch_cpu = median.(:batch, :cpu_us)
    busy = median.(:busy, :pps)
    busy_cpu = median.(:busy, :cpu_us)

    IO.puts(
      "  reflector #{family} #{payload} B: raw #{round(raw)} pps (#{raw_cpu} µs CPU/packet), " <>
        "Elixir active #{round(elixir)} pps (#{elixir_cpu} µs), " <>
        "drain loop #{round(drain)} pps (#{drain_cpu} µs), " <>
        "active by batch #{round(batch)} pps (#{batch_cpu} µs), " <>
        "drain loop with busy_poll #{@busy_poll} µs #{round(busy)} pps (#{busy_cpu} µs)"
    )

    %{
      section: :reflector,
      family: family,
      payload: payload,
      raw: raw,
      elixir: elixir,
      ratio: Stats.ratio(elixir, raw),
      drain: drain,
      active_over_drain: Stats.ratio(elixir, drain),
      raw_cpu_us: raw_cpu,
      elixir_cpu_us: elixir_cpu,
      drain_cpu_us: drain_cpu,
      batch: batch,
      batch_over_drain: Stats.ratio(batch, drain),
      batch_cpu_us: batch_cpu,
      busy: busy,
      busy_over_drain: Stats.ratio(busy, drain),
      busy_cpu_us: busy_cpu,
      busy_poll: @busy_poll,
      samples: samples
    }
  end

  # One loadgen run against a side: its packets/s, and the CPU time the
  # reflecting process spent per packet meanwhile (µs).
  defp loadgen({address, peer}, payload, os_pid, opts, flows \\ 1) do
    cpu_before = Stats.cpu_seconds(os_pid)

    result =
      Native.run(
        on_generator_cpu([
          Native.path("tundra_bench"),
          "loadgen",
          "--from",
          address,
          "--to",
          peer,
          "--payload",
          "#{payload}",
          "--window",
          "#{@window * flows}",
          "--flows",
          "#{flows}",
          "--seconds",
          "#{opts[:seconds]}"
        ])
      )

    cpu = Stats.cpu_seconds(os_pid) - cpu_before
    %{pps: result["pps"], cpu_us: Float.round(cpu * 1.0e6 / max(result["all_received"], 1), 2)}
  end

  defp latency_row(family, addrs, opts) do
    flag = if family == "IPv6", do: "-6", else: "-4"
    count = opts[:pings]

    samples =
      for round <- 1..opts[:rounds], reduce: %{raw: [], elixir: []} do
        acc ->
          sides = if rem(round, 2) == 1, do: [:raw, :echo], else: [:echo, :raw]

          Enum.reduce(sides, acc, fn side, acc ->
            {_, peer} = addrs[side]
            key = if side == :echo, do: :elixir, else: :raw
            Map.update!(acc, key, &(&1 ++ ping(flag, peer, count)))
          end)
      end

    row = %{
      section: :latency,
      family: family,
      count: length(samples.raw),
      raw_p50: Stats.percentile(samples.raw, 50),
      raw_p99: Stats.percentile(samples.raw, 99),
      elixir_p50: Stats.percentile(samples.elixir, 50),
      elixir_p99: Stats.percentile(samples.elixir, 99),
      lost: opts[:rounds] * count * 2 - length(samples.raw) - length(samples.elixir)
    }

    IO.puts(
      "  ping #{family}: raw p50 #{row.raw_p50} ms p99 #{row.raw_p99} ms, " <>
        "Elixir p50 #{row.elixir_p50} ms p99 #{row.elixir_p99} ms"
    )

    row
  end

  # Round-trip times (ms) of `count` echo requests, 2 ms apart.
  defp ping(flag, peer, count) do
    {out, _status} =
      System.cmd("ping", [flag, "-n", "-c", "#{count}", "-i", "0.002", "-W", "1", peer],
        stderr_to_stdout: true
      )

    Regex.scan(~r/time=([0-9.]+) ms/, out)
    |> Enum.map(fn [_, t] -> t |> Float.parse() |> elem(0) end)
  end
end

defmodule TundraBench.Creation do
  @moduledoc false
  # Creation and teardown: devices per second created directly (against
  # the raw Rust loop doing the same ioctl+netlink work) and through
  # tundra_server; 1,000 owners bringing up a device at once (time and VM
  # memory per device); the same 1,000 owners exiting at once (teardown
  # rate) while a 1 ms heartbeat process records its worst delay.

  alias TundraBench.{Heartbeat, Native, Stats}

  def run(opts) do
    n = opts[:create_count]
    # Interfaces that are not TUN devices, counted once: waiting for the
    # devices to go is then one directory read per poll, light enough not
    # to disturb the heartbeat (checking each interface's tun_flags was not).
    :persistent_term.put({__MODULE__, :others}, interface_count() - tun_count())

    direct = compare_direct(n, opts[:rounds])
    server = via_server(n, opts[:rounds])
    fleet = fleet(opts[:fleet], opts[:rounds])
    [direct, server, fleet]
  end

  # Single creation runs are short (tens of ms) and their rate swings with
  # the kernel's state, so this takes twice the rounds, after one
  # uncounted warm-up run of each side.
  defp compare_direct(n, rounds) do
    raw_loop(n)
    elixir_loop(n, [])

    samples =
      for round <- 1..(2 * rounds) do
        sides = if rem(round, 2) == 1, do: [:raw, :elixir], else: [:elixir, :raw]

        Map.new(sides, fn
          :raw ->
            {:raw, raw_loop(n)}

          :elixir ->
            {:elixir, elixir_loop(n, [])}
        end)
      end

    raw = Stats.median(Enum.map(samples, & &1.raw))
    elixir = Stats.median(Enum.map(samples, & &1.elixir))
    IO.puts("  create direct: raw #{round(raw)}/s, Elixir #{round(elixir)}/s (#{n} devices)")

    %{
      section: :create_direct,
      count: n,
      raw: raw,
      elixir: elixir,
      ratio: Stats.ratio(elixir, raw)
    }
  end

  defp raw_loop(n) do
    result = Native.run([Native.path("tundra_bench"), "create-loop", "--count", "#{n}"])
    await_no_devices()
    result["per_second"]
  end

  defp via_server(n, rounds) do
    # The server wants a socket folder only root may write to; root's
    # requests need no delegation (an empty configuration).
    dir = "/run/tundra-bench-#{System.unique_integer([:positive])}"
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o755)
    socket = Path.join(dir, "tundra.sock")
    config = Path.join(dir, "server.conf")
    File.write!(config, "")

    server =
      Port.open({:spawn_executable, Native.path("tundra_server")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: [
          "--socket",
          socket,
          "--group",
          "root",
          "--config",
          config,
          "--state-dir",
          Path.join(dir, "state")
        ]
      ])

    try do
      wait_for_socket(socket, 100)
      rates = for _ <- 1..rounds, do: elixir_loop(n, via: :server, socket_path: socket)
      rate = Stats.median(rates)
      IO.puts("  create via tundra_server: #{round(rate)}/s (#{n} devices)")
      %{section: :create_server, count: n, elixir: rate}
    after
      {:os_pid, pid} = Port.info(server, :os_pid)
      System.cmd("kill", ["-TERM", "#{pid}"])
      await_exit(server)
      File.rm_rf!(dir)
    end
  end

  defp await_exit(port) do
    receive do
      {^port, {:exit_status, _}} -> :ok
      {^port, _} -> await_exit(port)
    after
      5_000 -> :ok
    end
  end

  defp wait_for_socket(socket, tries) do
    cond do
      File.exists?(socket) -> :ok
      tries == 0 -> raise "tundra_server did not start"
      true -> Process.sleep(20) && wait_for_socket(socket, tries - 1)
    end
  end

  # Creates n devices one after another in a fresh process and returns the
  # rate; the process then exits, and the devices are gone before it returns.
  defp elixir_loop(n, opts) do
    task =
      Task.async(fn ->
        started = System.monotonic_time(:microsecond)

        devices =
          for i <- 1..n do
            {:ok, {dev, _name}} = Tundra.create(address(201, i), [prefix: 32] ++ opts)
            dev
          end

        elapsed = System.monotonic_time(:microsecond) - started
        # The devices stay referenced until the loop is over, as the raw
        # loop keeps its fds: dropped at once, garbage collection would
        # close them while the loop still creates, and the two compete
        # for the kernel's RTNL lock. They go when the task exits.
        ^n = length(devices)
        n / (elapsed / 1.0e6)
      end)

    rate = Task.await(task, 60_000)
    await_no_devices()
    rate
  end

  defp address(first, i), do: "10.#{first}.#{div(i, 256)}.#{rem(i, 256)}"

  defp fleet(n, rounds) do
    results = for _ <- 1..rounds, do: fleet_once(n)

    # The raw reference for teardown: the same number of fds closed at once
    # from as many threads as Tundra's closer pool may use.
    raw_teardown =
      for _ <- 1..rounds do
        command = ["create-loop", "--count", "#{n}", "--first-octet", "96"]
        result = Native.run([Native.path("tundra_bench") | command])
        await_no_devices()
        result["close_per_second"]
      end

    row = %{
      section: :fleet,
      count: n,
      bring_up_ms: Stats.median(Enum.map(results, & &1.bring_up_ms)),
      bytes_per_device: Stats.median(Enum.map(results, & &1.bytes_per_device)),
      owner_bytes: Stats.median(Enum.map(results, & &1.owner_bytes)),
      teardown_per_second: Stats.median(Enum.map(results, & &1.teardown_per_second)),
      worst_heartbeat_ms: Enum.max(Enum.map(results, & &1.worst_heartbeat_ms)),
      raw_teardown_per_second: Stats.median(raw_teardown)
    }

    IO.puts(
      "  #{n} owners: up in #{row.bring_up_ms} ms, #{row.bytes_per_device} B/device " <>
        "(an owner process #{row.owner_bytes} B), teardown #{round(row.teardown_per_second)}/s " <>
        "(raw Rust #{round(row.raw_teardown_per_second)}/s), " <>
        "worst heartbeat delay #{row.worst_heartbeat_ms} ms"
    )

    row
  end

  defp fleet_once(n) do
    parent = self()
    :erlang.garbage_collect()
    memory_before = :erlang.memory(:total)
    started = System.monotonic_time(:microsecond)

    owners =
      for i <- 1..n do
        spawn(fn ->
          {:ok, _} = Tundra.create(address(96, i), prefix: 32)
          send(parent, :created)
          receive do: (:exit -> :ok)
        end)
      end

    for _ <- owners, do: receive(do: (:created -> :ok))
    up = System.monotonic_time(:microsecond)
    memory_after = :erlang.memory(:total)

    owner_bytes = owners |> Enum.map(&elem(Process.info(&1, :memory), 1)) |> Stats.median()

    heartbeat = Heartbeat.start()
    Process.sleep(50)
    teardown_started = System.monotonic_time(:microsecond)
    Enum.each(owners, &send(&1, :exit))
    await_no_devices()
    teardown_done = System.monotonic_time(:microsecond)
    worst = Heartbeat.stop(heartbeat)

    %{
      bring_up_ms: div(up - started, 1000),
      bytes_per_device: div(memory_after - memory_before, n),
      owner_bytes: owner_bytes,
      teardown_per_second: n / ((teardown_done - teardown_started) / 1.0e6),
      worst_heartbeat_ms: Float.round(worst / 1000, 2)
    }
  end

  def tun_count do
    "/sys/class/net"
    |> File.ls!()
    |> Enum.count(&File.exists?("/sys/class/net/#{&1}/tun_flags"))
  end

  defp interface_count, do: length(File.ls!("/sys/class/net"))

  defp await_no_devices(tries \\ 6000) do
    cond do
      interface_count() == :persistent_term.get({__MODULE__, :others}) -> :ok
      tries == 0 -> raise "devices did not go away"
      true -> Process.sleep(5) && await_no_devices(tries - 1)
    end
  end
end

defmodule TundraBench.WireGuardPeers do
  @moduledoc false
  # 1,000 peers on one interface, in a namespace of its own: the time to
  # add them through the UAPI (`wg addconf`, one request), a `wg show` of
  # them all, and the memory they take (the process's RSS before and
  # after); for the Elixir interface also through Elixir
  # (TundraWireGuard.configure/2) and the interface process's own memory.
  # Debian's wireguard-go and boringtun beside it, the same peers. The
  # peers have no endpoints: nothing is sent.

  alias TundraBench.{Lab, Native, Stats}

  @peers 1000
  @kinds [:wireguard_go, :boringtun, :elixir]

  def run(opts) do
    suffix = System.unique_integer([:positive])
    ns = "tundra-bench-wp-#{suffix}-#{System.pid()}"
    dir = Path.join(System.tmp_dir!(), "tundra-bench-wp-#{suffix}")
    File.mkdir_p!(dir)

    try do
      run!(~w(ip netns add #{ns}))
      run!(~w(ip -n #{ns} link set lo up))
      peer_file = Path.join(dir, "peers.conf")
      File.write!(peer_file, peers_text(@peers))

      samples =
        for round <- 1..opts[:rounds] do
          kinds = if rem(round, 2) == 1, do: @kinds, else: Enum.reverse(@kinds)
          Map.new(kinds, &{&1, measure(&1, ns, dir, peer_file, "twp#{suffix}r#{round}")})
        end

      stats =
        for kind <- @kinds,
            key <- [:uapi_ms, :show_ms, :rss_per_peer, :elixir_ms, :state_per_peer],
            values = for(s <- samples, v = s[kind][key], do: v),
            values != [],
            into: %{},
            do: {{kind, key}, Stats.median(values)}

      for kind <- @kinds do
        IO.puts(
          "  wireguard peers #{kind}: add #{@peers} (UAPI) #{stats[{kind, :uapi_ms}]} ms, " <>
            "wg show #{stats[{kind, :show_ms}]} ms, #{stats[{kind, :rss_per_peer}]} B/peer"
        )
      end

      IO.puts(
        "  wireguard peers elixir: add #{@peers} (Elixir) #{stats[{:elixir, :elixir_ms}]} ms, " <>
          "#{stats[{:elixir, :state_per_peer}]} B/peer in the interface process"
      )

      [%{section: :wireguard_peers, stats: stats, peers: @peers}]
    after
      System.cmd("ip", ["netns", "del", ns], stderr_to_stdout: true)
      File.rm_rf(dir)
    end
  end

  defp peers_text(count) do
    for i <- 0..(count - 1), into: "" do
      {public, _private} = :crypto.generate_key(:ecdh, :x25519)

      "[Peer]\nPublicKey = #{Base.encode64(public)}\nAllowedIPs = 10.201.#{div(i, 250)}.#{rem(i, 250) + 1}/32\n\n"
    end
  end

  # The package's bench script does the Elixir interface's measures in its
  # own VM (prod build, made by scripts/bench).
  defp measure(:elixir, ns, _dir, peer_file, name) do
    script =
      "cd tundra_wireguard && MIX_ENV=prod exec mix run bench/peers.exs " <>
        "#{name}e /var/run/wireguard #{peer_file} #{@peers}"

    result = Native.run(["ip", "netns", "exec", ns, "sh", "-c", script])
    Map.new(result, fn {key, value} -> {String.to_atom(key), value} end)
  end

  defp measure(kind, ns, dir, peer_file, name) do
    name = name <> if(kind == :boringtun, do: "b", else: "g")
    {port, os_pid} = started = Lab.start_userspace_wireguard(kind, ns, name)
    # The program itself: wireguard-go under `env`, boringtun directly.
    pid = program_pid(String.to_integer(os_pid))

    try do
      key = Path.join(dir, "#{name}.key")
      File.write!(key, Base.encode64(:crypto.strong_rand_bytes(32)) <> "\n")
      run!(~w(wg set #{name} private-key #{key}))
      before = rss(pid)
      {uapi_us, _} = :timer.tc(fn -> run!(~w(wg addconf #{name} #{peer_file})) end)
      after_ = rss(pid)
      {show_us, _} = :timer.tc(fn -> run!(~w(wg show #{name})) end)
      _ = port

      %{
        uapi_ms: uapi_us / 1000,
        show_ms: show_us / 1000,
        rss_per_peer: div(after_ - before, @peers)
      }
    after
      Native.stop(started)
    end
  end

  # `ip netns exec` execs; `env` execs: the pid is the program's, unless a
  # shell stood between (then its only child).
  defp program_pid(pid) do
    case File.read("/proc/#{pid}/task/#{pid}/children") do
      {:ok, children} ->
        case String.split(children) do
          [child] -> String.to_integer(child)
          _ -> pid
        end

      _ ->
        pid
    end
  end

  defp rss(pid) do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/#{pid}/status"))
    String.to_integer(kb) * 1024
  end

  defp run!([exe | args] = cmd) do
    {out, status} = System.cmd(exe, args, stderr_to_stdout: true)
    if status != 0, do: raise("#{Enum.join(cmd, " ")}: #{out}")
    out
  end
end

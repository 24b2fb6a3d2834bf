# Creation and teardown of many devices, with a 1 ms heartbeat process
# watching scheduler delay during the teardown. Not part of the test suite
# (no timed assertions there). Run as root, inside a namespace of its own:
#
#   ip netns add tundra-bench && MIX_ENV=test ip netns exec tundra-bench \
#     mix run bench/teardown.exs 1000; ip netns del tundra-bench
n = String.to_integer(List.first(System.argv()) || "1000")
parent = self()
t0 = System.monotonic_time(:microsecond)

owners =
  for i <- 1..n do
    spawn(fn ->
      {:ok, _} = Tundra.create("10.96.#{div(i, 250)}.#{rem(i, 250) + 1}", prefix: 32)
      send(parent, :created)
      receive do: (:exit -> :ok)
    end)
  end

for _ <- owners, do: receive(do: (:created -> :ok))
t1 = System.monotonic_time(:microsecond)

tun_count = fn ->
  Enum.count(File.ls!("/sys/class/net"), &File.exists?("/sys/class/net/#{&1}/tun_flags"))
end

heartbeat =
  spawn(fn ->
    loop = fn loop, last, worst ->
      receive do
        {:report, to} -> send(to, {:worst, worst})
      after
        1 ->
          now = System.monotonic_time(:microsecond)
          loop.(loop, now, max(worst, now - last - 1000))
      end
    end

    loop.(loop, System.monotonic_time(:microsecond), 0)
  end)

Process.sleep(50)
t2 = System.monotonic_time(:microsecond)
Enum.each(owners, &send(&1, :exit))

wait = fn wait ->
  if tun_count.() > 0,
    do:
      (
        Process.sleep(5)
        wait.(wait)
      )
end

wait.(wait)
t3 = System.monotonic_time(:microsecond)
send(heartbeat, {:report, self()})
worst = receive do: ({:worst, w} -> w)

IO.puts("devices:                 #{n}")
IO.puts("create (N owners at once): #{round(n / ((t1 - t0) / 1.0e6))}/s")
IO.puts("teardown (all at once):  #{round(n / ((t3 - t2) / 1.0e6))}/s (#{div(t3 - t2, 1000)} ms)")
IO.puts("worst heartbeat delay:   #{Float.round(worst / 1000, 2)} ms")

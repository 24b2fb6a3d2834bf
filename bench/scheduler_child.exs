# Run by TundraBench.Scheduler in a VM of its own with one normal
# scheduler (`+S 1:1`), so that any call that holds it shows as a late
# heartbeat. Prints `result <name> <worst heartbeat delay, ms> <ms taken>`.
alias TundraBench.Heartbeat

measure = fn name, work ->
  heartbeat = Heartbeat.start()
  Process.sleep(20)
  started = System.monotonic_time(:millisecond)
  result = work.()
  taken = System.monotonic_time(:millisecond) - started
  worst = Float.round(Heartbeat.stop(heartbeat) / 1000, 2)
  IO.puts("result #{name} #{worst} #{taken} #{inspect(result)}")
end

{:ok, {dev, _}} = Tundra.create("10.202.0.2", dstaddr: "10.202.0.1")

# A 28-byte UDP packet to an address nobody has: the kernel drops it at
# once (no forwarding), so the cost is Tundra's and the write's.
packet =
  <<0x45, 0, 28::16, 0::16, 0x4000::16, 64, 17, 0::16, 10, 202, 0, 1, 10, 202, 0, 9, 1::16, 9::16,
    8::16, 0::16>>

measure.("idle", fn -> Process.sleep(2_000) end)
measure.("send_many_1m", fn -> Tundra.send_many(dev, List.duplicate(packet, 1_000_000)) end)
big = :binary.copy("x", 100 * 1024 * 1024)
measure.("send_100mb_binary", fn -> Tundra.send(dev, big) end)
pieces = List.duplicate(:binary.copy("x", 1024), 100 * 1024)
measure.("send_100mb_iolist", fn -> Tundra.send(dev, pieces) end)

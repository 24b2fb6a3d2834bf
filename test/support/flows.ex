defmodule TundraTest.Flows do
  @moduledoc false
  # Multi-queue devices: many UDP flows sent from 10.97.<n>.2 to the peer
  # 10.97.<n>.1 must all be answered by a responder per queue, and every
  # queue must get some of them.
  import ExUnit.Assertions

  # Many flows (source ports) from the device's address: every queue
  # receives some, and an echo per queue answers every datagram.
  def assert_spread(devs, n, queues) do
    test = self()

    for {dev, q} <- Enum.with_index(devs) do
      responder =
        spawn_link(fn ->
          receive do: (:go -> :ok)
          serve_queue(dev, test, q)
        end)

      :ok = Tundra.controlling_process(dev, responder)
      send(responder, :go)
    end

    sockets =
      for _ <- 1..32 do
        {:ok, s} = :gen_udp.open(0, [:binary, ip: {10, 97, n, 2}, active: false])
        s
      end

    for s <- sockets, i <- 1..4, do: :ok = :gen_udp.send(s, {10, 97, n, 1}, 4000, "flow-#{i}")

    peer = {10, 97, n, 1}

    answered =
      for s <- sockets, _ <- 1..4 do
        assert {:ok, {^peer, 4000, "flow-" <> _}} = :gen_udp.recv(s, 0, 5_000)
      end

    assert length(answered) == 128
    queues_used = collect_queues(MapSet.new())

    assert MapSet.size(queues_used) == queues,
           "queues used: #{inspect(MapSet.to_list(queues_used))}"
  end

  defp collect_queues(used) do
    receive do
      {:queue_got, q} -> collect_queues(MapSet.put(used, q))
    after
      100 -> used
    end
  end

  # Answers each UDP datagram on this queue, in active mode, and tells the
  # test which queue got traffic.
  defp serve_queue(dev, test, q) do
    :ok = Tundra.setopts(dev, active: true)
    serve_queue_loop(dev, test, q)
  end

  defp serve_queue_loop(dev, test, q) do
    receive do
      {:tundra, ^dev, packet} ->
        case TundraExamples.UdpReflector.turn_around(packet) do
          {:ok, answer} ->
            :ok = Tundra.send(dev, answer)
            send(test, {:queue_got, q})

          :ignore ->
            :ok
        end

        serve_queue_loop(dev, test, q)
    end
  end
end

defmodule Tundra.ActiveTest do
  # Active mode with real traffic: UDP datagrams sent from a socket on the
  # device's own address to its peer arrive as {:tundra, dev, packet}
  # messages. The devices have no IPv6 of their own (`ipv6: false`), so
  # the link carries none of the kernel's IPv6 chatter (MLD, or router
  # solicitations on a kernel that sends them) that a `refute_receive`
  # would catch; packets are still told apart by their payload.
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net

  defp device(n, opts) do
    assert {:ok, {dev, name}} =
             Tundra.create("10.97.#{n}.2", [dstaddr: "10.97.#{n}.1", ipv6: false] ++ opts)

    {dev, name}
  end

  defp sender(n) do
    {:ok, sock} = :gen_udp.open(0, [:binary, ip: {10, 97, n, 2}, active: false])
    fn payloads -> for p <- payloads, do: :ok = :gen_udp.send(sock, {10, 97, n, 1}, 4000, p) end
  end

  defp payloads(range), do: Enum.map(range, &"seq-#{&1}")

  # Our datagrams' payloads, from the packets of `messages`, in order.
  defp seqs(packets), do: for(p <- packets, {:ok, s} <- [payload(p)], do: s)

  defp payload(
         <<0x45, _::binary-size(8), 17, _::binary-size(10), _::binary-size(8), rest::binary>>
       ),
       do: if(String.starts_with?(rest, "seq-"), do: {:ok, rest}, else: :other)

  defp payload(_), do: :other

  # Receives {:tundra, dev, packet} messages until `count` of ours came.
  defp receive_seqs(dev, count, acc \\ []) do
    if length(seqs(acc)) >= count do
      seqs(Enum.reverse(acc))
    else
      receive do
        {:tundra, ^dev, packet} -> receive_seqs(dev, count, [packet | acc])
      after
        5_000 ->
          flunk("got #{length(seqs(acc))} of #{count}: #{inspect(seqs(Enum.reverse(acc)))}")
      end
    end
  end

  defp mailbox_packets(dev) do
    {:messages, messages} = Process.info(self(), :messages)
    for {:tundra, ^dev, packet} <- messages, do: packet
  end

  test "active: true delivers every packet once, in order; recv is refused meanwhile" do
    {dev, _} = device(1, active: true)
    send_udp = sender(1)
    send_udp.(payloads(1..200))
    assert receive_seqs(dev, 200) == payloads(1..200)
    assert Tundra.recv(dev, 0, :nowait) == {:error, :einval}
    assert Tundra.recv_many(dev, 8, 10) == {:error, :einval}
    refute_receive {:tundra, ^dev, _}, 100
  end

  test "active: :once delivers one packet, then the device is passive" do
    {dev, _} = device(2, [])
    send_udp = sender(2)
    # Settle the link's chatter first, passively.
    _ = drain(dev)
    send_udp.(payloads(1..3))
    assert eventually(fn -> match?({:ok, _}, Tundra.recv(dev, 0, :nowait)) end)
    :ok = Tundra.setopts(dev, active: :once)
    assert_receive {:tundra, ^dev, _}, 5_000
    refute_receive {:tundra, ^dev, _}, 200
    refute_received {:tundra_passive, ^dev}
    assert {:ok, _} = Tundra.recv(dev, 0, 1_000)
  end

  test "active: n delivers exactly n, then {:tundra_passive, dev}; counts add up" do
    {dev, _} = device(3, [])
    _ = drain(dev)
    # Two counts given before anything arrives add up to ten.
    :ok = Tundra.setopts(dev, active: 5)
    :ok = Tundra.setopts(dev, active: 5)
    send_udp = sender(3)
    send_udp.(payloads(1..30))
    assert_receive {:tundra_passive, ^dev}, 5_000
    refute_receive {:tundra_passive, ^dev}, 100
    packets = mailbox_packets(dev)
    # The link's chatter may take some of the ten; the rest are ours.
    assert length(packets) == 10
    # No more than n arrived: the rest wait on the device, in order.
    {:ok, rest} = Tundra.recv_many(dev, 64, 1_000)
    assert seqs(packets) ++ seqs(rest) == payloads(1..length(seqs(packets) ++ seqs(rest)))
    # A count that sums to 0 or less makes it passive and says so.
    :ok = Tundra.setopts(dev, active: 2)
    :ok = Tundra.setopts(dev, active: -2)
    assert_receive {:tundra_passive, ^dev}
  end

  # Receives {:tundra_batch, dev, packets} messages until `count` of ours
  # came; the packets, in order.
  defp receive_batches(dev, count, acc \\ []) do
    if length(seqs(acc)) >= count do
      acc
    else
      receive do
        {:tundra_batch, ^dev, packets} -> receive_batches(dev, count, acc ++ packets)
      after
        5_000 -> flunk("only #{length(seqs(acc))} of #{count} packets came in batches")
      end
    end
  end

  test "active_batch: true delivers batches, in order, counted by packet" do
    {dev, _} = device(34, active: true, active_batch: true)
    assert {:ok, [active_batch: true]} = Tundra.getopts(dev, [:active_batch])
    send_udp = sender(34)
    send_udp.(payloads(1..200))
    packets = receive_batches(dev, 200)
    assert seqs(packets) == payloads(1..200)
    refute_received {:tundra, ^dev, _}

    # A count counts packets, however they come.
    :ok = Tundra.setopts(dev, active: false)
    _ = drain(dev)
    :ok = Tundra.setopts(dev, active: 10)
    send_udp.(payloads(201..260))
    assert_receive {:tundra_passive, ^dev}, 5_000
    batched = for {:tundra_batch, ^dev, packets} <- mailbox(dev), packet <- packets, do: packet
    assert length(batched) == 10

    # And back to a message per packet.
    {:ok, rest} = Tundra.recv_many(dev, 64, 1_000)
    :ok = Tundra.setopts(dev, active_batch: false, active: :once)
    send_udp.(payloads(1..1))
    assert_receive {:tundra, ^dev, _packet}, 5_000
    assert rest != []
  end

  defp mailbox(dev) do
    receive do
      {:tundra_batch, ^dev, _} = message -> [message | mailbox(dev)]
    after
      0 -> []
    end
  end

  test "getopts/2 and info/1 report the active mode, as inet:getopts does" do
    {dev, _} = device(33, active: 5, link_events: true)

    assert Tundra.getopts(dev, [:active, :link_events, :offload]) ==
             {:ok, [active: 5, link_events: true, offload: false]}

    assert {:ok, %{active: 5}} = Tundra.info(dev)
    :ok = Tundra.setopts(dev, active: :once)
    assert {:ok, [active: :once]} = Tundra.getopts(dev, [:active])
    :ok = Tundra.setopts(dev, active: true)
    assert {:ok, [active: true]} = Tundra.getopts(dev, [:active])
    :ok = Tundra.setopts(dev, active: false)
    assert {:ok, [active: false]} = Tundra.getopts(dev, [:active])
    assert Tundra.getopts(dev, [:mtu]) == {:error, {:unknown_option, :mtu}}
    # Anyone may ask.
    assert {:ok, [active: false]} =
             Task.await(Task.async(fn -> Tundra.getopts(dev, [:active]) end))

    :ok = Tundra.close(dev)
    assert Tundra.getopts(dev, [:active]) == {:error, :closed}
  end

  test "busy_poll: set, reported, checked; reads find what waits and arm a select when nothing does" do
    # A number of its own: a device of an earlier test may still be going
    # (closes are asynchronous) and hold the same route.
    {dev, _} = device(35, [])
    assert {:ok, [busy_poll: 0]} = Tundra.getopts(dev, [:busy_poll])
    :ok = Tundra.setopts(dev, busy_poll: 200)
    assert {:ok, [busy_poll: 200]} = Tundra.getopts(dev, [:busy_poll])

    for bad <- [-1, 201, 1.5, :fast] do
      assert Tundra.setopts(dev, busy_poll: bad) == {:error, {:invalid_option, {:busy_poll, bad}}}
    end

    # Nothing waiting: it looks for up to 200 µs, then arms a select.
    assert {:select, _} = Tundra.recv_many(dev, 16, :nowait)
    send = sender(35)
    send.(payloads(1..3))
    assert_receive {:"$socket", {:"$tundra", _}, :select, _}, 5_000
    assert {:ok, packets} = Tundra.recv_many(dev, 16, :nowait)
    assert length(packets) == 3
    assert {:select, _} = Tundra.recv(dev, 0, :nowait)
    # Active mode reads with it too.
    :ok = Tundra.setopts(dev, active: true)
    send.(payloads(4..5))
    assert_receive {:tundra, ^dev, _}, 5_000
    assert_receive {:tundra, ^dev, _}, 5_000
  end

  test "active: 0 (or less) on create says passive at once, as gen_udp and setopts do" do
    for {n, count} <- [{30, 0}, {31, -3}] do
      {dev, _} = device(n, active: count)
      assert_receive {:tundra_passive, ^dev}
      assert {:error, :timeout} != Tundra.recv(dev, 0, :nowait)
    end

    {dev, _} = device(32, active: false)
    refute_receive {:tundra_passive, ^dev}, 100
  end

  test "switching between active and passive mid-stream loses and reorders nothing" do
    {dev, _} = device(4, [])
    _ = drain(dev)
    send_udp = sender(4)
    test = self()

    streamer =
      spawn_link(fn ->
        for chunk <- Enum.chunk_every(1..2000, 50) do
          send_udp.(payloads(chunk))
          Process.sleep(1)
        end

        send(test, :sent)
      end)

    got = switch_modes(dev, [], false)
    Process.unlink(streamer)
    assert got == payloads(1..2000)
  end

  # Alternates between active and passive reading until all 2000 came.
  defp switch_modes(dev, acc, sent?) do
    if length(acc) >= 2000 do
      acc
    else
      :ok = Tundra.setopts(dev, active: 16)
      active = collect_active(dev, [])
      passive = collect_passive(dev, [])
      sent? = sent? or receive(do: (:sent -> true), after: (0 -> false))
      # Everything was sent and a whole round found nothing: some was lost.
      if sent? and active == [] and passive == [], do: flunk("stalled at #{length(acc)}")

      switch_modes(dev, acc ++ seqs(active ++ passive), sent?)
    end
  end

  defp collect_active(dev, acc) do
    receive do
      {:tundra, ^dev, packet} -> collect_active(dev, [packet | acc])
      {:tundra_passive, ^dev} -> Enum.reverse(acc)
    after
      200 ->
        # Fewer than 16 came: make it passive; what came meanwhile counts.
        :ok = Tundra.setopts(dev, active: false)
        flush_active(dev, acc)
    end
  end

  defp flush_active(dev, acc) do
    receive do
      {:tundra, ^dev, packet} -> flush_active(dev, [packet | acc])
      {:tundra_passive, ^dev} -> flush_active(dev, acc)
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp collect_passive(dev, acc) do
    case Tundra.recv_many(dev, 7, :nowait) do
      {:ok, packets} when length(acc) < 40 ->
        collect_passive(dev, acc ++ packets)

      {:ok, packets} ->
        acc ++ packets

      {:select, info} ->
        _ = Tundra.cancel(dev, info)
        acc
    end
  end

  test "controlling_process/2 during a stream moves delivery and the mailbox, losing nothing" do
    {dev, _} = device(5, active: true)
    send_udp = sender(5)
    test = self()

    new_owner =
      spawn_link(fn ->
        receive do: (:owner -> :ok)
        send(test, {:got, receive_seqs(dev, 1000)})
      end)

    # Paced, so that the device's own queue (500 packets) never overflows
    # while it is briefly passive during the hand-over.
    streamer =
      spawn_link(fn ->
        for chunk <- Enum.chunk_every(1..1000, 50) do
          send_udp.(payloads(chunk))
          if List.last(chunk) == 300, do: send(test, :halfway)
          Process.sleep(2)
        end
      end)

    assert_receive :halfway, 5_000
    assert :ok = Tundra.controlling_process(dev, new_owner)
    send(new_owner, :owner)
    assert_receive {:got, got}, 10_000
    assert got == payloads(1..1000)
    assert mailbox_packets(dev) == []
    Process.unlink(streamer)
  end

  test "{:tundra_closed, dev} on close/1 and when the interface is deleted" do
    {dev, _} = device(6, active: true)
    assert :ok = Tundra.close(dev)
    assert_receive {:tundra_closed, ^dev}

    {dev, name} = device(7, active: true)
    {_, 0} = System.cmd("ip", ["link", "del", name])
    assert_receive {:tundra_closed, ^dev}, 5_000
    refute_receive {:tundra_closed, ^dev}, 100
    # The device is still ours to close; passive calls see the deletion.
    assert :ok = Tundra.setopts(dev, active: false)
    assert {:error, _} = Tundra.recv(dev, 0, :nowait)
    assert :ok = Tundra.close(dev)
  end

  test "an active owner that exits with packets in flight leaves no interface and no fd" do
    fds_before = open_fds()
    test = self()

    owner =
      spawn(fn ->
        {dev, name} = device(8, active: true)
        send(test, {:name, name})
        send_udp = sender(8)
        send_udp.(payloads(1..500))
        receive do: (:exit -> :ok)
        _ = dev
      end)

    assert_receive {:name, name}, 5_000
    ref = Process.monitor(owner)
    send(owner, :exit)
    assert_receive {:DOWN, ^ref, :process, ^owner, :normal}, 5_000
    assert eventually(fn -> not interface_exists?(name) end)
    assert eventually(fn -> open_fds() <= fds_before end)
  end

  describe "multi-queue devices" do
    test "queues: 2 and 4 make one interface whose queues each get flows" do
      for {queues, n} <- [{2, 10}, {4, 11}] do
        assert {:ok, {devs, name}} =
                 Tundra.create("10.97.#{n}.2", dstaddr: "10.97.#{n}.1", queues: queues)

        assert length(devs) == queues
        assert Enum.uniq(devs) == devs
        flags = File.read!("/sys/class/net/#{name}/tun_flags") |> String.trim()
        assert Bitwise.band(String.to_integer(String.trim_leading(flags, "0x"), 16), 0x100) != 0
        TundraTest.Flows.assert_spread(devs, n, queues)
      end
    end

    test "the interface goes when the last queue closes, not before" do
      {:ok, {[a, b, c], name}} = Tundra.create("10.97.12.2", queues: 3)
      :ok = Tundra.close(a)
      :ok = Tundra.close(b)
      Process.sleep(200)
      assert interface_exists?(name)
      assert {:ok, %{name: ^name}} = Tundra.info(c)
      :ok = Tundra.close(c)
      assert eventually(fn -> not interface_exists?(name) end)
    end

    test "each queue has its own owner" do
      {:ok, {[a, b], _name}} = Tundra.create("10.97.13.2", queues: 2)
      other = spawn(fn -> receive do: (:never -> :ok) end)
      assert :ok = Tundra.controlling_process(b, other)
      assert Tundra.close(b) == {:error, :not_owner}
      assert {:ok, %{owner: owner}} = Tundra.info(a)
      assert owner == self()
      Process.exit(other, :kill)
    end
  end
end

defmodule Tundra.DeviceTest do
  # Real devices and real traffic, inside the test run's own network
  # namespace (see test_helper.exs). Each test uses its own subnet, and all
  # traffic goes to addresses on the devices the test made.
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net
  alias TundraExamples.EchoResponder

  defp create!(address, opts) do
    assert {:ok, {dev, name}} = Tundra.create(address, opts)
    {dev, name}
  end

  # A device whose peer is 10.99.<n>.1, plus a UDP socket bound to its own
  # address 10.99.<n>.2, to exchange datagrams with through the device.
  defp v4_device(n, opts \\ []) do
    create!("10.99.#{n}.2", [dstaddr: "10.99.#{n}.1"] ++ opts)
  end

  # Like drain/1, with recv_many/3: returns the pending select's info.
  defp drain_many(dev) do
    case Tundra.recv_many(dev, 16, :nowait) do
      {:ok, [_ | _]} -> drain_many(dev)
      {:select, info} -> info
    end
  end

  defp udp_socket(ip) do
    {:ok, sock} = :gen_udp.open(0, [:binary, ip: ip, active: false])
    {:ok, port} = :inet.port(sock)
    {sock, port}
  end

  describe "create/2" do
    test "configures an IPv4 point-to-point device that ping reaches" do
      {dev, name} = v4_device(1, mtu: 1400, name: "tv4%d")
      assert name =~ ~r/^tv4\d+$/
      assert interface_exists?(name)

      assert {:ok, info} = Tundra.info(dev)
      assert %{name: ^name, mtu: 1400, up: true, owner: owner} = info
      assert owner == self()

      assert %{address: {10, 99, 1, 2}, prefix: 32, dstaddr: {10, 99, 1, 1}} in info.addresses

      {:ok, responder} = EchoResponder.serve(dev)
      assert {0, output} = ping("10.99.1.1", 3)
      assert output =~ "3 received"
      assert EchoResponder.replies(responder) == 3
    end

    test "configures an IPv6 device with a netmask that ping -6 reaches at once" do
      {dev, name} =
        create!("fd11:b7b7:4360::2",
          dstaddr: "fd11:b7b7:4360::1",
          netmask: "ffff:ffff:ffff:ffff::",
          mtu: 1500
        )

      assert {:ok, info} = Tundra.info(dev)
      assert info.mtu == 1500

      assert %{
               address: {0xFD11, 0xB7B7, 0x4360, 0, 0, 0, 0, 2},
               prefix: 64,
               dstaddr: {0xFD11, 0xB7B7, 0x4360, 0, 0, 0, 0, 1}
             } in info.addresses

      # No duplicate address detection: the address is usable immediately.
      {:ok, responder} = EchoResponder.serve(dev)
      assert {0, output} = ping("fd11:b7b7:4360::1", 3)
      assert output =~ "3 received"
      assert EchoResponder.replies(responder) == 3
      assert interface_exists?(name)
    end

    test "an IPv6 /128 peer is routed as soon as create returns, again and again" do
      # The kernel adds an IPv6 peer route asynchronously; create/2 must not
      # return before the peer is reachable, including right after a device
      # with the same addresses went away.
      for _ <- 1..10 do
        {dev, name} = create!("fd96::2", dstaddr: "fd96::1")
        {:ok, responder} = EchoResponder.serve(dev)
        assert {0, _} = ping("fd96::1", 1)
        GenServer.stop(responder)
        assert eventually(fn -> not interface_exists?(name) end)
      end
    end

    test "an IPv4 device with a subnet prefix routes the whole subnet through it" do
      {dev, _name} = create!({10, 98, 0, 2}, prefix: 24)
      {:ok, _} = EchoResponder.serve(dev)
      assert {0, _} = ping("10.98.0.77", 1)
    end

    test "up: false leaves the link down" do
      {dev, _name} = v4_device(2, up: false)
      assert {:ok, %{up: false}} = Tundra.info(dev)
    end

    test "the device learns no routes from router advertisements written into it" do
      {dev, name} = create!("fd11:b7b7:4361::2", dstaddr: "fd11:b7b7:4361::1")
      {_dev4, name4} = v4_device(41, ipv6: false)

      for name <- [name, name4], key <- ~w(accept_ra autoconf accept_redirects) do
        assert File.read!("/proc/sys/net/ipv6/conf/#{name}/#{key}") == "0\n", "#{name} #{key}"
      end

      # Below 1280 the link has no IPv6; raised again, not its defaults.
      assert :ok = Tundra.set(dev, mtu: 1000)
      refute File.exists?("/proc/sys/net/ipv6/conf/#{name}/accept_ra")
      assert :ok = Tundra.set(dev, mtu: 1280)
      assert File.read!("/proc/sys/net/ipv6/conf/#{name}/accept_ra") == "0\n"
    end

    test "a name in use is refused with :ebusy" do
      {dev, name} = v4_device(3, name: "tbusy0")
      assert name == "tbusy0"
      assert Tundra.create("10.99.4.2", name: "tbusy0") == {:error, :ebusy}
      # Used after the create, so garbage collection cannot close it early.
      assert :ok = Tundra.close(dev)
    end
  end

  describe "recv/3 and send/3" do
    test "a packet routed to the device is received whole, exactly its size" do
      {dev, _} = v4_device(10)
      {sock, port} = udp_socket({10, 99, 10, 2})
      payload = :rand.bytes(100)
      :ok = :gen_udp.send(sock, {10, 99, 10, 1}, 4000, payload)

      assert {:ok, packet} = recv_where(dev, &udp4_with?(&1, payload))
      assert byte_size(packet) == 20 + 8 + 100

      assert <<4::4, 5::4, _::binary-size(11), 10, 99, 10, 2, 10, 99, 10, 1, ^port::16, 4000::16,
               _::32, ^payload::binary>> = packet
    end

    test "a longer packet is truncated to the length asked for" do
      {dev, _} = v4_device(11)
      {sock, _} = udp_socket({10, 99, 11, 2})
      :ok = :gen_udp.send(sock, {10, 99, 11, 1}, 4000, String.duplicate("x", 500))
      # Only the 528-byte datagram has a 28-byte prefix of this shape.
      udp_head? = &match?(<<0x45, _, 528::16, _::binary-size(5), 17, _::binary>>, &1)
      assert {:ok, packet} = recv_where(dev, udp_head?, 28)
      assert byte_size(packet) == 28
      assert <<0x45, _, 528::16, _::binary-size(24)>> = packet
    end

    test ":nowait returns a select, and the select message arrives when a packet does" do
      {dev, _} = v4_device(12)
      assert {:select_info, :recv, handle} = drain(dev)
      assert is_reference(handle)

      {sock, _} = udp_socket({10, 99, 12, 2})
      :ok = :gen_udp.send(sock, {10, 99, 12, 1}, 4000, "hello")

      assert_receive {:"$socket", ^dev, :select, ^handle}, 5_000
      assert {:ok, <<_::binary-size(28), "hello">>} = recv_where(dev, &udp4_with?(&1, "hello"))
    end

    test "a packet sent is delivered by the kernel (IPv4 and IPv6, binary and iodata)" do
      {dev, _} = v4_device(13)
      {sock, port} = udp_socket({10, 99, 13, 2})
      packet = udp4({10, 99, 13, 1}, {10, 99, 13, 2}, 5000, port, "from the device")
      assert :ok = Tundra.send(dev, packet)
      assert {:ok, {{10, 99, 13, 1}, 5000, "from the device"}} = :gen_udp.recv(sock, 0, 5_000)

      <<head::binary-size(10), tail::binary>> = packet
      assert :ok = Tundra.send(dev, [head, [tail]], :nowait)
      assert {:ok, {_, 5000, "from the device"}} = :gen_udp.recv(sock, 0, 5_000)

      local6 = {0xFD11, 0x13, 0, 0, 0, 0, 0, 2}
      peer6 = {0xFD11, 0x13, 0, 0, 0, 0, 0, 1}
      {dev6, _} = create!(local6, dstaddr: peer6)
      {:ok, sock6} = :gen_udp.open(0, [:binary, :inet6, ip: local6, active: false])
      {:ok, port6} = :inet.port(sock6)
      assert :ok = Tundra.send(dev6, udp6(peer6, local6, 5001, port6, "six"), 5_000)
      assert {:ok, {^peer6, 5001, "six"}} = :gen_udp.recv(sock6, 0, 5_000)
    end

    test "iodata of any shape is sent as one packet" do
      {dev, _} = v4_device(17)
      {sock, port} = udp_socket({10, 99, 17, 2})
      packet = udp4({10, 99, 17, 1}, {10, 99, 17, 2}, 5000, port, "shapes")
      <<a::binary-size(3), b::binary-size(9), c::binary-size(20), rest::binary>> = packet
      bytes = :binary.bin_to_list(b)

      shapes = [
        # Nested lists of binaries, and a binary as an improper tail.
        [a, [[b], c | rest]],
        [a, b | [c | rest]],
        # Byte integers (flattened by the VM first).
        [a, bytes, c, rest],
        # More pieces than are written without flattening.
        :binary.bin_to_list(packet) |> Enum.map(&<<&1>>),
        # Deeper than that, too.
        Enum.reduce(1..12, packet, fn _, acc -> [acc] end)
      ]

      for shape <- shapes do
        assert :ok = Tundra.send(dev, shape, :nowait)
        assert {:ok, {{10, 99, 17, 1}, 5000, "shapes"}} = :gen_udp.recv(sock, 0, 5_000)
      end

      assert Tundra.send(dev, [[], [""]]) == {:error, :einval}
    end

    test "send_many/3 sends every packet in order, more than one batch too" do
      {dev, _} = v4_device(26)

      {:ok, sock} =
        :gen_udp.open(0, [:binary, ip: {10, 99, 26, 2}, active: false, recbuf: 1_000_000])

      {:ok, port} = :inet.port(sock)
      payloads = for i <- 1..300, do: "packet #{i}"
      packets = for p <- payloads, do: udp4({10, 99, 26, 1}, {10, 99, 26, 2}, 5000, port, p)
      # Binaries and iodata mixed.
      packets =
        Enum.map(Enum.with_index(packets), fn
          {<<head::binary-size(20), rest::binary>>, i} when rem(i, 2) == 0 -> [head, rest]
          {packet, _} -> packet
        end)

      assert Tundra.send_many(dev, packets, :nowait) == :ok
      got = for _ <- payloads, do: elem(:gen_udp.recv(sock, 0, 5_000), 1) |> elem(2)
      assert got == payloads
      assert Tundra.send_many(dev, [], 1_000) == :ok
    end

    test "send_many/3 stops at a packet the kernel refuses and returns the rest" do
      {dev, _} = v4_device(27)
      {sock, port} = udp_socket({10, 99, 27, 2})
      good = fn p -> udp4({10, 99, 27, 1}, {10, 99, 27, 2}, 5000, port, p) end
      bad = <<0, 1, 2, 3>>

      assert Tundra.send_many(dev, [good.("one"), bad, good.("two")]) ==
               {:error, {:einval, [bad, good.("two")]}}

      assert {:ok, {_, 5000, "one"}} = :gen_udp.recv(sock, 0, 5_000)
      assert Tundra.send_many(dev, [good.("two")], :nowait) == :ok
      assert {:ok, {_, 5000, "two"}} = :gen_udp.recv(sock, 0, 5_000)

      # A list element that is not iodata raises; the packets before it
      # were sent.
      assert_raise ArgumentError, fn -> Tundra.send_many(dev, [good.("three"), :oops]) end
      assert {:ok, {_, 5000, "three"}} = :gen_udp.recv(sock, 0, 5_000)
      assert_raise ArgumentError, fn -> Tundra.send_many(dev, [good.("four") | "improper"]) end
      assert {:ok, {_, 5000, "four"}} = :gen_udp.recv(sock, 0, 5_000)
      assert :ok = Tundra.send(dev, good.("five"))
      assert {:ok, {_, 5000, "five"}} = :gen_udp.recv(sock, 0, 5_000)
    end

    test "recv_many/3 returns several queued packets in order, at most count" do
      {dev, _} = v4_device(18)
      # Settle the device first: nothing but our datagrams should queue.
      drain(dev)
      {sock, _} = udp_socket({10, 99, 18, 2})

      payloads = for i <- 1..5, do: "many #{i}"
      for p <- payloads, do: :ok = :gen_udp.send(sock, {10, 99, 18, 1}, 4000, p)

      # The kernel may queue its own packets (IPv6 router solicitations)
      # in between; keep only our datagrams, in the order they came.
      ours = fn packets ->
        for <<_::binary-size(28), p::binary>> = packet <- packets,
            udp4_with?(packet, p),
            p in payloads,
            do: p
      end

      # A UDP send to the device queues its packet before it returns, so
      # all five are waiting now.
      assert {:ok, first} = Tundra.recv_many(dev, 2, :nowait)
      assert length(first) == 2
      assert {:ok, rest} = Tundra.recv_many(dev, 100, :nowait)
      assert ours.(first ++ rest) == payloads
    end

    test "recv_many/3 with :nowait selects, and the message arrives with a packet" do
      {dev, _} = v4_device(19)
      assert {:select_info, :recv, handle} = drain_many(dev)
      {sock, _} = udp_socket({10, 99, 19, 2})
      :ok = :gen_udp.send(sock, {10, 99, 19, 1}, 4000, "wake")
      assert_receive {:"$socket", ^dev, :select, ^handle}, 5_000
      assert {:ok, [_ | _] = packets} = Tundra.recv_many(dev, 4, :nowait)
      assert Enum.all?(packets, &is_binary/1)
    end

    test "what the kernel refuses is an error, non-iodata raises" do
      {dev, _} = v4_device(14)
      # The kernel judges by the version nibble: 0 is neither 4 nor 6.
      assert Tundra.send(dev, <<0, 1, 2, 3>>) == {:error, :einval}
      assert Tundra.send(dev, "") == {:error, :einval}
      assert_raise ArgumentError, fn -> Tundra.send(dev, [:not_iodata]) end
      assert_raise ArgumentError, fn -> Tundra.send(dev, [1000]) end
    end

    test "a blocking recv times out, cancelling its select" do
      # A link that is down carries nothing, not even the kernel's IPv6.
      {dev, _} = v4_device(15, up: false)
      assert Tundra.recv(dev, 1500, 50) == {:error, :timeout}
      assert Tundra.recv(dev, 1500, 0) == {:error, :timeout}
      refute_received {:"$socket", ^dev, :select, _}
      # The cancelled select does not fire later either.
      assert {:select, info} = Tundra.recv(dev, 1500, :nowait)
      assert :ok = Tundra.cancel(dev, info)
    end

    test "cancel/2 withdraws a pending select" do
      {dev, _} = v4_device(16)
      info = drain(dev)
      assert :ok = Tundra.cancel(dev, info)

      {sock, _} = udp_socket({10, 99, 16, 2})
      :ok = :gen_udp.send(sock, {10, 99, 16, 1}, 4000, "unwatched")
      # The packet arrives and can be read, yet no notification was sent.
      assert {:ok, _} = recv_where(dev, &udp4_with?(&1, "unwatched"))
      refute_received {:"$socket", ^dev, :select, _}
    end
  end

  describe "ownership" do
    test "other processes get :not_owner; info is open to all" do
      {dev, _} = v4_device(20)
      test = self()

      spawn_link(fn ->
        send(test, {
          Tundra.recv(dev, 1500, :nowait),
          Tundra.send(dev, "x", :nowait),
          Tundra.close(dev),
          Tundra.controlling_process(dev, self()),
          Tundra.cancel(dev, {:select_info, :recv, make_ref()}),
          Tundra.recv_many(dev, 8, :nowait),
          Tundra.send_many(dev, ["x"], :nowait),
          Tundra.info(dev)
        })
      end)

      assert_receive {{:error, :not_owner}, {:error, :not_owner}, {:error, :not_owner},
                      {:error, :not_owner}, {:error, :not_owner}, {:error, :not_owner},
                      {:error, :not_owner}, {:ok, %{owner: owner}}},
                     5_000

      assert owner == self()
    end

    test "controlling_process/2 hands the device over" do
      {dev, _} = v4_device(21)
      test = self()

      new_owner =
        spawn_link(fn ->
          receive do
            :go -> send(test, {:got, recv_where(dev, &udp4_with?(&1, "to the new owner"))})
          end
        end)

      assert :ok = Tundra.controlling_process(dev, new_owner)
      assert {:ok, %{owner: ^new_owner}} = Tundra.info(dev)
      assert Tundra.recv(dev, 1500, :nowait) == {:error, :not_owner}

      send(new_owner, :go)
      {sock, _} = udp_socket({10, 99, 21, 2})
      :ok = :gen_udp.send(sock, {10, 99, 21, 1}, 4000, "to the new owner")
      assert_receive {:got, {:ok, <<_::binary-size(28), "to the new owner">>}}, 5_000
    end

    test "a device whose new owner died is :closed to everyone, the old owner too" do
      {dev, _} = v4_device(25)
      new_owner = spawn(fn -> Process.sleep(:infinity) end)
      :ok = Tundra.controlling_process(dev, new_owner)
      ref = Process.monitor(new_owner)
      Process.exit(new_owner, :kill)
      assert_receive {:DOWN, ^ref, _, _, _}, 5_000
      assert eventually(fn -> Tundra.info(dev) == {:error, :closed} end)
      assert Tundra.close(dev) == {:error, :closed}
      assert Tundra.recv(dev, 0, :nowait) == {:error, :closed}
      assert Tundra.setopts(dev, active: true) == {:error, :closed}
    end

    test "handing over to a dead process is refused" do
      {dev, _} = v4_device(22)
      dead = spawn(fn -> :ok end)
      ref = Process.monitor(dead)
      assert_receive {:DOWN, ^ref, _, _, _}, 5_000
      assert Tundra.controlling_process(dev, dead) == {:error, :esrch}
      assert {:ok, %{owner: owner}} = Tundra.info(dev)
      assert owner == self()
    end

    test "the owner's exit removes the interface, with or without a pending select" do
      for {pending_select?, n} <- [{false, 23}, {true, 24}] do
        test = self()

        {pid, ref} =
          spawn_monitor(fn ->
            {:ok, {dev, name}} = Tundra.create("10.99.#{n}.2", dstaddr: "10.99.#{n}.1")
            if pending_select?, do: {:select_info, :recv, _} = drain(dev)
            send(test, {:name, name})

            receive do
              :exit -> :ok
            end
          end)

        assert_receive {:name, name}, 5_000
        assert interface_exists?(name)
        send(pid, :exit)
        assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
        assert eventually(fn -> not interface_exists?(name) end), "#{name} outlived its owner"
      end
    end

    test "a live owner that drops its handle keeps the device; its exit removes it" do
      test = self()

      # One device never selected, one with a select armed (and cancelled):
      # the garbage collector treats neither differently.
      owner =
        spawn(fn ->
          {:ok, {_plain, plain}} = Tundra.create("10.99.25.2", dstaddr: "10.99.25.1")
          {:ok, {selected, name}} = Tundra.create("10.99.28.2", dstaddr: "10.99.28.1")
          :ok = Tundra.cancel(selected, drain(selected))
          send(test, {:names, plain, name})
          receive do: (:collect -> :erlang.garbage_collect())
          send(test, :collected)
          receive do: (:exit -> :ok)
        end)

      assert_receive {:names, plain, selected}, 5_000
      send(owner, :collect)
      assert_receive :collected, 5_000
      # Plenty of chances for a destructor to run, if one could.
      for _ <- 1..3, do: :erlang.garbage_collect(owner)
      Process.sleep(200)
      assert interface_exists?(plain) and interface_exists?(selected)

      ref = Process.monitor(owner)
      send(owner, :exit)
      assert_receive {:DOWN, ^ref, :process, ^owner, :normal}, 5_000

      assert eventually(fn -> not interface_exists?(plain) and not interface_exists?(selected) end)
    end
  end

  describe "close/1" do
    test "removes the interface; the device is then :closed for every call" do
      {dev, name} = v4_device(30)
      {:select_info, :recv, _} = drain(dev)
      assert :ok = Tundra.close(dev)
      assert eventually(fn -> not interface_exists?(name) end)

      assert Tundra.close(dev) == {:error, :closed}
      assert Tundra.recv(dev, 1500, :nowait) == {:error, :closed}
      assert Tundra.recv_many(dev, 8, :nowait) == {:error, :closed}
      assert Tundra.send_many(dev, ["x"], :nowait) == {:error, :closed}
      assert Tundra.send(dev, "x", :nowait) == {:error, :closed}
      assert Tundra.info(dev) == {:error, :closed}
      assert Tundra.controlling_process(dev, self()) == {:error, :closed}
    end
  end

  describe "adopt/2" do
    test "takes over the fd of an existing TUN device" do
      {dev, name} = v4_device(40)
      {:ok, %{fd: fd}} = Tundra.info(dev)

      assert {:ok, {adopted, ^name}} = Tundra.adopt(fd)
      # The adopted device works on its own duplicate: closing the original
      # leaves the interface in place.
      :ok = Tundra.close(dev)
      {:ok, responder} = EchoResponder.serve(adopted)
      assert {0, _} = ping("10.99.40.1", 1)
      assert EchoResponder.replies(responder) == 1
      assert interface_exists?(name)
    end

    test "refuses fds that are not TUN devices, leaving them open" do
      {:ok, null} = File.open("/dev/null", [:read])
      fds = File.ls!("/proc/self/fd")

      not_tun =
        Enum.find(fds, fn fd ->
          File.read_link("/proc/self/fd/#{fd}") == {:ok, "/dev/null"}
        end)

      assert not_tun, "no /dev/null fd found"
      assert Tundra.adopt(String.to_integer(not_tun)) == {:error, :not_tun}
      assert File.read_link("/proc/self/fd/#{not_tun}") == {:ok, "/dev/null"}
      File.close(null)

      assert Tundra.adopt(1_000_000) == {:error, :ebadf}
    end
  end

  describe "no leaks" do
    @tag timeout: 420_000
    test "1,000 create/exit cycles leave the VM's open fd count unchanged" do
      cycle = fn i ->
        n = rem(i, 200)

        {pid, ref} =
          spawn_monitor(fn ->
            {:ok, _} = Tundra.create("10.97.#{n}.2", dstaddr: "10.97.#{n}.1")
          end)

        assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 10_000
      end

      # Warm up once so lazily opened VM fds are not counted as leaks.
      cycle.(0)
      assert eventually(fn -> tun_interfaces() == [] end)
      before = open_fds()

      1..1000
      |> Task.async_stream(cycle, max_concurrency: 8, timeout: 30_000)
      |> Stream.run()

      # Closes run on low-priority threads (they yield to the VM): on a
      # machine with no idle CPU they slow down, so the wait is long; it ends as
      # soon as they are done.
      assert eventually(fn -> tun_interfaces() == [] end, 240_000), "interfaces left behind"
      assert eventually(fn -> open_fds() == before end, 60_000), "fds: #{before} -> #{open_fds()}"
    end
  end

  # TUN interfaces in the test run's namespace. Other tests' devices go when
  # their test processes exit, so once the leak test's owners are gone too,
  # none should remain.
  defp tun_interfaces do
    File.ls!("/sys/class/net")
    |> Enum.filter(fn name -> File.exists?("/sys/class/net/#{name}/tun_flags") end)
  end
end

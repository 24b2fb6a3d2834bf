defmodule Tundra.LifecycleTest do
  # What an OTP developer relies on: supervised restarts with a fixed
  # name, fds that are owned once, select messages that come only when
  # they should, and the edges of recv/send. Real devices, inside the test
  # run's network namespace; each test uses its own subnet.
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net

  defp v4_device(n, opts \\ []) do
    assert {:ok, {dev, name}} = Tundra.create("10.98.#{n}.2", [dstaddr: "10.98.#{n}.1"] ++ opts)
    {dev, name}
  end

  defp udp_socket(ip) do
    {:ok, sock} = :gen_udp.open(0, [:binary, ip: ip, active: false, recbuf: 1_000_000])
    {:ok, port} = :inet.port(sock)
    {sock, port}
  end

  # The open-file flags of one of this VM's fds (/proc/self/fdinfo).
  defp fd_flags(fd) do
    [_, octal] = Regex.run(~r/^flags:\s+(\d+)/m, File.read!("/proc/self/fdinfo/#{fd}"))
    String.to_integer(octal, 8)
  end

  @o_nonblock 0o4000
  @o_cloexec 0o2000000

  defmodule Owner do
    # A supervised owner of a device with a fixed name.
    use GenServer

    def start_link(name), do: GenServer.start_link(__MODULE__, name, name: __MODULE__)

    @impl true
    def init(name) do
      case Tundra.create("10.98.1.2", dstaddr: "10.98.1.1", name: name) do
        {:ok, {dev, ^name}} -> {:ok, dev}
        {:error, reason} -> {:stop, reason}
      end
    end
  end

  test "a supervised owner killed 20 times is restarted with the same name every time" do
    name = "tlife#{rem(System.unique_integer([:positive]), 10_000)}"
    # More restarts than kills are allowed, fewer than a failing init
    # would burn: each kill must cost exactly one restart.
    {:ok, sup} =
      Supervisor.start_link([{Owner, name}],
        strategy: :one_for_one,
        max_restarts: 25,
        max_seconds: 60
      )

    sup_ref = Process.monitor(sup)

    for _ <- 1..20 do
      pid = Process.whereis(Owner)
      assert is_pid(pid)
      Process.exit(pid, :kill)

      assert eventually(fn ->
               new = Process.whereis(Owner)
               is_pid(new) and new != pid
             end),
             "not restarted"

      # Registered before init/1 runs: wait for init (and its create).
      _ = :sys.get_state(Owner)
      assert interface_exists?(name)
    end

    [{_, _, _, _}] = Supervisor.which_children(sup)
    refute_received {:DOWN, ^sup_ref, _, _, _}
    Supervisor.stop(sup)
    assert eventually(fn -> not interface_exists?(name) end)
  end

  test "closing a named device and at once creating its name again always succeeds" do
    name = "tlcl#{rem(System.unique_integer([:positive]), 10_000)}"

    for _ <- 1..40 do
      assert {:ok, {dev, ^name}} = Tundra.create("10.98.60.2", dstaddr: "10.98.60.1", name: name)
      assert :ok = Tundra.close(dev)
    end
  end

  test "a device whose interface was deleted from outside holds its name no more" do
    name = "tlde#{rem(System.unique_integer([:positive]), 10_000)}"
    {stale, ^name} = v4_device(61, name: name)
    assert {_, 0} = System.cmd("ip", ["link", "del", name])

    # The name is another interface's now, and this VM closes and makes
    # that one again and again while the stale device stays open.
    for _ <- 1..40 do
      assert {:ok, {dev, ^name}} = Tundra.create("10.98.62.2", dstaddr: "10.98.62.1", name: name)
      assert :ok = Tundra.close(dev)
    end

    assert :ok = Tundra.close(stale)
  end

  test "a name in use by a live owner is :ebusy at once, without waiting" do
    {_dev, name} = v4_device(2, name: "tlbusy%d")
    assert Tundra.create("10.98.3.2", name: name, timeout: 60_000) == {:error, :ebusy}
  end

  test "adopt(fd, dup: false) of an fd a device owns is refused; the device still works" do
    {dev, name} = v4_device(4)
    {:ok, %{fd: fd}} = Tundra.info(dev)
    assert Tundra.adopt(fd, dup: false) == {:error, :ebusy}

    {sock, port} = udp_socket({10, 98, 4, 2})
    packet = udp4({10, 98, 4, 1}, {10, 98, 4, 2}, 5000, port, "still mine")
    assert :ok = Tundra.send(dev, packet)
    assert {:ok, {_, 5000, "still mine"}} = :gen_udp.recv(sock, 0, 5_000)
    assert {:ok, %{name: ^name, fd: ^fd}} = Tundra.info(dev)

    # A duplicate is a fd of its own, and fine.
    assert {:ok, {copy, ^name}} = Tundra.adopt(fd)
    assert :ok = Tundra.close(copy)
  end

  test "fds are non-blocking and close-on-exec, created or adopted" do
    {dev, _} = v4_device(5)
    {:ok, %{fd: fd}} = Tundra.info(dev)
    assert Bitwise.band(fd_flags(fd), @o_nonblock) != 0
    assert Bitwise.band(fd_flags(fd), @o_cloexec) != 0

    {:ok, {copy, _}} = Tundra.adopt(fd)
    {:ok, %{fd: copy_fd}} = Tundra.info(copy)
    assert Bitwise.band(fd_flags(copy_fd), @o_nonblock) != 0
  end

  test "recv with length 0 returns a whole packet, however long" do
    {dev, _} = v4_device(6)
    {sock, _} = udp_socket({10, 98, 6, 2})
    payload = :binary.copy("z", 1400 - 28)
    :ok = :gen_udp.send(sock, {10, 98, 6, 1}, 4000, payload)
    assert {:ok, packet} = recv_where(dev, &udp4_with?(&1, payload), 0)
    assert byte_size(packet) == 1400
  end

  test "send/3 refuses what is not a whole IP packet, and what is too long" do
    {dev, _} = v4_device(7)
    {sock, port} = udp_socket({10, 98, 7, 2})
    good = udp4({10, 98, 7, 1}, {10, 98, 7, 2}, 5000, port, "good")

    for bad <- [<<0x45>>, "hello world", "", [], <<binary_part(good, 0, 27)::binary>>] do
      assert Tundra.send(dev, bad, :nowait) == {:error, :einval}, inspect(bad)
    end

    # A length field that says more than the bytes hold.
    <<head::binary-size(2), _len::16, rest::binary>> = good
    assert Tundra.send(dev, [head, <<byte_size(good) + 1::16>>, rest]) == {:error, :einval}

    huge = :binary.copy("x", 70_000)
    assert Tundra.send(dev, huge, :nowait) == {:error, :emsgsize}
    # In many pieces (flattened only after its size is known to fit).
    assert Tundra.send(dev, List.duplicate("x", 70_000)) == {:error, :emsgsize}
    assert Tundra.send_many(dev, [good, huge], :nowait) == {:error, {:emsgsize, [huge]}}
    assert {:ok, {_, 5000, "good"}} = :gen_udp.recv(sock, 0, 5_000)

    assert_raise ArgumentError, fn -> Tundra.send(dev, [good, :atom]) end
    assert :ok = Tundra.send(dev, :binary.bin_to_list(good))
    assert {:ok, {_, 5000, "good"}} = :gen_udp.recv(sock, 0, 5_000)
  end

  describe "a huge batch is written in calls that each make progress" do
    # 28-byte UDP/IPv4 packets to an address nothing here has: the kernel
    # takes each (and drops it, not forwarding), as fast as it can.
    defp tiny_packets(n, count) do
      packet = udp4({10, 98, n, 1}, {10, 254, 254, 254}, 5000, 5001, "")
      {packet, :binary.copy(packet, count)}
    end

    test "send_segments: each NIF call writes before it checks the clock" do
      {dev, _} = v4_device(20)
      {:"$tundra", ref} = dev
      {_packet, data} = tiny_packets(20, 1_000_000)

      case Tundra.Nif.send_segments(ref, data, 28) do
        :ok -> :ok
        {:more, rest} -> assert byte_size(rest) < byte_size(data)
      end
    end

    test "one NIF call over 200,000 packets stops at its budget, most of them left" do
      # The budget is about half a millisecond a call: no machine writes
      # 100,000 packets (a system call each) in that, so a call that went
      # on past its budget would leave fewer than half.
      {dev, _} = v4_device(23)
      {:"$tundra", ref} = dev
      {packet, data} = tiny_packets(23, 200_000)
      assert {:more, rest} = Tundra.Nif.send_segments(ref, data, 28)
      assert byte_size(rest) > byte_size(data) / 2
      assert byte_size(rest) < byte_size(data)

      assert {:more, rest} = Tundra.Nif.send_many(ref, List.duplicate(packet, 200_000))
      assert length(rest) > 100_000
    end

    test "send_segments/4 and send_many/3 give up at their timeout with the rest" do
      {dev, _} = v4_device(21)
      {packet, data} = tiny_packets(21, 100_000)
      sender = Task.async(fn -> Tundra.send_segments(dev, data, 28, 200) end)
      :ok = Tundra.controlling_process(dev, sender.pid)

      case Task.yield(sender, 60_000) || Task.shutdown(sender) do
        {:ok, :ok} -> :ok
        {:ok, {:error, {:timeout, rest}}} -> assert byte_size(rest) < byte_size(data)
        other -> flunk("send_segments/4 did not return by its timeout: #{inspect(other)}")
      end

      {dev, _} = v4_device(22)
      sender = Task.async(fn -> Tundra.send_many(dev, List.duplicate(packet, 300_000), 200) end)
      :ok = Tundra.controlling_process(dev, sender.pid)

      case Task.yield(sender, 60_000) || Task.shutdown(sender) do
        {:ok, :ok} -> :ok
        {:ok, {:error, {:timeout, rest}}} -> assert length(rest) < 300_000
        other -> flunk("send_many/3 did not return by its timeout: #{inspect(other)}")
      end
    end
  end

  test "addresses may be charlists" do
    assert {:ok, {dev, _}} = Tundra.create(~c"10.98.8.2", dstaddr: ~c"10.98.8.1")
    {:ok, info} = Tundra.info(dev)
    assert %{address: {10, 98, 8, 2}, dstaddr: {10, 98, 8, 1}} = hd(info.addresses)
    assert {:ok, {_, _}} = Tundra.create(~c"fd98:8::2", dstaddr: ~c"fd98:8::1")
  end

  describe "select messages come only while their select is pending" do
    test "a blocking recv whose timeout passed leaves no select behind" do
      {dev, _} = v4_device(9)
      # The link's own chatter may answer a recv; wait for one that times out.
      assert eventually(fn -> Tundra.recv(dev, 0, 20) == {:error, :timeout} end)

      {sock, _} = udp_socket({10, 98, 9, 2})
      :ok = :gen_udp.send(sock, {10, 98, 9, 1}, 4000, "late")
      refute_receive {:"$socket", ^dev, :select, _}, 300
      assert {:ok, _} = recv_where(dev, &udp4_with?(&1, "late"))
    end

    test "after controlling_process/2 the old owner gets no select message" do
      {dev, _} = v4_device(10)
      info = drain(dev)
      assert {:select_info, :recv, _} = info
      new_owner = spawn(fn -> receive do: (:never -> :ok) end)
      assert :ok = Tundra.controlling_process(dev, new_owner)

      {sock, _} = udp_socket({10, 98, 10, 2})
      :ok = :gen_udp.send(sock, {10, 98, 10, 1}, 4000, "for the new owner")
      refute_receive {:"$socket", ^dev, :select, _}, 300
      Process.exit(new_owner, :kill)
    end

    test "cancel/2 removes a select message that already arrived" do
      {dev, _} = v4_device(11)
      {:select_info, :recv, handle} = info = drain(dev)
      {sock, _} = udp_socket({10, 98, 11, 2})
      :ok = :gen_udp.send(sock, {10, 98, 11, 1}, 4000, "arrives")
      # Wait for it without taking it out of the mailbox.
      assert eventually(fn ->
               {:messages, messages} = Process.info(self(), :messages)
               {:"$socket", dev, :select, handle} in messages
             end)

      assert Tundra.cancel(dev, info) == :ok
      refute_received {:"$socket", ^dev, :select, ^handle}
    end

    test "cancel/2 of a select that is not pending is {:error, {:invalid, info}}" do
      {dev, _} = v4_device(12)
      made_up = {:select_info, :recv, make_ref()}
      assert Tundra.cancel(dev, made_up) == {:error, {:invalid, made_up}}

      info = drain(dev)
      assert Tundra.cancel(dev, info) == :ok
      assert Tundra.cancel(dev, info) == {:error, {:invalid, info}}

      assert Tundra.cancel(dev, {:select_info, :send, elem(info, 2)}) ==
               {:error, {:invalid, {:select_info, :send, elem(info, 2)}}}
    end
  end
end

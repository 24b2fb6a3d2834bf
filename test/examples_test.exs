defmodule TundraExamples.UdpReflectorTest do
  # The benchmark's Elixir reflector: its packet logic on its own, and the
  # whole server on a real device.
  use ExUnit.Case, async: true

  import TundraTest.Net
  alias TundraExamples.UdpReflector

  describe "turn_around/1" do
    test "swaps IPv4 addresses and ports; every checksum stays valid" do
      packet = udp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1111, 2222, "payload")

      assert {:ok, answer} = UdpReflector.turn_around(packet)
      # The answer is exactly the packet the peer would have built.
      assert IO.iodata_to_binary(answer) ==
               udp4({10, 0, 0, 2}, {10, 0, 0, 1}, 2222, 1111, "payload")
    end

    test "swaps IPv6 addresses and ports" do
      a = {0xFD00, 0, 0, 0, 0, 0, 0, 1}
      b = {0xFD00, 0, 0, 0, 0, 0, 0, 2}
      packet = udp6(a, b, 1111, 2222, :binary.copy("x", 1400))

      assert {:ok, answer} = UdpReflector.turn_around(packet)
      assert IO.iodata_to_binary(answer) == udp6(b, a, 2222, 1111, :binary.copy("x", 1400))
    end

    test "ignores what is not plain UDP" do
      udp = udp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1, 2, "x")
      <<head::binary-size(9), _proto, rest::binary>> = udp
      assert UdpReflector.turn_around(<<head::binary, 6, rest::binary>>) == :ignore
      # IPv4 with options (IHL 6).
      <<_, rest::binary>> = udp
      assert UdpReflector.turn_around(<<0x46, rest::binary>>) == :ignore
      assert UdpReflector.turn_around(<<>>) == :ignore
      assert UdpReflector.turn_around(<<0x45, 0, 1>>) == :ignore
    end
  end

  describe "the server" do
    @describetag :privileged

    # Twenty datagrams to the peer come back from it, in order.
    defp assert_reflected(n) do
      {:ok, sock} =
        :gen_udp.open(0, [:binary, ip: {10, 99, n, 2}, active: false, recbuf: 1_000_000])

      for i <- 1..20, do: :ok = :gen_udp.send(sock, {10, 99, n, 1}, 9000, "echo #{i}")

      peer = {10, 99, n, 1}

      for i <- 1..20 do
        assert {:ok, {^peer, 9000, "echo " <> got}} = :gen_udp.recv(sock, 0, 5_000)
        assert got == "#{i}"
      end

      :gen_udp.close(sock)
    end

    test "answers under a supervisor, in active mode (by packet and by batch) and as a drain loop" do
      for {mode, n} <- [{:active, 60}, {:drain, 61}, {:active_batch, 64}] do
        spec = {:create, "10.99.#{n}.2", dstaddr: "10.99.#{n}.1"}

        child =
          Supervisor.child_spec({UdpReflector, spec},
            start: {UdpReflector, :start_link, [spec, [mode: mode]]}
          )

        {:ok, sup} = Supervisor.start_link([child], strategy: :one_for_one)
        assert_reflected(n)
        Supervisor.stop(sup)
      end
    end

    test "stops when its device is deleted, and its supervisor brings it back" do
      spec = {:create, "10.99.62.2", dstaddr: "10.99.62.1", name: "trefl%d"}
      {:ok, sup} = Supervisor.start_link([{UdpReflector, spec}], strategy: :one_for_one)
      [{_, pid, _, _}] = Supervisor.which_children(sup)
      name = UdpReflector.name(pid)
      ref = Process.monitor(pid)
      {_, 0} = System.cmd("ip", ["link", "del", name])
      assert_receive {:DOWN, ^ref, :process, ^pid, {:shutdown, :device_closed}}, 5_000

      assert eventually(fn ->
               match?(
                 [{_, new, _, _}] when is_pid(new) and new != pid,
                 Supervisor.which_children(sup)
               )
             end)

      assert_reflected(62)
      Supervisor.stop(sup)
    end
  end
end

defmodule TundraExamples.EchoResponderTest do
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net
  alias TundraExamples.EchoResponder

  test "answers ping under a supervisor, and stops with its device" do
    spec = {:create, "10.99.63.2", dstaddr: "10.99.63.1"}
    {:ok, sup} = Supervisor.start_link([{EchoResponder, spec}], strategy: :one_for_one)
    [{_, pid, _, _}] = Supervisor.which_children(sup)
    assert {0, out} = ping("10.99.63.1", 3)
    assert out =~ "3 received"
    assert EchoResponder.replies(pid) == 3
    Supervisor.stop(sup)
  end
end

defmodule TundraExamples.UdpTunnelTest do
  # One tunnel end in this namespace; the test plays the other end with a
  # UDP socket on loopback, sending and receiving raw IP packets.
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net
  alias TundraExamples.UdpTunnel

  test "carries packets both ways between its device and the other end" do
    {:ok, far} = :gen_udp.open(17_002, [:binary, ip: {127, 0, 0, 1}, active: false])

    config =
      {"10.99.64.1", [dstaddr: "10.99.64.2"], {{127, 0, 0, 1}, 17_001}, {{127, 0, 0, 1}, 17_002}}

    {:ok, sup} = Supervisor.start_link([{UdpTunnel, config}], strategy: :one_for_one)

    # Into the tunnel: a local socket's datagram to the far end's address
    # comes out of the tunnel as one UDP datagram holding the IP packet.
    {:ok, near} = :gen_udp.open(0, [:binary, ip: {10, 99, 64, 1}, active: false])
    {:ok, near_port} = :inet.port(near)
    :ok = :gen_udp.send(near, {10, 99, 64, 2}, 5000, "outbound")
    udp4_out? = &udp4_with?(&1, "outbound")
    assert {:ok, packet} = recv_tunneled(far, udp4_out?)
    assert <<0x45, _::binary-size(11), 10, 99, 64, 1, 10, 99, 64, 2, _::binary>> = packet

    # Out of the tunnel: the far end's datagram holding an IP packet is
    # written to the device and delivered to the local socket.
    inbound = udp4({10, 99, 64, 2}, {10, 99, 64, 1}, 5000, near_port, "inbound")
    :ok = :gen_udp.send(far, {127, 0, 0, 1}, 17_001, inbound)
    assert {:ok, {{10, 99, 64, 2}, 5000, "inbound"}} = :gen_udp.recv(near, 0, 5_000)
    Supervisor.stop(sup)
  end

  # The link's own chatter is tunneled too; skip it.
  defp recv_tunneled(sock, wanted?) do
    case :gen_udp.recv(sock, 0, 5_000) do
      {:ok, {_, 17_001, packet}} ->
        if wanted?.(packet), do: {:ok, packet}, else: recv_tunneled(sock, wanted?)

      other ->
        other
    end
  end

  test "examples/udp_tunnel.exs runs in the dev environment too" do
    args =
      ~w(run examples/udp_tunnel.exs --address 10.99.65.1 --peer 10.99.65.2) ++
        ~w(--local 127.0.0.1:17003 --remote 127.0.0.1:17004)

    port = mix_port(args, [{~c"MIX_ENV", ~c"dev"}])

    assert await_line(port, "ready ") =~ ~r/^ready tun\d+$/
    Port.close(port)
  end

  test "examples/wireguard.exs runs the WireGuard package from the repository's root" do
    private = Base.encode64(elem(:crypto.generate_key(:ecdh, :x25519), 1))
    # The interface is named after the file, as wg-quick names it.
    name = "wgx#{System.pid()}"
    conf = Path.join(System.tmp_dir!(), "#{name}.conf")
    File.write!(conf, "[Interface]\nPrivateKey = #{private}\nAddress = 10.99.66.1/24\n")
    on_exit(fn -> File.rm(conf) end)

    port = mix_port(["run", "examples/wireguard.exs", conf])

    assert await_line(port, "ready ") == "ready #{name}"
    assert File.exists?("/var/run/wireguard/#{name}.sock")
    # Its input closed, it stops: the socket and the device go.
    Port.close(port)
    assert eventually(fn -> not File.exists?("/var/run/wireguard/#{name}.sock") end)
  end

  # `mix ARGS` with its output (stderr too) coming as lines.
  defp mix_port(args, env \\ []) do
    Port.open({:spawn_executable, System.find_executable("mix")}, [
      :binary,
      :exit_status,
      :stderr_to_stdout,
      {:line, 4096},
      args: args,
      env: env
    ])
  end

  defp await_line(port, prefix) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix), do: line, else: await_line(port, prefix)

      {^port, {:exit_status, status}} ->
        flunk("exited with status #{status} before printing #{prefix}")
    after
      120_000 -> flunk("printed no #{prefix} line")
    end
  end
end

defmodule TundraExamples.TapResponderTest do
  # What the TAP responder answers, frame by frame (the whole responder
  # answers ping in Tundra.ManageTest).
  use ExUnit.Case, async: true

  alias TundraExamples.{Icmp, TapResponder}

  @host TapResponder.host("02:00:5e:00:00:01", ["10.0.0.1", "fd00::1"])
  @peer_mac <<2, 0, 0x5E, 0, 0, 2>>

  test "answers an ARP request for its address, and only for it" do
    request = fn target ->
      <<-1::48, @peer_mac::binary, 0x0806::16, 1::16, 0x0800::16, 6, 4, 1::16, @peer_mac::binary,
        10, 0, 0, 2, 0::48, target::binary>>
    end

    assert {:ok, reply} = TapResponder.answer(request.(<<10, 0, 0, 1>>), @host)

    assert reply ==
             <<@peer_mac::binary, @host.mac::binary, 0x0806::16, 1::16, 0x0800::16, 6, 4, 2::16,
               @host.mac::binary, 10, 0, 0, 1, @peer_mac::binary, 10, 0, 0, 2>>

    assert TapResponder.answer(request.(<<10, 0, 0, 9>>), @host) == :ignore
  end

  test "answers a neighbour solicitation with a valid advertisement" do
    from = <<0xFD00::16, 0::96, 2::16>>
    target = <<0xFD00::16, 0::96, 1::16>>
    icmp = <<135, 0, 0::16, 0::32, target::binary, 1, 1, @peer_mac::binary>>

    solicitation =
      <<@host.mac::binary, @peer_mac::binary, 0x86DD::16, 6::4, 0::28, byte_size(icmp)::16, 58,
        255, from::binary, 0xFF02::16, 0::64, 1::16, 0xFF00::16, 1::16, icmp::binary>>

    assert {:ok, <<@peer_mac::binary, mac::binary-6, 0x86DD::16, ip::binary>>} =
             TapResponder.answer(solicitation, @host)

    assert mac == @host.mac

    assert <<6::4, _::28, len::16, 58, 255, ^target::binary-16, ^from::binary-16, na::binary>> =
             ip

    assert byte_size(na) == len
    assert <<136, 0, _sum::16, 0b011::3, 0::29, ^target::binary-16, 2, 1, ^mac::binary>> = na
    # A valid checksum sums, with the pseudo-header, to zero.
    assert Icmp.checksum(<<target::binary, from::binary, len::32, 0::24, 58, na::binary>>) == 0
  end

  test "ignores what is not for it" do
    assert TapResponder.answer(<<1, 2, 3>>, @host) == :ignore
    assert TapResponder.answer(:binary.copy(<<0>>, 60), @host) == :ignore
  end
end

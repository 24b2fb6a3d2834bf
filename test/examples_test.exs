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

  @tag :privileged
  test "serves a device: datagrams come back from the address they went to" do
    {:ok, {dev, _name}} = Tundra.create("10.99.60.2", dstaddr: "10.99.60.1")
    {:ok, reflector} = UdpReflector.serve(dev)
    # A receive buffer for all twenty answers at once (the VM's default
    # can hold fewer, and the kernel drops the rest).
    {:ok, sock} =
      :gen_udp.open(0, [:binary, ip: {10, 99, 60, 2}, active: false, recbuf: 1_000_000])

    for i <- 1..20 do
      :ok = :gen_udp.send(sock, {10, 99, 60, 1}, 9000, "echo #{i}")
    end

    for i <- 1..20 do
      assert {:ok, {{10, 99, 60, 1}, 9000, "echo " <> n}} = :gen_udp.recv(sock, 0, 5_000)
      assert n == "#{i}"
    end

    GenServer.stop(reflector)
  end
end

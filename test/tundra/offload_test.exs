defmodule Tundra.OffloadTest do
  # Offload devices with real traffic: a tunnel whose two ends are both in
  # this VM, their devices in two network namespaces made inside the test
  # run's (removed after), their UDP sockets on loopback; TCP, UDP and
  # ping across it, from sockets opened in those namespaces.
  use ExUnit.Case, async: false
  @moduletag :privileged

  alias TundraExamples.UdpTunnel

  @mtu 1400

  setup do
    n = rem(System.unique_integer([:positive]), 1_000_000)
    # Named tundra-...-PID, so that scripts/netns removes them after a killed run.
    ns = {"tundra-offa#{n}-#{System.pid()}", "tundra-offb#{n}-#{System.pid()}"}

    for name <- Tuple.to_list(ns) do
      {_, 0} = System.cmd("ip", ["netns", "add", name], stderr_to_stdout: true)
      {_, 0} = System.cmd("ip", ["-n", name, "link", "set", "lo", "up"])
    end

    on_exit(fn ->
      for name <- Tuple.to_list(ns),
          do: System.cmd("ip", ["netns", "del", name], stderr_to_stdout: true)
    end)

    %{ns: ns, port: 17_200 + rem(n, 500) * 2}
  end

  # Tunnel ends for the overlay `{a, b}` (addresses of one family), each
  # with `opts` (its own with `{opts_a, opts_b}`).
  defp tunnel(%{ns: {ns_a, ns_b}, port: port}, {a, b}, opts) do
    {opts_a, opts_b} = if is_tuple(opts), do: opts, else: {opts, opts}
    lo = {127, 0, 0, 1}
    base = [mtu: @mtu, prefix: if(String.contains?(a, ":"), do: 128, else: 32)]
    end_a = {a, base ++ [dstaddr: b, netns: ns_a] ++ opts_a, {lo, port}, {lo, port + 1}}
    end_b = {b, base ++ [dstaddr: a, netns: ns_b] ++ opts_b, {lo, port + 1}, {lo, port}}
    {:ok, tunnel_a} = start_supervised({UdpTunnel, end_a}, id: :a)
    {:ok, tunnel_b} = start_supervised({UdpTunnel, end_b}, id: :b)
    {tunnel_a, tunnel_b}
  end

  defp netns_path(name), do: "/var/run/netns/" <> name

  defp ip(address) do
    {:ok, ip} = :inet.parse_address(String.to_charlist(address))
    ip
  end

  # Sends `bytes` random bytes over TCP from namespace a to b's `server`
  # address; returns whether they arrived intact.
  defp tcp_intact?(%{ns: {ns_a, ns_b}}, server, bytes) do
    family = if String.contains?(server, ":"), do: :inet6, else: :inet
    opts = [family, :binary, active: false, ip: ip(server), reuseaddr: true]
    {:ok, listen} = :gen_tcp.listen(5001, [{:netns, netns_path(ns_b)} | opts])
    data = :crypto.strong_rand_bytes(bytes)

    receiver =
      Task.async(fn ->
        {:ok, socket} = :gen_tcp.accept(listen, 10_000)
        receive_all(socket, [])
      end)

    {:ok, client} =
      :gen_tcp.connect(ip(server), 5001, [family, :binary, netns: netns_path(ns_a)], 10_000)

    :ok = :gen_tcp.send(client, data)
    :ok = :gen_tcp.close(client)
    got = Task.await(receiver, 60_000)
    :gen_tcp.close(listen)
    :crypto.hash(:sha256, got) == :crypto.hash(:sha256, data)
  end

  defp receive_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, data} -> receive_all(socket, [acc, data])
      {:error, :closed} -> IO.iodata_to_binary(acc)
    end
  end

  describe "an offload tunnel" do
    test "carries TCP intact, IPv4 and IPv6, and its devices hand over super-packets", ctx do
      {a, b} = tunnel(ctx, {"10.88.40.1", "10.88.40.2"}, [])
      assert tcp_intact?(ctx, "10.88.40.2", 4_000_000)
      assert UdpTunnel.largest_read(a) > @mtu
      assert UdpTunnel.largest_read(b) > 0
      :ok = stop_supervised(:a)
      :ok = stop_supervised(:b)

      {a6, _} = tunnel(ctx, {"fd88:40::1", "fd88:40::2"}, [])
      assert tcp_intact?(ctx, "fd88:40::2", 4_000_000)
      assert UdpTunnel.largest_read(a6) > @mtu
    end

    test "a plain tunnel never reads more than the MTU", ctx do
      {a, _b} = tunnel(ctx, {"10.88.41.1", "10.88.41.2"}, offload: false)
      assert tcp_intact?(ctx, "10.88.41.2", 2_000_000)
      assert UdpTunnel.largest_read(a) in 1..@mtu
    end

    test "the ordinary API cuts super-packets into packets: an offload device read packet by packet",
         ctx do
      # End a reads its offload device with recv_many/3 (the drain loop)
      # and writes what arrives with send/3, packet by packet.
      {a, _b} = tunnel(ctx, {"10.88.42.1", "10.88.42.2"}, {[io: :packets], []})
      assert tcp_intact?(ctx, "10.88.42.2", 4_000_000)
      # Ordinary packets only, cut from the kernel's super-packets.
      assert UdpTunnel.largest_read(a) in 1..@mtu
    end

    test "carries ping, UDP (checksums left partial) and UDP_SEGMENT sends",
         %{ns: {ns_a, ns_b}} = ctx do
      tunnel(ctx, {"10.88.43.1", "10.88.43.2"}, [])

      {_, 0} =
        System.cmd("ip", ~w(netns exec #{ns_a} ping -c 2 -i 0.2 -W 5 10.88.43.2),
          stderr_to_stdout: true
        )

      # A datagram sent over an offload device leaves its checksum for the
      # device to finish; the receiving kernel drops it if that is wrong.
      {:ok, receiver} =
        :gen_udp.open(9100, [:binary, ip: {10, 88, 43, 2}, active: false, netns: netns_path(ns_b)])

      {:ok, sender} =
        :gen_udp.open(0, [:binary, ip: {10, 88, 43, 1}, active: false, netns: netns_path(ns_a)])

      # One at a time: a new namespace's receive buffers are small.
      for i <- 1..20 do
        payload = :binary.copy(<<i>>, 100 + i * 50)
        :ok = :gen_udp.send(sender, {10, 88, 43, 2}, 9100, payload)
        assert {:ok, {_, _, ^payload}} = :gen_udp.recv(receiver, 0, 5_000)
      end

      # Three datagrams in one UDP_SEGMENT send: one UDP super-packet on
      # the device, three datagrams at the far end.
      {:ok, segmenter} = :socket.open(:inet, :dgram, :udp, %{netns: netns_path(ns_a)})
      :ok = :socket.bind(segmenter, %{family: :inet, addr: {10, 88, 43, 1}, port: 0})
      data = :binary.copy("a", 1000) <> :binary.copy("b", 1000) <> :binary.copy("c", 300)
      ctrl = [%{level: :udp, type: 103, data: <<1000::16-native>>}]
      dest = %{family: :inet, addr: {10, 88, 43, 2}, port: 9100}
      :ok = :socket.sendmsg(segmenter, %{addr: dest, iov: [data], ctrl: ctrl})

      for expected <- [:binary.copy("a", 1000), :binary.copy("b", 1000), :binary.copy("c", 300)] do
        assert {:ok, {_, _, ^expected}} = :gen_udp.recv(receiver, 0, 5_000)
      end
    end

    test "degrades to fewer offloads, or none, and still carries TCP intact", ctx do
      {a, b} = tunnel(ctx, {"10.88.44.1", "10.88.44.2"}, [])

      for tunnel <- [a, b] do
        assert :ok = UdpTunnel.setopts(tunnel, offload: [:csum])
      end

      _ = UdpTunnel.largest_read(a)
      assert tcp_intact?(ctx, "10.88.44.2", 2_000_000)
      assert UdpTunnel.largest_read(a) in 1..@mtu

      for tunnel <- [a, b], do: assert(:ok = UdpTunnel.setopts(tunnel, offload: []))
      assert tcp_intact?(ctx, "10.88.44.2", 2_000_000)

      # Segmentation without checksums is refused by the kernel.
      assert {:error, :einval} = UdpTunnel.setopts(a, offload: [:tso4])

      assert {:error, {:invalid_option, {:offload, [:fast]}}} =
               UdpTunnel.setopts(a, offload: [:fast])
    end
  end

  describe "offload devices" do
    test "say what is on, are recognised by adopt/2, and refuse TAP" do
      {:ok, {dev, name}} =
        Tundra.create("10.88.45.2", dstaddr: "10.88.45.1", offload: true, mtu: 1400)

      {:ok, info} = Tundra.info(dev)
      assert :csum in info.offload and :tso4 in info.offload and :tso6 in info.offload
      # Super-packets no larger than one UDP_SEGMENT send: 46 x 1400 B.
      {link, 0} = System.cmd("ip", ["-d", "link", "show", name])
      assert link =~ "gso_max_segs 46 "
      assert :ok = Tundra.set(dev, mtu: 1500)
      {link, 0} = System.cmd("ip", ["-d", "link", "show", name])
      assert link =~ "gso_max_segs 43 "

      {:ok, {adopted, _}} = Tundra.adopt(info.fd)
      assert {:ok, %{offload: [_ | _]}} = Tundra.info(adopted)

      {:ok, {plain, _}} = Tundra.create("10.88.46.2")
      assert {:ok, %{offload: false}} = Tundra.info(plain)
      assert {:error, :einval} = Tundra.setopts(plain, offload: [])

      assert {:error, {:invalid_option, {:offload, true}}} =
               Tundra.create("10.88.47.2", mode: :tap, offload: true)
    end

    test "answer ping as any device, with the ordinary API" do
      {:ok, {dev, _}} = Tundra.create("10.88.48.2", dstaddr: "10.88.48.1", offload: true)
      {:ok, responder} = TundraExamples.EchoResponder.serve(dev)
      assert {0, _} = TundraTest.Net.ping("10.88.48.1", 2)
      assert TundraExamples.EchoResponder.replies(responder) == 2
    end
  end
end

defmodule Tundra.ManageTest do
  # Changing live devices, network namespaces, IPv4-only devices, TAP and
  # link events, with real traffic inside the test run's own network
  # namespace (and namespaces the tests make inside it, removed after).
  # Each test uses its own subnet of 10.88.0.0/16 or fd88::/16.
  use ExUnit.Case, async: false
  @moduletag :privileged

  import TundraTest.Net
  alias TundraExamples.{EchoResponder, TapResponder}

  defp create!(address, opts) do
    assert {:ok, {dev, name}} = Tundra.create(address, opts)
    {dev, name}
  end

  # A responder that answers ping on `dev`, which it takes over.
  defp respond(dev) do
    {:ok, responder} = EchoResponder.serve(dev)
    responder
  end

  defp ip(args), do: System.cmd("ip", args, stderr_to_stdout: true) |> elem(0)

  defp pings?(address), do: match?({0, _}, ping(address, 1))

  # ping with a payload of `size` bytes that must not be fragmented.
  defp ping_unfragmented(address, size) do
    args = ["-4", "-c", "1", "-W", "5", "-M", "do", "-s", "#{size}", address]
    {_out, status} = System.cmd("ping", args, stderr_to_stdout: true)
    status == 0
  end

  # A network namespace inside the test run's, removed when the test ends.
  defp netns! do
    name = "tundra-inner-#{System.pid()}"
    {_, 0} = System.cmd("ip", ["netns", "add", name], stderr_to_stdout: true)
    on_exit(fn -> System.cmd("ip", ["netns", "del", name], stderr_to_stdout: true) end)
    {_, 0} = System.cmd("ip", ["netns", "exec", name, "ip", "link", "set", "lo", "up"])
    name
  end

  describe "set/2" do
    test "brings a device created with up: false up, and ping goes through" do
      {dev, name} = create!("10.88.1.2", dstaddr: "10.88.1.1", up: false)
      assert {:ok, %{up: false}} = Tundra.info(dev)
      refute ip(["link", "show", name]) =~ ",UP"

      assert :ok = Tundra.set(dev, up: true)
      assert {:ok, %{up: true}} = Tundra.info(dev)
      respond(dev)
      assert pings?("10.88.1.1")
    end

    test "changes the MTU: a larger unfragmented ping fails, then passes" do
      {dev, _name} = create!("10.88.2.2", dstaddr: "10.88.2.1", mtu: 1400)
      respond(dev)
      # 1372 bytes of payload make a 1400-byte packet.
      assert ping_unfragmented("10.88.2.1", 1372)
      refute ping_unfragmented("10.88.2.1", 1472)

      # The responder owns the device now: it is the owner's call.
      assert {:error, :not_owner} = Tundra.set(dev, mtu: 1500)
    end

    test "an owner's MTU change is seen by the kernel and by ping" do
      {dev, name} = create!("10.88.3.2", dstaddr: "10.88.3.1", mtu: 1400)
      assert :ok = Tundra.set(dev, mtu: 1500)
      assert ip(["link", "show", name]) =~ "mtu 1500"
      respond(dev)
      assert ping_unfragmented("10.88.3.1", 1472)
    end

    test "refuses bad values before anything changes" do
      {dev, _name} = create!("10.88.4.2", [])
      assert {:error, {:invalid_option, {:mtu, 67}}} = Tundra.set(dev, mtu: 67)
      assert {:error, {:invalid_option, {:up, :yes}}} = Tundra.set(dev, up: :yes)
      assert {:error, {:unknown_option, :speed}} = Tundra.set(dev, speed: 10)
      assert :ok = Tundra.set(dev, [])
      :ok = Tundra.close(dev)
      assert {:error, :closed} = Tundra.set(dev, up: true)
    end
  end

  describe "addresses and routes" do
    test "a second IPv4 address, an IPv6 address and a route: pinged, removed, gone" do
      {dev, name} = create!("10.88.5.2", dstaddr: "10.88.5.1")
      assert :ok = Tundra.add_address(dev, "10.88.6.2", prefix: 24)
      assert :ok = Tundra.add_address(dev, "fd88:7::2", dstaddr: "fd88:7::1")
      assert :ok = Tundra.add_route(dev, "10.88.8.0/24", metric: 7)
      assert {:error, :eexist} = Tundra.add_address(dev, "10.88.6.2", prefix: 24)

      {:ok, info} = Tundra.info(dev)
      assert %{address: {10, 88, 6, 2}, prefix: 24, dstaddr: nil} in info.addresses

      assert %{
               address: {0xFD88, 7, 0, 0, 0, 0, 0, 2},
               prefix: 128,
               dstaddr: {0xFD88, 7, 0, 0, 0, 0, 0, 1}
             } in info.addresses

      assert %{address: {10, 88, 8, 0}, prefix: 24, metric: 7} in info.routes

      addresses = ip(["addr", "show", name])
      assert addresses =~ "inet 10.88.6.2/24"
      assert addresses =~ "inet6 fd88:7::2 peer fd88:7::1/128"
      assert ip(["route", "show", "dev", name]) =~ "10.88.8.0/24 scope link metric 7"

      responder = respond(dev)
      # Through the prefix of the second address, the IPv6 peer, the route.
      assert pings?("10.88.6.9")
      assert pings?("fd88:7::1")
      assert pings?("10.88.8.9")
      assert EchoResponder.replies(responder) >= 3
    end

    test "removed addresses and routes are gone, whatever their prefix" do
      {dev, name} = create!("10.88.9.2", dstaddr: "10.88.9.1")
      assert :ok = Tundra.add_address(dev, "10.88.6.3", prefix: 24)
      assert :ok = Tundra.add_address(dev, "fd88:a::2", prefix: 64)
      assert :ok = Tundra.add_route(dev, "fd88:b::/64")
      assert ip(["addr", "show", name]) =~ "fd88:a::2/64"

      assert :ok = Tundra.remove_address(dev, "10.88.6.3")
      assert :ok = Tundra.remove_address(dev, "fd88:a::2")
      assert :ok = Tundra.remove_route(dev, "fd88:b::/64")
      assert {:error, :eaddrnotavail} = Tundra.remove_address(dev, "10.88.6.3")
      assert {:error, :esrch} = Tundra.remove_route(dev, "fd88:b::/64")

      addresses = ip(["addr", "show", name])
      refute addresses =~ "10.88.6.3"
      refute addresses =~ "fd88:a::2"
      refute ip(["-6", "route", "show", "dev", name]) =~ "fd88:"
      refute ip(["route", "show", "dev", name]) =~ "10.88.6.0/24"
      assert {:ok, %{routes: routes}} = Tundra.info(dev)

      assert routes ==
               [%{address: {10, 88, 9, 1}, prefix: 32, metric: nil}] ++
                 for(r <- routes, tuple_size(r.address) == 8, do: r)
    end

    test "bad addresses and routes are named" do
      {dev, _name} = create!("10.88.10.2", [])
      assert {:error, {:invalid_address, "10.88.300.1"}} = Tundra.add_address(dev, "10.88.300.1")

      assert {:error, {:invalid_option, {:dstaddr, "fd00::1"}}} =
               Tundra.add_address(dev, "10.88.10.3", dstaddr: "fd00::1")

      assert {:error, {:invalid_option, {:netmask, "255.0.255.0"}}} =
               Tundra.add_address(dev, "10.88.10.3", netmask: "255.0.255.0")

      for bad <- ["10.88.11.1/24", "10.88.11.0/33", "10.88.11.0", "0.0.0.0/1/2", "::/129"] do
        assert {:error, {:invalid_route, ^bad}} = Tundra.add_route(dev, bad)
      end

      assert :ok = Tundra.add_route(dev, {{10, 88, 11, 0}, 24})
      assert {:error, :eexist} = Tundra.add_route(dev, "10.88.11.0/24")

      assert {:error, {:invalid_option, {:metric, -1}}} =
               Tundra.add_route(dev, "10.88.12.0/24", metric: -1)
    end
  end

  describe "link state" do
    test "a link that is down takes no packets (:eio), up again it does" do
      {dev, _} = create!("10.88.25.2", dstaddr: "10.88.25.1")
      packet = udp4({10, 88, 25, 1}, {10, 88, 25, 2}, 5000, 5001, "down")
      assert :ok = Tundra.set(dev, up: false, timeout: :infinity)
      assert Tundra.send(dev, packet, :nowait) == {:error, :eio}
      assert :ok = Tundra.set(dev, up: true)
      assert Tundra.send(dev, packet, :nowait) == :ok
    end
  end

  describe "default routes" do
    test "a privileged owner routes everything through its device (a full tunnel)" do
      {dev, name} = create!("10.88.23.2", dstaddr: "10.88.23.1")
      assert :ok = Tundra.add_address(dev, "fd88:23::2", dstaddr: "fd88:23::1")
      assert :ok = Tundra.add_route(dev, "0.0.0.0/0", metric: 500)
      assert :ok = Tundra.add_route(dev, {"::", 0}, metric: 500)
      assert ip(["route", "show", "default"]) =~ "default dev #{name} scope link metric 500"
      assert ip(["-6", "route", "show", "default"]) =~ "default dev #{name} metric 500"
      assert {:ok, %{routes: routes}} = Tundra.info(dev)
      assert %{address: {0, 0, 0, 0}, prefix: 0, metric: 500} in routes
      assert :ok = Tundra.remove_route(dev, "0.0.0.0/0", metric: 500)
      assert :ok = Tundra.remove_route(dev, "::/0", metric: 500)
      refute ip(["route", "show", "default"]) =~ name
    end
  end

  describe "netns:" do
    test "a device made in another namespace answers ping from there" do
      ns = netns!()
      {dev, name} = create!("10.88.13.2", dstaddr: "10.88.13.1", netns: ns)
      refute ip(["-o", "addr"]) =~ "10.88.13.2"
      assert ip(["netns", "exec", ns, "ip", "addr", "show", name]) =~ "10.88.13.2 peer 10.88.13.1"

      assert {:ok, info} = Tundra.info(dev)
      assert %{address: {10, 88, 13, 2}, prefix: 32, dstaddr: {10, 88, 13, 1}} in info.addresses
      assert :ok = Tundra.add_route(dev, "10.88.14.0/24")
      assert ip(["netns", "exec", ns, "ip", "route"]) =~ "10.88.14.0/24 dev #{name}"

      respond(dev)

      {_, status} =
        System.cmd("ip", ["netns", "exec", ns, "ping", "-c", "1", "-W", "5", "10.88.14.1"])

      assert status == 0
    end

    test "the namespace must exist, and the server cannot make one there" do
      assert {:error, :enoent} = Tundra.create("10.88.15.2", netns: "tundra-no-such-ns")

      assert {:error, {:conflicting_options, [:via, :netns]}} =
               Tundra.create("10.88.15.2", netns: "x", via: :server)
    end
  end

  describe "ipv6: false" do
    # Everything the device reads within `ms` milliseconds.
    defp read_for(dev, ms) do
      deadline = System.monotonic_time(:millisecond) + ms
      read_until(dev, deadline, [])
    end

    defp read_until(dev, deadline, got) do
      left = deadline - System.monotonic_time(:millisecond)

      case left > 0 && Tundra.recv(dev, 0, left) do
        {:ok, packet} -> read_until(dev, deadline, [packet | got])
        _ -> Enum.reverse(got)
      end
    end

    test "an IPv4-only device has no IPv6 of its own and reads nothing while idle" do
      {quiet, name} = create!("10.88.16.2", dstaddr: "10.88.16.1", ipv6: false)
      # Set over netlink, not /proc/sys (read-only under the server's unit).
      assert ip(["-d", "link", "show", name]) =~ "addrgenmode none"
      refute ip(["addr", "show", name]) =~ "inet6"
      assert read_for(quiet, 2_000) == []
      # An IPv6 address added on purpose is the caller's choice, and works.
      assert :ok = Tundra.add_address(quiet, "fd88:16::2", dstaddr: "fd88:16::1")
      assert ip(["addr", "show", name]) =~ "fd88:16::2"

      # An ordinary one has a link-local address (and would send router
      # solicitations, were it not kept from learning from advertisements).
      {_ordinary, other} = create!("10.88.17.2", dstaddr: "10.88.17.1")
      assert ip(["addr", "show", other]) =~ "inet6 fe80::"
    end

    test "is refused for an IPv6 address" do
      assert {:error, {:invalid_option, {:ipv6, false}}} =
               Tundra.create("fd88:18::2", ipv6: false)
    end
  end

  describe "mode: :tap" do
    @peer_mac "02:00:5e:88:00:01"

    test "a TAP responder answers ARP, neighbour discovery and ping" do
      {dev, name} =
        create!("10.88.19.2", prefix: 24, mode: :tap, mac: "02:00:5e:88:00:02", name: "ttap%d")

      assert :ok = Tundra.add_address(dev, "fd88:19::2", prefix: 64)
      assert {:ok, %{mode: :tap, mac: "02:00:5e:88:00:02"}} = Tundra.info(dev)
      assert ip(["link", "show", name]) =~ "link/ether 02:00:5e:88:00:02"

      {:ok, responder} = TapResponder.serve(dev, @peer_mac, ["10.88.19.1", "fd88:19::1"])
      assert pings?("10.88.19.1")
      assert ip(["neigh", "show", "dev", name]) =~ "10.88.19.1 lladdr #{@peer_mac}"
      assert pings?("fd88:19::1")
      assert ip(["-6", "neigh", "show", "dev", name]) =~ "fd88:19::1 lladdr #{@peer_mac}"
      GenServer.stop(responder)
    end

    test "frames shorter than an Ethernet header are refused; a MAC must be unicast" do
      {dev, _} = create!("10.88.20.2", prefix: 24, mode: :tap)
      assert {:error, :einval} = Tundra.send(dev, <<1, 2, 3>>, :nowait)
      assert :ok = Tundra.send(dev, :binary.copy(<<0>>, 14), :nowait)

      assert {:error, {:invalid_option, {:mac, "01:00:5e:00:00:01"}}} =
               Tundra.create("10.88.20.3", mode: :tap, mac: "01:00:5e:00:00:01")

      assert {:error, {:invalid_option, {:mac, "02:00"}}} =
               Tundra.create("10.88.20.3", mode: :tap, mac: "02:00")

      assert {:error, {:invalid_option, {:mac, "02:00:5e:00:00:01"}}} =
               Tundra.create("10.88.20.3", mac: "02:00:5e:00:00:01")
    end
  end

  describe "link events" do
    test "report ip link set down/up and MTU changes to the owner" do
      {dev, name} = create!("10.88.21.2", dstaddr: "10.88.21.1", link_events: true)
      assert {:ok, %{link_events: true}} = Tundra.info(dev)

      {_, 0} = System.cmd("ip", ["link", "set", name, "down"])
      assert_receive {:tundra_link, ^dev, %{up: false, mtu: 1500}}, 5_000
      {_, 0} = System.cmd("ip", ["link", "set", name, "up"])
      assert_receive {:tundra_link, ^dev, %{up: true, mtu: 1500}}, 5_000
      {_, 0} = System.cmd("ip", ["link", "set", name, "mtu", "1300"])
      assert_receive {:tundra_link, ^dev, %{up: true, mtu: 1300}}, 5_000

      # Off: no more events.
      assert :ok = Tundra.setopts(dev, link_events: false)
      {_, 0} = System.cmd("ip", ["link", "set", name, "mtu", "1280"])
      refute_receive {:tundra_link, ^dev, _}, 500
    end

    test "a deleted interface says so, apart from going down" do
      {dev, name} = create!("10.88.24.2", dstaddr: "10.88.24.1", link_events: true)
      {_, 0} = System.cmd("ip", ["link", "del", name])
      assert_receive {:tundra_link, ^dev, :removed}, 5_000
    end

    test "follow the device to a new owner, and setopts/2 turns them on" do
      {dev, name} = create!("10.88.22.2", [])
      assert :ok = Tundra.setopts(dev, link_events: true)
      parent = self()

      child =
        spawn(fn ->
          receive do
            :go ->
              receive do
                {:tundra_link, ^dev, info} -> send(parent, {:child_got, info})
              end
          end
        end)

      :ok = Tundra.controlling_process(dev, child)
      send(child, :go)
      {_, 0} = System.cmd("ip", ["link", "set", name, "mtu", "1400"])
      assert_receive {:child_got, %{mtu: 1400}}, 5_000
      refute_received {:tundra_link, _, _}
    end
  end
end

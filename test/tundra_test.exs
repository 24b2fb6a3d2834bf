defmodule TundraTest do
  # Input validation happens before anything touches the system, so these
  # run without privilege.
  use ExUnit.Case, async: true
  doctest Tundra

  describe "create/2 refuses bad input, naming the problem" do
    test "unparsable or unusable addresses" do
      for bad <- [
            "",
            "10.0.0",
            "fd00::g",
            "10.0.0.1/24",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            <<0xFF>>
          ] do
        assert Tundra.create(bad) == {:error, {:invalid_address, bad}}, inspect(bad)
      end

      assert Tundra.create({10, 0, 0, 256}) == {:error, {:invalid_address, {10, 0, 0, 256}}}
      assert Tundra.create({1, 2, 3}) == {:error, {:invalid_address, {1, 2, 3}}}
    end

    test "address family mix" do
      assert Tundra.create("10.0.0.2", dstaddr: "fd00::1") ==
               {:error, {:invalid_option, {:dstaddr, "fd00::1"}}}

      assert Tundra.create("fd00::2", netmask: "255.255.255.0") ==
               {:error, {:invalid_option, {:netmask, "255.255.255.0"}}}
    end

    test "dstaddr equal to the address, or unparsable" do
      assert Tundra.create("10.0.0.2", dstaddr: "10.0.0.2") ==
               {:error, {:invalid_option, {:dstaddr, "10.0.0.2"}}}

      assert Tundra.create("10.0.0.2", dstaddr: "peer") ==
               {:error, {:invalid_option, {:dstaddr, "peer"}}}
    end

    test "mtu out of range for the family, or not an integer" do
      for {addr, mtu} <- [
            {"10.0.0.2", 67},
            {"10.0.0.2", 65_536},
            {"10.0.0.2", -1},
            {"fd00::2", 1279},
            {"10.0.0.2", 1500.0}
          ] do
        assert Tundra.create(addr, mtu: mtu) == {:error, {:invalid_option, {:mtu, mtu}}}
      end
    end

    test "prefix out of range, netmask not contiguous, both given" do
      assert Tundra.create("10.0.0.2", prefix: 33) == {:error, {:invalid_option, {:prefix, 33}}}
      assert Tundra.create("fd00::2", prefix: 129) == {:error, {:invalid_option, {:prefix, 129}}}
      assert Tundra.create("10.0.0.2", prefix: -1) == {:error, {:invalid_option, {:prefix, -1}}}

      assert Tundra.create("fd00::2", netmask: "ffff::ffff") ==
               {:error, {:invalid_option, {:netmask, "ffff::ffff"}}}

      assert Tundra.create("10.0.0.2", netmask: "255.255.255.0", prefix: 24) ==
               {:error, {:conflicting_options, [:netmask, :prefix]}}
    end

    test "interface names the kernel would refuse" do
      for bad <- ["", "sixteen-chars-xx", "a b", "a/b", "a:b", "tun%s", "t%d%d", "é"] do
        assert Tundra.create("10.0.0.2", name: bad) == {:error, {:invalid_option, {:name, bad}}}
      end

      assert Tundra.create("10.0.0.2", name: :tun0) == {:error, {:invalid_option, {:name, :tun0}}}
    end

    test "unknown options and wrong option types" do
      assert Tundra.create("10.0.0.2", mtu: 1500, colour: :blue) ==
               {:error, {:unknown_option, :colour}}

      assert Tundra.create("10.0.0.2", up: "yes") == {:error, {:invalid_option, {:up, "yes"}}}
    end

    test "an option given twice is refused, whichever value came first" do
      assert Tundra.create("10.0.0.2", mtu: 1400, mtu: 1500) ==
               {:error, {:duplicate_option, :mtu}}

      assert Tundra.create("10.0.0.2", mtu: 1400, up: true, mtu: 1400) ==
               {:error, {:duplicate_option, :mtu}}

      assert Tundra.adopt(0, dup: true, dup: false) == {:error, {:duplicate_option, :dup}}
    end

    test "addresses as charlists are parsed like strings" do
      assert Tundra.create(~c"10.0.0.300") == {:error, {:invalid_address, ~c"10.0.0.300"}}
      assert Tundra.create([:not, :chars]) == {:error, {:invalid_address, [:not, :chars]}}

      assert Tundra.create("fd00::2", dstaddr: ~c"10.0.0.1") ==
               {:error, {:invalid_option, {:dstaddr, ~c"10.0.0.1"}}}
    end

    test "options as Elixir code writes them: nil is not given, :infinity waits without end" do
      # Refused for the address, after every option was taken.
      for opts <- [[netns: nil], [timeout: :infinity], [name: nil, mtu: nil, active: nil]] do
        assert Tundra.create("10.0.0.300", opts) == {:error, {:invalid_address, "10.0.0.300"}},
               inspect(opts)
      end

      assert Tundra.create("10.0.0.2", netns: "") == {:error, {:invalid_option, {:netns, ""}}}

      assert Tundra.create("10.0.0.2", timeout: :forever) ==
               {:error, {:invalid_option, {:timeout, :forever}}}
    end

    test "a timeout must be positive, as documented: 0 and below are refused, 1 taken" do
      for bad <- [0, -1, 1.5] do
        assert Tundra.create("10.0.0.2", timeout: bad) ==
                 {:error, {:invalid_option, {:timeout, bad}}}
      end

      # 1 is taken: refused for the address, after every option was.
      assert Tundra.create("10.0.0.300", timeout: 1) ==
               {:error, {:invalid_address, "10.0.0.300"}}
    end

    test "a :socket_path that is not a socket says so" do
      assert Tundra.create("10.0.0.2", via: :server, socket_path: "/etc/hostname") ==
               {:error, :enotsock}
    end

    test "wrong argument types raise as Elixir does" do
      assert_raise FunctionClauseError, fn -> Tundra.create(10) end
      assert_raise ArgumentError, fn -> Tundra.create("10.0.0.2", [:mtu]) end
      assert_raise FunctionClauseError, fn -> Tundra.create("10.0.0.2", %{mtu: 1500}) end
    end
  end

  describe "I/O functions check their arguments" do
    test "length must not be negative (0 is the whole packet)" do
      fake = {:"$tundra", make_ref()}
      assert Tundra.recv(fake, -5) == {:error, {:invalid_length, -5}}
      assert Tundra.recv(fake, -1, :nowait) == {:error, {:invalid_length, -1}}
      # 0 is accepted: here the NIF refuses the made-up device instead.
      assert_raise ArgumentError, fn -> Tundra.recv(fake, 0, :nowait) end
    end

    test "recv_many/3 needs a positive count" do
      fake = {:"$tundra", make_ref()}
      assert Tundra.recv_many(fake, 0, :nowait) == {:error, {:invalid_count, 0}}
      assert Tundra.recv_many(fake, -1) == {:error, {:invalid_count, -1}}
      assert_raise ArgumentError, fn -> Tundra.recv_many(fake, 8, :nowait) end
      assert_raise FunctionClauseError, fn -> Tundra.recv_many(fake, :all, :nowait) end
    end

    test "send_many/3 takes a list of packets" do
      fake = {:"$tundra", make_ref()}
      assert_raise FunctionClauseError, fn -> Tundra.send_many(fake, "one packet") end
      assert_raise FunctionClauseError, fn -> Tundra.send_many(fake, [], :soon) end
      assert_raise ArgumentError, fn -> Tundra.send_many(fake, ["x"], :nowait) end
    end

    test "a term that is not a device raises" do
      not_a_device = {:"$tundra", make_ref()}
      assert_raise ArgumentError, fn -> Tundra.recv(not_a_device, 1500, :nowait) end
      assert_raise ArgumentError, fn -> Tundra.send(not_a_device, "x", :nowait) end
      assert_raise ArgumentError, fn -> Tundra.close(not_a_device) end
      assert_raise ArgumentError, fn -> Tundra.info(not_a_device) end
      assert_raise FunctionClauseError, fn -> Tundra.close(:dev) end
      assert_raise FunctionClauseError, fn -> Tundra.recv(not_a_device, 1500, :soon) end
      assert_raise FunctionClauseError, fn -> Tundra.send(not_a_device, :data, :nowait) end
    end

    test "attach/2 names a bad interface name as create/2 does, and takes charlists" do
      for bad <- ["sixteen-chars-xx", "", "a b", "tun%d", ~c"sixteen-chars-xx"] do
        assert Tundra.attach(bad) == {:error, {:invalid_option, {:name, bad}}}, inspect(bad)
      end

      assert Tundra.attach([:no]) == {:error, {:invalid_option, {:name, [:no]}}}
    end

    test "adopt/2 checks its arguments" do
      assert_raise FunctionClauseError, fn -> Tundra.adopt(-1) end
      assert Tundra.adopt(0, share: true) == {:error, {:unknown_option, :share}}
      assert Tundra.adopt(0, dup: :yes) == {:error, {:invalid_option, {:dup, :yes}}}
    end
  end
end

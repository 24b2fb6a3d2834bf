defmodule TundraWireGuard.LauncherTest do
  # bin/tundra-wg's command line, and the start errors that need no
  # device to be told (no root needed); operate_test and
  # unprivileged_test run it for real.
  use ExUnit.Case, async: true

  alias TundraWireGuard.Launcher

  test "a bad command line is refused with the usage" do
    assert {:error, usage} = Launcher.start([])
    assert usage =~ "usage: tundra-wg"
    assert {:error, message} = Launcher.start(["no spaces here"])
    assert message =~ ~s("no spaces here" is not an interface name)
    assert {:error, message} = Launcher.start(["--via", "carrier-pigeon", "wg0"])
    assert message =~ "--via carrier-pigeon: auto, direct or server"
    assert {:error, message} = Launcher.start(["--config", "/nonexistent/wg0.conf", "wg0"])
    assert message =~ "/nonexistent/wg0.conf: "
  end

  test "without an address, a device from the server is refused before anything is made" do
    config = %{
      private_key: nil,
      listen_port: nil,
      addresses: [],
      mtu: nil,
      peers: [],
      ignored: []
    }

    Process.flag(:trap_exit, true)

    assert TundraWireGuard.start_link(config, via: :server, uapi: false) ==
             {:error, :no_address}

    assert TundraWireGuard.format_error(:no_address) =~ "delegated"
  end
end

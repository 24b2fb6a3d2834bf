# Tundra's own: whether the privileged tests may run here.
Code.require_file("../../test/support/test_env.ex", __DIR__)

case TundraTest.Env.privileged_blocker() do
  nil ->
    # The interop tests need boringtun (scripts/wireguard-peer installs
    # it); under CI its absence is a failure, not a skip.
    if TundraWireGuardTest.Lab.boringtun_path() do
      ExUnit.start()
    else
      if System.get_env("CI") == "true" do
        IO.puts(:stderr, "FAILURE: CI=true but boringtun-cli is missing (scripts/wireguard-peer)")
        System.halt(1)
      end

      IO.puts(:stderr, """
      NOTICE: skipping the WireGuard interop tests (tag :boringtun): boringtun-cli
              not found. scripts/wireguard-peer installs it (scripts/test runs it).
      """)

      ExUnit.start(exclude: [:boringtun])
    end

  why ->
    if System.get_env("CI") == "true" do
      IO.puts(:stderr, "FAILURE: CI=true but the privileged suite cannot run: #{why}")
      System.halt(1)
    end

    IO.puts(:stderr, """
    NOTICE: skipping privileged tests (tag :privileged): #{why}.
            Run scripts/test as root to run them.
    """)

    ExUnit.start(exclude: [:privileged, :boringtun])
end

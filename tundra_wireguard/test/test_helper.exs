# Tundra's own: whether the privileged tests may run here.
Code.require_file("../../test/support/test_env.ex", __DIR__)

case TundraTest.Env.privileged_blocker() do
  nil ->
    # The interop tests need other WireGuard implementations and the
    # tools (scripts/wireguard-peer installs them); under CI their absence
    # is a failure, not a skip.
    case TundraWireGuardTest.Lab.missing_tools() do
      [] ->
        ExUnit.start()

      missing ->
        if System.get_env("CI") == "true" do
          IO.puts(
            :stderr,
            "FAILURE: CI=true but #{Enum.join(missing, ", ")} missing (scripts/wireguard-peer)"
          )

          System.halt(1)
        end

        IO.puts(:stderr, """
        NOTICE: skipping the WireGuard interop tests (tag :interop): #{Enum.join(missing, ", ")}
                not found. scripts/wireguard-peer installs them (scripts/test runs it).
        """)

        ExUnit.start(exclude: [:interop])
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

    ExUnit.start(exclude: [:privileged, :interop])
end

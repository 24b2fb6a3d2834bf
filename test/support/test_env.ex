defmodule TundraTest.Env do
  @moduledoc false
  # Where the test run is. Privileged tests create real interfaces, so they
  # run only as root *and* inside a network namespace made for the test run
  # (scripts/test makes one), never in the host's own namespace.

  @doc "nil when privileged tests can run here, else why not."
  def privileged_blocker do
    cond do
      euid() != 0 ->
        "not running as root"

      File.read_link("/proc/self/ns/net") == File.read_link("/proc/1/ns/net") ->
        "running in the host's network namespace (use scripts/test, which makes one)"

      true ->
        nil
    end
  end

  defp euid do
    case File.read("/proc/self/status") do
      {:ok, status} ->
        [_, euid] = Regex.run(~r/^Uid:\s+\d+\s+(\d+)/m, status)
        String.to_integer(euid)

      {:error, _} ->
        -1
    end
  end
end

defmodule TundraTest.Env do
  @moduledoc false
  # Where the test run is. Privileged tests create real interfaces, so they
  # run only as root *and* inside a network namespace made for the test run
  # (scripts/test makes one), never in the host's own namespace.

  @doc """
  What names of things this run makes on the machine carry (users,
  groups, folders, namespaces), so that two runs at once never share one
  and a later run can tell whether their maker has ended: this VM's OS
  pid.
  """
  def run_id, do: System.pid()

  @doc "Whether the run (VM) whose `run_id/0` is `id` still runs."
  def running?(id), do: File.exists?("/proc/#{id}")

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

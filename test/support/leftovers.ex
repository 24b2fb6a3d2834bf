defmodule TundraTest.Leftovers do
  @moduledoc false
  # What a killed earlier run of the privileged tests can leave behind on
  # this machine: tundra_server processes, the server test's users and
  # group, and temporary folders. Each name carries the OS pid of the run
  # that made it (`TundraTest.Env.run_id/0`), and only what a run that has
  # ended made is removed: another run going on beside this one keeps its
  # own. Removed before a run starts; each removal is reported.

  alias TundraTest.Env

  @doc "Removes what earlier, killed runs left; returns what it removed."
  def remove do
    servers() ++ users_and_groups() ++ folders()
  end

  # A test server of a run that has ended (its folder names the run).
  defp servers do
    for pid <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, pid),
        {:ok, cmdline} <- [File.read("/proc/#{pid}/cmdline")],
        String.contains?(cmdline, "tundra_server"),
        [_, run] <- [Regex.run(~r{/run/tundra-exunit-(\d+)}, cmdline)],
        ended?(run) do
      System.cmd("kill", ["-KILL", pid], stderr_to_stdout: true)
      "tundra_server process #{pid}"
    end
  end

  defp ended?(run), do: not Env.running?(run)

  defp users_and_groups do
    users =
      for line <- String.split(File.read!("/etc/passwd"), "\n"),
          [user | _] = String.split(line, ":"),
          [_, run] <- [Regex.run(~r/^tundra[mo](\d+)$/, user)],
          ended?(run) do
        System.cmd("userdel", ["--force", user], stderr_to_stdout: true)
        "user #{user}"
      end

    groups =
      for line <- String.split(File.read!("/etc/group"), "\n"),
          [group | _] = String.split(line, ":"),
          [_, run] <- [Regex.run(~r/^tundratest(\d+)$/, group)],
          ended?(run) do
        System.cmd("groupdel", [group], stderr_to_stdout: true)
        "group #{group}"
      end

    users ++ groups
  end

  # Folders named PREFIX-RUN or PREFIX-RUN-N.
  defp folders do
    for prefix <- ["/tmp/tundra-vm-", "/tmp/tundra-package-", "/run/tundra-exunit-"],
        path <- Path.wildcard(prefix <> "*"),
        [_, run] <- [Regex.run(~r/^(\d+)(-\d+)?$/, String.replace_prefix(path, prefix, ""))],
        ended?(run) do
      File.rm_rf!(path)
      "folder #{path}"
    end
  end
end

defmodule TundraTest.Leftovers do
  @moduledoc false
  # What a killed earlier run of the privileged tests can leave behind on
  # this machine: tundra_server processes whose VM is gone, the server
  # test's users and group, and temporary folders. Removed before a run
  # starts; each removal is reported.

  @doc "Removes what earlier, killed runs left; returns what it removed."
  def remove do
    servers() ++ users_and_groups() ++ folders()
  end

  # A test server whose starter died is reparented to init (ppid 1).
  defp servers do
    for pid <- File.ls!("/proc"),
        Regex.match?(~r/^\d+$/, pid),
        {:ok, cmdline} <- [File.read("/proc/#{pid}/cmdline")],
        String.contains?(cmdline, "tundra_server") and
          String.contains?(cmdline, "/run/tundra-exunit-"),
        parent(pid) == "1" do
      System.cmd("kill", ["-KILL", pid], stderr_to_stdout: true)
      "tundra_server process #{pid}"
    end
  end

  defp parent(pid) do
    case File.read("/proc/#{pid}/stat") do
      # The command may hold spaces and parentheses: the ppid follows the last ")".
      {:ok, stat} -> stat |> String.split(")") |> List.last() |> String.split() |> Enum.at(1)
      {:error, _} -> nil
    end
  end

  defp users_and_groups do
    users =
      for line <- String.split(File.read!("/etc/passwd"), "\n"),
          [user | _] = String.split(line, ":"),
          Regex.match?(~r/^tundra[mo]\d+$/, user) do
        System.cmd("userdel", ["--force", user], stderr_to_stdout: true)
        "user #{user}"
      end

    groups =
      for line <- String.split(File.read!("/etc/group"), "\n"),
          [group | _] = String.split(line, ":"),
          Regex.match?(~r/^tundratest\d+$/, group) do
        System.cmd("groupdel", [group], stderr_to_stdout: true)
        "group #{group}"
      end

    users ++ groups
  end

  defp folders do
    for pattern <- ["/tmp/tundra-vm-*", "/tmp/tundra-package-*", "/run/tundra-exunit-*"],
        path <- Path.wildcard(pattern),
        not in_use?(path) do
      File.rm_rf!(path)
      "folder #{path}"
    end
  end

  # A server's socket folder is in use while its socket answers.
  defp in_use?(path) do
    Path.wildcard(Path.join(path, "*.sock"))
    |> Enum.any?(fn socket ->
      case :socket.open(:local, :stream, :default) do
        {:ok, sock} ->
          answered = :socket.connect(sock, %{family: :local, path: socket}) == :ok
          :socket.close(sock)
          answered

        {:error, _} ->
          false
      end
    end)
  end
end

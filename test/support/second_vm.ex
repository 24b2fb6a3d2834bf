defmodule TundraTest.SecondVM do
  @moduledoc false
  # Runs Elixir code in a second VM as another (unprivileged) user, with this
  # project's compiled modules on its code path. The VM runs until its code
  # returns; code that reads a line from stdin waits until `stop/1`.

  @doc """
  Copies the compiled app (ebin and the NIF) to a fresh world-readable
  directory, since the checkout itself may sit where other users cannot
  reach (such as /root). Returns the directory; remove it when done.
  """
  def prepare do
    run = TundraTest.Env.run_id()
    root = Path.join(System.tmp_dir!(), "tundra-vm-#{run}-#{System.unique_integer([:positive])}")
    app = Path.join(root, "tundra")
    File.mkdir_p!(app)
    File.cp_r!(Path.join(Mix.Project.app_path(), "ebin"), Path.join(app, "ebin"))
    File.mkdir_p!(Path.join(app, "priv/native"))
    nif = "priv/native/libtundra_nif.so"
    File.cp!(Path.join(Mix.Project.app_path(), nif), Path.join(app, nif))
    {_, 0} = System.cmd("chmod", ["-R", "a+rX", root])
    root
  end

  @doc """
  Starts `code` (with `args` as System.argv/0) as `user`, from `prepare/0`'s
  dir. With `open_tun: true` the user may open /dev/net/tun, as on most
  distributions (mode 0666), even where the machine's node is 0600: the VM
  runs in a mount namespace of its own where a 0666 node of the same
  device stands in for it. The machine's node is not touched.
  """
  def start(root, user, code, args \\ [], opts \\ []) do
    runuser = System.find_executable("runuser") || raise "runuser (util-linux) not found"

    # runuser gives the user's groups from the user database; with
    # `stale_groups: true` the VM has none but its primary one, as a
    # session started before the user was added to a group.
    as_user =
      if Keyword.get(opts, :stale_groups, false) do
        setpriv = System.find_executable("setpriv") || raise "setpriv (util-linux) not found"
        {id, 0} = System.cmd("id", ["-u", user])
        {gid, 0} = System.cmd("id", ["-g", user])
        [setpriv, "--reuid=#{String.trim(id)}", "--regid=#{String.trim(gid)}", "--clear-groups"]
      else
        [runuser, "-u", user, "--"]
      end

    vm =
      as_user ++
        ["env", "HOME=/tmp", "elixir"] ++
        ["-pa", Path.join(root, "tundra/ebin"), "-e", code, "--"] ++ args

    {program, argv} =
      if Keyword.get(opts, :open_tun, false) do
        unshare = System.find_executable("unshare") || raise "unshare (util-linux) not found"

        script =
          "mount -t tmpfs tundra-test /mnt && mknod -m 0666 /mnt/tun c 10 200 && " <>
            "mount --bind /mnt/tun /dev/net/tun && exec \"$@\""

        {unshare, ["--mount", "--propagation", "private", "sh", "-c", script, "sh" | vm]}
      else
        {hd(vm), tl(vm)}
      end

    Port.open({:spawn_executable, program}, [
      :binary,
      :exit_status,
      :stderr_to_stdout,
      {:line, 4096},
      args: argv
    ])
  end

  @doc "The next line the VM prints that starts with `prefix`."
  def line(port, prefix, timeout \\ 30_000) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix), do: line, else: line(port, prefix, timeout)

      {^port, {:exit_status, status}} ->
        raise "second VM exited with status #{status} before printing #{prefix}"
    after
      timeout -> raise "second VM printed no #{prefix} line in #{timeout} ms"
    end
  end

  @doc "Every line the VM prints up to the first that starts with `prefix`, that one last."
  def lines_until(port, prefix, timeout \\ 30_000, seen \\ []) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        if String.starts_with?(line, prefix),
          do: Enum.reverse([line | seen]),
          else: lines_until(port, prefix, timeout, [line | seen])

      {^port, {:data, {:noeol, part}}} ->
        lines_until(port, prefix, timeout, [part | seen])

      {^port, {:exit_status, status}} ->
        raise "second VM exited with status #{status} before printing #{prefix}: #{inspect(seen)}"
    after
      timeout -> raise "second VM printed no #{prefix} line in #{timeout} ms"
    end
  end

  @doc "Runs `code` as `user` to completion; returns the line starting with `prefix`."
  def run(root, user, code, prefix, args \\ []) do
    port = start(root, user, code, args)
    result = line(port, prefix)
    stop(port)
    result
  end

  @doc "Closes the VM's stdin, which ends code waiting on it."
  def stop(port) do
    Port.close(port)
    :ok
  rescue
    # It exited (and its port closed) meanwhile.
    ArgumentError -> :ok
  end
end

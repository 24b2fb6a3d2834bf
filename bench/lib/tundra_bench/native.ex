defmodule TundraBench.Native do
  @moduledoc false
  # Runs the Rust reference programs of native/tundra_bench (and
  # tundra_server): long-running ones as ports that print `ready <name>`
  # and exit when the port (their stdin) closes; short ones as commands
  # whose last line is `key=value` pairs.

  @release Path.expand("../../../native/target/release", __DIR__)

  def path(program), do: Path.join(@release, program)

  @doc "Starts `command` (prefixed, e.g. by `ip netns exec`), waits for `ready`."
  def start(command, timeout \\ 15_000) do
    [exe | args] = command
    exe = System.find_executable(exe) || exe

    port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: args,
        env: [{~c"MIX_ENV", ~c"bench"}]
      ])

    await_ready(port, command, timeout, [])
  end

  defp await_ready(port, command, timeout, seen) do
    receive do
      {^port, {:data, {:eol, "ready " <> name}}} ->
        {port, name}

      {^port, {:data, {_, line}}} ->
        await_ready(port, command, timeout, [line | seen])

      {^port, {:exit_status, status}} ->
        raise "#{Enum.join(command, " ")} exited (#{status}): #{seen |> Enum.reverse() |> Enum.join("\n")}"
    after
      timeout -> raise "#{Enum.join(command, " ")} did not become ready"
    end
  end

  @doc "Stops a started program: closes its stdin and waits for its exit."
  def stop({port, _name}) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Port.close(port)
    # The program exits on EOF; its output after that is dropped. Closing
    # the port does not wait for that, and the next run may need what the
    # program holds (a UDP port, a device name): wait until it is gone.
    await_exit(os_pid, 100)
    flush(port)
  end

  defp await_exit(_os_pid, 0), do: raise("a benchmark program did not exit on EOF")

  defp await_exit(os_pid, tries) do
    if File.exists?("/proc/#{os_pid}") do
      Process.sleep(50)
      await_exit(os_pid, tries - 1)
    else
      :ok
    end
  end

  defp flush(port) do
    receive do
      {^port, _} -> flush(port)
    after
      0 -> :ok
    end
  end

  @doc "Runs a command to completion and parses its last line of `key=value` pairs."
  def run(command) do
    [exe | args] = command
    {out, status} = System.cmd(exe, args, stderr_to_stdout: true)

    if status != 0, do: raise("#{Enum.join(command, " ")} failed (#{status}): #{out}")

    out
    |> String.split("\n", trim: true)
    |> List.last()
    |> String.split(" ")
    |> Map.new(fn pair ->
      [k, v] = String.split(pair, "=", parts: 2)
      {k, parse_number(v)}
    end)
  end

  defp parse_number(v) do
    case Float.parse(v) do
      {f, ""} -> f
      _ -> v
    end
  end
end

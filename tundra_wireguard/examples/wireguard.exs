# A WireGuard interface from a wg-quick configuration file
# (TundraWireGuard):
#
#   mix run examples/wireguard.exs wg0.conf [--name NAME] [--plain]
#
# from this package's folder (or deps/tundra_wireguard of a project that
# depends on it).
#
# It creates the device (named after the file, as wg-quick does, when that
# is a valid interface name; else --name or the kernel's choice), its
# addresses and routes, prints `ready <device>` and runs until its standard
# input closes. --plain moves a packet per system call instead of the
# offload path. A line `show` on standard input prints the interface's and
# its peers' state, as `wg show` does.
alias TundraWireGuard, as: WireGuard

{opts, args, _} = OptionParser.parse(System.argv(), strict: [name: :string, plain: :boolean])

path =
  case args do
    [path] -> path
    _ -> raise "usage: mix run examples/wireguard.exs PATH.conf [--name NAME] [--plain]"
  end

# One line for what went wrong, and a non-zero exit (not a stack trace).
fail = fn message ->
  IO.puts(:stderr, "wireguard.exs: #{message}")
  System.halt(1)
end

config =
  case WireGuard.read_config(path) do
    {:ok, config} -> config
    {:error, {line, message}} -> fail.("#{path}:#{line}: #{message}")
    {:error, reason} -> fail.("#{path}: #{WireGuard.format_error(reason)}")
  end

if config.ignored != [] do
  IO.puts(:stderr, "ignored (wg-quick's, not the protocol's): #{Enum.join(config.ignored, ", ")}")
end

# wg-quick's rule: the interface is named after the file.
from_file = Path.basename(path, ".conf")
name = opts[:name] || if from_file =~ ~r/^[a-zA-Z0-9_=+.-]{1,15}$/, do: from_file

device_opts = if name, do: [name: name], else: []
# Its failure to start is this script's to say, not an exit signal's.
Process.flag(:trap_exit, true)

pid =
  case WireGuard.start_link(config, device_opts ++ [offload: !opts[:plain]]) do
    {:ok, pid} -> pid
    {:error, reason} -> fail.("cannot start: #{WireGuard.format_error(reason)}")
  end

# From here on, the interface's end is this script's.
Process.flag(:trap_exit, false)

IO.puts("ready #{WireGuard.info(pid).name}")

# Each line as it comes (a `show` is answered at once), until input ends.
defmodule WireGuardRunner do
  def serve(pid) do
    case IO.read(:stdio, :line) do
      line when is_binary(line) ->
        if String.trim(line) in ["info", "show"], do: IO.puts(TundraWireGuard.show(pid))
        serve(pid)

      _eof_or_error ->
        :ok
    end
  end
end

WireGuardRunner.serve(pid)
# Stopped, not dropped: its UAPI socket is removed, its device closed.
GenServer.stop(pid, :shutdown)

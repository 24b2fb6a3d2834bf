# A WireGuard interface from a wg-quick configuration file
# (TundraExamples.WireGuard):
#
#   mix run examples/wireguard.exs wg0.conf [--name NAME] [--plain]
#
# It creates the device (named after the file, as wg-quick does, when that
# is a valid interface name; else --name or the kernel's choice), its
# addresses and routes, prints `ready <device>` and runs until its standard
# input closes. --plain moves a packet per system call instead of the
# offload path. A line `show` on standard input prints the interface's and
# its peers' state, as `wg show` does.
unless Code.ensure_loaded?(TundraExamples.WireGuard) do
  # Outside the project's test and bench builds (which compile
  # examples/lib), load the modules the interface is made of.
  for file <-
        ~w(tundra_examples.ex blake2s crypto noise replay allowed_ips config interface)
        |> Enum.map(fn
          "tundra_examples.ex" -> "tundra_examples.ex"
          name -> "tundra_examples/wireguard/#{name}.ex"
        end)
        |> Kernel.++(["tundra_examples/wireguard.ex"]) do
    Code.require_file(Path.join("lib", file), __DIR__)
  end
end

alias TundraExamples.WireGuard

{opts, args, _} = OptionParser.parse(System.argv(), strict: [name: :string, plain: :boolean])

path =
  case args do
    [path] -> path
    _ -> raise "usage: mix run examples/wireguard.exs PATH.conf [--name NAME] [--plain]"
  end

config =
  case WireGuard.read_config(path) do
    {:ok, config} -> config
    {:error, {line, message}} -> raise "#{path}:#{line}: #{message}"
    {:error, reason} -> raise "#{path}: #{inspect(reason)}"
  end

if config.ignored != [] do
  IO.puts(:stderr, "ignored (wg-quick's, not the protocol's): #{Enum.join(config.ignored, ", ")}")
end

# wg-quick's rule: the interface is named after the file.
from_file = Path.basename(path, ".conf")
name = opts[:name] || if from_file =~ ~r/^[a-zA-Z0-9_=+.-]{1,15}$/, do: from_file

device_opts = if name, do: [name: name], else: []
{:ok, pid} = WireGuard.start_link(config, device_opts ++ [offload: !opts[:plain]])

IO.puts("ready #{WireGuard.info(pid).name}")

Stream.repeatedly(fn -> IO.read(:stdio, :line) end)
|> Enum.take_while(&is_binary/1)
|> Enum.each(fn line ->
  if String.trim(line) in ["info", "show"], do: IO.puts(WireGuard.show(pid))
end)

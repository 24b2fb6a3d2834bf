# The WireGuard peer from the repository's root, as the other examples run:
#
#   mix run examples/wireguard.exs wg0.conf [--name NAME] [--plain]
#
# The peer is a package of its own, tundra_wireguard/ (TundraWireGuard),
# a Mix project beside this one; this thin runner builds it in this
# MIX_ENV if needed (its output on standard error), loads it, and runs
# the package's runner, tundra_wireguard/examples/wireguard.exs, which
# says the rest (`ready <device>`, `show` lines on standard input, runs
# until standard input closes).
package = Path.expand("../tundra_wireguard", __DIR__)

case System.cmd("mix", ["compile"],
       cd: package,
       env: [{"MIX_ENV", to_string(Mix.env())}],
       into: IO.binstream(:standard_error, :line)
     ) do
  {_, 0} ->
    :ok

  {_, status} ->
    IO.puts(:stderr, "wireguard.exs: building #{package} failed (#{status})")
    System.halt(1)
end

# Its own modules; Tundra is this project's, already loaded.
true =
  Code.prepend_path(
    Path.join([package, "_build", to_string(Mix.env()), "lib/tundra_wireguard/ebin"])
  )

Code.eval_file(Path.join(package, "examples/wireguard.exs"))

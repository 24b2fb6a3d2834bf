# One end of a point-to-point IP-over-UDP tunnel (TundraExamples.UdpTunnel).
# Run one end on each side, e.g. in two network namespaces joined by a veth
# pair (the benchmark does exactly that, see bench/lib/tundra_bench/tunnel.ex):
#
#   mix run examples/udp_tunnel.exs --address 10.251.0.1 --peer 10.251.0.2 \
#     --local 192.168.250.1:7000 --remote 192.168.250.2:7000
#
# It prints `ready <device>` and runs until its standard input closes. By
# default the device is an offload device and the socket uses UDP_SEGMENT
# and UDP_GRO (Linux); `--plain` moves one packet per system call instead.
unless Code.ensure_loaded?(TundraExamples.UdpTunnel) do
  # Outside the project's test and bench builds (which compile
  # examples/lib), load the modules the tunnel is made of.
  for file <- ~w(tundra_examples.ex tundra_examples/flow.ex tundra_examples/udp_tunnel.ex) do
    Code.require_file(Path.join("lib", file), __DIR__)
  end
end

{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [
      address: :string,
      peer: :string,
      local: :string,
      remote: :string,
      mtu: :integer,
      plain: :boolean
    ]
  )

endpoint = fn text ->
  [host, port] = String.split(text, ":")
  {:ok, ip} = :inet.parse_address(String.to_charlist(host))
  {ip, String.to_integer(port)}
end

{:ok, tunnel} =
  TundraExamples.UdpTunnel.start_link(
    {opts[:address], [dstaddr: opts[:peer], mtu: opts[:mtu] || 1400, offload: !opts[:plain]],
     endpoint.(opts[:local]), endpoint.(opts[:remote])}
  )

IO.puts("ready #{TundraExamples.UdpTunnel.name(tunnel)}")
IO.read(:stdio, :eof)

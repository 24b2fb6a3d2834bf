# One end of a point-to-point IP-over-UDP tunnel (TundraExamples.UdpTunnel).
# Run one end on each side, e.g. in two network namespaces joined by a veth
# pair (the benchmark does exactly that, see bench/lib/tundra_bench/tunnel.ex):
#
#   mix run examples/udp_tunnel.exs --address 10.251.0.1 --peer 10.251.0.2 \
#     --local 192.168.250.1:7000 --remote 192.168.250.2:7000
#
# It prints `ready <device>` and runs until its standard input closes.
{opts, _, _} =
  OptionParser.parse(System.argv(),
    strict: [address: :string, peer: :string, local: :string, remote: :string, mtu: :integer]
  )

endpoint = fn text ->
  [host, port] = String.split(text, ":")
  {:ok, ip} = :inet.parse_address(String.to_charlist(host))
  {ip, String.to_integer(port)}
end

{:ok, _pid, name} =
  TundraExamples.UdpTunnel.start_link(
    opts[:address],
    [dstaddr: opts[:peer], mtu: opts[:mtu] || 1400],
    endpoint.(opts[:local]),
    endpoint.(opts[:remote])
  )

IO.puts("ready #{name}")
IO.read(:stdio, :eof)

# Many peers on one interface (Tundra's `make bench`, section
# wireguard_peers, runs this inside a network namespace of its own):
#
#   MIX_ENV=prod mix run bench/peers.exs NAME UAPI_DIR PEER_FILE COUNT
#
# Starts an interface NAME with no peers (its UAPI socket in UAPI_DIR), then
# adds COUNT peers through Elixir (TundraWireGuard.configure/2), removes
# them, adds the same peers through the UAPI (`wg addconf NAME PEER_FILE`,
# as wg-quick and the other implementations are measured), and lists them
# with `wg show`. The peers have no endpoints: nothing is sent. Its last
# line: `elixir_ms=.. uapi_ms=.. show_ms=.. rss_per_peer=.. state_per_peer=..`.
[name, uapi, peer_file, count] = System.argv()
count = String.to_integer(count)

{:ok, pid} =
  TundraWireGuard.start_link(
    %{private_key: nil, listen_port: nil, addresses: [], mtu: nil, peers: [], ignored: []},
    name: name,
    uapi: uapi,
    routes: false
  )

:ok =
  TundraWireGuard.configure(pid, %{
    private_key: :crypto.strong_rand_bytes(32)
  })

# The same peers as PEER_FILE's, in Elixir's terms.
peers =
  peer_file
  |> File.read!()
  |> String.split("[Peer]", trim: true)
  |> Enum.flat_map(fn section ->
    case Regex.run(~r/PublicKey = (\S+)\s+AllowedIPs = (\S+)\/32/, section) do
      [_, key, ip] ->
        {:ok, address} = :inet.parse_address(String.to_charlist(ip))
        [%{public_key: Base.decode64!(key), allowed_ips: [{address, 32}]}]

      nil ->
        []
    end
  end)

^count = length(peers)

rss = fn ->
  "/proc/self/status"
  |> File.read!()
  |> then(&Regex.run(~r/VmRSS:\s+(\d+) kB/, &1))
  |> then(fn [_, kb] -> String.to_integer(kb) * 1024 end)
end

wg = fn args ->
  {micros, {out, 0}} = :timer.tc(fn -> System.cmd("wg", args, stderr_to_stdout: true) end)
  {micros, out}
end

:erlang.garbage_collect(pid)
state_before = elem(:erlang.process_info(pid, :memory), 1)
rss_before = rss.()
{elixir_us, :ok} = :timer.tc(fn -> TundraWireGuard.configure(pid, %{peers: peers}) end)
:erlang.garbage_collect(pid)
state_after = elem(:erlang.process_info(pid, :memory), 1)
rss_after = rss.()

:ok = TundraWireGuard.configure(pid, %{replace_peers: true, peers: []})
{uapi_us, _} = wg.(["addconf", name, peer_file])
{show_us, out} = wg.(["show", name])
^count = length(Regex.scan(~r/^peer: /m, out))

Process.unlink(pid)
GenServer.stop(pid, :shutdown)

IO.puts(
  "elixir_ms=#{elixir_us / 1000} uapi_ms=#{uapi_us / 1000} show_ms=#{show_us / 1000} " <>
    "rss_per_peer=#{div(rss_after - rss_before, count)} " <>
    "state_per_peer=#{div(state_after - state_before, count)}"
)

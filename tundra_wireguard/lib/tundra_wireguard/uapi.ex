defmodule TundraWireGuard.UAPI do
  @moduledoc false
  # WireGuard's cross-platform userspace configuration protocol
  # (wireguard.com/xplatform), which `wg` and `wg-quick` speak to
  # wireguard-go and boringtun over /var/run/wireguard/NAME.sock: the text
  # of its requests and replies, apart from the socket
  # (TundraWireGuard.UAPI.Listener).
  #
  # A request is `get=1` or `set=1`, then `key=value` lines, then an empty
  # line; every reply ends with `errno=N` (0, or a positive errno) and an
  # empty line. Keys are lowercase hex (64 digits).

  alias TundraWireGuard.Config

  @typedoc "A request, parsed."
  @type request :: :get | {:set, map()}

  @doc """
  Parses a whole request (its text, the empty line that ends it
  excluded): `:get`, `{:set, change}` (see TundraWireGuard.Protocol.change),
  or `{:error, errno}` (EINVAL for a key or value that is not one, EPROTO
  for what is not a request). Nothing is applied before all of it is read.
  """
  @spec parse(String.t()) :: {:ok, request()} | {:error, :einval | :eproto}
  def parse(text) do
    case String.split(text, "\n", trim: true) do
      ["get=1"] -> {:ok, :get}
      ["set=1" | lines] -> parse_set(lines)
      _ -> {:error, :eproto}
    end
  end

  defp parse_set(lines) do
    lines
    |> Enum.reduce_while({:interface, %{peers: []}}, fn line, {section, change} ->
      with [key, value] <- String.split(line, "=", parts: 2),
           {:ok, section, change} <- put(section, key, value, change) do
        {:cont, {section, change}}
      else
        _ -> {:halt, {:error, :einval}}
      end
    end)
    |> case do
      {:error, errno} ->
        {:error, errno}

      {section, change} ->
        change = close(section, change)
        {:ok, {:set, %{change | peers: Enum.reverse(change.peers)}}}
    end
  end

  # Peers collect in `change.peers` (reversed until `close/2`); the peer
  # being read is `{:peer, peer}`.
  defp put(:interface, "private_key", value, change) do
    with {:ok, key} <- key(value), do: {:ok, :interface, Map.put(change, :private_key, key)}
  end

  defp put(:interface, "listen_port", value, change) do
    with {:ok, port} <- integer(value, 0..65_535),
         do: {:ok, :interface, Map.put(change, :listen_port, port)}
  end

  defp put(:interface, "fwmark", value, change) do
    with {:ok, mark} <- integer(value, 0..0xFFFFFFFF),
         do: {:ok, :interface, Map.put(change, :fwmark, mark)}
  end

  defp put(:interface, "replace_peers", "true", change),
    do: {:ok, :interface, Map.put(change, :replace_peers, true)}

  defp put(section, "public_key", value, change) do
    with {:ok, key} <- key(value),
         do: {:ok, {:peer, %{public_key: key}}, close(section, change)}
  end

  defp put({:peer, peer}, key, value, change) do
    with {:ok, peer} <- put_peer(peer, key, value), do: {:ok, {:peer, peer}, change}
  end

  defp put(_section, _key, _value, _change), do: :error

  defp put_peer(peer, "remove", "true"), do: {:ok, Map.put(peer, :remove, true)}
  defp put_peer(peer, "update_only", "true"), do: {:ok, Map.put(peer, :update_only, true)}

  defp put_peer(peer, "preshared_key", value) do
    with {:ok, key} <- key(value), do: {:ok, Map.put(peer, :preshared_key, key)}
  end

  defp put_peer(peer, "endpoint", value) do
    case Config.parse_endpoint(value) do
      {:ok, {ip, port}} when is_tuple(ip) -> {:ok, Map.put(peer, :endpoint, {ip, port})}
      _ -> :error
    end
  end

  defp put_peer(peer, "persistent_keepalive_interval", value) do
    with {:ok, seconds} <- integer(value, 0..65_535),
         do: {:ok, Map.put(peer, :persistent_keepalive, seconds)}
  end

  defp put_peer(peer, "replace_allowed_ips", "true"),
    do: {:ok, Map.put(peer, :replace_allowed_ips, true)}

  defp put_peer(peer, "allowed_ip", value) do
    case Config.prefix(value) do
      {:ok, prefix} -> {:ok, Map.update(peer, :allowed_ips, [prefix], &[prefix | &1])}
      :error -> :error
    end
  end

  defp put_peer(peer, "protocol_version", "1"), do: {:ok, peer}
  defp put_peer(_peer, _key, _value), do: :error

  defp close(:interface, change), do: change

  defp close({:peer, peer}, change) do
    peer = Map.update(peer, :allowed_ips, [], &Enum.reverse/1)
    %{change | peers: [peer | change.peers]}
  end

  defp key(hex) when byte_size(hex) == 64 do
    case Base.decode16(hex, case: :lower) do
      {:ok, key} -> {:ok, key}
      :error -> :error
    end
  end

  defp key(_hex), do: :error

  defp integer(text, range) do
    case Integer.parse(text) do
      {n, ""} -> if n in range, do: {:ok, n}, else: :error
      _ -> :error
    end
  end

  @doc "The reply to a `get`: the configuration (Protocol.configuration/1) and the port."
  @spec format_get(map(), :inet.port_number(), non_neg_integer()) :: iolist()
  def format_get(configuration, listen_port, fwmark) do
    interface = [
      if(configuration.private_key,
        do: line("private_key", hex(configuration.private_key)),
        else: []
      ),
      line("listen_port", listen_port),
      if(fwmark > 0, do: line("fwmark", fwmark), else: [])
    ]

    peers =
      for peer <- configuration.peers do
        {sec, nsec} = handshake_time(peer.last_handshake)

        [
          line("public_key", hex(peer.public_key)),
          line("preshared_key", hex(peer.preshared_key)),
          line("protocol_version", 1),
          if(peer.endpoint, do: line("endpoint", endpoint(peer.endpoint)), else: []),
          line("last_handshake_time_sec", sec),
          line("last_handshake_time_nsec", nsec),
          line("tx_bytes", peer.tx_bytes),
          line("rx_bytes", peer.rx_bytes),
          line("persistent_keepalive_interval", peer.persistent_keepalive),
          for(
            {ip, length} <- peer.allowed_ips,
            do: line("allowed_ip", "#{:inet.ntoa(ip)}/#{length}")
          )
        ]
      end

    [interface, peers, reply(0)]
  end

  @doc "The end of every reply: `errno=N` (0, or a positive errno) and an empty line."
  @spec reply(0 | atom()) :: String.t() | [String.t(), ...]
  def reply(0), do: "errno=0\n\n"
  def reply(errno) when is_atom(errno), do: ["errno=", Integer.to_string(errno(errno)), "\n\n"]

  defp errno(:einval), do: 22
  defp errno(:eproto), do: 71
  defp errno(:eaddrinuse), do: 98
  defp errno(:emsgsize), do: 90
  defp errno(:eio), do: 5
  defp errno(:eperm), do: 1
  defp errno(:eacces), do: 13
  defp errno(_other), do: 55

  defp line(key, value), do: [key, "=", to_string(value), "\n"]

  defp hex(key), do: Base.encode16(key, case: :lower)

  defp handshake_time(nil), do: {0, 0}
  defp handshake_time(ms), do: {div(ms, 1000), rem(ms, 1000) * 1_000_000}

  defp endpoint({{_, _, _, _} = ip, port}), do: "#{:inet.ntoa(ip)}:#{port}"
  defp endpoint({ip, port}), do: "[#{:inet.ntoa(ip)}]:#{port}"
end

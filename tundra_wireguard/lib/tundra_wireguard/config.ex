defmodule TundraWireGuard.Config do
  @moduledoc """
  Reads the `wg-quick` configuration format (`wg-quick(8)`, `wg(8)`):

      [Interface]
      PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
      Address = 10.0.0.1/24, fd00::1/64
      ListenPort = 51820
      MTU = 1420

      [Peer]
      PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
      PresharedKey = ...
      AllowedIPs = 10.0.0.2/32, fd00::2/128
      Endpoint = 192.0.2.1:51820
      PersistentKeepalive = 25

  Keys are case-insensitive, `#` starts a comment, lists are separated by
  commas and may be split over several lines. An allowed IP with host bits
  set (`10.8.0.77/16`) stands for its network (`10.8.0.0/16`), as `wg`
  takes it. An endpoint's host name is resolved as it is read, as `wg`
  does: one that does not resolve is an error with its line. `DNS`, `Table`, `FwMark`,
  `SaveConfig` and the `PreUp`/`PostUp`/`PreDown`/`PostDown` hooks are
  `wg-quick`'s business with the host, not the protocol's: they are
  accepted and listed in `:ignored`. Anything else is an error, with its
  line number.
  """

  import Bitwise

  @typedoc "An address and its prefix length."
  @type prefix :: {:inet.ip_address(), 0..128}

  @typedoc "A peer's endpoint: an address (a host name is resolved when read) and a port."
  @type endpoint :: {:inet.ip_address(), :inet.port_number()}

  @type peer :: %{
          public_key: <<_::256>>,
          preshared_key: <<_::256>> | nil,
          allowed_ips: [prefix()],
          endpoint: endpoint() | nil,
          persistent_keepalive: pos_integer() | nil
        }

  # `private_key` is nil only in a configuration made by hand for an
  # interface whose key comes later through the UAPI (bin/tundra-wg).
  @type t :: %{
          private_key: <<_::256>> | nil,
          listen_port: :inet.port_number() | nil,
          addresses: [prefix()],
          mtu: pos_integer() | nil,
          peers: [peer()],
          ignored: [String.t()]
        }

  @wg_quick_only ~w(dns table fwmark saveconfig preup postup predown postdown)

  @doc "Reads a configuration file."
  @spec read(Path.t()) :: {:ok, t()} | {:error, File.posix() | {pos_integer(), String.t()}}
  def read(path) do
    with {:ok, text} <- File.read(path), do: parse(text)
  end

  @doc "Parses a configuration's text."
  @spec parse(String.t()) :: {:ok, t()} | {:error, {pos_integer(), String.t()}}
  def parse(text) do
    text
    |> String.split(["\r\n", "\n"])
    |> Enum.with_index(1)
    |> Enum.reduce_while({nil, [], []}, &line/2)
    |> case do
      {:error, _} = error -> error
      {section, done, ignored} -> finish(close(section, done), Enum.reverse(ignored))
    end
  end

  defp line({raw, number}, {section, done, ignored}) do
    case raw |> String.split("#", parts: 2) |> hd() |> String.trim() do
      "" ->
        {:cont, {section, done, ignored}}

      "[" <> rest ->
        case String.downcase(rest) do
          "interface]" -> {:cont, {{:interface, number, %{}}, close(section, done), ignored}}
          "peer]" -> {:cont, {{:peer, number, %{}}, close(section, done), ignored}}
          _ -> {:halt, {:error, {number, "unknown section [#{rest}"}}}
        end

      text ->
        with {:ok, key, value} <- split(text, number),
             {:ok, section} <- put(section, String.downcase(key), value, number) do
          ignored = if key_ignored?(key), do: [key | ignored], else: ignored
          {:cont, {section, done, ignored}}
        else
          {:error, reason} -> {:halt, {:error, reason}}
        end
    end
  end

  defp key_ignored?(key), do: String.downcase(key) in @wg_quick_only

  defp split(text, number) do
    case String.split(text, "=", parts: 2) do
      [key, value] -> {:ok, String.trim(key), String.trim(value)}
      _ -> {:error, {number, "expected Key = Value"}}
    end
  end

  defp close(nil, done), do: done
  defp close(section, done), do: [section | done]

  defp put(nil, _key, _value, number),
    do: {:error, {number, "a setting outside [Interface] or [Peer]"}}

  defp put({kind, start, fields}, key, value, number) do
    with {:ok, field, parsed} <- field(kind, key, value, number) do
      fields =
        case {field, Map.get(fields, field)} do
          # Lists may be given over several lines; kept newest first
          # (reversed when the section closes), so that each is linear.
          {list, [_ | _] = before} when list in [:addresses, :allowed_ips] ->
            Map.put(fields, field, parsed ++ before)

          _ ->
            Map.put(fields, field, parsed)
        end

      {:ok, {kind, start, fields}}
    end
  end

  defp field(:interface, "privatekey", value, n), do: key(:private_key, value, n)
  defp field(:interface, "address", value, n), do: prefixes(:addresses, value, n, :as_given)
  defp field(:interface, "listenport", value, n), do: integer(:listen_port, value, 0..65_535, n)
  defp field(:interface, "mtu", value, n), do: integer(:mtu, value, 1280..65_535, n)
  defp field(:interface, key, _value, _n) when key in @wg_quick_only, do: {:ok, :ignored, nil}
  defp field(:peer, "publickey", value, n), do: key(:public_key, value, n)
  defp field(:peer, "presharedkey", value, n), do: key(:preshared_key, value, n)
  defp field(:peer, "allowedips", value, n), do: prefixes(:allowed_ips, value, n, :network)
  defp field(:peer, "endpoint", value, n), do: endpoint(value, n)

  defp field(:peer, "persistentkeepalive", value, n) do
    if String.downcase(value) == "off",
      do: {:ok, :persistent_keepalive, nil},
      else: integer(:persistent_keepalive, value, 0..65_535, n)
  end

  defp field(kind, key, _value, n), do: {:error, {n, "unknown key #{key} in [#{kind}]"}}

  defp key(field, value, n) do
    case Base.decode64(value) do
      {:ok, <<_::binary-32>> = key} -> {:ok, field, key}
      _ -> {:error, {n, "not a base64 key of 32 bytes"}}
    end
  end

  defp integer(field, value, range, n) do
    case Integer.parse(value) do
      {int, ""} -> if int in range, do: {:ok, field, int}, else: {:error, {n, "out of range"}}
      _ -> {:error, {n, "not a number: #{value}"}}
    end
  end

  # The line's prefixes, last first (see `put/4`).
  defp prefixes(field, value, n, form) do
    value
    |> String.split(",", trim: true)
    |> Enum.map(&String.trim/1)
    |> Enum.reject(&(&1 == ""))
    |> Enum.reduce_while({:ok, field, []}, fn text, {:ok, field, acc} ->
      case prefix(text) do
        {:ok, prefix} when form == :network -> {:cont, {:ok, field, [network(prefix) | acc]}}
        {:ok, prefix} -> {:cont, {:ok, field, [prefix | acc]}}
        :error -> {:halt, {:error, {n, "not an address/prefix: #{text}"}}}
      end
    end)
  end

  @doc "A prefix with its host bits cleared: `{10.8.0.77, 16}` is `{10.8.0.0, 16}`."
  @spec network(prefix()) :: prefix()
  def network({ip, length}) do
    {bits, width} = if tuple_size(ip) == 4, do: {8, 32}, else: {16, 128}
    words = Tuple.to_list(ip)
    <<value::size(width)>> = for w <- words, into: <<>>, do: <<w::size(bits)>>
    <<masked::size(width)>> = <<value >>> (width - length) <<< (width - length)::size(width)>>
    {List.to_tuple(for <<(w::size(bits) <- <<masked::size(width)>>)>>, do: w), length}
  end

  @doc "Parses `address/length` (or a bare address, a full-length prefix)."
  @spec prefix(String.t()) :: {:ok, prefix()} | :error
  def prefix(text) do
    {address, length} =
      case String.split(text, "/", parts: 2) do
        [address, length] -> {address, Integer.parse(length)}
        [address] -> {address, :full}
      end

    with {:ok, ip} <- :inet.parse_strict_address(String.to_charlist(address)) do
      bits = if tuple_size(ip) == 4, do: 32, else: 128

      case length do
        :full -> {:ok, {ip, bits}}
        {len, ""} when len in 0..bits -> {:ok, {ip, len}}
        _ -> :error
      end
    else
      _ -> :error
    end
  end

  defp endpoint(value, n) do
    parsed =
      case Regex.run(~r/^\[([^\]]+)\]:(\d+)$|^([^:\[\]]+):(\d+)$/, value) do
        [_, v6, port] -> {v6, port}
        [_, "", "", host, port] -> {host, port}
        _ -> :error
      end

    with {host, port} <- parsed,
         {port, ""} when port in 1..65_535 <- Integer.parse(port) do
      case resolve(String.to_charlist(host)) do
        {:ok, ip} -> {:ok, :endpoint, {ip, port}}
        :error -> {:error, {n, "cannot resolve #{host} (Endpoint)"}}
      end
    else
      _ -> {:error, {n, "not an endpoint (host:port or [v6]:port): #{value}"}}
    end
  end

  @doc """
  An endpoint written as an address and a port (`192.0.2.1:51820`,
  `[2001:db8::1]:51820`), no name: `{:ok, {ip, port}}` or `:error`.
  """
  @spec parse_endpoint(String.t()) :: {:ok, endpoint()} | :error
  def parse_endpoint(text) do
    with [_ | _] = parts <- Regex.run(~r/^\[([^\]]+)\]:(\d+)$|^([^:\[\]]+):(\d+)$/, text),
         {host, port} <- host_port(parts),
         {port, ""} when port in 1..65_535 <- Integer.parse(port),
         {:ok, ip} <- :inet.parse_strict_address(String.to_charlist(host)) do
      {:ok, {ip, port}}
    else
      _ -> :error
    end
  end

  defp host_port([_, v6, port]), do: {v6, port}
  defp host_port([_, "", "", host, port]), do: {host, port}

  # An address, or a name resolved now (IPv4 first, as wg does).
  defp resolve(host) do
    with {:error, _} <- :inet.parse_strict_address(host),
         {:error, _} <- :inet.getaddr(host, :inet),
         {:error, _} <- :inet.getaddr(host, :inet6) do
      :error
    end
  end

  defp finish(sections, ignored) do
    sections = Enum.reverse(sections)
    interfaces = for {:interface, line, fields} <- sections, do: {line, fields}
    peers = for {:peer, line, fields} <- sections, do: {line, fields}

    with {:ok, {line, interface}} <- one_interface(interfaces),
         {:ok, private_key} <- required(interface, :private_key, line, "PrivateKey"),
         {:ok, peers} <- peers(peers) do
      {:ok,
       %{
         private_key: private_key,
         listen_port: Map.get(interface, :listen_port),
         addresses: Enum.reverse(Map.get(interface, :addresses, [])),
         mtu: Map.get(interface, :mtu),
         peers: peers,
         ignored: ignored
       }}
    end
  end

  defp one_interface([one]), do: {:ok, one}
  defp one_interface([]), do: {:error, {1, "no [Interface] section"}}
  defp one_interface([_, {line, _} | _]), do: {:error, {line, "a second [Interface] section"}}

  defp required(fields, field, line, name) do
    case Map.fetch(fields, field) do
      {:ok, value} -> {:ok, value}
      :error -> {:error, {line, "#{name} is required"}}
    end
  end

  defp peers(sections) do
    sections
    |> Enum.reduce_while({:ok, [], MapSet.new()}, fn {line, fields}, {:ok, acc, seen} ->
      case required(fields, :public_key, line, "PublicKey") do
        {:ok, public_key} ->
          if MapSet.member?(seen, public_key) do
            {:halt, {:error, {line, "a second [Peer] with the same PublicKey"}}}
          else
            peer = %{
              public_key: public_key,
              preshared_key: Map.get(fields, :preshared_key),
              allowed_ips: Enum.reverse(Map.get(fields, :allowed_ips, [])),
              endpoint: Map.get(fields, :endpoint),
              persistent_keepalive:
                case Map.get(fields, :persistent_keepalive) do
                  0 -> nil
                  seconds -> seconds
                end
            }

            {:cont, {:ok, [peer | acc], MapSet.put(seen, public_key)}}
          end

        {:error, reason} ->
          {:halt, {:error, reason}}
      end
    end)
    |> case do
      {:ok, peers, _seen} -> {:ok, Enum.reverse(peers)}
      error -> error
    end
  end
end

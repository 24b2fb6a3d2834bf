defmodule TundraWireGuard.AllowedIPs do
  @moduledoc """
  Cryptokey routing: which peer an address belongs to, by the longest
  allowed-IPs prefix that holds it. Outgoing, the destination picks the
  peer to encrypt for; incoming, the source must belong to the peer whose
  key decrypted the packet.

  A table per family: for each prefix length in use (longest first), a
  map from the masked address to the peer. A lookup tries the lengths in
  turn, so it costs one map lookup per distinct length, a handful.
  """

  import Bitwise

  @typedoc "An address prefix: `{address, length}`."
  @type prefix :: {:inet.ip_address(), non_neg_integer()}

  @opaque t :: %{4 => [{non_neg_integer(), map()}], 6 => [{non_neg_integer(), map()}]}

  @doc """
  The table of `entries`, `{prefix, peer}` each. Like WireGuard, a prefix
  given to two peers belongs to the last; host bits are ignored.
  """
  @spec new([{prefix(), term()}]) :: t()
  def new(entries) do
    Enum.reduce(entries, %{4 => [], 6 => []}, fn {{address, length}, peer}, table ->
      {family, value, bits} = number(address)
      masked = value &&& mask(length, bits)

      Map.update!(table, family, fn lengths ->
        lengths
        |> List.keystore(length, 0, {length, Map.put(lengths_map(lengths, length), masked, peer)})
        |> Enum.sort_by(&elem(&1, 0), :desc)
      end)
    end)
  end

  defp lengths_map(lengths, length) do
    case List.keyfind(lengths, length, 0) do
      {^length, map} -> map
      nil -> %{}
    end
  end

  @doc "The peer a destination address belongs to, or `nil`."
  @spec lookup(t(), 4 | 6, non_neg_integer()) :: term() | nil
  def lookup(table, family, value) do
    bits = if family == 4, do: 32, else: 128
    find(Map.fetch!(table, family), value, bits)
  end

  defp find([], _value, _bits), do: nil

  defp find([{length, map} | rest], value, bits) do
    case Map.fetch(map, value &&& mask(length, bits)) do
      {:ok, peer} -> peer
      :error -> find(rest, value, bits)
    end
  end

  @doc """
  The peer an IP packet's destination belongs to, or `nil` (also for
  anything that is not an IPv4 or IPv6 packet).
  """
  @spec destination(t(), binary()) :: term() | nil
  def destination(table, <<4::4, _::bits-size(124), dst::32, _::binary>>),
    do: lookup(table, 4, dst)

  def destination(table, <<6::4, _::bits-size(188), dst::128, _::binary>>),
    do: lookup(table, 6, dst)

  def destination(_table, _packet), do: nil

  @doc "The peer an IP packet's source belongs to, or `nil`."
  @spec source(t(), binary()) :: term() | nil
  def source(table, <<4::4, _::bits-size(92), src::32, _::binary>>), do: lookup(table, 4, src)
  def source(table, <<6::4, _::bits-size(60), src::128, _::binary>>), do: lookup(table, 6, src)
  def source(_table, _packet), do: nil

  defp number({a, b, c, d}), do: {4, a <<< 24 ||| b <<< 16 ||| c <<< 8 ||| d, 32}

  defp number({a, b, c, d, e, f, g, h}) do
    value = Enum.reduce([a, b, c, d, e, f, g, h], 0, fn word, acc -> acc <<< 16 ||| word end)
    {6, value, 128}
  end

  defp mask(length, bits), do: (1 <<< bits) - (1 <<< (bits - length))
end

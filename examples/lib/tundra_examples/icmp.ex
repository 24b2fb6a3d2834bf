defmodule TundraExamples.Icmp do
  @moduledoc """
  Builds the echo reply to an ICMP (IPv4) or ICMPv6 echo request, so a
  Tundra device can answer the system's `ping`.
  """

  import Bitwise

  @doc """
  Returns `{:ok, reply}` for an echo request packet, or `:ignore` for any
  other packet (router solicitations, MLD reports, ...).
  """
  @spec echo_reply(binary()) :: {:ok, binary()} | :ignore
  def echo_reply(<<4::4, ihl::4, _::binary>> = packet) when ihl >= 5 do
    header_len = ihl * 4

    case packet do
      <<header::binary-size(header_len), 8, 0, _sum::16, rest::binary>> ->
        <<vihl, tos, len::16, id::16, frag::16, ttl, proto, _hsum::16, src::binary-4,
          dst::binary-4, options::binary>> = header

        icmp = <<0, 0, 0::16, rest::binary>>
        icmp = set_checksum(icmp, checksum(icmp))

        ip =
          <<vihl, tos, len::16, id::16, frag::16, ttl, proto, 0::16, dst::binary, src::binary,
            options::binary>>

        {:ok, set_checksum_at(ip, 10, checksum(ip)) <> icmp}

      _ ->
        :ignore
    end
  end

  def echo_reply(
        <<6::4, tc_flow::28, len::16, 58, hops, src::binary-16, dst::binary-16, 128, 0, _sum::16,
          rest::binary>>
      ) do
    icmp = <<129, 0, 0::16, rest::binary>>
    pseudo = <<dst::binary, src::binary, byte_size(icmp)::32, 0::24, 58>>
    icmp = set_checksum(icmp, checksum(pseudo <> icmp))
    {:ok, <<6::4, tc_flow::28, len::16, 58, hops, dst::binary, src::binary, icmp::binary>>}
  end

  def echo_reply(_packet), do: :ignore

  @doc "The Internet checksum (RFC 1071) of `data`."
  @spec checksum(binary()) :: 0..0xFFFF
  def checksum(data), do: data |> sum16(0) |> fold() |> bnot() |> band(0xFFFF)

  defp sum16(<<word::16, rest::binary>>, acc), do: sum16(rest, acc + word)
  defp sum16(<<byte>>, acc), do: acc + (byte <<< 8)
  defp sum16(<<>>, acc), do: acc

  defp fold(sum) when sum > 0xFFFF, do: fold((sum &&& 0xFFFF) + (sum >>> 16))
  defp fold(sum), do: sum

  defp set_checksum(<<type, code, _::16, rest::binary>>, sum),
    do: <<type, code, sum::16, rest::binary>>

  defp set_checksum_at(data, offset, sum) do
    <<head::binary-size(offset), _::16, tail::binary>> = data
    <<head::binary, sum::16, tail::binary>>
  end
end

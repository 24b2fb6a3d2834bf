defmodule TundraExamples.WireGuard.Blake2s do
  @moduledoc """
  BLAKE2s (RFC 7693) with a key and any output length up to 32 bytes:
  WireGuard's `MAC` is keyed BLAKE2s with a 16-byte output, which OTP's
  `:crypto` (unkeyed, 32 bytes) does not offer. Used for the handshake's
  `mac1`/`mac2` and cookies only, a few messages per handshake, so plain
  Elixir is fast enough; tested against RFC 7693's self-test and
  `:crypto`'s own BLAKE2s.
  """

  import Bitwise

  @iv {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB,
       0x5BE0CD19}

  @sigma {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0}
  }

  @mask 0xFFFFFFFF

  @doc "BLAKE2s of `data`, `outlen` bytes (1..32), keyed with `key` (0..32 bytes)."
  @spec hash(binary(), binary(), 1..32) :: binary()
  def hash(data, key \\ <<>>, outlen \\ 32)
      when is_binary(data) and is_binary(key) and byte_size(key) <= 32 and outlen in 1..32 do
    h0 = bxor(elem(@iv, 0), 0x01010000 ||| byte_size(key) <<< 8 ||| outlen)
    h = put_elem(@iv, 0, h0)
    # A key is hashed as a first block of its own, padded with zeros.
    input = if key == <<>>, do: data, else: pad_block(key) <> data
    h = compress_all(h, input, 0)

    h
    |> Tuple.to_list()
    |> Enum.map(&<<&1::32-little>>)
    |> IO.iodata_to_binary()
    |> binary_part(0, outlen)
  end

  defp pad_block(block), do: block <> :binary.copy(<<0>>, 64 - byte_size(block))

  # Every block but the last; the last (possibly empty, or short) is final.
  defp compress_all(h, <<block::binary-size(64), rest::binary>>, t) when rest != <<>>,
    do: compress_all(compress(h, block, t + 64, false), rest, t + 64)

  defp compress_all(h, last, t),
    do: compress(h, pad_block(last), t + byte_size(last), true)

  defp compress(h, block, t, final) do
    m = List.to_tuple(for <<w::32-little <- block>>, do: w)

    v =
      List.to_tuple(
        Tuple.to_list(h) ++
          [
            elem(@iv, 0),
            elem(@iv, 1),
            elem(@iv, 2),
            elem(@iv, 3),
            bxor(elem(@iv, 4), t &&& @mask),
            bxor(elem(@iv, 5), t >>> 32 &&& @mask),
            if(final, do: bxor(elem(@iv, 6), @mask), else: elem(@iv, 6)),
            elem(@iv, 7)
          ]
      )

    v = Enum.reduce(0..9, v, fn round, v -> round(v, m, elem(@sigma, round)) end)

    List.to_tuple(for i <- 0..7, do: bxor(bxor(elem(h, i), elem(v, i)), elem(v, i + 8)))
  end

  defp round(v, m, s) do
    v
    |> g(0, 4, 8, 12, elem(m, elem(s, 0)), elem(m, elem(s, 1)))
    |> g(1, 5, 9, 13, elem(m, elem(s, 2)), elem(m, elem(s, 3)))
    |> g(2, 6, 10, 14, elem(m, elem(s, 4)), elem(m, elem(s, 5)))
    |> g(3, 7, 11, 15, elem(m, elem(s, 6)), elem(m, elem(s, 7)))
    |> g(0, 5, 10, 15, elem(m, elem(s, 8)), elem(m, elem(s, 9)))
    |> g(1, 6, 11, 12, elem(m, elem(s, 10)), elem(m, elem(s, 11)))
    |> g(2, 7, 8, 13, elem(m, elem(s, 12)), elem(m, elem(s, 13)))
    |> g(3, 4, 9, 14, elem(m, elem(s, 14)), elem(m, elem(s, 15)))
  end

  defp g(v, a, b, c, d, x, y) do
    va = elem(v, a) + elem(v, b) + x &&& @mask
    vd = rotr(bxor(elem(v, d), va), 16)
    vc = elem(v, c) + vd &&& @mask
    vb = rotr(bxor(elem(v, b), vc), 12)
    va = va + vb + y &&& @mask
    vd = rotr(bxor(vd, va), 8)
    vc = vc + vd &&& @mask
    vb = rotr(bxor(vb, vc), 7)
    v |> put_elem(a, va) |> put_elem(b, vb) |> put_elem(c, vc) |> put_elem(d, vd)
  end

  defp rotr(x, n), do: (x >>> n ||| x <<< (32 - n)) &&& @mask
end

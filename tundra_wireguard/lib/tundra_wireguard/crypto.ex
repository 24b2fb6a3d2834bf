defmodule TundraWireGuard.Crypto do
  @moduledoc """
  The primitives WireGuard is built from (the protocol page's "Symbols and
  functions"), each over OTP's `:crypto` but two: keyed BLAKE2s with a
  16-byte output (`mac/2`, in `TundraWireGuard.Blake2s`) and
  HChaCha20 (for XChaCha20-Poly1305, used by cookie replies only), which
  `:crypto` does not offer and which are derived here from what it does.
  """

  import Bitwise

  alias TundraWireGuard.Blake2s

  @typedoc "A 32-byte key: Curve25519 public or private, symmetric, chaining."
  @type key :: <<_::256>>

  @doc "HASH: BLAKE2s, 32 bytes."
  @spec hash(iodata()) :: key()
  def hash(data), do: :crypto.hash(:blake2s, data)

  @doc "MAC: keyed BLAKE2s, 16 bytes."
  @spec mac(binary(), iodata()) :: <<_::128>>
  def mac(key, data), do: Blake2s.hash(IO.iodata_to_binary(data), key, 16)

  @doc "HMAC: HMAC-BLAKE2s, 32 bytes."
  @spec hmac(binary(), iodata()) :: key()
  def hmac(key, data), do: :crypto.mac(:hmac, :blake2s, key, data)

  @doc """
  KDF_n: `n` (1..3) keys derived from the chaining key `key` and `input`,
  HKDF over HMAC-BLAKE2s.
  """
  @spec kdf(1..3, key(), binary()) :: [key()]
  def kdf(n, key, input) when n in 1..3 do
    prk = hmac(key, input)
    t1 = hmac(prk, <<1>>)

    case n do
      1 ->
        [t1]

      _ ->
        t2 = hmac(prk, [t1, 2])
        if n == 2, do: [t1, t2], else: [t1, t2, hmac(prk, [t2, 3])]
    end
  end

  @doc "DH-Generate: a new Curve25519 key pair, `{public, private}`."
  @spec generate() :: {key(), key()}
  def generate, do: :crypto.generate_key(:ecdh, :x25519)

  @doc "The public key of a Curve25519 private key."
  @spec public_key(key()) :: key()
  def public_key(private) do
    {public, _} = :crypto.generate_key(:ecdh, :x25519, private)
    public
  end

  @doc """
  DH: X25519 of `private` and `public`. `:error` when the result is all
  zeros (a public key of small order), which WireGuard refuses.
  """
  @spec dh(key(), key()) :: {:ok, key()} | :error
  def dh(private, public) do
    case :crypto.compute_key(:ecdh, public, private, :x25519) do
      <<0::256>> -> :error
      shared -> {:ok, shared}
    end
  rescue
    # :crypto raises on a key it cannot parse (never for 32 bytes, but a
    # peer's input must not crash the caller).
    ErlangError -> :error
  end

  @doc """
  AEAD: ChaCha20-Poly1305 with `counter` as the nonce (32 zero bits, then
  64 bits little-endian); the ciphertext with its 16-byte tag appended.
  """
  @spec seal(key(), non_neg_integer(), iodata(), iodata()) :: binary()
  def seal(key, counter, plaintext, aad), do: aead_seal(key, nonce(counter), plaintext, aad)

  @doc "The inverse of `seal/4`: the plaintext, or `:error` if not authentic."
  @spec open(key(), non_neg_integer(), binary(), iodata()) :: {:ok, binary()} | :error
  def open(key, counter, sealed, aad), do: aead_open(key, nonce(counter), sealed, aad)

  @doc "XAEAD: XChaCha20-Poly1305 with a 24-byte nonce."
  @spec xseal(key(), <<_::192>>, iodata(), iodata()) :: binary()
  def xseal(key, <<head::binary-16, tail::binary-8>>, plaintext, aad),
    do: aead_seal(hchacha20(key, head), <<0::32, tail::binary>>, plaintext, aad)

  @doc "The inverse of `xseal/4`."
  @spec xopen(key(), <<_::192>>, binary(), iodata()) :: {:ok, binary()} | :error
  def xopen(key, <<head::binary-16, tail::binary-8>>, sealed, aad),
    do: aead_open(hchacha20(key, head), <<0::32, tail::binary>>, sealed, aad)

  defp nonce(counter), do: <<0::32, counter::64-little>>

  defp aead_seal(key, nonce, plaintext, aad) do
    {ciphertext, tag} =
      :crypto.crypto_one_time_aead(:chacha20_poly1305, key, nonce, plaintext, aad, true)

    <<ciphertext::binary, tag::binary>>
  end

  defp aead_open(key, nonce, sealed, aad) when byte_size(sealed) >= 16 do
    size = byte_size(sealed) - 16
    <<ciphertext::binary-size(size), tag::binary-16>> = sealed

    case :crypto.crypto_one_time_aead(:chacha20_poly1305, key, nonce, ciphertext, aad, tag, false) do
      :error -> :error
      plaintext -> {:ok, plaintext}
    end
  end

  defp aead_open(_key, _nonce, _sealed, _aad), do: :error

  @sigma [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
  @mask 0xFFFFFFFF

  @doc """
  HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the ChaCha20 state of `key`
  and the 16-byte `input` after its 20 rounds, first and last rows.

  `:crypto`'s ChaCha20 gives the block function *plus* the initial state
  (its keystream); both rows wanted hold only constants and `input`, so
  subtracting them back gives the rounds' output.
  """
  @spec hchacha20(key(), <<_::128>>) :: key()
  def hchacha20(key, <<_::binary-16>> = input) do
    # The 16-byte IV of OTP's chacha20 is exactly state words 12..15
    # (block counter and nonce), which is where HChaCha20 puts `input`.
    block = :crypto.crypto_one_time(:chacha20, key, input, <<0::512>>, true)
    words = for <<w::32-little <- block>>, do: w
    {first, rest} = Enum.split(words, 4)
    last = Enum.drop(rest, 8)
    inputs = for <<w::32-little <- input>>, do: w

    [Enum.zip(first, @sigma), Enum.zip(last, inputs)]
    |> Enum.concat()
    |> Enum.map(fn {out, initial} -> <<out - initial &&& @mask::32-little>> end)
    |> IO.iodata_to_binary()
  end

  @doc """
  TAI64N of `unix_ns` (nanoseconds since 1970): 8 bytes of seconds past
  2^62, 4 of nanoseconds, big-endian. The nanoseconds are rounded down to
  a multiple of 2^24 (about 16.8 ms), as other implementations do, so a
  handshake does not give away the sender's precise clock.
  """
  @spec tai64n(integer()) :: <<_::96>>
  def tai64n(unix_ns) do
    seconds = div(unix_ns, 1_000_000_000)
    nanos = rem(unix_ns, 1_000_000_000) &&& bnot(0xFFFFFF)
    <<0x400000000000000A + seconds::64, nanos::32>>
  end
end

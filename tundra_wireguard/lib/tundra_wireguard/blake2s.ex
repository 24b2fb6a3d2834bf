defmodule TundraWireGuard.Blake2s do
  @moduledoc """
  BLAKE2s (RFC 7693) with a key and any output length up to 32 bytes:
  WireGuard's `MAC` is keyed BLAKE2s with a 16-byte output, which OTP's
  `:crypto` (unkeyed, 32 bytes) does not offer. Native (the package's NIF),
  because the protocol's cheapest check — a handshake message's `mac1`,
  refused before any Curve25519 work — must stay cheap under a flood:
  about 0.3 µs a message, where BLAKE2s in Elixir took 30 to 75 µs.
  """

  alias TundraWireGuard.Native

  @doc "BLAKE2s of `data` (at most 4096 bytes), `outlen` bytes (1..32), keyed with `key` (0..32 bytes)."
  @spec hash(binary(), binary(), 1..32) :: binary()
  def hash(data, key \\ <<>>, outlen \\ 32)
      when is_binary(data) and is_binary(key) and byte_size(key) <= 32 and outlen in 1..32,
      do: Native.blake2s(key, data, outlen)
end

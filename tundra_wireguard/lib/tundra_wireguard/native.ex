defmodule TundraWireGuard.Native do
  @moduledoc false
  # The package's NIF (native/tundra_wireguard_nif): keyed BLAKE2s, the
  # mac1/mac2 checks and the steering of handshake messages to a socket of
  # their own. Each call takes well under a microsecond to a few (inputs
  # are bounded at 4 KB), on the calling scheduler.

  @on_load :load
  @doc false
  def load do
    path =
      :filename.join([:code.priv_dir(:tundra_wireguard), ~c"native", ~c"libtundra_wireguard_nif"])

    :erlang.load_nif(path, 0)
  end

  @doc "BLAKE2s of `data` (at most 4096 bytes), `outlen` bytes, keyed with `key`."
  @spec blake2s(binary(), binary(), 1..32) :: binary()
  def blake2s(_key, _data, _outlen), do: :erlang.nif_error(:not_loaded)

  @doc "Whether a handshake message's mac1 is the MAC under `mac1_key` of what precedes it."
  @spec mac1_valid(binary(), binary()) :: boolean()
  def mac1_valid(_message, _mac1_key), do: :erlang.nif_error(:not_loaded)

  @doc "Whether a handshake message's mac2 is the MAC under `cookie` of what precedes it."
  @spec mac2_valid(binary(), binary()) :: boolean()
  def mac2_valid(_message, _cookie), do: :erlang.nif_error(:not_loaded)

  @doc """
  Steers transport data arriving on socket fd `fd`'s port to the first
  socket of its reuseport group, every other message to the second.
  """
  @spec steer_handshakes(integer()) :: boolean()
  def steer_handshakes(_fd), do: :erlang.nif_error(:not_loaded)
end

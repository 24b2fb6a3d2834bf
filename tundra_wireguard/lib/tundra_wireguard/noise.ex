defmodule TundraWireGuard.Noise do
  @moduledoc """
  WireGuard's handshake, `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, as pure
  functions over binaries: making and consuming the initiation and the
  response, their `mac1`/`mac2`, and cookie replies. Nothing here keeps
  state between calls or looks at a clock; the caller (the interface
  process) does, and decides what a result means.

  The message layouts and the steps are the protocol page's ("Protocol &
  Cryptography", wireguard.com), in its names: `C` the chaining key, `H`
  the hash, `Q` the preshared key.
  """

  import TundraWireGuard.Crypto

  alias TundraWireGuard.Crypto

  @construction "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
  @identifier "WireGuard v1 zx2c4 Jason@zx2c4.com"
  @label_mac1 "mac1----"
  @label_cookie "cookie--"

  # C and H before anything about the peers is mixed in.
  @initial_chain :crypto.hash(:blake2s, @construction)
  @initial_hash :crypto.hash(:blake2s, @initial_chain <> @identifier)

  @typedoc "This interface's key pair and what is derived from it once."
  @type identity :: %{
          private: Crypto.key(),
          public: Crypto.key(),
          mac1_key: Crypto.key(),
          cookie_key: Crypto.key(),
          hash: Crypto.key()
        }

  @typedoc "What is derived once from a peer's public key (and ours)."
  @type peer_keys :: %{
          public: Crypto.key(),
          mac1_key: Crypto.key(),
          cookie_key: Crypto.key(),
          static_shared: Crypto.key(),
          hash: Crypto.key()
        }

  @typedoc "The initiator's state between its initiation and the response."
  @type initiation_state :: %{
          chain: Crypto.key(),
          hash: Crypto.key(),
          ephemeral: Crypto.key(),
          index: non_neg_integer()
        }

  @typedoc "A consumed initiation, as the responder needs it to respond."
  @type initiation :: %{
          peer: Crypto.key(),
          timestamp: <<_::96>>,
          remote_index: non_neg_integer(),
          remote_ephemeral: Crypto.key(),
          chain: Crypto.key(),
          hash: Crypto.key()
        }

  @typedoc "Transport keys and the other side's index for them."
  @type session_keys :: %{
          send: Crypto.key(),
          recv: Crypto.key(),
          remote_index: non_neg_integer()
        }

  @doc "The identity of a private key."
  @spec identity(Crypto.key()) :: identity()
  def identity(<<_::binary-32>> = private) do
    public = public_key(private)

    %{
      private: private,
      public: public,
      mac1_key: hash([@label_mac1, public]),
      cookie_key: hash([@label_cookie, public]),
      hash: hash([@initial_hash, public])
    }
  end

  @doc """
  What is derived once from a peer's public key, or `:error` when it is
  not a usable Curve25519 key (its shared secret with ours is zero).
  """
  @spec peer_keys(identity(), Crypto.key()) :: {:ok, peer_keys()} | :error
  def peer_keys(identity, <<_::binary-32>> = public) do
    with {:ok, shared} <- dh(identity.private, public) do
      {:ok,
       %{
         public: public,
         mac1_key: hash([@label_mac1, public]),
         cookie_key: hash([@label_cookie, public]),
         static_shared: shared,
         hash: hash([@initial_hash, public])
       }}
    end
  end

  @doc """
  An initiation to `peer` from sender index `index`, without its macs
  (116 bytes; see `seal_macs/3`), and the state to consume the response
  with. `ephemeral` is a fresh key pair, `timestamp` a TAI64N.
  """
  @spec initiation(
          identity(),
          peer_keys(),
          non_neg_integer(),
          {Crypto.key(), Crypto.key()},
          <<_::96>>
        ) ::
          {:ok, binary(), initiation_state()} | :error
  def initiation(identity, peer, index, {e_public, e_private}, timestamp) do
    [chain] = kdf(1, @initial_chain, e_public)
    h = hash([peer.hash, e_public])

    with {:ok, es} <- dh(e_private, peer.public) do
      [chain, key] = kdf(2, chain, es)
      static = seal(key, 0, identity.public, h)
      h = hash([h, static])
      [chain, key] = kdf(2, chain, peer.static_shared)
      stamp = seal(key, 0, timestamp, h)
      h = hash([h, stamp])
      body = <<1, 0, 0, 0, index::32-little, e_public::binary, static::binary, stamp::binary>>
      {:ok, body, %{chain: chain, hash: h, ephemeral: e_private, index: index}}
    end
  end

  @doc """
  Consumes an initiation (148 bytes, macs already checked): who sent it
  and what the response needs, or `:error` if it does not decrypt.
  `static_shared` gives the DH of our private key and a peer's public key
  (the caller has them computed in advance), `:error` for a stranger.
  """
  @spec consume_initiation(identity(), binary(), (Crypto.key() -> {:ok, Crypto.key()} | :error)) ::
          {:ok, initiation()} | :error
  def consume_initiation(
        identity,
        <<1, 0, 0, 0, sender::32-little, e_public::binary-32, static::binary-48, stamp::binary-28,
          _macs::binary-32>>,
        static_shared
      ) do
    [chain] = kdf(1, @initial_chain, e_public)
    h = hash([identity.hash, e_public])

    with {:ok, es} <- dh(identity.private, e_public),
         [chain, key] = kdf(2, chain, es),
         {:ok, peer} <- open(key, 0, static, h),
         h = hash([h, static]),
         {:ok, ss} <- static_shared.(peer),
         [chain, key] = kdf(2, chain, ss),
         {:ok, timestamp} <- open(key, 0, stamp, h) do
      {:ok,
       %{
         peer: peer,
         timestamp: timestamp,
         remote_index: sender,
         remote_ephemeral: e_public,
         chain: chain,
         hash: hash([h, stamp])
       }}
    end
  end

  def consume_initiation(_identity, _message, _static_shared), do: :error

  @doc """
  The response to a consumed initiation from sender index `index`, without
  its macs (60 bytes), and the responder's transport keys.
  """
  @spec response(initiation(), Crypto.key(), non_neg_integer(), {Crypto.key(), Crypto.key()}) ::
          {:ok, binary(), session_keys()} | :error
  def response(initiation, psk, index, {e_public, e_private}) do
    [chain] = kdf(1, initiation.chain, e_public)
    h = hash([initiation.hash, e_public])

    with {:ok, ee} <- dh(e_private, initiation.remote_ephemeral),
         [chain] = kdf(1, chain, ee),
         {:ok, se} <- dh(e_private, initiation.peer) do
      [chain] = kdf(1, chain, se)
      [chain, tau, key] = kdf(3, chain, psk)
      h = hash([h, tau])
      empty = seal(key, 0, <<>>, h)
      [initiator_send, initiator_recv] = kdf(2, chain, <<>>)

      body =
        <<2, 0, 0, 0, index::32-little, initiation.remote_index::32-little, e_public::binary,
          empty::binary>>

      {:ok, body,
       %{send: initiator_recv, recv: initiator_send, remote_index: initiation.remote_index}}
    end
  end

  @doc """
  Consumes a response (92 bytes, macs checked, its receiver index already
  matched to `state`): the initiator's transport keys, or `:error`.
  """
  @spec consume_response(identity(), initiation_state(), Crypto.key(), binary()) ::
          {:ok, session_keys()} | :error
  def consume_response(
        identity,
        state,
        psk,
        <<2, 0, 0, 0, sender::32-little, _receiver::32-little, e_public::binary-32,
          empty::binary-16, _macs::binary-32>>
      ) do
    [chain] = kdf(1, state.chain, e_public)
    h = hash([state.hash, e_public])

    with {:ok, ee} <- dh(state.ephemeral, e_public),
         [chain] = kdf(1, chain, ee),
         {:ok, se} <- dh(identity.private, e_public),
         [chain] = kdf(1, chain, se),
         [chain, tau, key] = kdf(3, chain, psk),
         h = hash([h, tau]),
         {:ok, <<>>} <- open(key, 0, empty, h) do
      [send, recv] = kdf(2, chain, <<>>)
      {:ok, %{send: send, recv: recv, remote_index: sender}}
    else
      _ -> :error
    end
  end

  def consume_response(_identity, _state, _psk, _message), do: :error

  @doc """
  A handshake message with its `mac1` (keyed by the receiver's
  `mac1_key`) and `mac2` (by `cookie`, zeros without one) appended; and
  the `mac1`, which a cookie reply to it will be bound to.
  """
  @spec seal_macs(binary(), Crypto.key(), binary() | nil) :: {binary(), binary()}
  def seal_macs(body, mac1_key, cookie) do
    mac1 = mac(mac1_key, body)
    mac2 = if cookie, do: mac(cookie, [body, mac1]), else: <<0::128>>
    {<<body::binary, mac1::binary, mac2::binary>>, mac1}
  end

  @doc "Whether a handshake message's `mac1` is ours (keyed by our `mac1_key`)."
  @spec mac1_valid?(binary(), Crypto.key()) :: boolean()
  def mac1_valid?(message, mac1_key) when byte_size(message) >= 32,
    do: TundraWireGuard.Native.mac1_valid(message, mac1_key)

  def mac1_valid?(_message, _mac1_key), do: false

  @doc "Whether a handshake message's `mac2` is the one `cookie` makes."
  @spec mac2_valid?(binary(), binary()) :: boolean()
  def mac2_valid?(message, cookie) when byte_size(message) >= 32 and byte_size(cookie) <= 32,
    do: TundraWireGuard.Native.mac2_valid(message, cookie)

  def mac2_valid?(_message, _cookie), do: false

  @doc "The `mac1` a handshake message carries."
  @spec mac1(binary()) :: binary()
  def mac1(message), do: binary_part(message, byte_size(message) - 32, 16)

  @doc """
  A cookie reply to a handshake message that carried sender index
  `receiver` and `mac1`: `cookie` sealed under our `cookie_key` with a
  random nonce (64 bytes).
  """
  @spec cookie_reply(identity(), non_neg_integer(), binary(), binary()) :: binary()
  def cookie_reply(identity, receiver, mac1, cookie) do
    nonce = :crypto.strong_rand_bytes(24)
    sealed = xseal(identity.cookie_key, nonce, cookie, mac1)
    <<3, 0, 0, 0, receiver::32-little, nonce::binary, sealed::binary>>
  end

  @doc """
  The cookie in a cookie reply from `peer` to our message that carried
  `mac1`, or `:error`.
  """
  @spec consume_cookie_reply(peer_keys(), binary(), binary()) :: {:ok, binary()} | :error
  def consume_cookie_reply(
        peer,
        <<3, 0, 0, 0, _receiver::32, nonce::binary-24, sealed::binary-32>>,
        mac1
      ) do
    case xopen(peer.cookie_key, nonce, sealed, mac1) do
      {:ok, <<_::binary-16>> = cookie} -> {:ok, cookie}
      _ -> :error
    end
  end

  def consume_cookie_reply(_peer, _message, _mac1), do: :error
end

defmodule TundraWireGuard.CryptoTest do
  # The primitives against their published test vectors.
  use ExUnit.Case, async: true

  import Bitwise

  alias TundraWireGuard.{Blake2s, Crypto}

  defp h(hex), do: hex |> String.replace(~r/[\s:]/, "") |> Base.decode16!(case: :mixed)

  describe "BLAKE2s (RFC 7693)" do
    # Appendix E's self-test: a hash of 48 hashes, keyed and unkeyed, of
    # every output length in {16, 20, 28, 32} over inputs of 0 to 1024
    # bytes.
    test "RFC 7693's self-test" do
      results =
        for outlen <- [16, 20, 28, 32], inlen <- [0, 3, 64, 65, 255, 1024] do
          input = selftest_seq(inlen, inlen)
          key = selftest_seq(outlen, outlen)
          [Blake2s.hash(input, <<>>, outlen), Blake2s.hash(input, key, outlen)]
        end

      assert Blake2s.hash(IO.iodata_to_binary(results)) ==
               h("6A411F08CE25ADCDFB02ABA641451CEC53C598B24F4FC787FBDC88797F4C1DFE")
    end

    test "RFC 7693's example, BLAKE2s-256 of \"abc\"" do
      assert Blake2s.hash("abc") ==
               h("508C5E8C327C14E2E1A72BA34EEB452F37458B209ED63A294D999B4C86675982")
    end

    test "unkeyed, as OTP's :crypto computes it, for lengths across block edges" do
      for length <- Enum.to_list(0..130) ++ [255, 256, 257, 1000] do
        data = :crypto.strong_rand_bytes(length)
        assert Blake2s.hash(data) == :crypto.hash(:blake2s, data)
      end
    end

    test "the keyed known answer of BLAKE2's reference (key 00..1f, empty input)" do
      key = :binary.list_to_bin(Enum.to_list(0..31))

      assert Blake2s.hash(<<>>, key) ==
               h("48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49")
    end

    # The Fibonacci sequence RFC 7693's self-test hashes.
    defp selftest_seq(length, seed) do
      {bytes, _} =
        Enum.map_reduce(1..length//1, {0xDEAD4BAD * seed &&& 0xFFFFFFFF, 1}, fn _, {a, b} ->
          t = a + b &&& 0xFFFFFFFF
          {t >>> 24, {b, t}}
        end)

      :binary.list_to_bin(bytes)
    end
  end

  describe "the cheap check" do
    test "refusing a bad mac1 costs a native call, not BLAKE2s in Elixir" do
      # Work counted in reductions (the VM's count, not a clock): in
      # Elixir, one keyed BLAKE2s of a 116-byte body took thousands.
      key = :crypto.strong_rand_bytes(32)
      junk = for _ <- 1..1_000, do: <<1, 0, 0, 0>> <> :crypto.strong_rand_bytes(144)
      {:reductions, before} = Process.info(self(), :reductions)
      refute Enum.any?(junk, &TundraWireGuard.Noise.mac1_valid?(&1, key))
      {:reductions, later} = Process.info(self(), :reductions)
      assert later - before < 20_000
    end

    test "a right mac1 and mac2 pass, a changed byte does not" do
      alias TundraWireGuard.Noise
      mac1_key = :crypto.strong_rand_bytes(32)
      cookie = :crypto.strong_rand_bytes(16)
      {message, _mac1} = Noise.seal_macs(:crypto.strong_rand_bytes(116), mac1_key, cookie)
      assert Noise.mac1_valid?(message, mac1_key)
      assert Noise.mac2_valid?(message, cookie)
      <<head::binary-10, byte, tail::binary>> = message
      changed = <<head::binary, Bitwise.bxor(byte, 1), tail::binary>>
      refute Noise.mac1_valid?(changed, mac1_key)
      refute Noise.mac2_valid?(changed, cookie)
    end
  end

  describe "HChaCha20 and XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03)" do
    test "§2.2.1: the HChaCha20 test vector" do
      key = :binary.list_to_bin(Enum.to_list(0..31))
      nonce = h("000000090000004a0000000031415927")

      assert Crypto.hchacha20(key, nonce) ==
               h("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    end

    test "A.3.1: the AEAD_XChaCha20_Poly1305 test vector, both ways" do
      plaintext =
        h("""
        4c616469657320616e642047656e746c656d656e206f662074686520636c6173
        73206f66202739393a204966204920636f756c64206f6666657220796f75206f
        6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73
        637265656e20776f756c642062652069742e
        """)

      aad = h("50515253c0c1c2c3c4c5c6c7")
      key = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
      nonce = h("404142434445464748494a4b4c4d4e4f5051525354555657")

      ciphertext =
        h("""
        bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
        731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
        2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
        21f9664c97637da9768812f615c68b13b52e
        """)

      tag = h("c0875924c1c7987947deafd8780acf49")

      assert Crypto.xseal(key, nonce, plaintext, aad) == ciphertext <> tag
      assert Crypto.xopen(key, nonce, ciphertext <> tag, aad) == {:ok, plaintext}

      # One flipped bit anywhere, or another AAD, and it is not authentic.
      sealed = ciphertext <> tag

      for bit <- [0, 7, 100, bit_size(sealed) - 1] do
        <<before::bitstring-size(bit), b::1, rest::bitstring>> = sealed

        assert Crypto.xopen(key, nonce, <<before::bitstring, 1 - b::1, rest::bitstring>>, aad) ==
                 :error
      end

      assert Crypto.xopen(key, nonce, sealed, "other") == :error
      assert Crypto.xopen(key, nonce, binary_part(sealed, 0, 15), aad) == :error
    end
  end

  describe "X25519 (RFC 7748)" do
    test "§5.2: the two scalar multiplication vectors" do
      assert Crypto.dh(
               h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
               h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
             ) ==
               {:ok, h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")}

      assert Crypto.dh(
               h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
               h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
             ) ==
               {:ok, h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")}
    end

    test "§6.1: Alice's and Bob's keys and their shared secret" do
      alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
      bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
      alice_public = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
      bob_public = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
      shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

      assert Crypto.public_key(alice) == alice_public
      assert Crypto.public_key(bob) == bob_public
      assert Crypto.dh(alice, bob_public) == {:ok, shared}
      assert Crypto.dh(bob, alice_public) == {:ok, shared}
    end

    test "a public key of small order gives no shared secret" do
      {_, private} = Crypto.generate()
      # The point of order 1 (u = 0) and the order-8 point u = 1.
      assert Crypto.dh(private, <<0::256>>) == :error
      assert Crypto.dh(private, <<1, 0::248>>) == :error
    end
  end

  describe "the rest of WireGuard's symbols" do
    test "AEAD is ChaCha20-Poly1305 (RFC 8439 §2.8.2) with the counter as the nonce's last 64 bits" do
      # RFC 8439's vector has nonce 07000000 4041424344454647: in
      # WireGuard's form that is no counter; check the layout with
      # :crypto directly, and that seal/open are inverse and bound to
      # counter and AAD.
      key = :crypto.strong_rand_bytes(32)
      sealed = Crypto.seal(key, 0x0102030405060708, "packet", "aad")

      {ct, tag} =
        :crypto.crypto_one_time_aead(
          :chacha20_poly1305,
          key,
          <<0::32, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01>>,
          "packet",
          "aad",
          true
        )

      assert sealed == ct <> tag
      assert Crypto.open(key, 0x0102030405060708, sealed, "aad") == {:ok, "packet"}
      assert Crypto.open(key, 0x0102030405060709, sealed, "aad") == :error
      assert Crypto.open(key, 0x0102030405060708, sealed, "aae") == :error
      assert Crypto.open(key, 0, <<1, 2, 3>>, "") == :error
    end

    test "HMAC is HMAC-BLAKE2s and KDF its HKDF chain" do
      key = :crypto.strong_rand_bytes(32)
      input = :crypto.strong_rand_bytes(32)
      prk = hmac_blake2s(key, input)
      t1 = hmac_blake2s(prk, <<1>>)
      t2 = hmac_blake2s(prk, t1 <> <<2>>)
      t3 = hmac_blake2s(prk, t2 <> <<3>>)

      assert Crypto.kdf(1, key, input) == [t1]
      assert Crypto.kdf(2, key, input) == [t1, t2]
      assert Crypto.kdf(3, key, input) == [t1, t2, t3]
    end

    # HMAC (RFC 2104) written out over BLAKE2s's 64-byte block.
    defp hmac_blake2s(key, data) do
      key = key <> :binary.copy(<<0>>, 64 - byte_size(key))
      inner = :crypto.hash(:blake2s, [:crypto.exor(key, :binary.copy(<<0x36>>, 64)), data])
      :crypto.hash(:blake2s, [:crypto.exor(key, :binary.copy(<<0x5C>>, 64)), inner])
    end

    test "TAI64N: seconds past 2^62 + 10, big-endian, nanoseconds whitened" do
      stamp = Crypto.tai64n(1_700_000_000 * 1_000_000_000 + 123_456_789)
      <<seconds::64, nanos::32>> = stamp
      assert seconds == 0x400000000000000A + 1_700_000_000
      assert nanos <= 123_456_789 and (nanos &&& 0xFFFFFF) == 0
      # Later is greater, as a byte string (what the responder compares).
      assert Crypto.tai64n(1_700_000_001 * 1_000_000_000) > stamp
    end
  end
end

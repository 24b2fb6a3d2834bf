defmodule Tundra.CreateOptionsTest do
  # create/2's options have one home (Tundra.CreateOptions): its table
  # gives the Elixir check, the typespec and the docs; here the NIF's
  # decoder is held to it, and each documented range is checked at both
  # ends. No device is made: through a server that is not there, an
  # accepted configuration fails with :enoent, a refused one first.
  use ExUnit.Case, async: true

  alias Tundra.CreateOptions

  @nowhere "/nonexistent/tundra-options-test.sock"

  defp through_nowhere(address, opts),
    do: Tundra.create(address, [via: :server, socket_path: @nowhere, timeout: 200] ++ opts)

  test "the NIF decodes exactly the map the table makes" do
    {:ok, args, _start} =
      CreateOptions.parse("10.0.0.2", via: :server, socket_path: @nowhere, timeout: 200)

    assert Enum.sort(Map.keys(args)) == Enum.sort(CreateOptions.nif_keys())
    assert {:error, _} = Tundra.Nif.create(args)

    for key <- Map.keys(args) do
      assert_raise ArgumentError, fn -> Tundra.Nif.create(Map.delete(args, key)) end
    end
  end

  test "every option is documented, with its name, in create/2's docs" do
    docs = CreateOptions.docs()
    for key <- CreateOptions.keys(), do: assert(docs =~ "* `#{inspect(key)}` - ")
  end

  test "each documented range, at both ends" do
    accepted = {:error, :enoent}

    ranges = [
      # {address, option, first, last}
      {"10.0.0.2", :mtu, 68, 65_535},
      {"fd00::2", :mtu, 1280, 65_535},
      {"10.0.0.2", :prefix, 0, 32},
      {"fd00::2", :prefix, 0, 128},
      {"10.0.0.2", :queues, 1, 64},
      {"10.0.0.2", :active, -32_768, 32_767}
    ]

    for {address, key, first, last} <- ranges do
      for value <- [first, last] do
        assert through_nowhere(address, [{key, value}]) == accepted, "#{key}: #{value}"
      end

      for value <- [first - 1, last + 1] do
        assert through_nowhere(address, [{key, value}]) ==
                 {:error, {:invalid_option, {key, value}}},
               "#{key}: #{value}"
      end
    end

    # A timeout of 1 ms or more (or :infinity); 0 is not one.
    assert Tundra.create("10.0.0.2", via: :server, socket_path: @nowhere, timeout: 1) == accepted

    assert Tundra.create("10.0.0.2", via: :server, socket_path: @nowhere, timeout: 0) ==
             {:error, {:invalid_option, {:timeout, 0}}}

    # Names of 1 to 15 characters.
    assert through_nowhere("10.0.0.2", name: String.duplicate("t", 15)) == accepted

    for name <- ["", String.duplicate("t", 16)] do
      assert through_nowhere("10.0.0.2", name: name) == {:error, {:invalid_option, {:name, name}}}
    end

    # Owners and groups from 0 (persistent devices, direct only).
    for key <- [:owner, :group] do
      assert {:ok, _, _} = CreateOptions.parse("10.0.0.2", [{key, 0}, persist: true])

      assert CreateOptions.parse("10.0.0.2", [{key, -1}, persist: true]) ==
               {:error, {:invalid_option, {key, -1}}}
    end
  end
end

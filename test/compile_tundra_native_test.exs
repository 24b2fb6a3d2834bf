defmodule Mix.Tasks.Compile.TundraNativeTest do
  # The Mix compiler in mix.exs: which file cargo makes on each OS. The
  # build itself is tested by test/package_test.exs.
  use ExUnit.Case, async: true
  alias Mix.Tasks.Compile.TundraNative

  test "cargo's library is a .so on Linux and a .dylib on macOS" do
    assert TundraNative.built_library({:unix, :linux}) == "libtundra_nif.so"
    assert TundraNative.built_library({:unix, :darwin}) == "libtundra_nif.dylib"
  end

  test "other systems are refused with a message, not a missing file" do
    assert_raise Mix.Error, ~r/Linux and macOS/, fn ->
      TundraNative.built_library({:win32, :nt})
    end
  end
end

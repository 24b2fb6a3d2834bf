defmodule Tundra.Nif do
  @moduledoc false
  # Stubs of the Rust NIF (native/tundra_nif). Arguments arrive already
  # validated by Tundra; the NIF checks again what only it can check.

  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:tundra), ~c"native/libtundra_nif")
    :erlang.load_nif(path, 0)
  end

  def create(_args), do: :erlang.nif_error(:nif_not_loaded)
  def adopt(_fd, _dup), do: :erlang.nif_error(:nif_not_loaded)
  def recv(_ref, _length), do: :erlang.nif_error(:nif_not_loaded)
  def recv_many(_ref, _count), do: :erlang.nif_error(:nif_not_loaded)
  def send(_ref, _data), do: :erlang.nif_error(:nif_not_loaded)
  def send_many(_ref, _packets), do: :erlang.nif_error(:nif_not_loaded)
  def cancel(_ref, _op), do: :erlang.nif_error(:nif_not_loaded)
  def close(_ref), do: :erlang.nif_error(:nif_not_loaded)
  def controlling_process(_ref, _pid), do: :erlang.nif_error(:nif_not_loaded)
  def info(_ref), do: :erlang.nif_error(:nif_not_loaded)
end

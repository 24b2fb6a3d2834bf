defmodule Tundra.Nif do
  @moduledoc false
  # Stubs of the Rust NIF (native/tundra_nif). Arguments arrive already
  # validated by Tundra; the NIF checks again what only it can check.

  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:tundra), ~c"native/libtundra_nif")
    :erlang.load_nif(path, 0)
  end

  @typep select :: {:select, Tundra.select_info()}
  @typep refused :: Tundra.use_error()

  @spec create(map()) ::
          {:ok, {reference() | [reference(), ...], String.t()}}
          | {:error, {:invalid_option, atom()} | Tundra.posix()}
  def create(_args), do: :erlang.nif_error(:nif_not_loaded)

  @spec adopt(non_neg_integer(), boolean()) ::
          {:ok, {reference(), String.t()}} | {:error, :not_tun | Tundra.posix()}
  def adopt(_fd, _dup), do: :erlang.nif_error(:nif_not_loaded)

  @spec attach(String.t(), pos_integer() | nil) ::
          {:ok, {reference() | [reference(), ...], String.t()}}
          | {:error, {:invalid_option, :name} | Tundra.posix()}
  def attach(_name, _queues), do: :erlang.nif_error(:nif_not_loaded)

  @spec change(reference(), Tundra.Changes.change(), String.t() | nil, pos_integer() | nil) ::
          :ok | {:error, {:invalid_option, atom()} | refused() | Tundra.posix()}
  def change(_ref, _change, _socket_path, _timeout), do: :erlang.nif_error(:nif_not_loaded)

  # Link events go to the device's reader (see Tundra.Reader).
  @spec link_events(reference(), boolean()) :: :ok | {:error, refused() | Tundra.posix()}
  def link_events(_ref, _on), do: :erlang.nif_error(:nif_not_loaded)

  @spec recv(reference(), non_neg_integer()) ::
          {:ok, binary()} | select() | {:error, refused() | Tundra.posix()}
  def recv(_ref, _length), do: :erlang.nif_error(:nif_not_loaded)

  @spec recv_many(reference(), pos_integer()) ::
          {:ok, [binary(), ...]} | select() | {:error, refused() | Tundra.posix()}
  def recv_many(_ref, _count), do: :erlang.nif_error(:nif_not_loaded)

  @spec recv_segments(reference()) ::
          {:ok, {binary(), pos_integer()}} | select() | {:error, refused() | Tundra.posix()}
  def recv_segments(_ref), do: :erlang.nif_error(:nif_not_loaded)

  # `{:more, rest}`: the call's time was up with `rest` still to write.
  @spec send_segments(reference(), binary(), pos_integer()) ::
          :ok
          | {:more, binary()}
          | {:select, {Tundra.select_info(), binary()}}
          | {:error, {Tundra.posix(), binary()} | refused()}
  def send_segments(_ref, _data, _size), do: :erlang.nif_error(:nif_not_loaded)

  # `:flatten`: the iodata must be flattened before the NIF writes it.
  @spec send(reference(), iodata()) ::
          :ok | :flatten | select() | {:error, refused() | Tundra.posix()}
  def send(_ref, _data), do: :erlang.nif_error(:nif_not_loaded)

  # `{:more, rest}`: the call's time was up with `rest` still to go;
  # `{:flatten, rest}`: the first of `rest` must be flattened first.
  @spec send_many(reference(), [iodata()]) ::
          :ok
          | {:more, [iodata(), ...]}
          | {:flatten, [iodata(), ...]}
          | {:select, {Tundra.select_info(), [iodata(), ...]}}
          | {:error, {Tundra.posix(), [iodata(), ...]} | refused()}
  def send_many(_ref, _packets), do: :erlang.nif_error(:nif_not_loaded)

  # `:invalid`: `handle` is not that of the select pending for `op`.
  @spec cancel(reference(), :recv | :send, reference()) :: :ok | :invalid | {:error, refused()}
  def cancel(_ref, _op, _handle), do: :erlang.nif_error(:nif_not_loaded)

  # `{:ok, was_active}`.
  @spec close(reference()) :: {:ok, boolean()} | {:error, refused()}
  def close(_ref), do: :erlang.nif_error(:nif_not_loaded)

  # The active mode as the NIF passes it: {:off | :once | :always, 0} or
  # {:count, n}; a change also as {:add, n}.
  @typep mode :: {:off | :once | :always, 0} | {:count, pos_integer()}

  @spec set_active(reference(), :off | :once | :always | :add | :count, integer()) ::
          {:ok, mode()} | {:error, refused() | Tundra.posix()}
  def set_active(_ref, _mode, _n), do: :erlang.nif_error(:nif_not_loaded)

  # `names`: offloads by name (tundra_core's Offloads knows which).
  @spec set_offload(reference(), [atom()]) ::
          :ok | {:error, {:invalid_option, :offload} | refused() | Tundra.posix()}
  def set_offload(_ref, _names), do: :erlang.nif_error(:nif_not_loaded)

  # Active delivery as one {:tundra_batch, dev, packets} per read batch.
  @spec set_active_batch(reference(), boolean()) :: :ok | {:error, refused()}
  def set_active_batch(_ref, _on), do: :erlang.nif_error(:nif_not_loaded)

  @spec reader(reference()) :: {:ok, pid() | nil} | {:error, refused()}
  def reader(_ref), do: :erlang.nif_error(:nif_not_loaded)

  @spec set_reader(reference(), pid()) :: :ok | {:error, refused()}
  def set_reader(_ref, _pid), do: :erlang.nif_error(:nif_not_loaded)

  # Called by the device's reader process (Tundra.Reader).
  @spec deliver(reference()) :: :ok | :more | :stop
  def deliver(_ref), do: :erlang.nif_error(:nif_not_loaded)

  @spec take_active(reference()) :: {:ok, mode()} | {:error, refused()}
  def take_active(_ref), do: :erlang.nif_error(:nif_not_loaded)

  # Hands over and restores the taken mode for the new owner.
  @spec controlling_process(reference(), pid(), :off | :once | :always | :count, integer()) ::
          :ok | {:error, refused() | :esrch | Tundra.posix()}
  def controlling_process(_ref, _pid, _mode, _n), do: :erlang.nif_error(:nif_not_loaded)

  # As Tundra.info/1 returns it, but `:mac` as its 6 bytes and `:active`
  # as set_active/3 returns it.
  @spec info(reference()) :: {:ok, map()} | {:error, :closed | Tundra.posix()}
  def info(_ref), do: :erlang.nif_error(:nif_not_loaded)

  @spec getopts(reference()) ::
          {:ok, {mode(), boolean(), false | [atom()], boolean(), non_neg_integer()}}
          | {:error, :closed}
  def getopts(_ref), do: :erlang.nif_error(:nif_not_loaded)

  @spec set_busy_poll(reference(), 0..200) :: :ok | {:error, refused()}
  def set_busy_poll(_ref, _micros), do: :erlang.nif_error(:nif_not_loaded)
end

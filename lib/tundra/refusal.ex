defmodule Tundra.Refusal do
  @moduledoc false
  # A failure whose POSIX atom cannot tell its cause (the NIF returns
  # `{:error, {:explained, posix, why}}`: no server at the socket tried,
  # not in its group, not logged in again, an address not delegated, a
  # name outside the server's prefix, direct creation without privilege)
  # reaches the caller as `{:error, posix}`, the atom programs match on;
  # the cause is logged, as a warning from the calling process, for the
  # person who must act on it. See `Tundra.format_error/1`.

  require Logger

  @doc "`result`, its explanation (if any) logged for `what` (such as `create/2`)."
  @spec plain(term(), String.t()) :: term()
  def plain({:error, {:explained, posix, why}}, what) do
    Logger.warning("Tundra #{what}: #{posix}: #{why}", tundra: posix)
    {:error, posix}
  end

  def plain(result, _what), do: result
end

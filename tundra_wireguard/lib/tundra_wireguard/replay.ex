defmodule TundraWireGuard.Replay do
  @moduledoc """
  The sliding window of received transport counters (RFC 6479's idea, a
  bitmap behind the greatest counter seen): a counter is accepted once,
  and not at all when it is older than the window. Checked before a
  packet is decrypted (cheap), updated only after it proved authentic.
  """

  import Bitwise

  @window 2048
  @mask (1 <<< @window) - 1

  @typedoc """
  `{next, seen}`: one past the greatest counter accepted (0: none yet),
  and a bitmap whose bit `i` says counter `next - 1 - i` was accepted.
  """
  @type t :: {non_neg_integer(), non_neg_integer()}

  @doc "The window of a new session."
  @spec new() :: {0, 0}
  def new, do: {0, 0}

  @doc "The window's size, in counters."
  @spec size() :: 2048
  def size, do: @window

  @doc "Whether `counter` may still be accepted (new, and not too old)."
  @spec fresh?(t(), non_neg_integer()) :: boolean()
  def fresh?({next, _seen}, counter) when counter >= next, do: true
  def fresh?({next, _seen}, counter) when next - 1 - counter >= @window, do: false
  def fresh?({next, seen}, counter), do: (seen >>> (next - 1 - counter) &&& 1) == 0

  @doc "Marks `counter` (which `fresh?/2` accepted) as seen."
  @spec accept(t(), non_neg_integer()) :: t()
  def accept({next, seen}, counter) when counter >= next do
    shift = counter + 1 - next
    # A jump past the whole window forgets it (and never builds a huge
    # integer out of a counter near 2^64).
    seen = if shift >= @window, do: 1, else: (seen <<< shift ||| 1) &&& @mask
    {counter + 1, seen}
  end

  def accept({next, seen}, counter), do: {next, seen ||| 1 <<< (next - 1 - counter)}
end

defmodule Tundra.Wait do
  @moduledoc false
  # How the blocking forms of the I/O calls wait, as `:socket`'s do: the
  # `:nowait` call again after each select notification, until it
  # completes or the deadline passes (then the select is cancelled and a
  # notification that raced in is flushed). One loop for every call.

  alias Tundra.Nif

  @typedoc "When a blocking call gives up: a monotonic time in ms, or never."
  @type deadline :: integer() | :infinity

  @doc "A timeout a blocking call takes: milliseconds or `:infinity`."
  defguard is_timeout(timeout)
           when timeout == :infinity or (is_integer(timeout) and timeout >= 0)

  @spec deadline(non_neg_integer() | :infinity) :: deadline()
  def deadline(:infinity), do: :infinity
  def deadline(timeout) when is_integer(timeout), do: now() + timeout

  @doc "Whether `deadline` has passed."
  @spec expired?(deadline()) :: boolean()
  def expired?(:infinity), do: false
  def expired?(deadline), do: now() >= deadline

  @doc """
  Calls `call.(state)` until it completes. `{:select, info}` waits for
  that select's notification and calls again with the same state;
  `{:select, {info, rest}}` (a partial send) with `rest`. When the
  deadline passes first: `{:error, :timeout}`, or `{:error, {:timeout,
  rest}}` for a partial send. Any other result is the call's.
  """
  @spec until(Tundra.device(), state, deadline(), (state -> result)) ::
          result | {:error, :timeout | {:timeout, state}}
        when state: term(), result: term()
  def until(device, state, deadline, call) do
    case call.(state) do
      {:select, {{:select_info, _, _} = info, rest}} ->
        case await_select(device, info, deadline) do
          :ok -> until(device, rest, deadline, call)
          {:error, :timeout} -> {:error, {:timeout, rest}}
        end

      {:select, {:select_info, _, _} = info} ->
        with :ok <- await_select(device, info, deadline), do: until(device, state, deadline, call)

      result ->
        result
    end
  end

  # Waits for the notification of the select `info`; when the deadline
  # passes first, cancels it (flushing a notification that raced in).
  defp await_select(device, {:select_info, _op, handle} = info, deadline) do
    receive do
      {:"$socket", ^device, :select, ^handle} -> :ok
    after
      remaining(deadline) ->
        _ = cancel(device, info)
        {:error, :timeout}
    end
  end

  @doc """
  Cancels the select `info` of `device` and removes its notification if it
  already arrived (see `Tundra.cancel/2`).
  """
  @spec cancel(Tundra.device(), Tundra.select_info()) :: :ok | {:error, Tundra.cancel_error()}
  def cancel({:"$tundra", ref} = device, {:select_info, op, handle} = info) do
    case Nif.cancel(ref, op, handle) do
      :ok ->
        receive do
          {:"$socket", ^device, :select, ^handle} -> :ok
        after
          0 -> :ok
        end

      :invalid ->
        {:error, {:invalid, info}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now(), 0)
end

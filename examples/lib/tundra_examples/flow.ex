defmodule TundraExamples.Flow do
  @moduledoc """
  What the packet servers in these examples share: reading a device a
  batch at a time, answering each batch with one `Tundra.send_many/3`,
  and back-pressure: when the device cannot take the answers, the rest
  wait for its select notification and nothing new is read until they
  are sent.

  Two ways of reading, both in the shape the `Tundra` docs describe:

    * the drain loop (the default of the examples: the fastest, measured
      by `make bench`): on each `{:"$socket", device, :select, _}` call
      `drain/2`, which reads with `Tundra.recv_many/3` until the device
      has nothing left and arms the next select;
    * active mode (`active: n`): on `{:tundra, device, packet}` take the
      waiting packets with `batch/2` and answer them with `reply/2`; on
      `{:tundra_passive, device}` call `ran_out/1`, which asks for the
      next count once every answer is sent, so the mailbox never holds
      more than one count of packets.
  """

  defstruct [:device, count: 64, unsent: [], waiting_for_more: false, answered: 0]

  @typedoc "A device's flow; `answered` counts the answers given so far."
  @type t :: %__MODULE__{
          device: Tundra.device(),
          count: pos_integer(),
          unsent: [iodata()],
          waiting_for_more: boolean(),
          answered: non_neg_integer()
        }

  @typedoc "Turns a batch of packets into the packets to send back."
  @type handler :: ([binary()] -> [iodata()])

  @doc "A flow for `device`, read `count` packets at a time."
  @spec new(Tundra.device(), pos_integer()) :: t()
  def new(device, count), do: %__MODULE__{device: device, count: count}

  @doc """
  The drain loop: reads and answers (with `handler`) until the device has
  nothing left, which arms its select, or cannot take more answers.
  `{:error, reason}` when the device can no longer be read (its interface
  was deleted, or it was closed).
  """
  @spec drain(t(), handler()) :: {:ok, t()} | {:error, term()}
  def drain(%__MODULE__{unsent: [_ | _]} = flow, _handler), do: {:ok, flow}

  def drain(flow, handler) do
    case Tundra.recv_many(flow.device, flow.count, :nowait) do
      {:ok, packets} -> drain(reply(flow, handler.(packets)), handler)
      {:select, _info} -> {:ok, flow}
      {:error, reason} -> {:error, reason}
    end
  end

  @doc """
  Active mode: `first` and the device's packets already waiting in the
  mailbox after it, in order, at most one count.
  """
  @spec batch(t(), binary()) :: [binary(), ...]
  def batch(%__MODULE__{device: device, count: count}, first),
    do: take_waiting(device, [first], count - 1)

  defp take_waiting(_device, taken, 0), do: Enum.reverse(taken)

  defp take_waiting(device, taken, more) do
    receive do
      {:tundra, ^device, packet} -> take_waiting(device, [packet | taken], more - 1)
    after
      0 -> Enum.reverse(taken)
    end
  end

  @doc """
  Sends `answers` (after any left from before). What the device cannot
  take now waits for its select; a packet the kernel refuses is dropped,
  as a router would drop it.
  """
  @spec reply(t(), [iodata()]) :: t()
  def reply(flow, answers) do
    flow = %{flow | answered: flow.answered + length(answers)}

    case send_all(flow.device, flow.unsent ++ answers) do
      :ok -> ask_for_more(%{flow | unsent: []})
      {:wait, unsent} -> %{flow | unsent: unsent}
    end
  end

  @doc "Active mode: the count ran out; ask for the next, unless backed up."
  @spec ran_out(t()) :: t()
  def ran_out(flow), do: ask_for_more(%{flow | waiting_for_more: true})

  @doc """
  A select notification: send what was left; in the drain loop, then go
  on reading (with `handler`).
  """
  @spec selected(t(), handler() | nil) :: {:ok, t()} | {:error, term()}
  def selected(flow, nil), do: {:ok, reply(flow, [])}
  def selected(flow, handler), do: drain(reply(flow, []), handler)

  defp send_all(_device, []), do: :ok

  defp send_all(device, packets) do
    case Tundra.send_many(device, packets, :nowait) do
      :ok -> :ok
      {:select, {_info, unsent}} -> {:wait, unsent}
      {:error, {_refused, [_ | rest]}} -> send_all(device, rest)
      # Closed under us: the next read says so.
      {:error, _reason} -> :ok
    end
  end

  defp ask_for_more(%{waiting_for_more: true, unsent: []} = flow) do
    _ = Tundra.setopts(flow.device, active: flow.count)
    %{flow | waiting_for_more: false}
  end

  defp ask_for_more(flow), do: flow
end

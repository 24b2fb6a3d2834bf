defmodule Tundra.Send do
  @moduledoc false
  # What the write NIFs leave to Elixir: iodata they do not write as it is
  # is flattened here, by the VM's yielding BIFs, after its size is known
  # to fit; a batch call that ran out of its time slice (`{:more, rest}`,
  # having written at least one packet) is called again with the rest, the
  # VM preempting this loop as any busy process, until the caller's
  # deadline passes.

  alias Tundra.{Nif, Wait}

  # The most bytes a packet may have (an IP length field's largest value).
  @max_packet 65_535

  @doc "One packet (`Tundra.send/3` without waiting)."
  @spec packet(reference(), iodata()) ::
          :ok | {:select, Tundra.select_info()} | {:error, Tundra.send_error()}
  def packet(ref, data) do
    case Nif.send(ref, data) do
      :flatten -> flattened(ref, data)
      result -> result
    end
  end

  defp flattened(ref, data) do
    if IO.iodata_length(data) > @max_packet do
      {:error, :emsgsize}
    else
      case Nif.send(ref, IO.iodata_to_binary(data)) do
        # A binary is one piece: never asked to be flattened.
        :flatten -> {:error, :einval}
        result -> result
      end
    end
  end

  @doc "A list of packets (`Tundra.send_many/3` without waiting)."
  @spec many(reference(), [iodata()], Wait.deadline()) ::
          :ok | {:select, {Tundra.select_info(), [iodata()]}} | {:error, Tundra.send_many_error()}
  def many(ref, packets, deadline) do
    case Nif.send_many(ref, packets) do
      {:more, rest} ->
        if Wait.expired?(deadline),
          do: {:error, {:timeout, rest}},
          else: many(ref, rest, deadline)

      {:flatten, [packet | rest] = unsent} ->
        if IO.iodata_length(packet) > @max_packet,
          do: {:error, {:emsgsize, unsent}},
          else: many(ref, [IO.iodata_to_binary(packet) | rest], deadline)

      result ->
        result
    end
  end

  @doc "A batch of equal-size packets (`Tundra.send_segments/4` without waiting)."
  @spec segments(reference(), binary(), pos_integer(), Wait.deadline()) ::
          :ok
          | {:select, {Tundra.select_info(), binary()}}
          | {:error, {:timeout | Tundra.posix(), binary()} | Tundra.use_error()}
  def segments(ref, data, size, deadline) do
    case Nif.send_segments(ref, data, size) do
      {:more, rest} ->
        if Wait.expired?(deadline),
          do: {:error, {:timeout, rest}},
          else: segments(ref, rest, size, deadline)

      result ->
        result
    end
  end
end

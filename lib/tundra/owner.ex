defmodule Tundra.Owner do
  @moduledoc false
  # Everything that follows a device's owner rather than its packets: the
  # start of a new device (link events, first active mode), active mode
  # and the reader process it needs (Tundra.Reader, started the first time
  # a device becomes active or asks for link events), closing with its
  # message, and handing the device and its pending messages to another
  # process.

  alias Tundra.{Nif, Options, Reader}

  @doc """
  New devices from the NIF (one, or a list of queues) as the caller gets
  them, with link events and their first active mode set; on failure
  they are closed.
  """
  @spec started({reference() | [reference(), ...], String.t()}, Options.start()) ::
          {:ok, {Tundra.device() | [Tundra.device(), ...], String.t()}}
          | {:error, Tundra.use_error() | Tundra.posix()}
  def started({refs, name}, start) when is_list(refs) do
    devices = for ref <- refs, do: {:"$tundra", ref}
    with :ok <- start(devices, start), do: {:ok, {devices, name}}
  end

  def started({ref, name}, start) do
    with :ok <- start([{:"$tundra", ref}], start), do: {:ok, {{:"$tundra", ref}, name}}
  end

  defp start(devices, %{active: active, active_batch: batch, link_events: link_events}) do
    Enum.reduce_while(devices, :ok, fn {:"$tundra", ref} = device, :ok ->
      with :ok <- if(link_events, do: link_events(ref, true), else: :ok),
           :ok <- if(batch, do: Nif.set_active_batch(ref, true), else: :ok),
           :ok <- if(active == {:off, 0}, do: :ok, else: set_active(device, active)) do
        {:cont, :ok}
      else
        {:error, reason} ->
          Enum.each(devices, fn {:"$tundra", ref} -> Nif.close(ref) end)
          {:halt, {:error, reason}}
      end
    end)
  end

  @doc """
  Changes the active mode as `Tundra.setopts/2` or a create option says.
  A count that comes to 0 or less makes the device passive and sends the
  owner `{:tundra_passive, device}`, as `:gen_udp` does.
  """
  @spec set_active(Tundra.device(), Options.active_change()) ::
          :ok | {:error, Tundra.use_error() | Tundra.posix()}
  def set_active({:"$tundra", ref} = device, {mode, n}) do
    result =
      if mode == :off,
        do: Nif.set_active(ref, :off, n),
        else: with(:ok <- ensure_reader(ref), do: Nif.set_active(ref, mode, n))

    case result do
      {:ok, {:off, _}} when mode == :add ->
        Kernel.send(self(), {:tundra_passive, device})
        :ok

      {:ok, _} ->
        :ok

      {:error, reason} ->
        {:error, reason}
    end
  end

  @doc "Starts or stops link events, which come through the reader too."
  @spec link_events(reference(), boolean()) :: :ok | {:error, Tundra.use_error() | Tundra.posix()}
  def link_events(ref, false), do: Nif.link_events(ref, false)

  def link_events(ref, true) do
    with :ok <- ensure_reader(ref), do: Nif.link_events(ref, true)
  end

  defp ensure_reader(ref) do
    case Nif.reader(ref) do
      {:ok, nil} -> Nif.set_reader(ref, Reader.start(ref, self()))
      {:ok, _reader} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  @doc "Closes the device; an active owner is told `{:tundra_closed, device}`."
  @spec close(Tundra.device()) :: :ok | {:error, Tundra.use_error()}
  def close({:"$tundra", ref} = device) do
    case Nif.close(ref) do
      {:ok, true} ->
        Kernel.send(self(), {:tundra_closed, device})
        :ok

      {:ok, false} ->
        :ok

      {:error, reason} ->
        {:error, reason}
    end
  end

  @doc """
  Hands the device to `pid` (see `Tundra.controlling_process/2`): passive
  while the caller's pending messages of the device are moved, so that no
  packet overtakes them; then the new owner gets the active mode back.
  """
  @spec hand_over(Tundra.device(), pid()) :: :ok | {:error, Tundra.use_error() | :esrch}
  def hand_over({:"$tundra", ref} = device, pid) do
    with {:ok, reader} <- Nif.reader(ref),
         {:ok, {mode, n}} <- Nif.take_active(ref) do
      if pid != self(), do: forward_messages(device, pid)

      with :ok <- Nif.controlling_process(ref, pid, mode, n) do
        if reader, do: Reader.new_owner(reader, pid)
        # The hand-over cancelled our selects; one that fired just before
        # may already be here, and is no use to us now.
        if pid != self(), do: flush_selects(device)
        :ok
      end
    end
  end

  defp forward_messages(device, pid) do
    receive do
      {:tundra, ^device, _packet} = message -> forward(message, device, pid)
      {:tundra_batch, ^device, _packets} = message -> forward(message, device, pid)
      {:tundra_passive, ^device} = message -> forward(message, device, pid)
      {:tundra_closed, ^device} = message -> forward(message, device, pid)
      {:tundra_link, ^device, _info} = message -> forward(message, device, pid)
    after
      0 -> :ok
    end
  end

  defp forward(message, device, pid) do
    Kernel.send(pid, message)
    forward_messages(device, pid)
  end

  defp flush_selects(device) do
    receive do
      {:"$socket", ^device, :select, _handle} -> flush_selects(device)
    after
      0 -> :ok
    end
  end
end

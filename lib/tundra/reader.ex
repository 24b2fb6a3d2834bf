defmodule Tundra.Reader do
  @moduledoc false
  # Reads a device in active mode for its owner. The VM tells it when the
  # device is readable (a select message), and Tundra.Nif.deliver/1 reads
  # the waiting packets and sends them to the owner as {:tundra, dev,
  # packet}: the owner only ever sees those. One per device that is (or
  # was) active or has link events, on whichever scheduler is free, so
  # devices (and the queues of one) are read in parallel. It passes the
  # link watcher's news on to the owner as {:tundra_link, dev, info}. It
  # watches the owner and ends with it, with the device's close, or when
  # the device is gone.

  alias Tundra.Nif

  @doc "Starts the reader of the device `ref`, owned by `owner`."
  @spec start(reference(), pid()) :: pid()
  def start(ref, owner) do
    spawn(fn -> loop(ref, owner, Process.monitor(owner)) end)
  end

  @doc "Tells the reader that the device has a new owner to watch."
  @spec new_owner(pid(), pid()) :: :ok
  def new_owner(reader, owner) do
    send(reader, {:"$tundra_owner", owner})
    :ok
  end

  # A whole batch came: more may be waiting, so read again at once (the
  # NIF reports its time, so the VM preempts this as any busy process)
  # and only wait for the next select once the device runs dry.
  defp deliver(ref, owner, monitor) do
    case Nif.deliver(ref) do
      :more -> deliver(ref, owner, monitor)
      :ok -> loop(ref, owner, monitor)
      :stop -> :ok
    end
  end

  defp loop(ref, owner, monitor) do
    receive do
      {:"$tundra_readable", {:"$tundra", ^ref}} ->
        deliver(ref, owner, monitor)

      {:"$tundra_link", up, mtu} ->
        send(owner, {:tundra_link, {:"$tundra", ref}, %{up: up, mtu: mtu}})
        loop(ref, owner, monitor)

      :"$tundra_link_removed" ->
        send(owner, {:tundra_link, {:"$tundra", ref}, :removed})
        loop(ref, owner, monitor)

      {:"$tundra_owner", owner} ->
        Process.demonitor(monitor, [:flush])
        loop(ref, owner, Process.monitor(owner))

      {:DOWN, ^monitor, :process, _, _} ->
        :ok

      :stop ->
        :ok
    end
  end
end

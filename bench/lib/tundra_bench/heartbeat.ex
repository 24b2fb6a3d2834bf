defmodule TundraBench.Heartbeat do
  @moduledoc false
  # A process that wakes every millisecond and records how much later than
  # asked it ran: the worst delay a busy scheduler caused.

  def start, do: spawn(fn -> beat(System.monotonic_time(:microsecond), 0) end)

  @doc "Stops it; returns the worst delay in microseconds."
  def stop(pid) do
    send(pid, {:report, self()})
    receive do: ({:worst, worst} -> worst)
  end

  defp beat(last, worst) do
    receive do
      {:report, to} -> send(to, {:worst, worst})
    after
      1 ->
        now = System.monotonic_time(:microsecond)
        beat(now, max(worst, now - last - 1000))
    end
  end
end

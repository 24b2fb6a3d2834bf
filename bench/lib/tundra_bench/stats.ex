defmodule TundraBench.Stats do
  @moduledoc false
  # Small statistics over lists of numbers, and process CPU time.

  def median(values), do: percentile(values, 50)

  # Nearest-rank percentile.
  def percentile([], _p), do: nil

  def percentile(values, p) do
    sorted = Enum.sort(values)
    rank = max(ceil(p / 100 * length(sorted)), 1)
    Enum.at(sorted, rank - 1)
  end

  @doc "CPU time (user + system, seconds) process `os_pid` has used so far."
  def cpu_seconds(os_pid) do
    stat = File.read!("/proc/#{os_pid}/stat")
    # Fields after the parenthesised command name; utime and stime are the
    # 14th and 15th of the whole line, in clock ticks.
    [_, rest] = String.split(stat, ") ", parts: 2)
    [utime, stime] = rest |> String.split(" ") |> Enum.slice(11, 2)
    (String.to_integer(utime) + String.to_integer(stime)) / clock_ticks()
  end

  defp clock_ticks do
    case :persistent_term.get({__MODULE__, :clk_tck}, nil) do
      nil ->
        {out, 0} = System.cmd("getconf", ["CLK_TCK"])
        ticks = out |> String.trim() |> String.to_integer()
        :persistent_term.put({__MODULE__, :clk_tck}, ticks)
        ticks

      ticks ->
        ticks
    end
  end

  def ratio(_a, b) when b in [0, 0.0, nil], do: nil
  def ratio(nil, _b), do: nil
  def ratio(a, b), do: a / b
end

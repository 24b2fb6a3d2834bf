defmodule TundraBench.Scheduler do
  @moduledoc false
  # No Tundra call may hold a scheduler for more than about a millisecond,
  # whatever its input. In a VM with a single normal scheduler (so that
  # nothing else can run while one is held), a 1 ms heartbeat records its
  # worst delay while idle, during send_many/3 of 1,000,000 small packets,
  # and during send/3 of 100 MB (one binary, and 100 KiB-many 1 KiB
  # pieces). The worst of the rounds is reported.

  def run(opts) do
    script = Path.expand("../../scheduler_child.exs", __DIR__)
    ebin = Path.join(Mix.Project.app_path(), "ebin")

    samples =
      for _ <- 1..opts[:rounds] do
        {output, 0} =
          System.cmd("elixir", ["--erl", "+S 1:1", "-pa", ebin, script], stderr_to_stdout: true)

        for "result " <> line <- String.split(output, "\n"), into: %{} do
          [name, worst, taken | _] = String.split(line, " ", parts: 4)
          {name, {String.to_float(worst), String.to_integer(taken)}}
        end
      end

    rows =
      for {name, label} <- [
            {"idle", "an idle VM"},
            {"send_many_1m", "send_many/3 of 1,000,000 packets of 28 B"},
            {"send_100mb_binary", "send/3 of a 100 MB binary"},
            {"send_100mb_iolist", "send/3 of 100 MB in 102,400 pieces"}
          ] do
        worsts = for s <- samples, do: elem(s[name], 0)
        taken = for s <- samples, do: elem(s[name], 1)

        row = %{
          section: :scheduler,
          label: label,
          worst_ms: Enum.max(worsts),
          taken_ms: Enum.max(taken)
        }

        IO.puts(
          "  #{label}: worst heartbeat delay #{row.worst_ms} ms (call took up to #{row.taken_ms} ms)"
        )

        row
      end

    rows
  end
end

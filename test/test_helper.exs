case TundraTest.Env.privileged_blocker() do
  nil ->
    for leftover <- TundraTest.Leftovers.remove() do
      IO.puts(:stderr, "NOTICE: removed a leftover of an earlier, killed run: #{leftover}")
    end

    ExUnit.start()

  why ->
    if System.get_env("CI") == "true" do
      IO.puts(:stderr, "FAILURE: CI=true but the privileged suite cannot run: #{why}")
      System.halt(1)
    end

    IO.puts(:stderr, """
    NOTICE: skipping privileged tests (tag :privileged): #{why}.
            Run scripts/test as root to run them.
    """)

    ExUnit.start(exclude: [:privileged])
end

defmodule TundraWireGuard.RateLimiterTest do
  use ExUnit.Case, async: true

  alias TundraWireGuard.RateLimiter

  defp allow_n(limiter, ip, now, n) do
    Enum.map_reduce(1..n, limiter, fn _, limiter -> RateLimiter.allow(limiter, ip, now) end)
  end

  test "a burst of 5, then 20 a second" do
    {allowed, limiter} = allow_n(RateLimiter.new(), {192, 0, 2, 1}, 0, 8)
    assert allowed == [true, true, true, true, true, false, false, false]
    # 50 ms later, one more (20 a second).
    assert {true, limiter} = RateLimiter.allow(limiter, {192, 0, 2, 1}, 50)
    assert {false, _} = RateLimiter.allow(limiter, {192, 0, 2, 1}, 50)
  end

  test "IPv6 sources count by /64: 300 addresses of one /64 are one source" do
    ips = for n <- 1..300, do: {0x2001, 0xDB8, 7, 7, 0, 0, div(n, 7), n}

    {allowed, limiter} = Enum.map_reduce(ips, RateLimiter.new(), &RateLimiter.allow(&2, &1, 0))

    assert Enum.count(allowed, & &1) == 5
    assert RateLimiter.size(limiter) == 1
    # Another /64 is another source.
    assert {true, limiter} = RateLimiter.allow(limiter, {0x2001, 0xDB8, 7, 8, 0, 0, 0, 1}, 0)
    assert RateLimiter.size(limiter) == 2
  end

  test "the table is bounded: past it a new source is refused, known ones go on" do
    limiter =
      Enum.reduce(1..100, RateLimiter.new(100), fn n, limiter ->
        {true, limiter} = RateLimiter.allow(limiter, {10, 0, 0, n}, 0)
        limiter
      end)

    assert {false, limiter} = RateLimiter.allow(limiter, {10, 0, 1, 1}, 10)
    assert RateLimiter.size(limiter) == 100
    assert {true, _} = RateLimiter.allow(limiter, {10, 0, 0, 7}, 10)
  end

  test "sources idle a second are forgotten, busy ones kept" do
    {_, limiter} = RateLimiter.allow(RateLimiter.new(), {10, 0, 0, 1}, 0)
    {_, limiter} = RateLimiter.allow(limiter, {10, 0, 0, 2}, 900)
    limiter = RateLimiter.collect(limiter, 1_500)
    assert RateLimiter.size(limiter) == 1
    assert RateLimiter.size(RateLimiter.collect(limiter, 2_000)) == 0
  end
end

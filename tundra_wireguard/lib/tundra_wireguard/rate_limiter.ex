defmodule TundraWireGuard.RateLimiter do
  @moduledoc false
  # Handshakes allowed per source once the interface is under load, as
  # wireguard-go's and the kernel's rate limiters: 20 a second with
  # bursts of 5. A source is an IPv4 address, or the /64 of an IPv6 one
  # (one host commonly has a whole /64). The table is bounded: past `max`
  # sources a new one is refused until `collect/2` forgets the idle ones
  # (a source idle a second has its whole burst again, so forgetting it
  # changes nothing). Pure: the caller gives the time.

  @rate_per_ms 20 / 1000
  @burst 5.0
  @idle_ms 1_000
  @default_max 16_384

  @type t :: %{entries: %{tuple() => {float(), integer()}}, max: pos_integer()}

  @spec new(pos_integer()) :: t()
  def new(max \\ @default_max), do: %{entries: %{}, max: max}

  @doc "Whether one more handshake from `ip` may go on at `now` (ms)."
  @spec allow(t(), :inet.ip_address(), integer()) :: {boolean(), t()}
  def allow(%{entries: entries} = limiter, ip, now) do
    key = key(ip)

    case Map.fetch(entries, key) do
      :error when map_size(entries) >= limiter.max ->
        {false, limiter}

      found ->
        {tokens, at} =
          case found do
            {:ok, entry} -> entry
            :error -> {@burst, now}
          end

        tokens = min(@burst, tokens + (now - at) * @rate_per_ms)
        allowed = tokens >= 1.0
        tokens = if allowed, do: tokens - 1.0, else: tokens
        {allowed, %{limiter | entries: Map.put(entries, key, {tokens, now})}}
    end
  end

  @doc "Forgets the sources idle for a second at `now`."
  @spec collect(t(), integer()) :: t()
  def collect(limiter, now),
    do: %{
      limiter
      | entries: Map.reject(limiter.entries, fn {_, {_, at}} -> now - at > @idle_ms end)
    }

  @doc "Sources followed now."
  @spec size(t()) :: non_neg_integer()
  def size(limiter), do: map_size(limiter.entries)

  @doc "How often `collect/2` is due while the table holds anything."
  @spec interval() :: 1_000
  def interval, do: @idle_ms

  defp key({_, _, _, _} = ip), do: ip
  defp key({a, b, c, d, _, _, _, _}), do: {a, b, c, d}
end

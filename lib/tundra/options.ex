defmodule Tundra.Options do
  @moduledoc false
  # Parses and type-checks the options of Tundra.create/2 into the map the
  # NIF takes (and the active mode, which Tundra sets once the devices
  # exist). Ranges and meaning (MTU bounds, name rules, family mix,
  # contiguous netmask, queues) are checked once, in Rust (tundra_core),
  # so the direct path and the server refuse the same things.

  @create_keys [
    :dstaddr,
    :netmask,
    :prefix,
    :mtu,
    :name,
    :up,
    :via,
    :socket_path,
    :timeout,
    :queues,
    :active
  ]
  @default_socket "/var/run/tundra.sock"
  @default_timeout 5_000

  @spec create_args(Tundra.address(), keyword()) ::
          {:ok, map(), active_change()} | {:error, Tundra.create_error()}
  def create_args(address, opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, @create_keys),
         :ok <- no_duplicates(opts),
         {:ok, address} <- parse_ip(address, {:invalid_address, address}),
         {:ok, dstaddr} <- optional_ip(opts, :dstaddr),
         {:ok, netmask} <- optional_ip(opts, :netmask),
         :ok <- not_both(opts, :netmask, :prefix),
         {:ok, prefix} <- optional(opts, :prefix, &is_integer/1),
         {:ok, mtu} <- optional(opts, :mtu, &is_integer/1),
         {:ok, name} <- optional(opts, :name, &is_binary/1),
         {:ok, up} <- optional(opts, :up, &is_boolean/1),
         {:ok, via} <- optional(opts, :via, &(&1 in [:auto, :direct, :server])),
         {:ok, socket_path} <- optional(opts, :socket_path, &is_binary/1),
         {:ok, timeout} <- optional(opts, :timeout, &(is_integer(&1) and &1 > 0)),
         {:ok, queues} <- optional(opts, :queues, &is_integer/1),
         {:ok, active} <- active(opts) do
      {:ok,
       %{
         address: address,
         dstaddr: dstaddr,
         netmask: netmask,
         prefix: prefix,
         mtu: mtu,
         name: name,
         up: if(up == nil, do: true, else: up),
         via: via || :auto,
         socket_path: socket_path || socket_path(),
         timeout_ms: timeout || @default_timeout,
         queues: queues
       }, active}
    end
  end

  @typedoc "An active mode as the NIF takes it (see set_active/3 there)."
  @type active_change :: {:off | :once | :always | :add, integer()}

  @doc "The `:active` option of `opts`, for the NIF."
  @spec active(keyword()) :: {:ok, active_change()} | {:error, Tundra.option_error()}
  def active(opts) do
    case Keyword.fetch(opts, :active) do
      :error -> {:ok, {:off, 0}}
      {:ok, false} -> {:ok, {:off, 0}}
      {:ok, true} -> {:ok, {:always, 0}}
      {:ok, :once} -> {:ok, {:once, 0}}
      {:ok, n} when is_integer(n) and n in -32_768..32_767 -> {:ok, {:add, n}}
      {:ok, other} -> invalid(:active, other)
    end
  end

  @doc "The server socket: application env, then TUNDRA_SOCKET, then the default."
  @spec socket_path() :: String.t()
  def socket_path do
    Application.get_env(:tundra, :socket_path) || System.get_env("TUNDRA_SOCKET") ||
      @default_socket
  end

  @spec adopt_args(keyword()) ::
          {:ok, boolean(), active_change()} | {:error, Tundra.option_error()}
  def adopt_args(opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, [:dup, :active]),
         :ok <- no_duplicates(opts),
         {:ok, dup} <- optional(opts, :dup, &is_boolean/1),
         {:ok, active} <- active(opts) do
      {:ok, dup != false, active}
    end
  end

  @doc "The options of `Tundra.setopts/2`: the active change, if any."
  @spec setopts_args(keyword()) ::
          {:ok, active_change() | nil} | {:error, Tundra.option_error()}
  def setopts_args(opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, [:active]),
         :ok <- no_duplicates(opts) do
      if Keyword.has_key?(opts, :active), do: active(opts), else: {:ok, nil}
    end
  end

  defp keyword!(opts) do
    if Keyword.keyword?(opts) do
      :ok
    else
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end
  end

  defp known_keys(opts, known) do
    case Enum.find(opts, fn {key, _} -> key not in known end) do
      nil -> :ok
      {key, _} -> {:error, {:unknown_option, key}}
    end
  end

  # An option given twice is a mistake somewhere (two sources merged
  # without care); which one was meant cannot be known.
  defp no_duplicates(opts) do
    case opts -- Enum.uniq_by(opts, &elem(&1, 0)) do
      [] -> :ok
      [{key, _} | _] -> {:error, {:duplicate_option, key}}
    end
  end

  defp not_both(opts, a, b) do
    if Keyword.has_key?(opts, a) and Keyword.has_key?(opts, b),
      do: {:error, {:conflicting_options, [a, b]}},
      else: :ok
  end

  defp optional(opts, key, valid?) do
    case Keyword.fetch(opts, key) do
      :error -> {:ok, nil}
      {:ok, value} -> if valid?.(value), do: {:ok, value}, else: invalid(key, value)
    end
  end

  defp optional_ip(opts, key) do
    case Keyword.fetch(opts, key) do
      :error -> {:ok, nil}
      {:ok, value} -> parse_ip(value, {:invalid_option, {key, value}})
    end
  end

  defp invalid(key, value), do: {:error, {:invalid_option, {key, value}}}

  # An address as the NIF takes it: 4 or 16 bytes in network order.
  defp parse_ip(text, error) when is_binary(text) do
    parse_ip(String.to_charlist(text), error)
  rescue
    # String.to_charlist/1 raises on invalid UTF-8
    UnicodeConversionError -> {:error, error}
  end

  # A charlist, as :inet users write addresses.
  defp parse_ip(chars, error) when is_list(chars) do
    case :inet.parse_strict_address(chars) do
      {:ok, ip} -> parse_ip(ip, error)
      {:error, _} -> {:error, error}
    end
  end

  defp parse_ip({_, _, _, _} = ip, error) do
    if :inet.is_ipv4_address(ip), do: {:ok, ip_binary(ip)}, else: {:error, error}
  end

  defp parse_ip({_, _, _, _, _, _, _, _} = ip, error) do
    if :inet.is_ipv6_address(ip), do: {:ok, ip_binary(ip)}, else: {:error, error}
  end

  defp parse_ip(_other, error), do: {:error, error}

  defp ip_binary({a, b, c, d}), do: <<a, b, c, d>>

  defp ip_binary({a, b, c, d, e, f, g, h}),
    do: <<a::16, b::16, c::16, d::16, e::16, f::16, g::16, h::16>>
end

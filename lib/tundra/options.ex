defmodule Tundra.Options do
  @moduledoc false
  # Parses and type-checks the options of attach/2, adopt/2, setopts/2
  # and the change functions into what the NIF takes (and what Tundra sets
  # once the devices exist: active mode, link events), and the helpers
  # create/2's table (Tundra.CreateOptions) checks with. Ranges that
  # depend on the address family (MTU, prefix) and meaning (name rules,
  # family mix, contiguous netmask, MAC addresses) are checked once, in
  # Rust (tundra_core), so the direct path and the server refuse the same
  # things.

  @default_timeout 5_000

  @typedoc "Where the server is, should a call need it: its socket, and how long to wait."
  @type server :: {String.t() | nil, pos_integer() | :infinity}

  @doc """
  The `:socket_path` and `:timeout` options (a number of milliseconds or
  `:infinity`), with their defaults.
  """
  @spec server(keyword()) :: {:ok, server()} | {:error, Tundra.option_error()}
  def server(opts) do
    with {:ok, socket_path} <- optional(opts, :socket_path, &is_binary/1),
         {:ok, timeout} <- optional(opts, :timeout, &timeout?/1) do
      {:ok, {socket_path || socket_path(), timeout || @default_timeout}}
    end
  end

  defp timeout?(timeout), do: timeout == :infinity or (is_integer(timeout) and timeout > 0)

  @doc "A timeout as the NIF takes it: milliseconds, or `nil` for none."
  @spec timeout_ms(pos_integer() | :infinity) :: pos_integer() | nil
  def timeout_ms(:infinity), do: nil
  def timeout_ms(ms), do: ms

  @doc """
  An interface name given to `Tundra.attach/2`: a string or a charlist;
  whether the kernel would take it is checked in Rust.
  """
  @spec interface_name(String.t() | charlist()) ::
          {:ok, String.t()} | {:error, {:invalid_option, {:name, term()}}}
  def interface_name(name) when is_binary(name), do: {:ok, name}

  def interface_name(name) when is_list(name) do
    {:ok, List.to_string(name)}
  rescue
    ArgumentError -> invalid(:name, name)
  end

  @typedoc "An IPv4 or IPv6 address as the NIF takes it."
  @type ip_bytes :: <<_::32>> | <<_::128>>

  @typedoc "What Tundra sets on new devices: the active mode, how it delivers, link events."
  @type start :: %{active: active_change(), active_batch: boolean(), link_events: boolean()}

  @doc ~S'A MAC address given as "02:00:5e:00:53:01" (or with "-"), as its 6 bytes.'
  @spec parse_mac(term()) :: {:ok, <<_::48>>} | :error
  def parse_mac(text) when is_binary(text) do
    with [_, _, _, _, _, _] = parts <- String.split(text, [":", "-"]),
         bytes when length(bytes) == 6 <- for(<<h::binary-2>> <- parts, do: h),
         {:ok, mac} <- Base.decode16(Enum.join(bytes), case: :mixed) do
      {:ok, mac}
    else
      _ -> :error
    end
  end

  def parse_mac(_other), do: :error

  @doc "A MAC address as `info/1` reports it."
  @spec format_mac(<<_::48>>) :: String.t()
  def format_mac(<<_::48>> = mac) do
    for(<<byte <- mac>>, do: Base.encode16(<<byte>>, case: :lower)) |> Enum.join(":")
  end

  @doc "The `:active`, `:active_batch` and `:link_events` options of `opts`."
  @spec start(keyword()) :: {:ok, start()} | {:error, Tundra.option_error()}
  def start(opts) do
    with {:ok, active} <- active(opts),
         {:ok, batch} <- optional(opts, :active_batch, &is_boolean/1),
         {:ok, link_events} <- optional(opts, :link_events, &is_boolean/1) do
      {:ok, %{active: active, active_batch: batch == true, link_events: link_events == true}}
    end
  end

  @typedoc "An active mode as the NIF takes it (see set_active/3 there)."
  @type active_change :: {:off | :once | :always | :add, integer()}

  @doc "The `:active` option of `opts`, for the NIF."
  @spec active(keyword()) :: {:ok, active_change()} | {:error, Tundra.option_error()}
  def active(opts) do
    case Keyword.fetch(opts, :active) do
      :error -> {:ok, {:off, 0}}
      {:ok, nil} -> {:ok, {:off, 0}}
      {:ok, false} -> {:ok, {:off, 0}}
      {:ok, true} -> {:ok, {:always, 0}}
      {:ok, :once} -> {:ok, {:once, 0}}
      {:ok, n} when is_integer(n) and n in -32_768..32_767 -> {:ok, {:add, n}}
      {:ok, other} -> invalid(:active, other)
    end
  end

  @doc """
  The server socket: application env, then TUNDRA_SOCKET; `nil` leaves
  the default (`/var/run/tundra.sock`) to the NIF, which knows it.
  """
  @spec socket_path() :: String.t() | nil
  def socket_path do
    Application.get_env(:tundra, :socket_path) || System.get_env("TUNDRA_SOCKET")
  end

  @spec adopt_args(keyword()) :: {:ok, boolean(), start()} | {:error, Tundra.option_error()}
  def adopt_args(opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, [:dup, :active, :active_batch, :link_events]),
         :ok <- no_duplicates(opts),
         {:ok, dup} <- optional(opts, :dup, &is_boolean/1),
         {:ok, start} <- start(opts) do
      {:ok, dup != false, start}
    end
  end

  @spec attach_args(keyword()) ::
          {:ok, pos_integer() | nil, start()} | {:error, Tundra.option_error()}
  def attach_args(opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, [:queues, :active, :active_batch, :link_events]),
         :ok <- no_duplicates(opts),
         {:ok, queues} <- optional(opts, :queues, &(is_integer(&1) and &1 in 1..64)),
         {:ok, start} <- start(opts) do
      {:ok, queues, start}
    end
  end

  @typedoc "What `Tundra.setopts/2` changes; `nil` for what it leaves."
  @type setopts :: %{
          active: active_change() | nil,
          active_batch: boolean() | nil,
          link_events: boolean() | nil,
          offload: [atom()] | nil,
          busy_poll: 0..200 | nil
        }

  @doc "The options of `Tundra.setopts/2`."
  @spec setopts_args(keyword()) :: {:ok, setopts()} | {:error, Tundra.option_error()}
  def setopts_args(opts) do
    with :ok <- keyword!(opts),
         :ok <- known_keys(opts, [:active, :active_batch, :link_events, :offload, :busy_poll]),
         :ok <- no_duplicates(opts),
         {:ok, link_events} <- optional(opts, :link_events, &is_boolean/1),
         {:ok, batch} <- optional(opts, :active_batch, &is_boolean/1),
         {:ok, offload} <- optional(opts, :offload, &offload_names?/1),
         {:ok, busy_poll} <- optional(opts, :busy_poll, &(is_integer(&1) and &1 in 0..200)),
         {:ok, active} <- if(Keyword.has_key?(opts, :active), do: active(opts), else: {:ok, nil}) do
      {:ok,
       %{
         active: active,
         active_batch: batch,
         link_events: link_events,
         offload: offload,
         busy_poll: busy_poll
       }}
    end
  end

  # Which names are offloads is known once, in Rust (tundra_core's Offloads).
  defp offload_names?(names), do: is_list(names) and Enum.all?(names, &is_atom/1)

  @doc "Checks a keyword list's keys: known, each given once."
  @spec check_keys(keyword(), [atom()]) :: :ok | {:error, Tundra.option_error()}
  def check_keys(opts, known) do
    with :ok <- keyword!(opts), :ok <- known_keys(opts, known), do: no_duplicates(opts)
  end

  @doc """
  An option's value if `valid?`; `nil` when absent. An option given as
  `nil` counts as not given, as Elixir code often passes one along.
  """
  @spec optional(keyword(), atom(), (term() -> boolean())) ::
          {:ok, term()} | {:error, Tundra.option_error()}
  def optional(opts, key, valid?) do
    case Keyword.get(opts, key) do
      nil -> {:ok, nil}
      value -> if valid?.(value), do: {:ok, value}, else: invalid(key, value)
    end
  end

  @doc "An optional address option, as the NIF takes it (4 or 16 bytes)."
  @spec optional_ip(keyword(), atom()) :: {:ok, binary() | nil} | {:error, Tundra.option_error()}
  def optional_ip(opts, key) do
    case Keyword.get(opts, key) do
      nil -> {:ok, nil}
      value -> parse_ip(value, {:invalid_option, {key, value}})
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

  @doc "`:ok` unless both `a` and `b` are given."
  @spec not_both(keyword(), atom(), atom()) :: :ok | {:error, Tundra.option_error()}
  def not_both(opts, a, b) do
    if opts[a] != nil and opts[b] != nil,
      do: {:error, {:conflicting_options, [a, b]}},
      else: :ok
  end

  @doc "`{:error, {:invalid_option, {key, value}}}`."
  @spec invalid(atom(), term()) :: {:error, {:invalid_option, {atom(), term()}}}
  def invalid(key, value), do: {:error, {:invalid_option, {key, value}}}

  @doc "An address as the NIF takes it (4 or 16 bytes), or `{:error, error}`."
  @spec parse_ip(term(), error) :: {:ok, ip_bytes()} | {:error, error} when error: term()
  def parse_ip(text, error) when is_binary(text) do
    parse_ip(String.to_charlist(text), error)
  rescue
    # String.to_charlist/1 raises on invalid UTF-8
    UnicodeConversionError -> {:error, error}
  end

  # A charlist, as :inet users write addresses.
  def parse_ip(chars, error) when is_list(chars) do
    case :inet.parse_strict_address(chars) do
      {:ok, ip} -> parse_ip(ip, error)
      {:error, _} -> {:error, error}
    end
  end

  def parse_ip({_, _, _, _} = ip, error) do
    if :inet.is_ipv4_address(ip), do: {:ok, ip_binary(ip)}, else: {:error, error}
  end

  def parse_ip({_, _, _, _, _, _, _, _} = ip, error) do
    if :inet.is_ipv6_address(ip), do: {:ok, ip_binary(ip)}, else: {:error, error}
  end

  def parse_ip(_other, error), do: {:error, error}

  defp ip_binary({a, b, c, d}), do: <<a, b, c, d>>

  defp ip_binary({a, b, c, d, e, f, g, h}),
    do: <<a::16, b::16, c::16, d::16, e::16, f::16, g::16, h::16>>
end

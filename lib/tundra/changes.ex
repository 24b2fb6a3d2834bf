defmodule Tundra.Changes do
  @moduledoc false
  # Parses and type-checks the arguments of Tundra.set/2, add_address/3,
  # remove_address/3, add_route/3 and remove_route/3 into the change the
  # NIF takes (Tundra.Nif.change/4) and where to find the server. Ranges
  # and meaning are checked once, in Rust (tundra_core::Change), for the
  # direct path and the server alike.

  alias Tundra.Options

  @server_keys [:socket_path, :timeout]

  @typedoc """
  A change as Tundra.Nif.change/4 takes it; an address with its peer and
  its prefix length or netmask, as create/2 passes them.
  """
  @type change ::
          {:link, boolean() | nil, integer() | nil}
          | {:add_address | :remove_address, binary(), binary() | nil, integer() | nil,
             binary() | nil}
          | {:add_route | :remove_route, binary(), integer(), integer() | nil}

  @spec set(keyword()) :: {:ok, change(), Options.server()} | {:error, Tundra.option_error()}
  def set(opts) do
    with :ok <- Options.check_keys(opts, [:up, :mtu | @server_keys]),
         {:ok, up} <- Options.optional(opts, :up, &is_boolean/1),
         {:ok, mtu} <- Options.optional(opts, :mtu, &is_integer/1),
         {:ok, server} <- Options.server(opts) do
      {:ok, {:link, up, mtu}, server}
    end
  end

  @spec add_address(Tundra.address(), keyword()) ::
          {:ok, change(), Options.server()} | {:error, Tundra.change_error()}
  def add_address(address, opts) do
    with :ok <- Options.check_keys(opts, [:dstaddr, :netmask, :prefix | @server_keys]),
         {:ok, ip} <- Options.parse_ip(address, {:invalid_address, address}),
         {:ok, dstaddr} <- Options.optional_ip(opts, :dstaddr),
         :ok <- Options.not_both(opts, :netmask, :prefix),
         {:ok, prefix} <- Options.optional(opts, :prefix, &is_integer/1),
         {:ok, netmask} <- Options.optional_ip(opts, :netmask),
         {:ok, server} <- Options.server(opts) do
      {:ok, {:add_address, ip, dstaddr, prefix, netmask}, server}
    end
  end

  # The address is removed whatever its prefix and peer (the kernel is
  # told those it has).
  @spec remove_address(Tundra.address(), keyword()) ::
          {:ok, change(), Options.server()} | {:error, Tundra.change_error()}
  def remove_address(address, opts) do
    with :ok <- Options.check_keys(opts, @server_keys),
         {:ok, ip} <- Options.parse_ip(address, {:invalid_address, address}),
         {:ok, server} <- Options.server(opts) do
      {:ok, {:remove_address, ip, nil, nil, nil}, server}
    end
  end

  @spec route(:add_route | :remove_route, Tundra.route(), keyword()) ::
          {:ok, change(), Options.server()} | {:error, Tundra.change_error()}
  def route(kind, destination, opts) do
    with :ok <- Options.check_keys(opts, [:metric | @server_keys]),
         {:ok, network, prefix} <- destination(destination),
         {:ok, metric} <- Options.optional(opts, :metric, &(is_integer(&1) and &1 >= 0)),
         {:ok, server} <- Options.server(opts) do
      {:ok, {kind, network, prefix, metric}, server}
    end
  end

  # "10.8.0.0/16", ~c"fd00::/64" or {address, prefix}.
  defp destination(destination) do
    invalid = {:error, {:invalid_route, destination}}

    with {address, prefix} <- split_destination(destination),
         {:ok, network} <- Options.parse_ip(address, :bad),
         true <- is_integer(prefix) and prefix in 0..bit_size(network) do
      {:ok, network, prefix}
    else
      _ -> invalid
    end
  end

  defp split_destination({address, prefix}), do: {address, prefix}

  defp split_destination(text) when is_binary(text) do
    with [address, prefix] <- String.split(text, "/"),
         {prefix, ""} <- Integer.parse(prefix) do
      {address, prefix}
    end
  end

  defp split_destination(chars) when is_list(chars) do
    split_destination(List.to_string(chars))
  rescue
    ArgumentError -> :error
  end

  defp split_destination(_other), do: :error
end

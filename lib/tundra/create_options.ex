defmodule Tundra.CreateOptions do
  @moduledoc false
  # The one table of `Tundra.create/2`'s options: each option's name, the
  # check of its type (and of its range where that range does not depend
  # on the address family; those are checked in Rust, by DeviceConfig,
  # for the direct path and the server alike), its default, its typespec
  # and its documentation. The Elixir check (`parse/1`), the typespec
  # (`Tundra.create_option/0`) and the "Options" list of create/2's docs
  # all come from it; a test holds the NIF's decoder (`CreateArgs`) to it.

  # {key, check, default (what the NIF gets when not given), typespec, doc}
  @table [
    {:dstaddr, :address, nil, quote(do: Tundra.address()),
     """
     the point-to-point peer. Traffic to it is routed through the device.
     Must be of the same family as `address`.
     """},
    {:netmask, :address, nil, quote(do: Tundra.address()),
     """
     the netmask, as an address (`"255.255.255.0"`,
     `"ffff:ffff:ffff:ffff::"`). Must be contiguous. Not with `:prefix`.
     """},
    {:prefix, :integer, nil, quote(do: 0..128),
     """
     the prefix length instead of a netmask: 0..32 (IPv4) or 0..128
     (IPv6). With `:dstaddr` it applies to the peer, as with
     `ip addr add ... peer`. Default: the full length (a host route).
     """},
    {:mtu, :integer, nil, quote(do: 68..65_535),
     """
     68..65535 for IPv4, 1280..65535 for IPv6. Default: 1500.
     """},
    {:name, :string, nil, quote(do: String.t()),
     """
     the interface name to request, 1 to 15 printable ASCII characters
     without `/`, `:` or spaces; one `%d` lets the kernel pick a number
     (`"tunvpn%d"`). Default: the kernel's `tun%d`. The interface must be
     new: a name that exists gives `:ebusy`, unless it is a device of this
     VM that is closing (its owner exited or closed it), whose close
     `create/2` waits for, within `:timeout`.
     """},
    {:up, :boolean, true, quote(do: boolean()),
     """
     whether to bring the link up. Default: `true`.
     """},
    {:via, {:one_of, [:auto, :direct, :server]}, :auto, quote(do: :auto | :direct | :server),
     """
     `:auto` (the default) creates the device directly and falls back to
     `tundra_server` when that fails for lack of privilege; `:direct` and
     `:server` use only that path.
     """},
    {:socket_path, :string, :from_env, quote(do: String.t()),
     """
     the server's socket. Default: the application environment's
     `:socket_path`, else `TUNDRA_SOCKET`, else `/var/run/tundra.sock`
     (see [the server guide](server.md)).
     """},
    {:timeout, :timeout, 5_000, quote(do: pos_integer() | :infinity),
     """
     milliseconds `create/2` may wait, 1 or more, or `:infinity`: for the
     whole exchange with the server, connecting included, and for a
     closing device of this VM to give up its `:name`, or (through the
     server) the addresses the server found in use. Default: 5000.
     """},
    {:queues, {:integer, 1..64}, nil, quote(do: 1..64),
     """
     makes a multi-queue device (Linux) with this many queues, 1 to 64,
     and returns a list of devices, one per queue: `{:ok, {[device, ...],
     name}}` (see [Multi-queue devices](devices.md#multi-queue-devices-linux)).
     """},
    {:active, :active, false, quote(do: Tundra.active()),
     """
     the active mode each device starts in: `false`, `true`, `:once`, or
     a count -32768..32767 (see [Active mode](active_mode.md)). Default:
     `false`.
     """},
    {:active_batch, :boolean, false, quote(do: boolean()),
     """
     when `true`, active mode delivers each batch the device had waiting as
     one `{:tundra_batch, device, [packet, ...]}` message instead of a
     message per packet (see [Active mode](active_mode.md#one-message-per-batch)).
     Default: `false`.
     """},
    {:link_events, :boolean, false, quote(do: boolean()),
     """
     when `true`, the owner receives `{:tundra_link, device, %{up: boolean,
     mtu: integer}}` whenever the link's state or MTU changes, and
     `{:tundra_link, device, :removed}` when the interface is deleted (see
     [Link events](active_mode.md#link-events)). Default: `false`.
     """},
    {:offload, :boolean, false, quote(do: boolean()),
     """
     `true` makes an offload device (Linux, TUN): the kernel may hand it
     TCP and UDP super-packets of up to 64 KB, which Tundra cuts into
     ordinary packets, and takes runs of TCP segments written with
     `send_many/3` or `send_segments/4` as one (see [Offload](offload.md)).
     Default: `false`.
     """},
    {:mode, {:one_of, [:tun, :tap]}, :tun, quote(do: :tun | :tap),
     """
     `:tun` (the default: IP packets) or `:tap` (Ethernet frames; see
     [TAP devices](devices.md#tap-devices-linux)).
     """},
    {:mac, :mac, nil, quote(do: String.t()),
     """
     a TAP device's Ethernet address, `"02:00:5e:10:00:01"` (unicast, not
     all zeros). Default: one the kernel picks.
     """},
    {:ipv6, :boolean, true, quote(do: boolean()),
     """
     `false` gives the interface no IPv6 of its own before it comes up:
     no link-local address, so none of the kernel's IPv6 traffic (MLD
     reports) either, and an IPv4 device reads only what is sent to it
     (set over netlink, as `ip link set NAME addrgenmode none` does, so it
     works through `tundra_server` under its systemd unit too). An IPv6
     address you add later with `add_address/3` still works. Not with an
     IPv6 `address`. Default: `true`.
     """},
    {:netns, :nonempty_string, nil, quote(do: String.t()),
     """
     the network namespace to make the device in: a name as `ip netns`
     knows it (`"vpn"`, meaning `/var/run/netns/vpn`) or a path
     (`"/proc/1234/ns/net"`). Direct creation only (see
     [Network namespaces](devices.md#network-namespaces-linux)).
     """},
    {:persist, :boolean, false, quote(do: boolean()),
     """
     `true` makes a persistent device, which outlives its file
     descriptors, as `ip tuntap add` does: closing it (or the owner's
     exit) leaves the interface, which `attach/2` opens again and
     `ip link del` removes. Direct creation only.
     """},
    {:owner, :id, nil, quote(do: non_neg_integer() | String.t()),
     """
     with `persist: true`: the user (a name or a number, 0 or more) that
     may `attach/2` the device without privilege. With neither `:owner`
     nor `:group`, the owner is the creating user (root, usually): the
     kernel would let anyone open a persistent device with no owner and
     no group, so Tundra never makes one.
     """},
    {:group, :id, nil, quote(do: non_neg_integer() | String.t()),
     """
     with `persist: true`: the group (a name or a number, 0 or more) whose
     members may `attach/2` the device without privilege.
     """}
  ]

  @keys Enum.map(@table, &elem(&1, 0))
  # Options that only direct creation can honour.
  @direct_only [:netns, :persist]
  # Options Tundra sets once the devices exist (the NIF does not take them).
  @started [:active, :active_batch, :link_events]

  @doc "Every option's name, in the table's order."
  @spec keys() :: [atom(), ...]
  def keys, do: @keys

  @doc "The keys of the map the NIF's `create` decodes (`CreateArgs`)."
  @spec nif_keys() :: [atom(), ...]
  def nif_keys, do: [:address, :timeout_ms | @keys -- [:timeout | @started]]

  @doc "The typespec of one option, for `Tundra.create_option/0`."
  @spec typespec() :: Macro.t()
  def typespec do
    @table
    |> Enum.map(fn {key, _check, _default, spec, _doc} -> {key, spec} end)
    |> Enum.reduce(fn option, union -> quote(do: unquote(union) | unquote(option)) end)
  end

  @doc "The \"Options\" list of `Tundra.create/2`'s documentation."
  @spec docs() :: String.t()
  def docs do
    Enum.map_join(@table, "\n", fn {key, _check, _default, _spec, doc} ->
      [first | rest] = String.split(String.trim(doc), "\n")
      Enum.join(["  * `#{inspect(key)}` - " <> first | Enum.map(rest, &("    " <> &1))], "\n")
    end)
  end

  @doc """
  The options of `Tundra.create/2` checked against the table: the map
  the NIF takes (defaults filled in) and what Tundra sets on the devices.
  """
  @spec parse(Tundra.address(), keyword()) ::
          {:ok, map(), Tundra.Options.start()} | {:error, Tundra.create_error()}
  def parse(address, opts) do
    alias Tundra.Options

    with :ok <- Options.check_keys(opts, @keys),
         {:ok, address} <- Options.parse_ip(address, {:invalid_address, address}),
         {:ok, values} <- check_all(opts),
         :ok <- Options.not_both(opts, :netmask, :prefix),
         :ok <- persist_ids(values),
         :ok <- direct_only(values),
         {:ok, start} <- Options.start(opts) do
      nif =
        values
        |> Map.drop([:timeout | @started])
        |> Map.merge(%{address: address, timeout_ms: Options.timeout_ms(values.timeout)})

      {:ok, nif, start}
    end
  end

  defp check_all(opts) do
    Enum.reduce_while(@table, {:ok, %{}}, fn {key, check, default, _spec, _doc}, {:ok, acc} ->
      case Keyword.get(opts, key) do
        # Not given (nil counts as not given, as Elixir code often passes one along).
        nil ->
          {:cont, {:ok, Map.put(acc, key, default(default))}}

        value ->
          case check(check, value) do
            {:ok, value} -> {:cont, {:ok, Map.put(acc, key, value)}}
            :error -> {:halt, Tundra.Options.invalid(key, value)}
          end
      end
    end)
  end

  defp default(:from_env), do: Tundra.Options.socket_path()
  defp default(value), do: value

  defp check(:address, value) do
    case Tundra.Options.parse_ip(value, :error) do
      {:ok, bytes} -> {:ok, bytes}
      {:error, :error} -> :error
    end
  end

  defp check(:integer, value) when is_integer(value), do: {:ok, value}

  defp check({:integer, first..last}, value)
       when is_integer(value) and value >= first and value <= last,
       do: {:ok, value}

  defp check(:boolean, value) when is_boolean(value), do: {:ok, value}
  defp check(:string, value) when is_binary(value), do: {:ok, value}
  defp check(:nonempty_string, value) when is_binary(value) and value != "", do: {:ok, value}
  defp check({:one_of, choices}, value), do: if(value in choices, do: {:ok, value}, else: :error)
  defp check(:timeout, :infinity), do: {:ok, :infinity}
  defp check(:timeout, value) when is_integer(value) and value > 0, do: {:ok, value}

  defp check(:id, value) when (is_integer(value) and value >= 0) or is_binary(value),
    do: {:ok, value}

  defp check(:mac, value), do: Tundra.Options.parse_mac(value)

  # Checked (and turned into what the NIF takes) by Options.start/1.
  defp check(:active, value) do
    case Tundra.Options.active(active: value) do
      {:ok, _} -> {:ok, value}
      {:error, _} -> :error
    end
  end

  defp check(_check, _value), do: :error

  # An owner or group is recorded on persistent devices only.
  defp persist_ids(%{persist: persist} = values) do
    case Enum.find([:owner, :group], &(values[&1] != nil)) do
      key when key != nil and persist != true -> Tundra.Options.invalid(key, values[key])
      _ -> :ok
    end
  end

  defp direct_only(%{via: :server} = values) do
    case Enum.find(@direct_only, &(values[&1] not in [nil, false])) do
      nil -> :ok
      key -> {:error, {:conflicting_options, [:via, key]}}
    end
  end

  defp direct_only(_values), do: :ok
end

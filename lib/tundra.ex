defmodule Tundra do
  @moduledoc """
  TUN devices for Elixir: virtual point-to-point IP interfaces whose packets
  your program reads and writes itself.

  A device is created with `create/2`, which returns the device and the
  name the kernel gave its interface. Packets the system routes to the
  interface are read with `recv/3`; packets written with `send/3` enter the
  system's network stack as if they had arrived on the interface. Packets
  are raw IP packets (IPv4 or IPv6) in both directions, with no TUN framing
  header.

      {:ok, {dev, name}} =
        Tundra.create("10.99.0.2", dstaddr: "10.99.0.1", prefix: 32)

      # `ping 10.99.0.1` now sends its echo requests to `dev`.
      {:ok, packet} = Tundra.recv(dev, 1500, 5_000)

  A device belongs to one process, its owner, and lives until `close/1` or
  the owner's exit, like a port. I/O follows OTP's `:socket`: with
  `:nowait` a call returns `{:select, select_info}` instead of blocking and
  the owner is sent `{:"$socket", dev, :select, handle}` when to call
  again; with a timeout it waits. Active mode delivers packets as messages,
  as `:gen_udp`'s does. Without root or `CAP_NET_ADMIN`, devices come from
  `tundra_server`, with the same results.

  ## Guides

    * [Owning a device](lifecycle.md): lifetime, supervision, the
      schedulers.
    * [Non-blocking I/O and the drain loop](io.md): the fastest way to
      serve a device.
    * [Active mode and link events](active_mode.md).
    * [Kinds of devices, and changing them](devices.md): addresses and
      routes at run time, multi-queue, namespaces, IPv4-only, TAP,
      persistent and adopted devices, platforms.
    * [Offload](offload.md): super-packets, and tunnels with `UDP_SEGMENT`
      and `UDP_GRO`.
    * [Without privilege: tundra_server](server.md).

  ## Errors

  System failures are POSIX error atoms, as in `:socket`: `:eperm` or
  `:eacces` without privilege, `:ebusy` when a requested interface name is
  taken, and so on, the same directly and through the server. Bad input is
  named: `{:invalid_address, address}`, `{:invalid_option, {key, value}}`,
  `{:unknown_option, key}`. A device that was closed gives
  `{:error, :closed}`. Arguments of the wrong type raise
  `FunctionClauseError` or `ArgumentError`, as elsewhere in Elixir. Each
  function lists its errors; `format_error/1` says any of them in words.

  Some causes one atom cannot tell apart: `:eacces` from `create/2` may
  mean that this user is not in the server's group, or was added to it
  after logging in, or asked for an address not delegated to it, or a name
  outside the server's prefix, or (`via: :direct`) has no privilege;
  `:enoent` that no server listens at the socket tried. Then Tundra logs
  a warning (Logger, from the calling process, metadata `tundra: posix`)
  that names the cause, the socket, and what to do, such as:

      [warning] Tundra create/2: eacces: user alice is in group tundra,
      which may use tundra_server at /var/run/tundra.sock, but this process
      is not: it started before alice was added; log in again (or start it
      under `sg tundra`)

  and returns the atom, which programs match on. The server says why it
  refused (protocol version 3); the group cases are told on this side
  (the socket refuses such a process before the server can say anything).
  """

  import Tundra.Wait, only: [is_timeout: 1]

  alias Tundra.{Changes, Nif, Options, Owner, Send, Wait}

  @doc """
  A sentence for any error reason Tundra returns, as `:inet.format_error/1`
  gives one for a POSIX atom. For the causes an atom cannot tell apart,
  see the warning Tundra logs (moduledoc, "Errors").

      iex> Tundra.format_error({:invalid_option, {:mtu, 10}})
      "invalid value for option :mtu: 10"

      iex> Tundra.format_error(:not_owner)
      "only the device's owner may do that"
  """
  @spec format_error(term()) :: String.t()
  def format_error({:invalid_option, {key, value}}),
    do: "invalid value for option #{inspect(key)}: #{inspect(value)}"

  def format_error({:invalid_address, address}),
    do: "not an address an interface can have: #{inspect(address)}"

  def format_error({:unknown_option, key}), do: "unknown option #{inspect(key)}"
  def format_error({:duplicate_option, key}), do: "option #{inspect(key)} given twice"

  def format_error({:conflicting_options, keys}),
    do: "options #{Enum.map_join(keys, " and ", &inspect/1)} do not go together"

  def format_error(:not_owner), do: "only the device's owner may do that"
  def format_error(:closed), do: "the device is closed"
  def format_error(:not_tun), do: "not the fd of a TUN or TAP device"
  def format_error(:timeout), do: "timed out"
  def format_error({:timeout, _rest}), do: "timed out before all was sent"
  def format_error({posix, rest}) when is_atom(posix) and is_list(rest), do: format_error(posix)

  def format_error(:enoent),
    do:
      "no such file, device or server (creating or changing a device: no tundra_server " <>
        "listens at the socket tried; the warning logged names it)"

  def format_error(:eacces),
    do:
      "permission denied (through tundra_server: not in its group, not delegated, or a " <>
        "name outside its prefix; the warning logged says which)"

  def format_error(:eaddrinuse), do: "address in use: the host or another user has it"
  def format_error(:edquot), do: "the server's limit of devices for this user is reached"
  def format_error(posix) when is_atom(posix), do: List.to_string(:inet.format_error(posix))
  def format_error(other), do: inspect(other)

  @typedoc """
  A device: the tuple `{:"$tundra", reference}`, as `:socket`'s sockets
  are `{:"$socket", reference}`. Only its owner may do I/O on it. Treat it
  as opaque: keep it, compare it, match it whole (`{:ok, {dev, name}}`,
  `{:tundra, ^dev, packet}`).

  A list of devices (from `queues: n`) prints as
  `["$tundra": #Reference<...>, ...]`: IEx writes any list of two-element
  tuples whose first element is an atom in keyword syntax, and this is
  that same list of tuples.
  """
  @type device :: {:"$tundra", reference()}

  @typedoc """
  An IP address: a string such as `"10.0.0.1"`, a charlist (`~c"fd00::1"`)
  or an `:inet` tuple.
  """
  @type address :: String.t() | charlist() | :inet.ip_address()

  @typedoc "Returned instead of blocking; see [Non-blocking I/O](io.md)."
  @type select_info :: {:select_info, :recv | :send, reference()}

  @typedoc """
  Active mode (see [Active mode](active_mode.md)): `false` (the default: read with
  `recv/3`), `true`, `:once`, or a count of packets to deliver, in
  -32768..32767 (added to the current count).
  """
  @type active :: boolean() | :once | -32_768..32_767

  @typedoc "How long a blocking call may wait, or `:nowait` not to wait."
  @type timeout_or_nowait :: non_neg_integer() | :infinity | :nowait

  @typedoc """
  A POSIX error name, as `:socket` and `:inet` report system failures
  (`:eperm`, `:ebusy`, `:enodev`, ...): `:inet.posix/0` and the few Linux
  names it lacks (such as `:ebadfd`). `:unknown` stands for an errno
  without a name.
  """
  @type posix ::
          :inet.posix()
          | :e2big
          | :ebadfd
          | :ecanceled
          | :echild
          | :edom
          | :eidrm
          | :eilseq
          | :enetreset
          | :enodata
          | :enoexec
          | :enomsg
          | :enotempty
          | :etoomanyrefs
          | :unknown

  @typedoc "Why an option list was refused, before anything touched the system."
  @type option_error ::
          {:invalid_option, {atom(), term()}}
          | {:unknown_option, atom()}
          | {:duplicate_option, atom()}
          | {:conflicting_options, [atom(), ...]}

  @typedoc "Why `create/2` failed."
  @type create_error :: {:invalid_address, term()} | option_error() | posix()

  @typedoc "Why `adopt/2` failed."
  @type adopt_error :: :not_tun | option_error() | posix()

  @typedoc "Why `setopts/2` failed."
  @type setopts_error :: option_error() | use_error() | posix()

  @typedoc "Why `cancel/2` failed: the select is not the pending one, or see `t:use_error/0`."
  @type cancel_error :: {:invalid, select_info()} | use_error()

  @typedoc "Why a call on a device was refused: not the caller's, or closed."
  @type use_error :: :not_owner | :closed

  @typedoc "Why `recv/3` failed."
  @type recv_error :: {:invalid_length, integer()} | :timeout | use_error() | posix()

  @typedoc "Why `recv_many/3` failed."
  @type recv_many_error :: {:invalid_count, integer()} | :timeout | use_error() | posix()

  @typedoc "Why `send/3` failed."
  @type send_error :: :timeout | use_error() | posix()

  @typedoc "Why `send_many/3` stopped: with the packets not sent, or before sending any."
  @type send_many_error :: {:timeout | posix(), [iodata()]} | use_error()

  @typedoc "One address of an interface, as `info/1` reports it."
  @type interface_address :: %{
          address: :inet.ip_address(),
          prefix: 0..128,
          dstaddr: :inet.ip_address() | nil
        }

  @typedoc "A route through a device, as `info/1` reports it."
  @type route_info :: %{
          address: :inet.ip_address(),
          prefix: 0..128,
          metric: non_neg_integer() | nil
        }

  @typedoc "An interface's counters, as `info/1` reports them."
  @type stats :: %{
          rx_packets: non_neg_integer(),
          rx_bytes: non_neg_integer(),
          rx_errors: non_neg_integer(),
          rx_dropped: non_neg_integer(),
          tx_packets: non_neg_integer(),
          tx_bytes: non_neg_integer(),
          tx_errors: non_neg_integer(),
          tx_dropped: non_neg_integer()
        }

  @typedoc "What `info/1` returns; see there."
  @type info :: %{
          name: String.t(),
          index: pos_integer(),
          mode: :tun | :tap,
          mtu: pos_integer(),
          up: boolean(),
          owner: pid(),
          fd: non_neg_integer(),
          addresses: [interface_address()],
          routes: [route_info()],
          stats: stats(),
          mac: String.t() | nil,
          offload: false | [offload()],
          link_events: boolean(),
          active: boolean() | :once | pos_integer()
        }

  @typedoc "An offload an offload device may have (see \"Offload\")."
  @type offload :: :csum | :tso4 | :tso6 | :tso_ecn | :uso4 | :uso6

  @typedoc "A network to route: `\"10.8.0.0/16\"`, or an address and a prefix length."
  @type route :: String.t() | charlist() | {address(), 0..128}

  @typedoc "Why a change to a device was refused (see `set/2`)."
  @type change_error ::
          {:invalid_address, term()}
          | {:invalid_route, term()}
          | option_error()
          | use_error()
          | posix()

  @typedoc "Why `attach/2` failed."
  @type attach_error :: option_error() | posix()

  @typedoc "Where to find `tundra_server` for a change it must make (see `set/2`)."
  @type server_option :: {:socket_path, String.t()} | {:timeout, timeout()}

  @type set_option :: {:up, boolean()} | {:mtu, 68..65_535} | server_option()

  @type address_option ::
          {:dstaddr, address()}
          | {:prefix, 0..128}
          | {:netmask, address()}
          | server_option()

  @type route_option :: {:metric, non_neg_integer()} | server_option()

  @typedoc "An option of `create/2` (its `## Options` say what each means)."
  @type create_option :: unquote(Tundra.CreateOptions.typespec())

  @doc """
  Creates a TUN device with `address`, configures it and brings it up.

  Returns `{:ok, {device, name}}` where `name` is the interface's name
  (such as `"tun0"`). The calling process becomes the owner. When this
  returns, the interface has its address and MTU, is up, and the peer (or
  the prefix) is routed through it, for IPv4 and IPv6 alike. IPv6 addresses
  are added without duplicate address detection, so they are usable at once.

  ## Options

  #{Tundra.CreateOptions.docs()}

  The device learns no routes or addresses from the packets your program
  writes into it: the kernel would take an IPv6 router advertisement
  written there as one from a router on the link (installing its
  prefixes, a default route and SLAAC addresses), and a redirect as a
  better route. Tundra turns `accept_ra`, `autoconf` and
  `accept_redirects` off for the interface before it comes up; a tunnel
  that writes what a remote peer sent cannot so let the peer steer the
  host. Created directly, this is done where `/proc/sys` can be written
  (not where a container mounts it read-only); through `tundra_server`,
  always, or there is no device. A program that wants the kernel to
  learn from its advertisements sets
  `net.ipv6.conf.NAME.accept_ra` itself (see
  [Kinds of devices](devices.md#what-a-device-learns)).

  ## Errors

    * `{:invalid_address, address}` - `address` does not parse, or cannot be
      an interface address (unspecified, multicast, broadcast).
    * `{:invalid_option, {key, value}}` - the option's value is of the wrong
      type or out of range: a `:dstaddr` or `:netmask` of the other family, a
      `:dstaddr` equal to `address`, a non-contiguous `:netmask`, a `:prefix`
      longer than the address, an `:mtu` out of range, a `:name` too long or
      with characters the kernel refuses.
    * `{:unknown_option, key}`, `{:duplicate_option, key}` (given twice),
      `{:conflicting_options, [:netmask, :prefix]}` and
      `{:conflicting_options, [:via, key]}` for `:netns` or `:persist`
      with `via: :server`.
    * A POSIX atom for a system failure: `:eperm`/`:eacces` without
      privilege (with `:netns` or `:persist`, which the server does not
      do, even with `via: :auto`), `:enoent` for a `:netns` that does not
      exist, `:ebusy` when an interface of that name exists (`create/2`
      makes new interfaces only), `:einval` when the kernel refuses.
    * From `tundra_server`: `:eacces` when the caller is neither root nor
      in its group, or asks for addresses not delegated to it or a name
      outside the server's prefix; `:eaddrinuse` when the addresses collide
      with the host's; `:edquot` when its per-user device limit is reached;
      `:enoent` when no server listens on the socket (start
      `tundra_server`) or `:econnrefused` when its socket is stale;
      `:enotsock` when `:socket_path` names something that is not a
      socket; `:etimedout` when the server did not answer within
      `:timeout`.

  ## Examples

  Bad input is refused before anything touches the system:

      iex> Tundra.create("10.0.0.300")
      {:error, {:invalid_address, "10.0.0.300"}}

      iex> Tundra.create("fd00::2", dstaddr: "10.0.0.1")
      {:error, {:invalid_option, {:dstaddr, "10.0.0.1"}}}

      iex> Tundra.create("fd00::2", mtu: 1000)
      {:error, {:invalid_option, {:mtu, 1000}}}

      iex> Tundra.create("10.0.0.2", netmask: "255.0.255.0")
      {:error, {:invalid_option, {:netmask, "255.0.255.0"}}}

      iex> Tundra.create("10.0.0.2", name: "no spaces")
      {:error, {:invalid_option, {:name, "no spaces"}}}

      iex> Tundra.create("10.0.0.2", colour: :blue)
      {:error, {:unknown_option, :colour}}
  """
  @spec create(address(), [create_option()]) ::
          {:ok, {device() | [device(), ...], String.t()}} | {:error, create_error()}
  def create(address, opts \\ [])
      when (is_binary(address) or is_list(address) or is_tuple(address)) and is_list(opts) do
    with {:ok, args, start} <- Tundra.CreateOptions.parse(address, opts) do
      case Tundra.Refusal.plain(Nif.create(args), "create/2") do
        {:ok, made} ->
          Owner.started(made, start)

        {:error, {:invalid_option, :address}} ->
          {:error, {:invalid_address, address}}

        {:error, {:invalid_option, key}} ->
          {:error, {:invalid_option, {key, opts[key]}}}

        {:error, reason} ->
          {:error, reason}
      end
    end
  end

  @doc """
  Takes over an open file descriptor of an existing TUN or TAP device, for
  example one inherited from a parent process or received from another
  program.

  The calling process becomes the owner. The fd is put into non-blocking
  mode. A TUN device whose fd carries the Linux packet-information header
  (created without `IFF_NO_PI`) is handled too: the header is removed and
  added by Tundra, so `recv/3` and `send/3` still deal in raw IP packets.
  The kernel is asked what the device is, in its own network namespace
  when that is another one (which needs `CAP_NET_ADMIN` there).

  ## Options

    * `:dup` - when `true` (the default), Tundra works on a duplicate of
      `fd` and leaves `fd` itself to the caller, as `:socket.open/2` does.
      When `false`, ownership of `fd` passes to Tundra, which closes it with
      the device; the caller must not use or close it afterwards.
    * `:active` - the active mode the device starts in (see [Active mode](active_mode.md)).
    * `:active_batch` - one message per batch, as for `create/2`.
    * `:link_events` - see [Link events](active_mode.md#link-events).

  ## Errors

    * `:ebadf` - `fd` is not an open file descriptor.
    * `:not_tun` - `fd` is open but is not attached to a TUN or TAP
      device (a regular file, a socket, an unattached `/dev/net/tun`).
    * `:eopnotsupp` - a TAP device whose frames carry the
      packet-information header.
    * `:ebusy` - with `dup: false`, `fd` already belongs to a device of this
      VM (such as `info(device).fd`): two owners would close it twice.
  """
  @spec adopt(non_neg_integer(),
          dup: boolean(),
          active: active(),
          active_batch: boolean(),
          link_events: boolean()
        ) ::
          {:ok, {device(), String.t()}} | {:error, adopt_error()}
  def adopt(fd, opts \\ []) when is_integer(fd) and fd >= 0 and is_list(opts) do
    with {:ok, dup, start} <- Options.adopt_args(opts),
         {:ok, made} <- Nif.adopt(fd, dup) do
      Owner.started(made, start)
    end
  end

  @doc """
  Opens an existing persistent device by its interface name, as
  `ip tuntap add dev NAME mode tun user alice` or
  `create(..., persist: true, owner: "alice")` made it.

  The kernel lets a persistent device's owner (or a member of its group)
  do this without privilege, so an unprivileged VM can use a device its
  administrator made for it, with no server involved. The device keeps the
  addresses, routes and state it was given; closing it (or the owner's
  exit) leaves the interface in place for the next `attach/2`. The caller
  becomes the owner. TUN devices come as raw IP packets and TAP devices as
  Ethernet frames; a device made with the packet-information header is
  switched to raw packets.

  ## Options

    * `:queues` - for a multi-queue device, the number of queues to open
      (1 to 64); returns a list of devices, as `create/2` does.
    * `:active` - the active mode the device starts in.
    * `:active_batch` - one message per batch, as for `create/2`.
    * `:link_events` - see [Link events](active_mode.md#link-events).

  ## Errors

    * `:enodev` - there is no interface of that name.
    * `:einval` - the interface is not a TUN or TAP device, or
      `:queues` > 1 for one that is not multi-queue; or `name` is not a
      valid interface name.
    * `:eperm` - the caller is not the device's owner nor in its group
      (and has no `CAP_NET_ADMIN`).
    * `:eacces` - the caller may not open `/dev/net/tun` at all (mode
      0600, as on Debian without udev and in some containers; most
      distributions make it 0666): the device's owner needs that too.
    * `:ebusy` - another file descriptor holds the device (a device that
      is not multi-queue has one holder at a time).
  """
  @spec attach(String.t() | charlist(),
          queues: 1..64,
          active: active(),
          active_batch: boolean(),
          link_events: boolean()
        ) ::
          {:ok, {device() | [device(), ...], String.t()}} | {:error, attach_error()}
  def attach(name, opts \\ []) when (is_binary(name) or is_list(name)) and is_list(opts) do
    with {:ok, queues, start} <- Options.attach_args(opts),
         {:ok, interface} <- Options.interface_name(name) do
      case Tundra.Refusal.plain(Nif.attach(interface, queues), "attach/2") do
        {:ok, made} -> Owner.started(made, start)
        {:error, {:invalid_option, :name}} -> {:error, {:invalid_option, {:name, name}}}
        {:error, reason} -> {:error, reason}
      end
    end
  end

  @doc """
  Sets options of a device; the owner only:

    * `:active` (see [Active mode](active_mode.md)): `false`, `true`,
      `:once`, or a count to add to the current one. When a count comes
      to 0 or less this way, the device becomes passive and the owner
      receives `{:tundra_passive, device}`, as with `:gen_udp`.
    * `:active_batch` (see [Active mode](active_mode.md#one-message-per-batch)):
      `true` delivers a batch per message, `false` a packet.
    * `:link_events` (see [Link events](active_mode.md#link-events)): `true` or `false`. Changes
      after this returns are reported.
    * `:offload` (an offload device, see [Offload](offload.md)): exactly these
      offloads, a list of `:csum`, `:tso4`, `:tso6`, `:tso_ecn`, `:uso4`,
      `:uso6` (segmentation needs `:csum`); `[]` turns them all off, for
      a kernel whose offload misbehaves. The device keeps its vnet header
      and works as before, with smaller packets from the kernel.
      `:einval` on another device, or for a set the kernel refuses.
    * `:busy_poll` (see [Busy polling](io.md#busy-polling)): microseconds,
      0 to 200, that a read which finds the device empty keeps looking
      before it arms a select (`recv/3`, `recv_many/3`, active mode).
      Packets that arrive meanwhile cost no wakeup; the time is the
      scheduler's. Default `0`.

  Returns `:ok`, or `{:error, reason}`: `{:invalid_option, {key, value}}`,
  `{:unknown_option, key}`, `:not_owner`, `:closed`, or a POSIX atom when
  link events cannot be watched.
  """
  @spec setopts(device(),
          active: active(),
          active_batch: boolean(),
          link_events: boolean(),
          offload: [offload()],
          busy_poll: 0..200
        ) ::
          :ok | {:error, setopts_error()}
  def setopts({:"$tundra", ref} = device, opts) when is_reference(ref) and is_list(opts) do
    with {:ok,
          %{
            active: active,
            active_batch: batch,
            link_events: link_events,
            offload: offload,
            busy_poll: busy_poll
          }} <-
           Options.setopts_args(opts),
         :ok <- set_offload(ref, offload, opts),
         :ok <- if(batch == nil, do: :ok, else: Nif.set_active_batch(ref, batch)),
         :ok <- if(busy_poll == nil, do: :ok, else: Nif.set_busy_poll(ref, busy_poll)),
         :ok <- if(link_events == nil, do: :ok, else: Owner.link_events(ref, link_events)) do
      if active == nil, do: :ok, else: Owner.set_active(device, active)
    end
  end

  defp set_offload(_ref, nil, _opts), do: :ok

  defp set_offload(ref, names, opts) do
    case Nif.set_offload(ref, names) do
      {:error, {:invalid_option, :offload}} ->
        {:error, {:invalid_option, {:offload, opts[:offload]}}}

      result ->
        result
    end
  end

  @doc """
  Receives one packet: a raw IPv4 or IPv6 packet, as a binary of exactly
  the packet's size.

  `length` is the most bytes to return; a longer packet is truncated to
  `length` and its rest discarded, as with a datagram socket. `0` (as for
  `:socket` and `:gen_udp`) means the whole packet, whatever its size.

  With `:nowait`, returns `{:select, select_info}` when no packet is
  waiting; the owner then receives `{:"$socket", device, :select, handle}`
  (where `handle` is the third element of `select_info`) once one is.
  With a timeout, waits up to that many milliseconds (or forever with
  `:infinity`, the default).

  ## Errors

    * `{:invalid_length, length}` - `length` is negative.
    * `:einval` - the device is in active mode (its packets come as
      messages).
    * `:timeout` - no packet arrived in time.
    * `:not_owner` - the caller does not own the device.
    * `:closed` - the device was closed.
    * A POSIX atom for a system failure (e.g. `:ebadfd` after the
      interface was deleted from outside).
  """
  @spec recv(device(), non_neg_integer(), timeout_or_nowait()) ::
          {:ok, binary()} | {:select, select_info()} | {:error, recv_error()}
  def recv(device, length, timeout \\ :infinity)

  def recv({:"$tundra", ref}, length, _timeout)
      when is_reference(ref) and is_integer(length) and length < 0,
      do: {:error, {:invalid_length, length}}

  def recv({:"$tundra", ref}, length, :nowait) when is_reference(ref) and is_integer(length),
    do: Nif.recv(ref, length)

  def recv({:"$tundra", ref} = device, length, timeout)
      when is_reference(ref) and is_integer(length) and is_timeout(timeout) do
    Wait.until(device, length, Wait.deadline(timeout), &Nif.recv(ref, &1))
  end

  @doc """
  Receives up to `count` packets in one call: `{:ok, packets}` with at
  least one packet, in arrival order, each a whole raw IP packet.

  It returns as soon as the device has no more packets waiting, so a
  reader that drains the device on each select notification makes one
  call per `count` packets instead of one per packet, which matters at
  high packet rates. One call returns at most 1024 packets, and about
  192 KiB of them (a NIF call must stay short), whatever `count` is; the
  rest come with the next call. Timeouts, `:nowait`, select
  messages and errors are those of `recv/3`. When a read fails after some
  packets were read, those packets are returned; a lasting error comes
  with the next call.

  The packets of one call are parts of one binary (read from the kernel
  straight into it, with no copy per packet): keeping any of them keeps
  that call's batch in memory. `:binary.copy/1` a packet you keep for
  long.

  ## Errors

    * `{:invalid_count, count}` - `count` is not positive.
    * `:timeout`, `:not_owner`, `:closed` and POSIX atoms as for `recv/3`.
  """
  @spec recv_many(device(), pos_integer(), timeout_or_nowait()) ::
          {:ok, [binary(), ...]} | {:select, select_info()} | {:error, recv_many_error()}
  def recv_many(device, count, timeout \\ :infinity)

  def recv_many({:"$tundra", ref}, count, _timeout)
      when is_reference(ref) and is_integer(count) and count <= 0,
      do: {:error, {:invalid_count, count}}

  def recv_many({:"$tundra", ref}, count, :nowait) when is_reference(ref) and is_integer(count),
    do: Nif.recv_many(ref, count)

  def recv_many({:"$tundra", ref} = device, count, timeout)
      when is_reference(ref) and is_integer(count) and is_timeout(timeout) do
    Wait.until(device, count, Wait.deadline(timeout), &Nif.recv_many(ref, &1))
  end

  @doc """
  Sends one packet: a raw IPv4 or IPv6 packet, as a binary or iodata.

  The kernel takes the packet as if it had arrived on the interface:
  delivered locally, forwarded, or dropped by its usual rules.

  Iodata is written in one system call without building a flattened
  binary: small packets are gathered into a reused buffer, large ones are
  written with `writev` straight from their binaries (up to 16 of them).
  Iodata with byte integers, or in more pieces than that, is flattened
  first (by the VM's `IO.iodata_to_binary/1`, which never holds a
  scheduler for long). So a reply made of a new header and a sub-binary
  of a received packet is cheap.

  With `:nowait`, returns `{:select, select_info}` when the device cannot
  take the packet now (Linux processes a packet written to a TUN device
  within the write, so this is rare there); the owner then receives
  `{:"$socket", device, :select, handle}` and sends again. With a
  timeout, waits up to that many milliseconds (`:infinity` by default).

  ## Errors

    * `:einval` - not a whole IPv4 or IPv6 packet: shorter than its header,
      or shorter than its header's length field says (`"hello world"`,
      `<<0x45>>`, an empty packet). The kernel would take such bytes and
      drop them silently; Tundra refuses them.
    * `:emsgsize` - longer than 65535 bytes, the most an IP packet's
      length field can say.
    * `:eio` - the link is down (`set(dev, up: false)`, `ip link set
      NAME down`): the kernel takes nothing from a device whose link is
      down.
    * `:timeout`, `:not_owner`, `:closed` and POSIX atoms as for `recv/3`.

  Data that is not iodata raises `ArgumentError`.
  """
  @spec send(device(), iodata(), timeout_or_nowait()) ::
          :ok | {:select, select_info()} | {:error, send_error()}
  def send(device, data, timeout \\ :infinity)

  def send({:"$tundra", ref}, data, :nowait)
      when is_reference(ref) and (is_binary(data) or is_list(data)),
      do: Send.packet(ref, data)

  def send({:"$tundra", ref} = device, data, timeout)
      when is_reference(ref) and (is_binary(data) or is_list(data)) and is_timeout(timeout) do
    Wait.until(device, data, Wait.deadline(timeout), &Send.packet(ref, &1))
  end

  @doc """
  Sends several packets, in order, each as `send/3` would: a list whose
  elements are binaries or iodata, one packet each.

  For a reader that answers a batch from `recv_many/3` it costs one call
  instead of one per packet. Returns `:ok` when all were sent. However
  long the list, the VM preempts the caller between parts of it as it
  would any process that works that long, so a long list delays no other
  process.

  With `:nowait`, when the device cannot take more it returns
  `{:select, {select_info, rest}}`: `rest` are the packets not sent yet
  (as in `:socket`'s partial sends); once the owner receives
  `{:"$socket", device, :select, handle}` it calls again with `rest`.
  With a timeout, it waits and goes on, and gives up with
  `{:error, {:timeout, rest}}`.

  If a packet is refused (by Tundra, as `send/3` describes, or by the
  kernel), the call stops there with `{:error, {posix, rest}}`, `rest`
  starting with the refused packet; drop it and call again with the
  others to go on.

  ## Errors

    * `{:timeout, rest}`, `{posix, rest}` - see above (`:einval` and
      `:emsgsize` as for `send/3`).
    * `:not_owner`, `:closed` - nothing was sent.

  A list element that is not iodata raises `ArgumentError`; packets
  before it may have been sent.
  """
  @spec send_many(device(), [iodata()], timeout_or_nowait()) ::
          :ok
          | {:select, {select_info(), [iodata()]}}
          | {:error, send_many_error()}
  def send_many(device, packets, timeout \\ :infinity)

  def send_many({:"$tundra", ref}, packets, :nowait) when is_reference(ref) and is_list(packets),
    do: Send.many(ref, packets, :infinity)

  def send_many({:"$tundra", ref} = device, packets, timeout)
      when is_reference(ref) and is_list(packets) and is_timeout(timeout) do
    deadline = Wait.deadline(timeout)
    Wait.until(device, packets, deadline, &Send.many(ref, &1, deadline))
  end

  @doc """
  Receives a batch for a tunnel: `{:ok, {data, size}}` where `data` holds
  whole IP packets back to back, each `size` bytes long but the last,
  which may be shorter. That is exactly what one `:socket.sendmsg/2` with
  `UDP_SEGMENT` sends as one datagram per packet:

      {:ok, {data, size}} = Tundra.recv_segments(dev, :nowait)
      ctrl = if byte_size(data) > size,
               do: [%{level: :udp, type: 103, data: <<size::16-native>>}],
               else: []
      :socket.sendmsg(udp, %{addr: peer, iov: [data], ctrl: ctrl})

  On an offload device (`offload: true`) one call takes what the kernel
  hands over in one piece, a TCP or UDP super-packet of up to 64 KB, cut
  into its packets (checksums complete): at most 64 packets and 65,000
  bytes, the rest coming with the next call. Otherwise, and for any
  packet the kernel did not coalesce, it is one packet, with its own
  length as `size`. Waiting and errors as for `recv/3`.
  """
  @spec recv_segments(device(), timeout_or_nowait()) ::
          {:ok, {binary(), pos_integer()}}
          | {:select, select_info()}
          | {:error, :timeout | use_error() | posix()}
  def recv_segments(device, timeout \\ :infinity)

  def recv_segments({:"$tundra", ref}, :nowait) when is_reference(ref),
    do: Nif.recv_segments(ref)

  def recv_segments({:"$tundra", ref} = device, timeout)
      when is_reference(ref) and is_timeout(timeout) do
    Wait.until(device, nil, Wait.deadline(timeout), fn nil -> Nif.recv_segments(ref) end)
  end

  @doc """
  Sends a batch from a tunnel: `data` holds whole IP packets back to
  back, each `size` bytes but the last, as one `:socket.recvmsg/5` with
  `UDP_GRO` on delivers them (the size is in its `udp`/104 control
  message; without one, `size` is the datagram's length):

      :ok = :socket.setopt_native(udp, {17, 104}, 1)
      {:ok, %{iov: [data], ctrl: ctrl}} = :socket.recvmsg(udp, 65_535, 64, [], :nowait)
      size = case ctrl do
               [%{level: :udp, type: 104, data: <<size::32-native>>}] -> size
               [] -> byte_size(data)
             end
      :ok = Tundra.send_segments(dev, data, size)

  Each packet is checked as `send/3` checks one. On an offload device,
  consecutive TCP segments of one flow are written to the kernel as one
  super-packet (after their checksums are verified), the rest one by
  one. Returns `:ok`; with `:nowait`, `{:select, {select_info, rest}}`
  when the device cannot take more, `rest` being the packets not written
  (a binary, the same `size`); `{:error, {reason, rest}}` when a packet
  is refused, `rest` starting with it.
  """
  @spec send_segments(device(), binary(), pos_integer(), timeout_or_nowait()) ::
          :ok
          | {:select, {select_info(), binary()}}
          | {:error, {:timeout | posix(), binary()} | use_error()}
  def send_segments(device, data, size, timeout \\ :infinity)

  def send_segments({:"$tundra", ref}, data, size, :nowait)
      when is_reference(ref) and is_binary(data) and is_integer(size) and size > 0,
      do: Send.segments(ref, data, size, :infinity)

  def send_segments({:"$tundra", ref} = device, data, size, timeout)
      when is_reference(ref) and is_binary(data) and is_integer(size) and size > 0 and
             is_timeout(timeout) do
    deadline = Wait.deadline(timeout)
    Wait.until(device, data, deadline, &Send.segments(ref, &1, size, deadline))
  end

  @doc """
  Cancels a pending `:nowait` operation, given the `select_info` it
  returned. Afterwards no `{:"$socket", device, :select, handle}` message
  for it will arrive, and any that already had is removed from the
  caller's mailbox.

  Returns `:ok`; `{:error, {:invalid, select_info}}` when `select_info` is
  not the operation pending on the device (never returned, already
  cancelled, or replaced by a newer one), as `:socket.cancel/2` answers;
  or `{:error, :not_owner}` / `{:error, :closed}`.
  """
  @spec cancel(device(), select_info()) :: :ok | {:error, cancel_error()}
  def cancel({:"$tundra", ref} = device, {:select_info, op, handle} = info)
      when is_reference(ref) and op in [:recv, :send] and is_reference(handle),
      do: Wait.cancel(device, info)

  @doc """
  Closes the device. The kernel removes the interface; pending selects are
  cancelled. The close itself happens off the BEAM's schedulers (the kernel
  takes tens of milliseconds to unregister an interface), so this returns
  at once; the interface may outlive the call by those milliseconds (a
  `create/2` of its name waits for it). Packets just sent that the kernel
  had not processed yet may be lost with the interface.

  An owner whose device was in active mode receives
  `{:tundra_closed, device}`, as for a device whose interface was deleted.

  Returns `:ok`, or `{:error, :not_owner}` / `{:error, :closed}`.
  """
  @spec close(device()) :: :ok | {:error, use_error()}
  def close({:"$tundra", ref} = device) when is_reference(ref), do: Owner.close(device)

  @doc """
  Makes `pid` the owner of the device. Only the current owner may call it.
  Any pending select is cancelled, since its notification would go to the
  old owner (a notification that had already arrived is removed from the
  caller's mailbox). As `:gen_tcp.controlling_process/2` does, the device's
  messages already in the caller's mailbox (`{:tundra, device, packet}`,
  `{:tundra_passive, device}`, `{:tundra_closed, device}`) are moved to
  `pid`, in order, and an active device goes on delivering to `pid`:
  nothing is lost or duplicated.

  Returns `:ok`, or `{:error, reason}`: `:not_owner`, `:closed`, or
  `:esrch` when `pid` is not alive.
  """
  @spec controlling_process(device(), pid()) :: :ok | {:error, use_error() | :esrch}
  def controlling_process({:"$tundra", ref} = device, pid)
      when is_reference(ref) and is_pid(pid),
      do: Owner.hand_over(device, pid)

  @doc """
  Changes the link of the caller's device: `up: true | false` brings it up
  or down, `mtu: n` sets its MTU (68..65535; below 1280 the kernel turns
  IPv6 off on the interface). The owner only.

  A VM with `CAP_NET_ADMIN` changes the device itself; one without asks
  `tundra_server` (as `create/2` does, with the `:socket_path` and
  `:timeout` options), which changes only devices it made for the caller.
  The result is the same either way.

      {:ok, {dev, _}} = Tundra.create("10.99.0.2", dstaddr: "10.99.0.1", up: false)
      # ... set things up, then:
      :ok = Tundra.set(dev, up: true, mtu: 1400)

  Bringing a link up routes its peers again: when `set/2` returns, an
  IPv6 peer is reachable too.

  ## Errors

  `{:invalid_option, {key, value}}`, `{:unknown_option, key}`,
  `:not_owner`, `:closed`, or a POSIX atom: `:einval` when the kernel
  refuses the value. Without `CAP_NET_ADMIN` the change needs
  `tundra_server`: then `:enoent` (or `:econnrefused`) means that no
  server listens at `:socket_path`, as for `create/2`, and the server's
  refusals are those listed there, with `:eacces` for a device it did not
  make for the caller (an attached persistent device, an adopted one).
  These apply to every change function below. Through the server, an
  `:mtu` raised from below 1280 while the link is up is `:ebusy`: the
  kernel gives the link IPv6 again then, with its defaults, and the
  server must turn its learning off before the link takes a packet (see
  [What a device learns](devices.md#what-a-device-learns)); take the link
  down first.
  """
  @spec set(device(), [set_option()]) :: :ok | {:error, change_error()}
  def set({:"$tundra", ref}, opts) when is_reference(ref) and is_list(opts) do
    case Changes.set(opts) do
      {:ok, {:link, nil, nil}, _server} -> :ok
      {:ok, change, server} -> change(ref, change, server, opts, nil)
      {:error, reason} -> {:error, reason}
    end
  end

  @doc """
  Adds an address to the caller's device, as `ip addr add` does: with
  `:dstaddr` (a peer, routed through the device) and/or `:prefix` or
  `:netmask` (default: the whole address, a host route), IPv4 or IPv6,
  whatever the device's first address. IPv6 addresses are usable at once
  (no duplicate address detection). The owner only; directly or through
  `tundra_server` as `set/2` says, where the address, its peer and its
  prefix must lie in ranges delegated to the caller and collide with
  nothing on the host.

      :ok = Tundra.add_address(dev, "fd00:99::2", dstaddr: "fd00:99::1")
      :ok = Tundra.add_address(dev, "10.100.0.1", prefix: 24)

  ## Errors

  `{:invalid_address, address}`, `{:invalid_option, {key, value}}`,
  `:not_owner`, `:closed`, or a POSIX atom: `:eexist` when the device has
  the address already; from the server `:eacces` (not delegated) or
  `:eaddrinuse` (collides with the host's addresses or routes); and as
  for `set/2` when the server is needed and absent.
  """
  @spec add_address(device(), address(), [address_option()]) :: :ok | {:error, change_error()}
  def add_address({:"$tundra", ref}, address, opts \\ [])
      when is_reference(ref) and is_list(opts) do
    with {:ok, change, server} <- Changes.add_address(address, opts),
         do: change(ref, change, server, opts, {:invalid_address, address})
  end

  @doc """
  Removes an address from the caller's device, whatever its prefix or
  peer; the routes the kernel made for it go with it. Options:
  `:socket_path` and `:timeout`, as for `set/2`.

  ## Errors

  As `add_address/3`; `:eaddrnotavail` when the device does not have the
  address.
  """
  @spec remove_address(device(), address(), [server_option()]) :: :ok | {:error, change_error()}
  def remove_address({:"$tundra", ref}, address, opts \\ [])
      when is_reference(ref) and is_list(opts) do
    with {:ok, change, server} <- Changes.remove_address(address, opts),
         do: change(ref, change, server, opts, {:invalid_address, address})
  end

  @doc """
  Routes a network through the caller's device, as `ip route add
  DESTINATION dev NAME [metric M]` does: `destination` is a string such as
  `"10.8.0.0/16"` or `"fd00:8::/64"`, or `{address, prefix}`, and must
  have no host bits set. Option `:metric` (default: the kernel's), and
  `:socket_path` and `:timeout` as for `set/2`. Through `tundra_server`,
  the network must lie in ranges delegated to the caller and overlap no
  route of the host's.

  A default route (`"0.0.0.0/0"`, `"::/0"`) sends everything that no
  longer prefix claims through the device: a full-tunnel VPN. A
  privileged caller may add one, as `ip route add default dev tun0
  metric N` does (give it a metric that puts it before or after the
  host's own default, as you mean it to); through `tundra_server` it is
  granted only if the administrator delegated `0.0.0.0/0` (or `::/0`) to
  the caller. An address with prefix 0 routes the same default, under
  the same rule.

      :ok = Tundra.add_route(dev, "10.8.0.0/16", metric: 10)
      :ok = Tundra.add_route(dev, "0.0.0.0/0", metric: 50)

  ## Errors

  `{:invalid_route, destination}`, `{:invalid_option, {:metric, value}}`,
  `:not_owner`, `:closed`, or a POSIX atom: `:eexist` when the route
  exists; from the server `:eacces` or `:eaddrinuse`.
  """
  @spec add_route(device(), route(), [route_option()]) :: :ok | {:error, change_error()}
  def add_route({:"$tundra", ref}, destination, opts \\ [])
      when is_reference(ref) and is_list(opts) do
    with {:ok, change, server} <- Changes.route(:add_route, destination, opts),
         do: change(ref, change, server, opts, {:invalid_route, destination})
  end

  @doc """
  Removes a route through the caller's device, given as to `add_route/3`
  (with the same `:metric`, if it had one). Only routes through this
  device are removed.

  ## Errors

  As `add_route/3`; `:esrch` when there is no such route.
  """
  @spec remove_route(device(), route(), [route_option()]) :: :ok | {:error, change_error()}
  def remove_route({:"$tundra", ref}, destination, opts \\ [])
      when is_reference(ref) and is_list(opts) do
    with {:ok, change, server} <- Changes.route(:remove_route, destination, opts),
         do: change(ref, change, server, opts, {:invalid_route, destination})
  end

  # Makes a change and names a refused value as the caller gave it.
  defp change(ref, change, {socket_path, timeout}, opts, invalid_value) do
    result = Nif.change(ref, change, socket_path, Options.timeout_ms(timeout))

    case Tundra.Refusal.plain(result, "change") do
      {:error, {:invalid_option, key}} when key in [:address, :route] and invalid_value != nil ->
        {:error, invalid_value}

      {:error, {:invalid_option, key}} ->
        {:error, {:invalid_option, {key, opts[key]}}}

      result ->
        result
    end
  end

  @doc """
  Describes the device's interface as the kernel sees it now.

  Returns `{:ok, info}` with keys:

    * `:name`, `:index` (interface index), `:mode` (`:tun` or `:tap`),
      `:mtu`, `:up`;
    * `:addresses` - maps with `:address`, `:prefix` and `:dstaddr` (the
      peer or `nil`), addresses as `:inet` tuples. The kernel's own
      addresses (such as the IPv6 link-local one) are included;
    * `:routes` - the main table's routes through the device, maps with
      `:address` and `:prefix` (the destination) and `:metric` (or
      `nil`), the kernel's own (for addresses and peers) included;
    * `:stats` - the interface's counters (IFLA_STATS64): `:rx_packets`,
      `:rx_bytes`, `:rx_errors`, `:rx_dropped` count what the system
      received on the interface, that is what the program sent;
      `:tx_packets`, `:tx_bytes`, `:tx_errors`, `:tx_dropped` what the
      system sent through it, that is what the program was given to read
      (`:tx_dropped` counts what the device could not queue for it);
    * `:mac` - a TAP device's Ethernet address (`"02:..."`), else `nil`;
    * `:offload` - an offload device's offloads in effect (`:csum`,
      `:tso4`, `:tso6`, `:tso_ecn`, `:uso4`, `:uso6`; fewer where the
      kernel lacks them), `false` for any other device;
    * `:owner` (a pid), `:fd` (the OS file descriptor, for diagnostics or
      for `adopt/2` with `dup: true`; never close it yourself),
      `:link_events` (whether the owner gets them) and `:active` (the
      active mode, as `getopts/2` reports it).

  The kernel is asked about this one link (and its addresses and routes),
  in the device's network namespace. Any process may call it.

  ## Errors

  `:closed` for a closed device, `:enodev` if the interface was deleted
  from outside, or another POSIX atom.
  """
  @spec info(device()) :: {:ok, info()} | {:error, :closed | posix()}
  def info({:"$tundra", ref}) when is_reference(ref) do
    with {:ok, info} <- Nif.info(ref) do
      {:ok,
       info
       |> Map.update!(:mac, &(&1 && Options.format_mac(&1)))
       |> Map.update!(:active, &active_option/1)}
    end
  end

  @typedoc "An option `getopts/2` reports."
  @type option_name :: :active | :active_batch | :offload | :link_events | :busy_poll

  @typedoc "An option's value as `getopts/2` reports it."
  @type option_value ::
          {:active, boolean() | :once | pos_integer()}
          | {:active_batch, boolean()}
          | {:offload, false | [offload()]}
          | {:link_events, boolean()}
          | {:busy_poll, 0..200}

  @doc """
  The current values of the device's options, as `:inet.getopts/2`
  reports a socket's: `names` is a list of `:active` (`false`, `true`,
  `:once`, or the packets still to deliver before going passive),
  `:active_batch`,
  `:offload` (the offloads in effect on an offload device, else `false`),
  `:link_events` and `:busy_poll`. Any process may ask; nothing is asked
  of the kernel.

      {:ok, [active: 62, link_events: false]} = Tundra.getopts(dev, [:active, :link_events])

  Returns `{:ok, [{name, value}]}` in the order asked, or
  `{:error, :closed}`; an unknown name is `{:error, {:unknown_option, name}}`.
  """
  @spec getopts(device(), [option_name()]) ::
          {:ok, [option_value()]} | {:error, :closed | {:unknown_option, atom()}}
  def getopts({:"$tundra", ref}, names) when is_reference(ref) and is_list(names) do
    case Enum.find(
           names,
           &(&1 not in [:active, :active_batch, :offload, :link_events, :busy_poll])
         ) do
      nil ->
        with {:ok, {active, batch, offload, link_events, busy_poll}} <- Nif.getopts(ref) do
          values = %{
            active: active_option(active),
            active_batch: batch,
            offload: offload,
            link_events: link_events,
            busy_poll: busy_poll
          }

          {:ok, for(name <- names, do: {name, Map.fetch!(values, name)})}
        end

      unknown ->
        {:error, {:unknown_option, unknown}}
    end
  end

  # The active mode as the `:active` option says it.
  defp active_option({:off, _}), do: false
  defp active_option({:once, _}), do: :once
  defp active_option({:always, _}), do: true
  defp active_option({:count, n}), do: n
end

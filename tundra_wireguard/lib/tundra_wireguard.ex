defmodule TundraWireGuard do
  @moduledoc """
  A WireGuard peer on a Tundra device: the protocol of
  [wireguard.com/protocol](https://www.wireguard.com/protocol/) in Elixir,
  over OTP's `:crypto`, interoperating with other WireGuard
  implementations (it is tested against boringtun, configured with `wg`).

      {:ok, config} = TundraWireGuard.read_config("wg0.conf")
      {:ok, pid} = TundraWireGuard.start_link(config, name: "wg0")

  The configuration is what `wg-quick` reads (see
  `TundraWireGuard.Config`): the interface's private key,
  addresses, listen port and MTU, and its peers with their public keys,
  preshared keys, allowed IPs, endpoints and persistent keepalives. The
  device gets the addresses and a route for each peer's allowed IPs (all
  but default routes, see below), and the interface answers on the
  listen port, IPv4 and IPv6. `examples/wireguard.exs` runs one from a
  file.

  What it does, as the protocol says:

    * the `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` handshake, as initiator
      and responder, with `mac1`; under load (more handshake messages a
      second than `:handshake_load`), `mac2` with cookie replies and a
      per-address rate limit; as initiator it takes cookie replies
      (XChaCha20-Poly1305) and retries with the cookie;
    * transport data with a counter per packet and a sliding replay
      window; padding to 16 bytes;
    * cryptokey routing: a packet goes to the peer whose allowed IPs hold
      its destination, and a packet from a peer whose source is not in
      its allowed IPs is dropped;
    * the timers: a new handshake after two minutes or 2^60 messages,
      keys refused after three minutes, handshake retries every five
      seconds (with jitter) for up to ninety, keepalives after ten
      seconds of one-way traffic, persistent keepalives, keys zeroed
      after nine minutes without a handshake;
    * endpoint roaming: a peer's endpoint is where its last authentic
      packet came from.

  Malformed, unauthentic, replayed or unroutable packets are dropped
  without an answer and counted in `info/1`'s `:drops`.

  ## The data path

  By default the device is an offload device: what the kernel hands it
  comes as a super-packet's segments (`Tundra.recv_segments/2`), which are
  sealed one by one and leave in one `UDP_SEGMENT` send per run of equal
  length; datagrams arrive coalesced (`UDP_GRO`), are opened one by one
  and reach the device with `Tundra.send_many/3`, which writes a run of
  one TCP flow as one super-packet again. `offload: false` is the plain
  path: a packet per read, a datagram per send.

  ## Operated as WireGuard

  Each interface has a UAPI socket (`/var/run/wireguard/NAME.sock` by
  default, see `:uapi`), WireGuard's cross-platform userspace protocol:
  `wg show`, `wg showconf`, `wg set`, `wg syncconf` and `wg-quick` drive
  it as they drive wireguard-go, and `configure/2`, `put_peer/3`,
  `remove_peer/2` and `configuration/1` do the same from Elixir. A peer
  added, changed or removed leaves the others' sessions alone.
  `bin/tundra-wg` runs one as a program of its own, which is what
  `wg-quick` needs of a userspace implementation
  (`WG_QUICK_USERSPACE_IMPLEMENTATION`); see the package's README, which
  also says how a member of `tundra_server`'s group runs one without root.

  ## Not here

  Default routes (`AllowedIPs = 0.0.0.0/0`) are accepted for cryptokey
  routing but not installed on the device: they would route the
  tunnel's own datagrams into it, which `wg-quick` avoids with policy
  routing (a firewall mark and its own table), the host's business:
  `wg-quick` with `bin/tundra-wg` does it, the mark included (`fwmark`,
  `SO_MARK`, which needs `CAP_NET_ADMIN`). `read_config/1` ignores `DNS`,
  `Table`, `FwMark`, `SaveConfig` and the hooks, which are `wg-quick`'s.
  """

  alias TundraWireGuard.{Config, Interface}

  @typedoc """
  Options:

    * `:name` - the device's name (`Tundra.create/2`'s `:name`), such as
      `"wg0"`. Default: the kernel's `tun%d`.
    * `:offload` - the offload data path (default `true`; Linux).
    * `:netns` - create the device in this network namespace
      (`Tundra.create/2`'s `:netns`; the UDP sockets stay in the VM's).
    * `:uapi` - the folder of the UAPI socket (`NAME.sock`, mode 0600,
      the VM's user's), which `wg` and `wg-quick` use; `false` for none.
      Default: `"/var/run/wireguard"`, the one folder `wg` looks in (made
      if missing; a VM that cannot write there logs a warning and runs
      without the socket: see the README for users without root).
    * `:via`, `:socket_path` - where the device comes from
      (`Tundra.create/2`'s options); the address and route changes go
      the same way.
    * `:routes` - whether the interface routes its peers' allowed IPs to
      its device, following changes (default `true`; `wg-quick` routes
      them itself).
    * `:server` - a name to register the process under (`GenServer` names).
    * `:timers` - shorter protocol timers, for tests only (milliseconds:
      `rekey_after_time`, `reject_after_time`, `rekey_attempt_time`,
      `rekey_timeout`, `keepalive_timeout`, `cookie_lifetime`; counts:
      `rekey_after_messages`, `reject_after_messages`,
      `handshake_load`, the handshake messages a second past which the
      interface is under load).
  """
  @type option ::
          {:name, String.t()}
          | {:offload, boolean()}
          | {:netns, String.t()}
          | {:uapi, Path.t() | false}
          | {:routes, boolean()}
          | {:via, :auto | :direct | :server}
          | {:socket_path, String.t()}
          | {:server, GenServer.name()}
          | {:timers, keyword() | map()}

  @typedoc "What `info/1` says about a peer."
  @type peer_info :: %{
          public_key: binary(),
          endpoint: {:inet.ip_address(), :inet.port_number()} | nil,
          handshakes: non_neg_integer(),
          last_handshake: integer() | nil,
          rx_bytes: non_neg_integer(),
          tx_bytes: non_neg_integer(),
          keepalives_sent: non_neg_integer(),
          keepalives_received: non_neg_integer(),
          session: boolean(),
          staged: non_neg_integer()
        }

  @typedoc "What `info/1` says about the interface."
  @type info :: %{
          name: String.t(),
          public_key: binary(),
          listen_port: :inet.port_number(),
          drops: %{atom() => pos_integer()},
          peers: [peer_info()]
        }

  @doc "Reads a `wg-quick` configuration file (see `TundraWireGuard.Config`)."
  @spec read_config(Path.t()) :: {:ok, Config.t()} | {:error, term()}
  defdelegate read_config(path), to: Config, as: :read

  @doc "Parses a `wg-quick` configuration's text."
  @spec parse_config(String.t()) :: {:ok, Config.t()} | {:error, {pos_integer(), String.t()}}
  defdelegate parse_config(text), to: Config, as: :parse

  @typedoc "Why an interface did not start; `format_error/1` says it in words."
  @type start_error ::
          {:invalid_public_key, String.t()}
          | :no_address
          | :no_private_key
          | {:listen_port, :inet.port_number(), :inet.posix()}
          | {:device, String.t() | nil, Tundra.create_error()}
          | {:address, TundraWireGuard.Config.prefix(), Tundra.change_error()}
          | {:route, TundraWireGuard.Config.prefix(), Tundra.change_error()}

  @doc """
  Starts an interface from a configuration (`read_config/1`): its UDP
  port, its device with the addresses and routes, and the handshake with
  peers that have a persistent keepalive. Fails with a `t:start_error/0`:
  `{:listen_port, port, :eaddrinuse}` when the port is taken,
  `:no_address` for a configuration without an `Address` (which wg-quick
  allows: its userspace implementation is started so, see
  `bin/tundra-wg`) when the device must come from `tundra_server`, which
  makes a device only with an address delegated to its caller; as root,
  such a device is made without one. `:no_private_key` for one with
  peers but no private key. `{:device, name, reason}`
  when the device cannot be made (`Tundra.create/2`'s reason; through
  `tundra_server`, the warning Tundra logs says why), `{:address, ...}`
  or `{:route, ...}` for the addresses and routes after the first, or
  `{:invalid_public_key, key}`. As any `GenServer.start_link/3`, it links:
  trap exits to handle the error rather than exit with it. A device
  deleted while the interface runs is logged, and the interface stops
  (`{:shutdown, :device_deleted}`) for its supervisor to start it again.
  """
  @spec start_link(Config.t(), [option()]) :: GenServer.on_start()
  def start_link(config, opts \\ []) do
    {server, opts} = Keyword.pop(opts, :server)
    gen_opts = if server, do: [name: server], else: []
    GenServer.start_link(Interface, {config, opts}, gen_opts)
  end

  @doc """
  For supervisors: `{TundraWireGuard, config: config, name: "wg0"}`,
  the configuration under `:config` and `start_link/2`'s options beside it.
  """
  @spec child_spec([{:config, Config.t()} | option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    {config, opts} = Keyword.pop!(opts, :config)

    %{
      id: Keyword.get(opts, :server, __MODULE__),
      start: {__MODULE__, :start_link, [config, opts]}
    }
  end

  @doc "The interface: its device's name, key, port, peers and drop counts."
  @spec info(GenServer.server()) :: info()
  def info(server), do: GenServer.call(server, :info)

  @doc """
  What `info/1` says, as text in the shape of `wg show`: keys in base64,
  endpoints as `address:port`.
  """
  @spec show(GenServer.server()) :: String.t()
  def show(server) do
    info = info(server)
    now = System.system_time(:millisecond)

    peers =
      for peer <- info.peers do
        handshake =
          if peer.last_handshake,
            do: "#{div(now - peer.last_handshake, 1000)} seconds ago",
            else: "never"

        """
        peer: #{Base.encode64(peer.public_key)}
          endpoint: #{endpoint(peer.endpoint)}
          latest handshake: #{handshake} (#{peer.handshakes} in all)
          transfer: #{peer.rx_bytes} B received, #{peer.tx_bytes} B sent
          session: #{if peer.session, do: "yes", else: "no"}
        """
      end

    drops = Enum.map_join(Enum.sort(info.drops), ", ", fn {why, n} -> "#{why} #{n}" end)

    """
    interface: #{info.name}
      public key: #{Base.encode64(info.public_key)}
      listening port: #{info.listen_port}
      dropped: #{if drops == "", do: "nothing", else: drops}

    """ <> Enum.join(peers, "\n")
  end

  defp endpoint(nil), do: "(none)"
  defp endpoint({{_, _, _, _} = ip, port}), do: "#{:inet.ntoa(ip)}:#{port}"
  defp endpoint({ip, port}), do: "[#{:inet.ntoa(ip)}]:#{port}"

  @doc """
  Moves the interface's UDP sockets to another port (`0`: any), as a
  laptop moving between networks does to its peers: they follow, by
  roaming, once an authentic packet arrives from the new one. Returns the
  new port.
  """
  @spec rebind(GenServer.server(), :inet.port_number()) ::
          {:ok, :inet.port_number()} | {:error, term()}
  def rebind(server, port), do: GenServer.call(server, {:rebind, port})

  @doc """
  A sentence for a reason `start_link/2` failed with (and, for anything
  else, `Tundra.format_error/1`'s).

      iex> TundraWireGuard.format_error({:listen_port, 51820, :eaddrinuse})
      "UDP port 51820 is in use (ListenPort): another program, or another interface, has it"
  """
  @spec format_error(term()) :: String.t()
  def format_error({:listen_port, port, :eaddrinuse}),
    do: "UDP port #{port} is in use (ListenPort): another program, or another interface, has it"

  def format_error({:listen_port, port, reason}),
    do: "cannot listen on UDP port #{port} (ListenPort): #{Tundra.format_error(reason)}"

  def format_error(:no_address),
    do:
      "the configuration has no Address: through tundra_server a device is made only " <>
        "with an address delegated to you (give it, as Address = 10.0.0.1/24)"

  def format_error(:no_private_key),
    do: "the configuration has peers but no PrivateKey: their keys are made from it"

  def format_error({:device, name, reason}),
    do: "cannot make the device #{name || "(any name)"}: #{Tundra.format_error(reason)}"

  def format_error({:address, {ip, length}, reason}),
    do: "cannot add the address #{:inet.ntoa(ip)}/#{length}: #{Tundra.format_error(reason)}"

  def format_error({:route, {ip, length}, reason}),
    do: "cannot route #{:inet.ntoa(ip)}/#{length} to the device: #{Tundra.format_error(reason)}"

  def format_error({:invalid_public_key, key}),
    do: "#{key} is not a public key WireGuard can use (PublicKey)"

  def format_error(reason), do: Tundra.format_error(reason)

  @typedoc """
  A change of configuration, as `wg set` makes one: the keys given change,
  the others stay. Keys are the raw 32 bytes.
  """
  @type change :: %{
          optional(:private_key) => <<_::256>>,
          optional(:listen_port) => :inet.port_number(),
          optional(:fwmark) => non_neg_integer(),
          optional(:replace_peers) => true,
          optional(:peers) => [peer_change()]
        }

  @typedoc """
  What changes for one peer (`public_key` names it): `remove: true`
  removes it; `update_only: true` changes it only if it exists;
  `replace_allowed_ips: true` clears them before `allowed_ips` adds;
  `persistent_keepalive` in seconds, 0 for none.
  """
  @type peer_change :: %{
          required(:public_key) => <<_::256>>,
          optional(:remove) => true,
          optional(:update_only) => true,
          optional(:preshared_key) => <<_::256>>,
          optional(:endpoint) => {:inet.ip_address(), :inet.port_number()},
          optional(:persistent_keepalive) => non_neg_integer(),
          optional(:replace_allowed_ips) => true,
          optional(:allowed_ips) => [TundraWireGuard.Config.prefix()]
        }

  @doc """
  Changes the running interface's configuration, as `wg set` does through
  the UAPI socket: all of it or (`{:error, posix}`) none of it. Peers that
  are added, changed or removed leave the others' sessions alone; a new
  private key ends every session (they rest on the old one); a new listen
  port moves the sockets (`:eaddrinuse` if taken). The device's routes
  follow the peers' allowed IPs (unless started with `routes: false`).

      TundraWireGuard.configure(wg, %{peers: [%{public_key: key,
        endpoint: {{192, 0, 2, 1}, 51820}, allowed_ips: [{{10, 0, 0, 2}, 32}]}]})
  """
  @spec configure(GenServer.server(), change()) :: :ok | {:error, :inet.posix()}
  def configure(server, change),
    do: GenServer.call(server, {:configure, Map.put_new(change, :peers, [])})

  @doc "Adds or changes one peer (see `t:peer_change/0`; `public_key` given apart)."
  @spec put_peer(GenServer.server(), <<_::256>>, map()) :: :ok | {:error, :inet.posix()}
  def put_peer(server, public_key, change),
    do: configure(server, %{peers: [Map.put(change, :public_key, public_key)]})

  @doc "Removes one peer, its sessions and its routes."
  @spec remove_peer(GenServer.server(), <<_::256>>) :: :ok | {:error, :inet.posix()}
  def remove_peer(server, public_key),
    do: configure(server, %{peers: [%{public_key: public_key, remove: true}]})

  @doc "The running configuration, as `wg showconf` reports it (keys raw)."
  @spec configuration(GenServer.server()) :: map()
  def configuration(server), do: GenServer.call(server, :configuration)

  @doc "A new private key, base64 (as `wg genkey`)."
  @spec generate_private_key() :: String.t()
  def generate_private_key do
    {_public, private} = :crypto.generate_key(:ecdh, :x25519)
    Base.encode64(private)
  end

  @doc "The public key of a base64 private key (as `wg pubkey`)."
  @spec public_key(String.t()) :: String.t()
  def public_key(private) do
    {public, _} = :crypto.generate_key(:ecdh, :x25519, Base.decode64!(private))
    Base.encode64(public)
  end
end

defmodule TundraExamples.TapResponder do
  @moduledoc """
  Plays a host on a TAP device's Ethernet link: it answers ARP requests
  (IPv4) and neighbour solicitations (IPv6) for its addresses with its own
  Ethernet address, and echo requests to those addresses, so the system
  can `ping` a peer that lives in Elixir.

  This is what a program on a TAP device must do before any IP packet
  reaches it: the kernel first asks who has the peer's address, and sends
  nothing until it hears back.

      {:ok, _} =
        TundraExamples.TapResponder.start_link(
          {{:create, "10.99.0.2", prefix: 24, mode: :tap}, "02:00:5e:10:00:01", ["10.99.0.1"]}
        )

      # `ping 10.99.0.1` now gets its answers from Elixir.
  """
  use GenServer

  alias TundraExamples.{Flow, Icmp}

  @count 64
  @arp 0x0806
  @ipv4 0x0800
  @ipv6 0x86DD

  @typedoc "The host played: its Ethernet address and its IP addresses (as bytes)."
  @type host :: %{mac: <<_::48>>, addresses: [binary()]}

  @doc """
  Starts a responder on the TAP device `spec` names (see
  `TundraExamples.device_spec/0`), playing the host with Ethernet address
  `mac` (`"02:00:5e:10:00:01"`) and IP `addresses`.
  """
  @spec start_link({TundraExamples.device_spec(), String.t(), [Tundra.address()]}) ::
          GenServer.on_start()
  def start_link({spec, mac, addresses}, opts \\ []),
    do: GenServer.start_link(__MODULE__, {spec, host(mac, addresses)}, opts)

  @doc """
  Starts a responder for the TAP `device`, which the caller owns, and
  hands the device to it.
  """
  @spec serve(Tundra.device(), String.t(), [Tundra.address()]) ::
          {:ok, pid()} | {:error, term()} | :ignore
  def serve(device, mac, addresses) do
    with {:ok, pid} <- start_link({{:given, device}, mac, addresses}),
         :ok <- Tundra.controlling_process(device, pid) do
      send(pid, :owned)
      {:ok, pid}
    end
  end

  @doc "The host `mac` and `addresses` describe."
  @spec host(String.t(), [Tundra.address()]) :: host()
  def host(mac, addresses) do
    mac = mac |> String.replace(":", "") |> Base.decode16!(case: :mixed)
    %{mac: mac, addresses: Enum.map(addresses, &address_bytes/1)}
  end

  defp address_bytes(address) do
    {:ok, ip} = address |> to_charlist() |> :inet.parse_strict_address()

    case ip do
      {a, b, c, d} -> <<a, b, c, d>>
      words -> for w <- Tuple.to_list(words), into: <<>>, do: <<w::16>>
    end
  end

  @doc """
  The frame `host` sends back for `frame`: an ARP reply, a neighbour
  advertisement or an echo reply; `:ignore` for anything else.
  """
  @spec answer(binary(), host()) :: {:ok, binary()} | :ignore
  def answer(<<_dst::binary-6, src::binary-6, @arp::16, arp::binary>>, host) do
    case arp do
      # An Ethernet/IPv4 request (operation 1) for one of our addresses.
      <<1::16, @ipv4::16, 6, 4, 1::16, sha::binary-6, spa::binary-4, _tha::binary-6,
        tpa::binary-4, _::binary>> ->
        if tpa in host.addresses,
          do:
            {:ok,
             <<src::binary, host.mac::binary, @arp::16, 1::16, @ipv4::16, 6, 4, 2::16,
               host.mac::binary, tpa::binary, sha::binary, spa::binary>>},
          else: :ignore

      _ ->
        :ignore
    end
  end

  def answer(<<_dst::binary-6, src::binary-6, @ipv6::16, packet::binary>>, host) do
    case packet do
      # A neighbour solicitation (ICMPv6 135) for one of our addresses,
      # from an address (not a duplicate address probe, sent from ::).
      <<6::4, _::28, _len::16, 58, 255, from::binary-16, _to::binary-16, 135, 0, _::16, _::32,
        target::binary-16, _::binary>>
      when from != <<0::128>> ->
        if target in host.addresses,
          do: {:ok, frame(src, host, @ipv6, advertisement(from, target, host.mac))},
          else: :ignore

      _ ->
        echo(src, host, @ipv6, packet)
    end
  end

  def answer(<<_dst::binary-6, src::binary-6, @ipv4::16, packet::binary>>, host),
    do: echo(src, host, @ipv4, packet)

  def answer(_frame, _host), do: :ignore

  defp echo(to, host, type, packet) do
    with true <- destination(packet) in host.addresses,
         {:ok, reply} <- Icmp.echo_reply(packet) do
      {:ok, frame(to, host, type, reply)}
    else
      _ -> :ignore
    end
  end

  defp destination(<<4::4, _::124, dst::binary-4, _::binary>>), do: dst
  defp destination(<<6::4, _::60, _src::binary-16, dst::binary-16, _::binary>>), do: dst
  defp destination(_packet), do: nil

  defp frame(to, host, type, payload),
    do: <<to::binary, host.mac::binary, type::16, payload::binary>>

  # A solicited neighbour advertisement (ICMPv6 136, flags Solicited and
  # Override) of `target` at `mac`, with the target link-layer address
  # option, from `target` to `to`.
  defp advertisement(to, target, mac) do
    icmp = <<136, 0, 0::16, 0b011::3, 0::29, target::binary, 2, 1, mac::binary>>
    pseudo = <<target::binary, to::binary, byte_size(icmp)::32, 0::24, 58>>
    sum = Icmp.checksum(pseudo <> icmp)
    <<type, code, _::16, rest::binary>> = icmp
    icmp = <<type, code, sum::16, rest::binary>>
    <<6::4, 0::28, byte_size(icmp)::16, 58, 255, target::binary, to::binary, icmp::binary>>
  end

  @impl true
  # Reading starts with :owned, once the device is ours.
  def init({{:given, device}, host}), do: {:ok, {Flow.new(device, @count), host}}

  def init({spec, host}) do
    with {:ok, {device, _name}} <- TundraExamples.open(spec, []),
         {:ok, flow} <- Flow.drain(Flow.new(device, @count), &answers(&1, host)) do
      {:ok, {flow, host}}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_info(:owned, {flow, host}), do: drain(flow, host)

  def handle_info({:"$socket", device, :select, _}, {%{device: device} = flow, host}),
    do: drain(flow, host)

  defp drain(flow, host) do
    case Flow.selected(flow, &answers(&1, host)) do
      {:ok, flow} -> {:noreply, {flow, host}}
      {:error, _gone} -> {:stop, {:shutdown, :device_closed}, {flow, host}}
    end
  end

  defp answers(frames, host), do: for(f <- frames, {:ok, a} <- [answer(f, host)], do: a)
end

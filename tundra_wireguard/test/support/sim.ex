defmodule TundraWireGuardTest.Sim do
  @moduledoc false
  # Two (or more) WireGuard ends of TundraWireGuard.Protocol on a wire of
  # the test's own and a clock of the test's own: what one sends reaches
  # the other (unless the test holds or drops it), timers fire when the
  # test moves the clock. No device, no socket, no root, no waiting.
  #
  # Ends are named by atoms; end `n`'s UDP endpoint is {{10, 0, 0, i}, 51820}
  # and its tunnel address 10.9.0.i (i from 1, in the order given).

  alias TundraWireGuard.Protocol

  defstruct ends: %{}, now: 0, wire: [], delivered: %{}, sent: [], hold: false

  @doc """
  Ends `names` (at least two), each a peer of every other (allowed IPs:
  the other's tunnel address, and `extra_allowed[name]`), endpoints known
  to the first; `timers` as Protocol.new/2 takes them (for all), and
  `timers_for` (a map of name to timers) for one; `keepalive` (a map of
  name to seconds) persistent keepalives.
  """
  def new(names, opts \\ []) do
    keys = Map.new(names, fn name -> {name, :crypto.generate_key(:ecdh, :x25519)} end)
    index = names |> Enum.with_index(1) |> Map.new()
    [first | _] = names

    ends =
      Map.new(names, fn name ->
        peers =
          for other <- names, other != name do
            {public, _} = keys[other]

            %{
              public_key: public,
              preshared_key: nil,
              allowed_ips:
                [{tunnel(index[other]), 32}] ++ Map.get(opts[:extra_allowed] || %{}, other, []),
              endpoint: if(name == first, do: endpoint(index[other])),
              persistent_keepalive: get_in(opts, [:keepalive, name])
            }
          end

        {_, private} = keys[name]

        config = %{private_key: private, listen_port: nil, addresses: [], mtu: 1420, peers: peers}

        timers = (opts[:timers] || []) ++ Map.get(opts[:timers_for] || %{}, name, [])

        {:ok, state} =
          Protocol.new(config, now: 0, wall_offset: 1_700_000_000_000, timers: timers)

        {name, state}
      end)

    %__MODULE__{ends: ends, delivered: Map.new(names, &{&1, []})}
    |> Map.put(:index, index)
    |> Map.put(:keys, keys)
    |> start()
  end

  defp start(sim) do
    Enum.reduce(Map.keys(sim.ends), sim, fn name, sim ->
      step(sim, name, &Protocol.start(&1, sim.now))
    end)
    |> run()
  end

  def endpoint(i), do: {{10, 0, 0, i}, 51_820}
  def tunnel(i), do: {10, 9, 0, i}

  @doc "The public key of end `name`."
  def public(sim, name), do: elem(sim.keys[name], 0)

  @doc "Runs one protocol step on end `name` and puts its actions on the wire."
  def step(sim, name, fun) do
    {state, actions} = fun.(sim.ends[name])
    sim = %{sim | ends: Map.put(sim.ends, name, state)}
    Enum.reduce(actions, sim, &act(&2, name, &1))
  end

  defp act(sim, name, {:deliver, packets}),
    do: update_in(sim.delivered[name], &(&1 ++ packets))

  defp act(sim, name, {:send, {ip, port}, datagrams}) do
    to = Enum.find_value(sim.index, fn {n, i} -> if endpoint(i) == {ip, port}, do: n end)
    from = endpoint(sim.index[name])

    items =
      for {iodata, length} <- datagrams do
        datagram = IO.iodata_to_binary(iodata)
        ^length = byte_size(datagram)
        {to, from, datagram}
      end

    %{sim | wire: sim.wire ++ items, sent: sim.sent ++ Enum.map(items, &{name, &1})}
  end

  @doc "Delivers what is on the wire (and what that makes), unless held."
  def run(%{hold: true} = sim), do: sim

  def run(%{wire: []} = sim), do: sim

  def run(%{wire: [{to, from, datagram} | rest]} = sim) do
    sim = %{sim | wire: rest}

    sim =
      if to,
        do: step(sim, to, &Protocol.from_network(&1, from, [datagram], sim.now)),
        else: sim

    run(sim)
  end

  @doc "A packet from end `from`'s device to `to`'s tunnel address (IPv4, UDP)."
  def packet(sim, from, to, payload \\ "x"),
    do: ipv4(tunnel(sim.index[from]), tunnel(sim.index[to]), payload)

  @doc "Sends `packets` from end `name`'s device, as one batch, and runs the wire."
  def from_device(sim, name, packets) do
    sim
    |> step(name, &Protocol.from_device(&1, packets, false, sim.now))
    |> run()
  end

  @doc "Moves the clock by `ms`, firing due timers (in 10 ms steps), running the wire."
  def advance(sim, ms) do
    target = sim.now + ms

    Stream.iterate(0, & &1)
    |> Enum.reduce_while(sim, fn _, sim ->
      next =
        sim.ends
        |> Map.values()
        |> Enum.map(&Protocol.wake_at/1)
        |> Enum.reject(&is_nil/1)
        |> Enum.min(fn -> nil end)

      if next != nil and next <= target do
        sim = %{sim | now: max(sim.now, next)}

        sim =
          Enum.reduce(Map.keys(sim.ends), sim, fn name, sim ->
            at = Protocol.wake_at(sim.ends[name])

            if at != nil and at <= sim.now,
              do: step(sim, name, &Protocol.tick(&1, sim.now)),
              else: sim
          end)

        {:cont, run(sim)}
      else
        {:halt, run(%{sim | now: target})}
      end
    end)
  end

  @doc "What end `name`'s device got, since the test last took it."
  def take_delivered(sim, name) do
    {sim.delivered[name], put_in(sim.delivered[name], [])}
  end

  @doc "The datagrams end `name` sent, since the test last took them: {to, from, datagram}."
  def take_sent(sim, name) do
    mine = for {^name, item} <- sim.sent, do: item
    {mine, %{sim | sent: for({n, _} = s <- sim.sent, n != name, do: s)}}
  end

  @doc "Protocol.info/2 of end `name`'s peer `other`."
  def peer(sim, name, other) do
    public = public(sim, other)
    Enum.find(Protocol.info(sim.ends[name], sim.now).peers, &(&1.public_key == public))
  end

  def drops(sim, name), do: Protocol.info(sim.ends[name], sim.now).drops

  @doc "An IPv4 packet (UDP) from `src` to `dst` carrying `payload`."
  def ipv4({a, b, c, d}, {e, f, g, h}, payload) do
    udp = <<4000::16, 4001::16, 8 + byte_size(payload)::16, 0::16, payload::binary>>
    total = 20 + byte_size(udp)
    header = <<0x45, 0, total::16, 0::16, 0x40, 0, 64, 17, 0::16, a, b, c, d, e, f, g, h>>
    header <> udp
  end
end

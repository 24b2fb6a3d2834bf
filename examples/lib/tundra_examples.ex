defmodule TundraExamples do
  @moduledoc """
  Examples of Tundra packet servers: `TundraExamples.EchoResponder`
  (answers `ping`), `TundraExamples.UdpReflector` (sends UDP datagrams
  back), `TundraExamples.UdpTunnel` (a point-to-point IP-over-UDP
  tunnel) and `TundraExamples.TapResponder` (plays a host on a TAP device:
  ARP, neighbour discovery, ping); the WireGuard peer is a package of its
  own, `tundra_wireguard/` in this repository. Each is a GenServer that gets its device in `init/1`,
  so it is started (and restarted) under a supervisor like any other:

      children = [
        {TundraExamples.EchoResponder, {:create, "10.99.0.2", dstaddr: "10.99.0.1"}}
      ]

      Supervisor.start_link(children, strategy: :one_for_one)

  Outside this project's test and bench builds, load them into a script
  with `Code.require_file/2` (as `examples/demo.exs` does).
  """

  @typedoc """
  Where an example gets its device: created (`Tundra.create/2`'s address
  and options), adopted from an fd (`Tundra.adopt/2`'s), or given by the
  process that starts it (see `serve/3`).
  """
  @type device_spec ::
          {:create, Tundra.address(), [Tundra.create_option()]}
          | {:adopt, non_neg_integer(), keyword()}
          | {:given, Tundra.device()}

  @doc """
  Gets the device `spec` says, for the calling process, with `extra`
  options (such as `active:`) added.
  """
  @spec open(device_spec(), keyword()) ::
          {:ok, {Tundra.device(), String.t()}} | {:error, term()}
  def open({:create, address, opts}, extra), do: Tundra.create(address, opts ++ extra)
  def open({:adopt, fd, opts}, extra), do: Tundra.adopt(fd, opts ++ extra)

  def open({:given, device}, _extra) do
    with {:ok, %{name: name}} <- Tundra.info(device), do: {:ok, {device, name}}
  end

  @doc """
  Starts `server` (an example module) for `device`, which the caller owns,
  and hands the device over: the server starts reading when it receives
  `:owned`. For devices made elsewhere, such as the queues of one
  multi-queue device.
  """
  @spec serve(module(), Tundra.device(), keyword()) :: {:ok, pid()} | {:error, term()}
  def serve(server, device, opts \\ []) do
    with {:ok, pid} <- server.start_link({:given, device}, opts),
         :ok <- Tundra.controlling_process(device, pid) do
      send(pid, :owned)
      {:ok, pid}
    end
  end
end

defmodule TundraWireGuard.Launcher do
  @moduledoc false
  # What `bin/tundra-wg` runs (`mix run --no-halt -e ...`): one interface
  # for as long as its device lives, as wireguard-go and boringtun-cli run
  # one for wg-quick. Without `--config` it starts as wg-quick's userspace
  # implementation starts: no key, no peers, no address, no routes (wg-quick
  # gives them through the UAPI socket and `ip`). It prints `ready NAME`
  # when the device and the UAPI socket exist, which the script waits for,
  # and ends when the device is deleted (`wg-quick down`, `ip link del`)
  # or on SIGTERM, removing its socket.

  require Logger

  @usage """
  usage: tundra-wg [-f] [--config FILE] [--uapi DIR] [--via auto|direct|server]
                   [--socket-path PATH] [--plain] INTERFACE
  """

  @switches [
    config: :string,
    uapi: :string,
    via: :string,
    socket_path: :string,
    plain: :boolean
  ]

  @doc "Runs the launcher with its command line; halts the VM when the interface ends."
  @spec main([String.t()]) :: no_return()
  def main(argv) do
    # Under `mix run` they are; under plain `elixir -pa ...` not yet.
    {:ok, _} = Application.ensure_all_started(:tundra_wireguard)

    case start(argv) do
      {:ok, pid, name} ->
        IO.puts("ready #{name}")
        wait(pid)

      {:error, message} ->
        IO.puts(:stderr, "tundra-wg: #{message}")
        System.halt(1)
    end
  end

  @doc """
  Starts the interface the command line asks for: `{:ok, pid, name}` or
  `{:error, message}`.
  """
  @spec start([String.t()]) :: {:ok, pid(), String.t()} | {:error, String.t()}
  def start(argv) do
    with {:ok, opts, name} <- parse(argv),
         {:ok, config} <- config(opts[:config]),
         {:ok, via} <- via(opts[:via]) do
      start_opts =
        [
          name: name,
          offload: !opts[:plain],
          uapi: opts[:uapi] || "/var/run/wireguard",
          # wg-quick routes the allowed IPs itself; a configuration file's
          # interface routes them as examples/wireguard.exs does.
          routes: opts[:config] != nil,
          via: via
        ] ++ if(opts[:socket_path], do: [socket_path: opts[:socket_path]], else: [])

      Process.flag(:trap_exit, true)

      case TundraWireGuard.start_link(config, start_opts) do
        {:ok, pid} ->
          {:ok, pid, name}

        {:error, reason} ->
          {:error, "cannot start #{name}: #{TundraWireGuard.format_error(reason)}"}
      end
    end
  end

  defp parse(argv) do
    case OptionParser.parse(argv, strict: @switches) do
      {opts, [name], []} ->
        if name =~ ~r/^[a-zA-Z0-9_=+.-]{1,15}$/,
          do: {:ok, opts, name},
          else: {:error, "#{inspect(name)} is not an interface name\n" <> @usage}

      _ ->
        {:error, @usage}
    end
  end

  # No file: as wg-quick starts it, everything to come through the UAPI.
  defp config(nil),
    do:
      {:ok,
       %{private_key: nil, listen_port: nil, addresses: [], mtu: nil, peers: [], ignored: []}}

  defp config(path) do
    case TundraWireGuard.read_config(path) do
      {:ok, config} -> {:ok, config}
      {:error, {line, message}} -> {:error, "#{path}:#{line}: #{message}"}
      {:error, reason} -> {:error, "#{path}: #{TundraWireGuard.format_error(reason)}"}
    end
  end

  defp via(nil), do: {:ok, :auto}
  defp via("auto"), do: {:ok, :auto}
  defp via("direct"), do: {:ok, :direct}
  defp via("server"), do: {:ok, :server}
  defp via(text), do: {:error, "--via #{text}: auto, direct or server\n" <> @usage}

  # Until the interface ends; SIGTERM ends it first (its socket removed).
  @spec wait(pid()) :: no_return()
  defp wait(pid) do
    {:ok, _} =
      System.trap_signal(:sigterm, fn ->
        GenServer.stop(pid, :shutdown)
        :ok
      end)

    receive do
      {:EXIT, ^pid, reason} when reason in [:shutdown, {:shutdown, :device_deleted}] ->
        System.halt(0)

      {:EXIT, ^pid, reason} ->
        IO.puts(:stderr, "tundra-wg: the interface stopped: #{inspect(reason)}")
        System.halt(1)
    end
  end
end

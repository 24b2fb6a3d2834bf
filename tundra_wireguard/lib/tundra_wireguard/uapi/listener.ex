defmodule TundraWireGuard.UAPI.Listener do
  @moduledoc false
  # The interface's UAPI socket, /var/run/wireguard/NAME.sock (or another
  # folder): where `wg` and `wg-quick` find a userspace WireGuard. Mode
  # 0600, owned by the user the VM runs as; a peer that is neither that
  # user nor root (SO_PEERCRED) is closed at once, as is one past
  # @max_connections. Each connection is served by a process of its own:
  # requests of at most @max_request bytes, each read whole before the
  # deadline and parsed whole before anything is applied (by the
  # interface, in one call); a malformed request gets `errno=N`, a client
  # that sends too much or too slowly loses its connection. The interface
  # carries on whatever a client does.

  use GenServer

  alias TundraWireGuard.UAPI

  require Logger

  @max_request 4 * 1024 * 1024
  @max_connections 16
  @deadline 5_000

  @doc "The socket's path for interface `name` in `dir`."
  @spec path(String.t(), String.t()) :: String.t()
  def path(dir, name), do: Path.join(dir, name <> ".sock")

  @doc "Listens for interface `interface` (a pid) at `path`."
  @spec start_link({pid(), String.t()}) :: GenServer.on_start()
  def start_link({interface, path}), do: GenServer.start_link(__MODULE__, {interface, path})

  @impl true
  def init({interface, path}) do
    Process.flag(:trap_exit, true)

    with :ok <- make_folder(Path.dirname(path)),
         :ok <- free(path),
         {:ok, socket} <- listen(path) do
      self() |> send(:accept)
      {:ok, %{interface: interface, path: path, socket: socket, handlers: MapSet.new()}}
    else
      {:error, reason} -> {:stop, {:uapi_socket, path, reason}}
    end
  end

  defp make_folder(dir) do
    if File.dir?(dir) do
      :ok
    else
      with :ok <- File.mkdir_p(dir), do: File.chmod(dir, 0o755)
    end
  end

  # A socket file nobody listens on is left by an interface that stopped
  # without removing it: replaced. One that answers is another's.
  defp free(path) do
    case File.lstat(path) do
      {:error, :enoent} ->
        :ok

      {:ok, %{type: :other}} ->
        if answers?(path), do: {:error, :eaddrinuse}, else: File.rm(path)

      {:ok, _not_a_socket} ->
        {:error, :eexist}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp answers?(path) do
    {:ok, probe} = :socket.open(:local, :stream, :default)
    answered = :socket.connect(probe, %{family: :local, path: path}) == :ok
    _ = :socket.close(probe)
    answered
  end

  # Mode 0600 before anyone can connect (before listen).
  defp listen(path) do
    with {:ok, socket} <- :socket.open(:local, :stream, :default),
         :ok <- :socket.bind(socket, %{family: :local, path: path}),
         :ok <- File.chmod(path, 0o600),
         :ok <- :socket.listen(socket) do
      {:ok, socket}
    end
  end

  @impl true
  def handle_info(:accept, state) do
    case :socket.accept(state.socket, :nowait) do
      {:ok, connection} ->
        send(self(), :accept)
        {:noreply, serve(state, connection)}

      {:select, _} ->
        {:noreply, state}

      {:error, reason} ->
        {:stop, {:uapi_socket, state.path, reason}, state}
    end
  end

  def handle_info({:"$socket", socket, :select, _}, %{socket: socket} = state),
    do: handle_info(:accept, state)

  def handle_info({:EXIT, pid, _reason}, state) do
    if MapSet.member?(state.handlers, pid),
      do: {:noreply, %{state | handlers: MapSet.delete(state.handlers, pid)}},
      else: {:stop, :shutdown, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    _ = :socket.close(state.socket)
    _ = File.rm(state.path)
    :ok
  end

  defp serve(state, connection) do
    if MapSet.size(state.handlers) >= @max_connections or not allowed?(connection) do
      _ = :socket.close(connection)
      state
    else
      interface = state.interface
      pid = spawn_link(fn -> handle(interface, connection, <<>>) end)
      :ok = :socket.setopt(connection, {:otp, :controlling_process}, pid)
      %{state | handlers: MapSet.put(state.handlers, pid)}
    end
  end

  # The VM's own user, or root (SO_PEERCRED).
  defp allowed?(connection) do
    case :socket.getopt_native(connection, {1, 17}, 12) do
      {:ok, <<_pid::32-native, uid::32-native, _gid::32-native>>} -> uid in [0, own_uid()]
      _ -> false
    end
  end

  defp own_uid do
    case File.read("/proc/self/status") do
      {:ok, status} ->
        [_, euid] = Regex.run(~r/^Uid:\s+\d+\s+(\d+)/m, status)
        String.to_integer(euid)

      {:error, _} ->
        0
    end
  end

  # Requests, one after another, until the client closes or misbehaves;
  # `buffer` holds what came after the last one.
  defp handle(interface, connection, buffer) do
    deadline = System.monotonic_time(:millisecond) + @deadline

    case read_request(connection, buffer, deadline) do
      {:ok, text, rest} ->
        reply =
          case UAPI.parse(text) do
            {:ok, request} -> GenServer.call(interface, {:uapi, request}, 30_000)
            {:error, errno} -> UAPI.reply(errno)
          end

        if :socket.send(connection, reply, @deadline) == :ok and rest != :closed,
          do: handle(interface, connection, rest),
          else: :socket.close(connection)

      {:error, :too_large} ->
        _ = :socket.send(connection, UAPI.reply(:emsgsize), 1_000)
        :socket.close(connection)

      {:error, _closed_or_late} ->
        :socket.close(connection)
    end
  end

  # Reads up to the empty line that ends a request: its text and what
  # followed it (or `:closed` when the client closed after it).
  defp read_request(connection, buffer, deadline) do
    case :binary.split(buffer, "\n\n") do
      [text, rest] ->
        {:ok, text, rest}

      [_] when byte_size(buffer) > @max_request ->
        {:error, :too_large}

      [_] ->
        left = deadline - System.monotonic_time(:millisecond)

        case left > 0 and :socket.recv(connection, 0, left) do
          {:ok, data} ->
            read_request(connection, buffer <> data, deadline)

          # A request without its empty line, then the end: take it whole.
          {:error, :closed} when buffer != <<>> ->
            {:ok, String.trim_trailing(buffer, "\n"), :closed}

          {:error, reason} ->
            {:error, reason}

          false ->
            {:error, :timeout}
        end
    end
  end
end

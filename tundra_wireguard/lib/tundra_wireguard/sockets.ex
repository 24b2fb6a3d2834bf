defmodule TundraWireGuard.Sockets do
  @moduledoc false
  # An interface's UDP port: its sockets, and sending datagrams from them
  # (runs of equal length in one UDP_SEGMENT send, Tundra.UDP).

  @buffer 4 * 1024 * 1024

  @type t :: %{
          4 => :socket.socket(),
          6 => :socket.socket() | nil,
          handshakes: [:socket.socket()],
          port: :inet.port_number(),
          offload: boolean()
        }

  # Per family, a socket for transport data and, beside it on the same
  # port, one that the kernel steers every other message to (a reuseport
  # group with a BPF program, see TundraWireGuard.Native): a flood of
  # handshake messages fills only the second one's queue and never
  # delays or drops data. Where the kernel refuses that, one socket.
  @spec open(:inet.port_number(), boolean()) :: {:ok, t()} | {:error, term()}
  def open(port, offload) do
    with {:ok, v4, v4_handshakes} <- open_family(:inet, port, offload),
         {:ok, %{port: port}} <- :socket.sockname(v4) do
      # IPv6 on the same port when the host has it.
      {v6, v6_handshakes} =
        case open_family(:inet6, port, offload) do
          {:ok, v6, v6_handshakes} -> {v6, v6_handshakes}
          {:error, _} -> {nil, nil}
        end

      handshakes = Enum.reject([v4_handshakes, v6_handshakes], &is_nil/1)
      {:ok, %{4 => v4, 6 => v6, handshakes: handshakes, port: port, offload: offload}}
    end
  end

  defp open_family(family, port, offload) do
    with {:ok, port} <- claim_port(family, port),
         {:ok, data} <- open_socket(family, port, offload) do
      case open_socket(family, port, offload) do
        {:ok, handshakes} ->
          if steered?(data) do
            {:ok, data, handshakes}
          else
            # Unsteered, the second socket would take data at random.
            _ = :socket.close(handshakes)
            {:ok, data, nil}
          end

        {:error, _} ->
          {:ok, data, nil}
      end
    end
  end

  defp steered?(socket) do
    case :socket.getopt(socket, {:otp, :fd}) do
      {:ok, fd} -> TundraWireGuard.Native.steer_handshakes(fd)
      {:error, _} -> false
    end
  end

  # The port, free of every other socket: bound once without
  # SO_REUSEPORT, which fails if anyone holds it (with SO_REUSEPORT or
  # not), so that the group below is only ever this interface's.
  defp claim_port(family, port) do
    with {:ok, probe} <- :socket.open(family, :dgram, :udp) do
      result =
        with :ok <- v6only(probe, family),
             :ok <- :socket.bind(probe, %{family: family, addr: any(family), port: port}),
             {:ok, %{port: port}} <- :socket.sockname(probe),
             do: {:ok, port}

      _ = :socket.close(probe)
      result
    end
  end

  defp any(:inet), do: {0, 0, 0, 0}
  defp any(:inet6), do: {0, 0, 0, 0, 0, 0, 0, 0}

  defp open_socket(family, port, offload) do
    any = any(family)

    with {:ok, socket} <- :socket.open(family, :dgram, :udp),
         :ok <- :socket.setopt(socket, {:socket, :rcvbuf}, @buffer),
         :ok <- :socket.setopt(socket, {:socket, :sndbuf}, @buffer),
         :ok <- :socket.setopt(socket, {:socket, :reuseport}, true),
         :ok <- v6only(socket, family),
         :ok <- gro(socket, offload),
         :ok <- bind(socket, %{family: family, addr: any, port: port}) do
      {:ok, socket}
    end
  end

  defp bind(socket, address) do
    case :socket.bind(socket, address) do
      :ok ->
        :ok

      {:error, reason} ->
        _ = :socket.close(socket)
        {:error, reason}
    end
  end

  defp v6only(_socket, :inet), do: :ok
  defp v6only(socket, :inet6), do: :socket.setopt(socket, {:ipv6, :v6only}, true)

  # Without UDP_GRO (before Linux 5.0) datagrams arrive one by one.
  defp gro(_socket, false), do: :ok
  defp gro(socket, true), do: Tundra.UDP.enable_gro(socket)

  @doc "Every socket, to read from."
  @spec all(t()) :: [:socket.socket()]
  def all(sockets), do: Enum.reject([sockets[4], sockets[6]], &is_nil/1) ++ sockets.handshakes

  @doc "Closes them all."
  @spec close(t()) :: :ok
  def close(sockets) do
    for socket <- all(sockets), do: _ = :socket.close(socket)
    :ok
  end

  @doc """
  Sends `datagrams` (data and length of each) to `endpoint`, runs of
  equal length in one send each; the bytes sent. A datagram the socket
  cannot take now is lost, as a full queue drops one.
  """
  @spec send(t(), {:inet.ip_address(), :inet.port_number()}, [{iodata(), pos_integer()}]) ::
          non_neg_integer()
  def send(sockets, {ip, port}, datagrams) do
    family = if tuple_size(ip) == 4, do: 4, else: 6

    case sockets[family] do
      nil ->
        0

      socket ->
        address = %{family: if(family == 4, do: :inet, else: :inet6), addr: ip, port: port}

        datagrams
        |> Tundra.UDP.runs(sockets.offload)
        |> Enum.reduce(0, fn run, total -> total + Tundra.UDP.send_run(socket, address, run) end)
    end
  end
end

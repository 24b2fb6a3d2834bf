defmodule TundraBench.GenUdpEcho do
  @moduledoc false
  # A :gen_udp echo server, passive (a recv/2 loop) or active (active:
  # 256, re-armed on udp_passive): OTP's own UDP in both modes, the
  # reference for what active mode costs on this machine.

  @count 256

  def start(ip, port, mode) do
    parent = self()

    pid =
      spawn(fn ->
        active = if mode == :active, do: @count, else: false
        {:ok, socket} = :gen_udp.open(port, [:binary, ip: ip, active: active, recbuf: 1_048_576])
        send(parent, {:ready, self()})
        if mode == :active, do: active_loop(socket), else: passive_loop(socket)
      end)

    receive do
      {:ready, ^pid} -> pid
    after
      5_000 -> raise "the gen_udp echo server did not start"
    end
  end

  def stop(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  defp passive_loop(socket) do
    {:ok, {ip, port, data}} = :gen_udp.recv(socket, 0)
    :ok = :gen_udp.send(socket, ip, port, data)
    passive_loop(socket)
  end

  defp active_loop(socket) do
    receive do
      {:udp, ^socket, ip, port, data} ->
        :ok = :gen_udp.send(socket, ip, port, data)

      {:udp_passive, ^socket} ->
        :ok = :inet.setopts(socket, active: @count)
    end

    active_loop(socket)
  end
end

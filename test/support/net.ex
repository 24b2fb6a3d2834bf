defmodule TundraTest.Net do
  @moduledoc false
  # Helpers for privileged tests. Every address used is on a device the
  # test itself created, inside the test run's own network namespace.

  import Bitwise

  def interface_exists?(name), do: File.exists?("/sys/class/net/#{name}")

  @doc "Number of file descriptors this OS process (the VM) has open."
  def open_fds, do: length(File.ls!("/proc/self/fd"))

  @doc """
  Waits for `fun` to return true, checking every 10 ms, for at most
  `limit_ms` (a bound on waiting, not an assertion on timing). Returns the
  last result.
  """
  def eventually(fun, limit_ms \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + limit_ms
    wait(fun, deadline)
  end

  defp wait(fun, deadline) do
    cond do
      fun.() -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true -> Process.sleep(10) && wait(fun, deadline)
    end
  end

  @doc """
  Reads packets until one satisfies `wanted?`, skipping the rest: a link
  that is up also carries the kernel's own IPv6 router solicitations and
  MLD reports, which a real program ignores too.
  """
  def recv_where(dev, wanted?, length \\ 65_535) do
    case Tundra.recv(dev, length, 5_000) do
      {:ok, packet} ->
        if wanted?.(packet), do: {:ok, packet}, else: recv_where(dev, wanted?, length)

      other ->
        other
    end
  end

  @doc "Reads everything waiting; returns the select_info of the now pending select."
  def drain(dev) do
    case Tundra.recv(dev, 65_535, :nowait) do
      {:ok, _} -> drain(dev)
      {:select, info} -> info
    end
  end

  @doc "Whether `packet` is an IPv4 UDP datagram carrying `payload`."
  def udp4_with?(packet, payload) do
    match?(
      <<4::4, 5::4, _::binary-size(8), 17, _::binary-size(10), _::binary-size(8),
        ^payload::binary>>,
      packet
    )
  end

  @doc "Runs the system's ping; returns {exit_status, output}."
  def ping(address, count) do
    family = if String.contains?(address, ":"), do: "-6", else: "-4"
    args = [family, "-c", "#{count}", "-i", "0.2", "-W", "5", address]
    {output, status} = System.cmd("ping", args, stderr_to_stdout: true)
    {status, output}
  end

  @doc "A UDP/IPv4 packet (IP and UDP headers with valid checksums)."
  def udp4({_, _, _, _} = src, {_, _, _, _} = dst, sport, dport, payload) do
    udp_len = 8 + byte_size(payload)
    s = ip_bin(src)
    d = ip_bin(dst)
    pseudo = <<s::binary, d::binary, 0, 17, udp_len::16>>
    udp = <<sport::16, dport::16, udp_len::16, 0::16, payload::binary>>
    udp = put_sum(udp, 6, checksum(pseudo <> udp))
    header = <<0x45, 0, 20 + udp_len::16, 0::16, 0x4000::16, 64, 17, 0::16, s::binary, d::binary>>
    put_sum(header, 10, checksum(header)) <> udp
  end

  @doc "A UDP/IPv6 packet."
  def udp6(src, dst, sport, dport, payload) do
    udp_len = 8 + byte_size(payload)
    s = ip_bin(src)
    d = ip_bin(dst)
    pseudo = <<s::binary, d::binary, udp_len::32, 0::24, 17>>
    udp = <<sport::16, dport::16, udp_len::16, 0::16, payload::binary>>
    udp = put_sum(udp, 6, checksum(pseudo <> udp))
    <<6::4, 0::28, udp_len::16, 17, 64, s::binary, d::binary, udp::binary>>
  end

  defp ip_bin({a, b, c, d}), do: <<a, b, c, d>>

  defp ip_bin(t) when tuple_size(t) == 8,
    do: for(w <- Tuple.to_list(t), into: <<>>, do: <<w::16>>)

  defp put_sum(data, offset, sum) do
    <<head::binary-size(offset), _::16, tail::binary>> = data
    <<head::binary, sum::16, tail::binary>>
  end

  defp checksum(data), do: TundraExamples.Icmp.checksum(data) |> band(0xFFFF)
end

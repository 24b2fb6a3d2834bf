# Creates an IPv4 and an IPv6 TUN device, answers the system's ping on each
# from Elixir, and says what happened. Run it with scripts/demo, which puts
# it in a network namespace of its own.
unless Code.ensure_loaded?(TundraExamples.EchoResponder) do
  # Outside the project's test and bench builds (which compile
  # examples/lib), load the modules the responder is made of.
  files = ~w(tundra_examples.ex tundra_examples/flow.ex tundra_examples/icmp.ex
             tundra_examples/echo_responder.ex)

  for file <- files, do: Code.require_file(Path.join("lib", file), __DIR__)
end

alias TundraExamples.EchoResponder

devices = [
  {"IPv4", "10.99.0.2", [dstaddr: "10.99.0.1", prefix: 32], "10.99.0.1"},
  {"IPv6", "fd11:b7b7:4360::2",
   [dstaddr: "fd11:b7b7:4360::1", netmask: "ffff:ffff:ffff:ffff::", mtu: 1500],
   "fd11:b7b7:4360::1"}
]

results =
  for {family, address, opts, peer} <- devices do
    {:ok, {dev, name}} = Tundra.create(address, opts)
    {:ok, info} = Tundra.info(dev)
    IO.puts("#{family}: created #{name} (address #{address}, peer #{peer}, mtu #{info.mtu})")

    {:ok, responder} = EchoResponder.serve(dev)
    flag = if family == "IPv6", do: "-6", else: "-4"
    IO.puts("#{family}: ping #{flag} -c 3 #{peer}")

    {output, status} =
      System.cmd("ping", [flag, "-c", "3", "-i", "0.2", "-W", "2", peer], stderr_to_stdout: true)

    IO.puts(output |> String.trim_trailing() |> String.replace(~r/^/m, "    "))
    replies = EchoResponder.replies(responder)
    IO.puts("#{family}: the Elixir responder answered #{replies} echo requests\n")
    status == 0 and replies == 3
  end

if Enum.all?(results) do
  IO.puts("Both families answered from Elixir. Devices are removed as their owners exit.")
else
  IO.puts("Some pings were not answered.")
  System.halt(1)
end

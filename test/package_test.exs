defmodule Tundra.PackageTest do
  # Builds Tundra the way a user gets it: exactly the files of mix.exs's
  # `package: files:`, in a git repository of their own, as a git
  # dependency (and as a path dependency, and in a release) of new Mix
  # projects; then runs a script that creates a device, reads info/1 and
  # closes it. The script's device is made inside the test run's network
  # namespace, like every other privileged test's.
  use ExUnit.Case, async: false
  @moduletag :privileged
  @moduletag :package
  @moduletag timeout: 900_000

  @script ~S"""
  {:ok, {dev, name}} = Tundra.create("10.97.0.2", dstaddr: "10.97.0.1", name: "tpkg%d")
  {:ok, %{name: ^name, mtu: 1500, up: true}} = Tundra.info(dev)
  :ok = Tundra.close(dev)
  IO.puts("PACKAGE-OK #{name}")
  """

  setup_all do
    run = "#{TundraTest.Env.run_id()}-#{System.unique_integer([:positive])}"
    root = Path.join(System.tmp_dir!(), "tundra-package-#{run}")
    File.mkdir_p!(root)
    on_exit(fn -> File.rm_rf!(root) end)
    %{root: root, package: make_package(root)}
  end

  # A git repository holding exactly the package's files.
  defp make_package(root) do
    package = Path.join(root, "tundra")
    files = Mix.Project.config()[:package][:files]
    assert files != []

    for file <- files do
      assert File.exists?(file), "package file #{file} is missing from the checkout"
      File.mkdir_p!(Path.dirname(Path.join(package, file)))
      File.cp_r!(file, Path.join(package, file))
    end

    git = fn args -> run!("git", args, package, []) end
    git.(["init", "--quiet", "--initial-branch=main"])
    git.(["add", "--all"])

    git.(["-c", "user.name=test", "-c", "user.email=test@invalid", "commit", "--quiet", "-m", "p"])

    package
  end

  # A new Mix project depending on Tundra through `dep`.
  defp new_project(root, name, dep) do
    dir = Path.join(root, name)
    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule #{Macro.camelize(name)}.MixProject do
      use Mix.Project

      def project do
        [app: :#{name}, version: "0.1.0", elixir: "~> 1.14", deps: [#{dep}]]
      end

      def application, do: [extra_applications: [:logger]]
    end
    """)

    dir
  end

  # Builds share the repository's cargo target folder (cargo locks it), so
  # only Tundra's own crates compile here; nothing is fetched.
  defp env(extra \\ []) do
    [
      {"CARGO_TARGET_DIR", Path.expand("native/target")},
      {"CARGO_NET_OFFLINE", "true"},
      {"MIX_ENV", "dev"}
    ] ++ extra
  end

  defp run!(command, args, dir, env) do
    {output, status} = System.cmd(command, args, cd: dir, env: env, stderr_to_stdout: true)
    assert status == 0, "#{command} #{Enum.join(args, " ")} failed (#{status}):\n#{output}"
    output
  end

  test "as a git dependency: deps.get and one compile give a loaded NIF, and the examples run",
       ctx do
    app = new_project(ctx.root, "gitapp", ~s({:tundra, git: "file://#{ctx.package}"}))
    run!("mix", ["deps.get"], app, env())
    run!("mix", ["compile"], app, env())
    assert run!("mix", ["run", "-e", @script], app, env()) =~ "PACKAGE-OK tpkg"

    # The tunnel example, from the dependency, as its README says; its
    # standard input is closed, so it stops once ready.
    tunnel =
      "mix run deps/tundra/examples/udp_tunnel.exs --address 10.97.1.1 --peer 10.97.1.2 " <>
        "--local 127.0.0.1:17940 --remote 127.0.0.1:17941 < /dev/null"

    assert run!("sh", ["-c", tunnel], app, env()) =~ ~r/^ready tun\d+$/m
  end

  test "as a path dependency, built once, then without cargo", ctx do
    app = new_project(ctx.root, "pathapp", ~s({:tundra, path: "#{ctx.package}"}))
    run!("mix", ["compile"], app, env())
    assert run!("mix", ["run", "-e", @script], app, env()) =~ "PACKAGE-OK tpkg"

    # A user without cargo on PATH: nothing changed, nothing to build.
    elixir = Path.dirname(System.find_executable("elixir"))
    no_cargo = env([{"PATH", Enum.join(Enum.uniq([elixir, "/usr/bin", "/bin"]), ":")}])
    # (not found: dash says 127, bash 1)
    assert {_, status} = System.cmd("sh", ["-c", "command -v cargo"], env: no_cargo)
    assert status != 0
    assert run!("mix", ["run", "-e", @script], app, no_cargo) =~ "PACKAGE-OK tpkg"
  end

  test "in a release built from a git dependency", ctx do
    app = new_project(ctx.root, "relapp", ~s({:tundra, git: "file://#{ctx.package}"}))
    prod = env([{"MIX_ENV", "prod"}])
    run!("mix", ["deps.get"], app, prod)
    run!("mix", ["release", "--quiet"], app, prod)

    [nif] = Path.wildcard(Path.join(app, "_build/prod/rel/relapp/lib/tundra-*/priv/native/*"))
    assert Path.basename(nif) == "libtundra_nif.so"

    bin = Path.join(app, "_build/prod/rel/relapp/bin/relapp")
    assert run!(bin, ["eval", @script], app, prod) =~ "PACKAGE-OK tpkg"
  end
end

defmodule TundraWireGuard.PackageTest do
  # TundraWireGuard the way a user gets it: this repository's files (what
  # git would give) in a git repository of their own, as a git dependency
  # with `subdir:` and as a path dependency of new Mix projects, which
  # declare nothing but the dependency; then a script starts an interface
  # (in the test run's network namespace), and bin/tundra-wg runs from the
  # dependency in the user's project.
  use ExUnit.Case, async: false

  import TundraWireGuardTest.Lab

  @moduletag :privileged
  @moduletag timeout: 900_000

  @script ~S"""
  # :crypto comes with the package (its extra_applications).
  true = :crypto in Application.spec(:tundra_wireguard, :applications)
  private = TundraWireGuard.generate_private_key()
  {:ok, config} = TundraWireGuard.parse_config("[Interface]\nPrivateKey = #{private}\nAddress = 10.91.0.1/24\n")
  {:ok, pid} = TundraWireGuard.start_link(config, name: "tpkgwg%d", uapi: false)
  %{name: name, public_key: key} = TundraWireGuard.info(pid)
  true = Base.encode64(key) == TundraWireGuard.public_key(private)
  GenServer.stop(pid)
  IO.puts("PACKAGE-OK #{name}")
  """

  setup_all do
    run = "#{System.pid()}-#{System.unique_integer([:positive])}"
    root = Path.join(System.tmp_dir!(), "tundra-wg-package-#{run}")
    File.mkdir_p!(root)
    on_exit(fn -> File.rm_rf!(root) end)
    %{root: root, repo: make_repo(root)}
  end

  # A git repository of the checkout's files (tracked, and new ones not
  # ignored: what a commit of this tree would hold).
  defp make_repo(root) do
    checkout = Path.expand("../..", __DIR__)
    repo = Path.join(root, "tundra")
    files = run!("git", ~w(ls-files --cached --others --exclude-standard), checkout, [])

    for file <- String.split(files, "\n", trim: true),
        File.regular?(Path.join(checkout, file)) do
      File.mkdir_p!(Path.dirname(Path.join(repo, file)))
      File.cp!(Path.join(checkout, file), Path.join(repo, file))
      # Executables stay executable (bin/tundra-wg).
      File.chmod!(Path.join(repo, file), File.stat!(Path.join(checkout, file)).mode)
    end

    git = fn args -> run!("git", args, repo, []) end
    git.(["init", "--quiet", "--initial-branch=main"])
    git.(["add", "--all"])

    git.(["-c", "user.name=test", "-c", "user.email=test@invalid", "commit", "--quiet", "-m", "p"])

    repo
  end

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

  # Both NIFs build into Tundra's cargo target folder (cargo locks it):
  # their dependencies are built there already; nothing is fetched.
  defp env(extra \\ []) do
    [
      {"CARGO_TARGET_DIR", Path.expand("../../native/target", __DIR__)},
      {"CARGO_NET_OFFLINE", "true"},
      {"MIX_ENV", "dev"}
    ] ++ extra
  end

  defp run!(command, args, dir, env) do
    {output, status} = System.cmd(command, args, cd: dir, env: env, stderr_to_stdout: true)
    assert status == 0, "#{command} #{Enum.join(args, " ")} failed (#{status}):\n#{output}"
    output
  end

  test "as a git dependency with subdir: an interface starts, and bin/tundra-wg runs from it",
       ctx do
    dep = ~s({:tundra_wireguard, git: "file://#{ctx.repo}", subdir: "tundra_wireguard"})
    app = new_project(ctx.root, "wggitapp", dep)
    run!("mix", ["deps.get"], app, env())
    run!("mix", ["compile"], app, env())
    assert run!("mix", ["run", "-e", @script], app, env()) =~ "PACKAGE-OK tpkgwg"

    # The launcher in the user's project, its socket in a folder of the
    # test's; it returns once ready and ends with its device.
    name = "tpkgwg#{System.pid()}"
    uapi = Path.join(ctx.root, "uapi")
    launcher = Path.join(app, "deps/tundra_wireguard/tundra_wireguard/bin/tundra-wg")
    on_exit(fn -> System.cmd("ip", ~w(link del #{name}), stderr_to_stdout: true) end)
    run!(launcher, ["--uapi", uapi, name], app, env([{"TUNDRA_WG_PROJECT", app}]))
    socket = Path.join(uapi, "#{name}.sock")
    assert File.exists?(socket)
    {_, 0} = System.cmd("ip", ~w(link del #{name}))
    assert eventually(fn -> not File.exists?(socket) end)
  end

  test "as a path dependency", ctx do
    dep = ~s({:tundra_wireguard, path: "#{Path.join(ctx.repo, "tundra_wireguard")}"})
    app = new_project(ctx.root, "wgpathapp", dep)
    run!("mix", ["compile"], app, env())
    assert run!("mix", ["run", "-e", @script], app, env()) =~ "PACKAGE-OK tpkgwg"
  end
end

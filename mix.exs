defmodule Mix.Tasks.Compile.TundraNative do
  @moduledoc false
  # Builds the Rust NIF with cargo and installs it into the app's build
  # folder (`_build/ENV/lib/tundra/priv/native/`), where releases and
  # `:code.priv_dir(:tundra)` find it. No hex package (rustler's mix side
  # included) is needed. Cargo runs only when a file the NIF is built from
  # (native/Cargo.toml, Cargo.lock, and tundra_core's and tundra_nif's
  # sources) is newer than the installed NIF, or TUNDRA_NIF_DEBUG asks for
  # a debug build: a built dependency, by path or git, needs no cargo. The
  # library is copied only when it changed.
  #
  # Environment: CARGO_TARGET_DIR (cargo's own; default native/target),
  # TUNDRA_NIF_DEBUG=1 to build the NIF with debug info (for profilers).
  use Mix.Task.Compiler

  @crate "tundra_nif"
  # The name `:erlang.load_nif/2` looks for on every Unix, macOS included.
  @installed "lib#{@crate}.so"

  @impl true
  def run(_args) do
    installed = installed_path()

    cond do
      debug_env() == [] and not stale?(installed) ->
        {:noop, []}

      true ->
        unless File.exists?(installed) do
          Mix.shell().info(
            "Compiling the Tundra NIF with cargo (the first build takes 30 s to 2 min)..."
          )
        end

        build()
        install(Path.join([target_dir(), "release", built_library(:os.type())]), installed)
    end
  end

  # The files the NIF is built from (the workspace may hold other crates).
  defp sources do
    native = native_dir()

    [Path.join(native, "Cargo.toml"), Path.join(native, "Cargo.lock")] ++
      Path.wildcard(Path.join(native, "{tundra_core,tundra_nif}/**/*.{rs,toml}"))
  end

  defp stale?(installed), do: Mix.Utils.stale?(sources(), [installed])

  @impl true
  def clean, do: File.rm(installed_path())

  @doc "The file cargo makes for the NIF on `os_type` (as `:os.type/0` says)."
  def built_library({:unix, :darwin}), do: "lib#{@crate}.dylib"
  def built_library({:unix, _}), do: "lib#{@crate}.so"

  def built_library(other),
    do: Mix.raise("Tundra supports Linux and macOS, not #{inspect(other)}")

  defp installed_path, do: Path.join([Mix.Project.app_path(), "priv", "native", @installed])

  defp native_dir, do: Path.expand("native", File.cwd!())

  defp target_dir, do: System.get_env("CARGO_TARGET_DIR") || Path.join(native_dir(), "target")

  defp build do
    args =
      ~w(build --release --quiet -p #{@crate} --manifest-path) ++
        [Path.join(native_dir(), "Cargo.toml")]

    opts = [
      stderr_to_stdout: true,
      # Cargo's output (warnings, and errors in full) goes to the terminal.
      into: IO.stream(:stdio, :line),
      env: [{"CARGO_TARGET_DIR", target_dir()} | debug_env()]
    ]

    case System.cmd("cargo", args, opts) do
      {_, 0} ->
        :ok

      {_, status} ->
        Mix.raise("cargo build of #{@crate} failed (exit status #{status}); see above")
    end
  rescue
    e in ErlangError ->
      Mix.raise(
        "could not run cargo (#{inspect(e.original)}); install Rust's cargo to build Tundra"
      )
  end

  defp debug_env do
    if System.get_env("TUNDRA_NIF_DEBUG") in ["1", "true"],
      do: [{"CARGO_PROFILE_RELEASE_DEBUG", "1"}, {"CARGO_PROFILE_RELEASE_STRIP", "none"}],
      else: []
  end

  defp install(built, dest) do
    if File.exists?(dest) and File.read!(dest) == File.read!(built) do
      # Up to date with its sources now: no cargo until one changes.
      File.touch!(dest)
      {:noop, []}
    else
      priv = Path.dirname(Path.dirname(dest))

      # Mix links the build's priv/ to the project's priv/ when that exists;
      # a link left from a priv/ since removed would make mkdir_p fail.
      if match?({:ok, %{type: :symlink}}, File.lstat(priv)) and not File.exists?(priv),
        do: File.rm!(priv)

      File.mkdir_p!(Path.dirname(dest))
      # Replace, never overwrite in place: a running VM may have it mapped.
      # Named for this OS process: two builds at once (two `mix run`s of
      # one project) must not share it.
      tmp = "#{dest}.#{System.pid()}.tmp"
      File.cp!(built, tmp)
      File.rename!(tmp, dest)
      {:ok, []}
    end
  end
end

defmodule Tundra.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :tundra,
      version: @version,
      elixir: "~> 1.14",
      compilers: [:tundra_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: deps(Mix.env()),
      description:
        "TUN devices for Elixir: virtual IP interfaces whose packets your program reads and writes",
      package: [
        licenses: ["Apache-2.0"],
        # What building the NIF needs, and the examples (run from
        # deps/tundra/examples/). tundra_server and its install script are
        # not in the package: install the server from a checkout.
        files:
          ~w(lib native/Cargo.toml native/Cargo.lock native/tundra_core/src native/tundra_core/Cargo.toml native/tundra_nif/src native/tundra_nif/Cargo.toml examples mix.exs README.md CHANGELOG.md)
      ],
      docs: docs()
    ]
  end

  # The benchmark's WireGuard sections make keys with :crypto; the library
  # itself does not use it.
  def application do
    [extra_applications: [:logger] ++ if(Mix.env() == :bench, do: [:crypto], else: [])]
  end

  # No dependency at build or run time. ExDoc only for
  # `MIX_ENV=docs mix do deps.get, docs` where hex is reachable: declared
  # in that environment alone, since Mix needs Hex merely to look at a hex
  # dependency, and no other environment (CI, offline builds) has it.
  defp deps(:docs), do: [{:ex_doc, "~> 0.34", only: :docs, runtime: false}]
  defp deps(_env), do: []

  @guides ~w(lifecycle io active_mode devices offload server)

  @doc "The guides (ExDoc extras), in reading order."
  def guides, do: Enum.map(@guides, &"guides/#{&1}.md")

  defp docs do
    [
      main: "Tundra",
      extras: ["README.md" | guides()] ++ ["CHANGELOG.md"],
      groups_for_extras: [Guides: guides()]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support", "examples/lib"]
  defp elixirc_paths(:bench), do: ["lib", "examples/lib", "bench/lib"]
  defp elixirc_paths(_), do: ["lib"]
end

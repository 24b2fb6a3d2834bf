defmodule Mix.Tasks.Compile.TundraWireguardNative do
  @moduledoc false
  # Builds the package's small Rust NIF (keyed BLAKE2s, handshake
  # steering) with cargo and installs it into the app's build folder
  # (`priv/native/`), as Tundra's own compiler does for Tundra's NIF. Cargo
  # runs only when the installed NIF is older than a file of the crate, so
  # a built dependency needs no cargo. CARGO_TARGET_DIR is honoured.
  use Mix.Task.Compiler

  @crate "tundra_wireguard_nif"

  @impl true
  def run(_args) do
    installed = installed_path()

    if stale?(installed) do
      unless File.exists?(installed),
        do: Mix.shell().info("Compiling the TundraWireGuard NIF with cargo (about 20 s)...")

      build()
      install(Path.join([target_dir(), "release", built_library(:os.type())]), installed)
    else
      {:noop, []}
    end
  end

  @impl true
  def clean, do: File.rm(installed_path())

  defp built_library({:unix, :darwin}), do: "lib#{@crate}.dylib"
  defp built_library({:unix, _}), do: "lib#{@crate}.so"
  defp built_library(other), do: Mix.raise("unsupported OS #{inspect(other)}")

  defp installed_path,
    do: Path.join([Mix.Project.app_path(), "priv", "native", "lib#{@crate}.so"])

  defp native_dir, do: Path.expand("native", File.cwd!())
  defp target_dir, do: System.get_env("CARGO_TARGET_DIR") || Path.join(native_dir(), "target")

  # Stale when missing or older than a source of the crate.
  defp stale?(installed) do
    sources =
      Path.wildcard(Path.join(native_dir(), "**/{*.rs,Cargo.toml,Cargo.lock}"))
      |> Enum.reject(&String.contains?(&1, "/target/"))

    Mix.Utils.stale?(sources, [installed])
  end

  defp build do
    args = ~w(build --release --quiet --manifest-path) ++ [Path.join(native_dir(), "Cargo.toml")]

    opts = [
      stderr_to_stdout: true,
      into: IO.stream(:stdio, :line),
      env: [{"CARGO_TARGET_DIR", target_dir()}]
    ]

    case System.cmd("cargo", args, opts) do
      {_, 0} ->
        :ok

      {_, status} ->
        Mix.raise("cargo build of #{@crate} failed (exit status #{status}); see above")
    end
  rescue
    e in ErlangError ->
      Mix.raise("could not run cargo (#{inspect(e.original)}); install Rust's cargo to build it")
  end

  defp install(built, dest) do
    File.mkdir_p!(Path.dirname(dest))
    # Replace, never overwrite in place: a running VM may have it mapped.
    # Named for this OS process: two builds at once must not share it.
    tmp = "#{dest}.#{System.pid()}.tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, dest)
    {:ok, []}
  end
end

defmodule TundraWireGuard.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :tundra_wireguard,
      version: @version,
      elixir: "~> 1.14",
      compilers: [:tundra_wireguard_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      description: "A WireGuard peer in Elixir on Tundra's TUN devices and OTP's :crypto",
      package: [
        licenses: ["Apache-2.0"],
        files:
          ~w(lib bin native/Cargo.toml native/Cargo.lock native/tundra_wireguard_nif/src native/tundra_wireguard_nif/Cargo.toml examples mix.exs README.md CHANGELOG.md)
      ]
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto]]
  end

  # Tundra from this repository (the folder above), as a git dependency
  # with `subdir:` brings it too; from hex otherwise.
  defp deps do
    if File.exists?(Path.expand("../mix.exs", __DIR__)) and
         File.read!(Path.expand("../mix.exs", __DIR__)) =~ "app: :tundra,",
       do: [{:tundra, path: ".."}],
       else: [{:tundra, "~> 0.1"}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]

  defp elixirc_paths(_), do: ["lib"]
end

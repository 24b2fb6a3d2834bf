defmodule Mix.Tasks.Compile.TundraNative do
  @moduledoc false
  # Builds the Rust NIF with cargo and installs it as priv/native/. No hex
  # package (rustler's mix side included) is needed: cargo decides what to
  # rebuild, so a second `mix compile` with nothing changed is a no-op
  # cargo check of a second or less, and the library is copied only when
  # it changed.
  use Mix.Task.Compiler

  @crate "tundra_nif"

  @impl true
  def run(_args) do
    native = Path.expand("native", File.cwd!())
    target = Path.join(native, "target")

    cargo_args = [
      "build",
      "--release",
      "--quiet",
      "-p",
      @crate,
      "--manifest-path",
      Path.join(native, "Cargo.toml")
    ]

    case System.cmd("cargo", cargo_args,
           stderr_to_stdout: true,
           env: [{"CARGO_TARGET_DIR", target}]
         ) do
      {_, 0} ->
        install(Path.join([target, "release", "lib#{@crate}.so"]))

      {output, status} ->
        Mix.shell().error(output)
        Mix.raise("cargo build of #{@crate} failed (exit status #{status})")
    end
  rescue
    e in ErlangError ->
      Mix.raise(
        "could not run cargo (#{inspect(e.original)}); install Rust's cargo to build Tundra"
      )
  end

  defp install(built) do
    dest = Path.join(["priv", "native", "lib#{@crate}.so"])

    if File.exists?(dest) and File.read!(dest) == File.read!(built) do
      {:noop, []}
    else
      File.mkdir_p!(Path.dirname(dest))
      # Replace, never overwrite in place: a running VM may have it mapped.
      tmp = dest <> ".tmp"
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
      deps: [],
      description:
        "TUN devices for Elixir: virtual IP interfaces whose packets your program reads and writes",
      package: [
        licenses: ["Apache-2.0"],
        files:
          ~w(lib native/Cargo.toml native/Cargo.lock native/tundra_core/src native/tundra_core/Cargo.toml native/tundra_nif/src native/tundra_nif/Cargo.toml mix.exs README.md CHANGELOG.md)
      ],
      docs: [main: "Tundra"]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support", "examples/lib"]
  defp elixirc_paths(:bench), do: ["lib", "examples/lib", "bench/lib"]
  defp elixirc_paths(_), do: ["lib"]
end

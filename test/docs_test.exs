defmodule Tundra.DocsTest do
  # The guides are what ExDoc renders beside the API (mix.exs `docs:`),
  # and what the README and the docs link to. ExDoc itself cannot be
  # fetched here, so this checks what would break the rendered docs: every
  # guide listed and present, every link to a guide (and heading) found,
  # every code fence closed.
  use ExUnit.Case, async: true

  @guides Tundra.MixProject.guides()

  defp guide_files, do: Path.wildcard("guides/*.md") |> Enum.sort()

  # GitHub's and ExDoc's anchors: lowercase, punctuation dropped, spaces
  # to hyphens.
  defp anchor(heading) do
    heading
    |> String.downcase()
    |> String.replace(~r/[^a-z0-9 _-]/u, "")
    |> String.replace(" ", "-")
  end

  defp anchors(file) do
    for "#" <> _ = line <- String.split(File.read!(file), "\n"),
        do: line |> String.trim_leading("#") |> String.trim() |> anchor()
  end

  # Links to guides in `text`: `{guide file, anchor or nil}`; `base` is
  # where bare names (`io.md`, as in @moduledoc) are found.
  defp guide_links(text, base) do
    for [_, target | fragment] <- Regex.scan(~r/\]\(([\w\/.-]+\.md)(?:#([\w-]+))?\)/, text),
        String.starts_with?(target, "guides/") or not String.contains?(target, "/"),
        target not in ["README.md", "CHANGELOG.md"] do
      file = if String.contains?(target, "/"), do: target, else: Path.join(base, target)
      {file, List.first(fragment)}
    end
  end

  test "every guide is an ExDoc extra and every extra exists" do
    assert guide_files() == Enum.sort(@guides)
    for extra <- Tundra.MixProject.project()[:docs][:extras], do: assert(File.exists?(extra))
  end

  test "links to guides, from the README, the guides and the docs, find them" do
    {:docs_v1, _, _, _, %{"en" => moduledoc}, _, docs} = Code.fetch_docs(Tundra)
    function_docs = for {_, _, _, %{"en" => doc}, _} <- docs, do: doc

    links =
      guide_links(File.read!("README.md"), "guides") ++
        Enum.flat_map(guide_files(), &guide_links(File.read!(&1), "guides")) ++
        Enum.flat_map([moduledoc | function_docs], &guide_links(&1, "guides"))

    assert length(links) > 10

    for {file, fragment} <- links do
      assert file in @guides, "a link to #{file}, which is no guide"
      if fragment, do: assert(fragment in anchors(file), "no heading #{file}##{fragment}")
    end
  end

  test "every code fence in the guides is closed" do
    for file <- guide_files() do
      fences = Regex.scan(~r/^```/m, File.read!(file))
      assert rem(length(fences), 2) == 0, "#{file} has an unclosed code fence"
    end
  end
end

defmodule RpeerExample.MixProject do
  use Mix.Project

  # rpeer comes from this repository (../..) and is built by rebar3 with rpeer's own
  # rebar.config, whose compile pre_hook builds the NIF with cargo. No Hex package.
  def project do
    [
      app: :rpeer_example,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:rpeer, path: "../..", manager: :rebar3}]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end

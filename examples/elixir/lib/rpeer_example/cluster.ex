defmodule RpeerExample.Cluster do
  @moduledoc """
  Starts a cluster of named peer nodes for tests: code written against OTP's `:peer`,
  switched to rpeer by its alias line, the one line that names the module.

  An alias applies to Elixir names only: it cannot redirect `:peer.start_link(...)`, but
  it does redirect `Peer.start_link(...)` and the type `Peer.server_ref()`. So this module
  calls peer's API through `Peer`, and its alias line chooses the module: `:peer` for
  OTP's, `:rpeer` for rpeer's. (rpeer_transform, the parse transform that switches
  Erlang code unchanged, is not for Elixir: Elixir deprecates Erlang parse transforms.)

  The peers are controlled over their standard I/O, so this node need not be
  distributed; they are named, with a cookie of their own, and reach each other over
  Erlang distribution.
  """
  # The switch (was: alias :peer, as: Peer)
  alias :rpeer, as: Peer

  @typedoc "A peer of the cluster: its controller and its node name."
  @type member :: {Peer.server_ref(), node()}

  @doc "Starts `count` named peers, each with `cookie`, linked to the caller, not connected."
  @spec start(pos_integer(), charlist()) :: [member]
  def start(count, cookie) do
    prefix = Peer.random_name(:cluster)

    for i <- 1..count do
      {:ok, peer, node} =
        Peer.start_link(%{
          name: ~c"#{prefix}-#{i}",
          connection: :standard_io,
          args: [~c"-setcookie", cookie]
        })

      {peer, node}
    end
  end

  @doc "Connects every member to every other one (each from the peer node itself)."
  @spec connect([member]) :: :ok
  def connect(members) do
    for {peer, node} <- members, {_, other} <- members, other != node do
      true = Peer.call(peer, :net_kernel, :connect_node, [other])
    end

    :ok
  end

  @doc "Calls `module.function(args)` on `member`'s node."
  @spec call(member, module(), atom(), [term()]) :: term()
  def call({peer, _node}, module, function, args) do
    Peer.call(peer, module, function, args)
  end

  @doc "Stops every member."
  @spec stop([member]) :: :ok
  def stop(members) do
    Enum.each(members, fn {peer, _node} -> :ok = Peer.stop(peer) end)
  end
end

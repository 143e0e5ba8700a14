defmodule RpeerExample.SwitchTest do
  # RpeerExample.Cluster is code written against OTP's :peer, switched to rpeer by one
  # line: `alias :rpeer, as: Peer`, where it had `alias :peer, as: Peer`. Its compiled
  # code calls rpeer only; the same source with the line as it was runs on OTP's peer.
  use ExUnit.Case

  import RpeerExample.Checks
  alias RpeerExample.Cluster

  @switched "alias :rpeer, as: Peer"
  @stock "alias :peer, as: Peer"

  test "the switched module starts rpeer controllers and calls no :peer function" do
    members = Cluster.start(2, cookie())

    for {peer, node} = member <- members do
      assert_rpeer_controller(peer)
      assert Cluster.call(member, :erlang, :node, []) == node
    end

    :ok = Cluster.stop(members)
    {:ok, {Cluster, [imports: imports]}} = :beam_lib.chunks(:code.which(Cluster), [:imports])
    assert for({:peer, _, _} = mfa <- imports, do: mfa) == []
    assert {:rpeer, :start_link, 1} in imports
    assert {:rpeer, :call, 4} in imports
  end

  test "the same source with the line as it was runs on OTP's peer" do
    source = File.read!(Cluster.module_info(:compile)[:source])
    lines = String.split(source, "\n")
    # One line of the module names its peer module.
    assert Enum.count(lines, &(String.trim(&1) == @switched)) == 1

    stock =
      Enum.map_join(lines, "\n", fn
        "defmodule RpeerExample.Cluster do" -> "defmodule RpeerExample.StockCluster do"
        line -> if String.trim(line) == @switched, do: "  " <> @stock, else: line
      end)

    assert [{stock_cluster, _}] = Code.compile_string(stock)
    assert stock_cluster == RpeerExample.StockCluster
    members = stock_cluster.start(2, cookie())

    for {peer, node} = member <- members do
      assert {:peer, :init, [_]} = :proc_lib.initial_call(peer)
      assert stock_cluster.call(member, :erlang, :node, []) == node
    end

    :ok = stock_cluster.stop(members)
  end

  defp cookie, do: ~c"rpeer_example_#{System.unique_integer([:positive])}"
end

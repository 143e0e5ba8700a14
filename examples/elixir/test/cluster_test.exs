defmodule RpeerExample.ClusterTest do
  # Three named peers that connect to each other, with :erpc across them. The peers are
  # controlled over standard_io: this node takes no part in their cluster.
  use ExUnit.Case

  alias RpeerExample.Cluster

  test "three named peers connect to each other and call across with :erpc" do
    cookie = ~c"rpeer_example_#{System.unique_integer([:positive])}"
    members = Cluster.start(3, cookie)
    [a | _] = members
    [_node_a, node_b, node_c] = nodes = Enum.map(members, fn {_peer, node} -> node end)
    assert length(Enum.uniq(nodes)) == 3

    # Each is on its own before connect/1.
    for {_peer, node} = member <- members do
      assert Cluster.call(member, :erlang, :node, []) == node
      assert Cluster.call(member, :erlang, :nodes, []) == []
      assert Cluster.call(member, :erlang, :get_cookie, []) == List.to_atom(cookie)
    end

    :ok = Cluster.connect(members)

    for {_peer, node} = member <- members do
      assert Enum.sort(Cluster.call(member, :erlang, :nodes, [])) == Enum.sort(nodes -- [node])
    end

    # From a, :erpc reaches b and c; through b, c.
    assert Cluster.call(a, :erpc, :multicall, [[node_b, node_c], :erlang, :node, []]) ==
             [{:ok, node_b}, {:ok, node_c}]

    assert Cluster.call(a, :erpc, :call, [node_b, :erpc, :call, [node_c, :erlang, :node, []]]) ==
             node_c

    # An exception on b comes back to a through :erpc, and from a to here.
    # (:erpc.call/4 raises an error of the called function as {:exception, reason, stack})
    error =
      assert_raise ErlangError, fn ->
        Cluster.call(a, :erpc, :call, [node_b, :erlang, :+, [1, :a]])
      end

    assert {:exception, :badarith, [{:erlang, :+, [1, :a], _} | _]} = error.original

    :ok = Cluster.stop(members)
  end
end

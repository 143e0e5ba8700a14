defmodule RpeerExample.ConnectionTest do
  # A peer in each connection mode:
  #   standard_io - controlled over the peer's stdin/stdout; the peer is not distributed;
  #   tcp         - over a TCP connection to a port this node listens on (0: any port);
  #   dist        - a named peer controlled over Erlang distribution: this node is made
  #                 distributed first (setup_all), and code runs there through :erpc, as
  #                 with OTP's peer, whose call/cast/send need an alternative connection.
  use ExUnit.Case

  import RpeerExample.Checks
  alias RpeerExample.Inbox

  setup_all do
    started = start_distribution()
    on_exit(fn -> if started, do: :ok = :net_kernel.stop() end)
  end

  # Makes this node distributed, with a name no other run uses, unless it already is
  # (`elixir --sname NAME -S mix test`). Starts epmd, which does nothing if it runs.
  defp start_distribution do
    if Node.alive?() do
      false
    else
      {_, 0} = System.cmd("epmd", ["-daemon"])
      name = :"rpeer_example_#{System.pid()}_#{System.unique_integer([:positive])}"
      {:ok, _} = :net_kernel.start(name, %{name_domain: :shortnames})
      true
    end
  end

  # The same cases over both alternative connections, as peer's own suite runs them.
  for {mode, options} <- [standard_io: %{connection: :standard_io}, tcp: %{connection: 0}] do
    describe "#{mode}:" do
      @options options

      test "start_link, then call/4 and call/5 run code on the peer" do
        {:ok, peer, node} = :rpeer.start_link(@options)
        assert_rpeer_controller(peer)
        assert node == :nonode@nohost
        assert :rpeer.get_state(peer) == :running
        assert :rpeer.call(peer, :erlang, :node, []) == node
        refute :rpeer.call(peer, :os, :getpid, []) == :os.getpid()
        assert :rpeer.call(peer, :lists, :seq, [1, 3], 10_000) == [1, 2, 3]
        # An exception raised on the peer is raised here, as the same exception.
        assert_raise ArithmeticError, fn -> :rpeer.call(peer, :erlang, :+, [1, :a]) end
        # Binaries go and come back whole.
        big = :binary.copy(<<1, 2, 3, 4>>, 250_000)
        assert :rpeer.call(peer, :erlang, :iolist_to_binary, [[big, big]]) == big <> big
        :ok = :rpeer.stop(peer)
      end

      test "send/3 and cast/4 reach the peer" do
        {:ok, peer, _node} = :rpeer.start_link(@options)
        :ok = Inbox.start_on(peer, :inbox)
        :ok = :rpeer.send(peer, :inbox, {:sent, 1})
        :ok = :rpeer.cast(peer, :erlang, :send, [:inbox, {:cast, 2}])
        # The cast runs in a process of its own: the two may arrive in either order.
        messages = :rpeer.call(peer, Inbox, :take, [:inbox, 2], 30_000)
        assert Enum.sort(messages) == [{:cast, 2}, {:sent, 1}]
        :ok = :rpeer.stop(peer)
      end

      test "stop/1 returns once the peer's OS process is gone" do
        {:ok, peer, _node} = :rpeer.start_link(@options)
        os_pid = :rpeer.call(peer, :os, :getpid, [])
        :ok = :rpeer.stop(peer)
        refute Process.alive?(peer)
        assert_os_process_gone(os_pid)
      end
    end
  end

  describe "dist:" do
    setup do
      {:ok, peer, node} = :rpeer.start_link(%{name: :rpeer.random_name(:elixir_dist)})
      %{peer: peer, node: node}
    end

    test "start_link names the peer and connects it; :erpc runs code there", %{
      peer: peer,
      node: node
    } do
      assert_rpeer_controller(peer)
      assert node in Node.list()
      assert :rpeer.get_state(peer) == :running
      assert :erpc.call(node, :erlang, :node, []) == node
      assert :erpc.call(node, :erlang, :nodes, []) == [Node.self()]
      :ok = :rpeer.stop(peer)
    end

    test "messages and casts reach the peer over distribution", %{peer: peer, node: node} do
      :ok = Inbox.start_on(node, :inbox)
      send({:inbox, node}, {:sent, 1})
      :ok = :erpc.cast(node, :erlang, :send, [:inbox, {:cast, 2}])
      assert Enum.sort(:erpc.call(node, Inbox, :take, [:inbox, 2])) == [{:cast, 2}, {:sent, 1}]
      :ok = :rpeer.stop(peer)
    end

    test "call/4 needs an alternative connection, as with OTP's peer", %{peer: peer} do
      error = assert_raise ErlangError, fn -> :rpeer.call(peer, :erlang, :node, []) end
      assert error.original == :noconnection
      :ok = :rpeer.stop(peer)
    end

    test "stop/1 returns once the node is down and its OS process gone", %{
      peer: peer,
      node: node
    } do
      os_pid = :erpc.call(node, :os, :getpid, [])
      :ok = :rpeer.stop(peer)
      refute Process.alive?(peer)
      refute node in Node.list()
      assert_os_process_gone(os_pid)
    end
  end
end

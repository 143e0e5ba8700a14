%%% @doc
%%% The fast peer side: standard_io peers started with `peer_side => rpeer' run
%%% rpeer_agent (rpeer's Rust codec) instead of OTP's peer module on the peer node.
%%% The same behaviours as with stock peer's peer side, plus its own guarantees: the
%%% node halts when its channel ends or when the agent dies.
%%% @end
-module(rpeer_agent_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0]).

-export([
    calls_and_exceptions/0, calls_and_exceptions/1,
    large_payloads_both_ways/0, large_payloads_both_ways/1,
    concurrent_calls/0, concurrent_calls/1,
    io_reaches_the_group_leader/0, io_reaches_the_group_leader/1,
    cast_and_messages_both_ways/0, cast_and_messages_both_ways/1,
    distributed_agent_peer/0, distributed_agent_peer/1,
    stop_ends_the_os_process/0, stop_ends_the_os_process/1,
    killed_controller_halts_the_peer/0, killed_controller_halts_the_peer/1,
    dead_agent_halts_the_node/0, dead_agent_halts_the_node/1,
    invalid_peer_side_is_rejected/0, invalid_peer_side_is_rejected/1
]).

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [{group, agent}].

groups() ->
    [{agent, [parallel], [calls_and_exceptions, large_payloads_both_ways, concurrent_calls,
                          io_reaches_the_group_leader, cast_and_messages_both_ways,
                          distributed_agent_peer, stop_ends_the_os_process,
                          killed_controller_halts_the_peer, dead_agent_halts_the_node,
                          invalid_peer_side_is_rejected]}].

start(Extra) ->
    rpeer:start_link(maps:merge(#{connection => standard_io, peer_side => rpeer}, Extra)).

%% Waits until Fun() is true, for up to 10 s.
wait_until(Fun) ->
    wait_until(Fun, 200).

wait_until(_Fun, 0) ->
    ct:fail(condition_never_true);
wait_until(Fun, Tries) ->
    case Fun() of
        true -> ok;
        false -> ct:sleep(50), wait_until(Fun, Tries - 1)
    end.

os_pid_alive(OsPid) ->
    os:cmd("kill -0 " ++ OsPid ++ " 2>/dev/null && echo alive") =:= "alive\n".

%%--------------------------------------------------------------------

calls_and_exceptions() ->
    [{doc, "The agent runs calls: results, and throw/error/exit re-raised with their class"}].

calls_and_exceptions(Config) when is_list(Config) ->
    {ok, Peer, Node} = start(#{}),
    ?assertEqual(nonode@nohost, Node),
    ?assertEqual("rpeer_agent", hd(hd(element(2, rpeer:call(Peer, init, get_argument, [user]))))),
    ?assertEqual([1, 2, 3], rpeer:call(Peer, lists, seq, [1, 3])),
    ?assertException(throw, ball, rpeer:call(Peer, erlang, throw, [ball])),
    ?assertException(error, badarg, rpeer:call(Peer, erlang, binary_to_list, [1])),
    ?assertException(exit, bye, rpeer:call(Peer, erlang, exit, [bye])),
    rpeer:stop(Peer).

large_payloads_both_ways() ->
    [{doc, "A 20 MB binary goes to the peer and comes back intact"}].

large_payloads_both_ways(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    Big = crypto:strong_rand_bytes(20 * 1024 * 1024),
    ?assertEqual(erlang:md5(Big), rpeer:call(Peer, erlang, md5, [Big], 60000)),
    Back = rpeer:call(Peer, erlang, list_to_binary, [[Big, <<"!">>]], 60000),
    ?assertEqual(byte_size(Big) + 1, byte_size(Back)),
    ?assertEqual(<<Big/binary, "!">>, Back),
    rpeer:stop(Peer).

concurrent_calls() ->
    [{doc, "Calls from many processes at once each get their own answer"}].

concurrent_calls(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    Self = self(),
    Pids = [spawn_link(fun () ->
                               Self ! {self(), [rpeer:call(Peer, erlang, '*', [I, J])
                                                || J <- lists:seq(1, 50)]}
                       end) || I <- lists:seq(1, 20)],
    Results = [receive {Pid, R} -> R end || Pid <- Pids],
    ?assertEqual([[I * J || J <- lists:seq(1, 50)] || I <- lists:seq(1, 20)], Results),
    rpeer:stop(Peer).

io_reaches_the_group_leader() ->
    [{doc, "io:format on the peer (via user and via the call's group leader) reaches the "
      "caller's group leader"}].

io_reaches_the_group_leader(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    ct:capture_start(),
    ok = rpeer:call(Peer, io, format, [user, "to user.", []]),
    ok = rpeer:call(Peer, io, format, ["to group leader ~ts.", ["ü"]]),
    ct:capture_stop(),
    ?assertEqual(["to user.", "to group leader ü."], ct:capture_get()),
    rpeer:stop(Peer).

cast_and_messages_both_ways() ->
    [{doc, "cast runs on the peer; send delivers to a peer process, which answers through "
      "its group leader ({message, To, Msg} forwarded to the origin)"}].

cast_and_messages_both_ways(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    ok = rpeer:cast(Peer, application, set_env, [kernel, rpeer_agent_test, set]),
    _ = rpeer:call(Peer, sys, get_state, [application_controller]),
    ?assertEqual({ok, set}, rpeer:call(Peer, application, get_env, [kernel, rpeer_agent_test])),
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]),
    Self = self(),
    Echo = rpeer:call(Peer, erlang, spawn,
                      [fun () -> receive {ping, N} -> group_leader() ! {message, Self, {pong, N}} end end]),
    ok = rpeer:send(Peer, Echo, {ping, 7}),
    receive {pong, 7} -> ok after 10000 -> ct:fail(no_pong) end,
    rpeer:stop(Peer).

distributed_agent_peer() ->
    [{doc, "A named (distributed) peer with the agent reports its node name"}].

distributed_agent_peer(Config) when is_list(Config) ->
    erlang:is_alive() orelse throw({skip, "the origin is not distributed"}),
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = start(#{name => Name}),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    ?assertMatch([Name, _], string:lexemes(atom_to_list(Node), "@")),
    rpeer:stop(Peer).

stop_ends_the_os_process() ->
    [{doc, "stop/1 closes stdin: the agent halts the node and its OS process exits"}].

stop_ends_the_os_process(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    OsPid = rpeer:call(Peer, os, getpid, []),
    ?assert(os_pid_alive(OsPid)),
    ok = rpeer:stop(Peer),
    ok = wait_until(fun () -> not os_pid_alive(OsPid) end).

killed_controller_halts_the_peer() ->
    [{doc, "When the controller is killed, the channel closes and the node halts"}].

killed_controller_halts_the_peer(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start(#{connection => standard_io, peer_side => rpeer}),
    OsPid = rpeer:call(Peer, os, getpid, []),
    exit(Peer, kill),
    ok = wait_until(fun () -> not os_pid_alive(OsPid) end).

dead_agent_halts_the_node() ->
    [{doc, "If the agent (the peer's user process) is killed, the node halts: the "
      "controller sees the peer exit"}].

dead_agent_halts_the_node(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{peer_down => continue}),
    Agent = rpeer:call(Peer, erlang, whereis, [user]),
    ok = rpeer:cast(Peer, erlang, exit, [Agent, kill]),
    ok = wait_until(fun () -> rpeer:get_state(Peer) =/= running end),
    ?assertEqual({down, {exit_status, 1}}, rpeer:get_state(Peer)),
    rpeer:stop(Peer).

invalid_peer_side_is_rejected() ->
    [{doc, "peer_side other than peer or rpeer raises {peer_side, Value} before spawning"}].

invalid_peer_side_is_rejected(Config) when is_list(Config) ->
    ?assertException(error, {peer_side, fast},
                     rpeer:start(#{connection => standard_io, peer_side => fast})).

%%% @doc
%%% stop/1 means the peer is gone: when it returns, the peer's OS process has exited
%%% (rpeer starts every peer attached, so it sees the exit), in every connection mode;
%%% a node name can be reused at once. A peer that does not go in time is killed once the
%%% shutdown timeout has passed. Stock peer returns earlier, often with the process
%%% still running.
%%% @end
-module(rpeer_stop_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0, init_per_group/2, end_per_group/2]).

-export([
    os_process_gone_when_stop_returns/0, os_process_gone_when_stop_returns/1,
    name_reusable_right_after_stop/0, name_reusable_right_after_stop/1,
    blocked_peer_killed_after_halt_timeout/0, blocked_peer_killed_after_halt_timeout/1,
    close_does_not_wait/0, close_does_not_wait/1,
    halt_without_timeout_returns/0, halt_without_timeout_returns/1
]).

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [{group, standard_io}, {group, tcp}, {group, dist}].

groups() ->
    Cases = [os_process_gone_when_stop_returns, name_reusable_right_after_stop,
             blocked_peer_killed_after_halt_timeout, close_does_not_wait,
             halt_without_timeout_returns],
    [{standard_io, [parallel], Cases}, {tcp, [parallel], Cases}, {dist, [parallel], Cases}].

init_per_group(Group, Config) ->
    case erlang:is_alive() of
        false ->
            {skip, "the origin is not distributed (run with -sname)"};
        true when Group =:= standard_io ->
            [{connection, standard_io} | Config];
        true when Group =:= tcp ->
            [{connection, 0} | Config];
        true ->
            Config
    end.

end_per_group(_Group, _Config) ->
    ok.

%% A named peer in the group's mode, connected to the origin by distribution too, with
%%  this suite's code (so that the erts_debug blocking funs run there in every mode).
start(Config, Name, Extra) ->
    Base = #{name => Name, args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                                    "-pa", filename:dirname(code:which(?MODULE))]},
    Options = case proplists:get_value(connection, Config) of
                  undefined -> Base;
                  Conn -> Base#{connection => Conn}
              end,
    {ok, Peer, Node} = rpeer:start_link(maps:merge(Options, Extra)),
    OsPid = erpc:call(Node, os, getpid, []),
    {Peer, Node, OsPid}.

%%--------------------------------------------------------------------

os_process_gone_when_stop_returns() ->
    [{doc, "Three times: when stop/1 returns, the peer's OS process no longer exists"}].

os_process_gone_when_stop_returns(Config) when is_list(Config) ->
    [begin
         {Peer, _Node, OsPid} = start(Config, rpeer:random_name(?FUNCTION_NAME), #{}),
         ?assert(rpeer_test_lib:os_pid_exists(OsPid)),
         ok = rpeer:stop(Peer),
         ?assertNot(rpeer_test_lib:os_pid_exists(OsPid))
     end || _ <- lists:seq(1, 3)],
    ok.

name_reusable_right_after_stop() ->
    [{doc, "A node name can be used again as soon as stop/1 returned"}].

name_reusable_right_after_stop(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {Peer, Node, _} = start(Config, Name, #{}),
    ok = rpeer:stop(Peer),
    {Again, Node, _} = start(Config, Name, #{}),
    ok = rpeer:stop(Again).

blocked_peer_killed_after_halt_timeout() ->
    [{doc, "A peer that cannot halt (its emulator is blocked) is killed once the "
      "{halt, 1000} timeout has passed: stop returns and the process is gone"}].

blocked_peer_killed_after_halt_timeout(Config) when is_list(Config) ->
    {Peer, Node, OsPid} = start(Config, rpeer:random_name(?FUNCTION_NAME),
                                #{shutdown => {halt, 1000}}),
    erpc:cast(Node, fun () ->
                            erts_debug:set_internal_state(available_internal_state, true),
                            erts_debug:set_internal_state(block, 20000)
                    end),
    ct:sleep(300),
    {Time, ok} = timer:tc(rpeer, stop, [Peer]),
    ct:log("stop took ~b ms", [Time div 1000]),
    ?assertNot(rpeer_test_lib:os_pid_exists(OsPid)).

close_does_not_wait() ->
    [{doc, "shutdown => close returns at once, as peer's does, even when the peer is "
      "blocked; the peer goes when it sees its channel (or distribution) closed"}].

close_does_not_wait(Config) when is_list(Config) ->
    {Peer, Node, OsPid} = start(Config, rpeer:random_name(?FUNCTION_NAME), #{shutdown => close}),
    erpc:cast(Node, fun () ->
                            erts_debug:set_internal_state(available_internal_state, true),
                            erts_debug:set_internal_state(block, 1500)
                    end),
    ct:sleep(300),
    ok = rpeer:stop(Peer),
    ?assert(rpeer_test_lib:os_pid_exists(OsPid)).

halt_without_timeout_returns() ->
    [{doc, "shutdown => {halt, infinity}: stop/1 returns once the peer halted, and its "
      "OS process is gone"}].

halt_without_timeout_returns(Config) when is_list(Config) ->
    {Peer, _Node, OsPid} = start(Config, rpeer:random_name(?FUNCTION_NAME),
                                 #{shutdown => {halt, infinity}}),
    ok = rpeer:stop(Peer),
    ?assertNot(rpeer_test_lib:os_pid_exists(OsPid)).

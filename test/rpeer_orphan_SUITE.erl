%%% @doc
%%% Peers never outlive their origin: when the origin VM is killed with SIGKILL (no
%%% chance to stop anything), the peers it started exit within 5 seconds, in every
%%% connection mode; when a controller process is killed, its peer exits.
%%% @end
-module(rpeer_orphan_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0]).

-export([
    killed_origin_takes_its_peers/0, killed_origin_takes_its_peers/1,
    killed_controller_takes_its_peer/0, killed_controller_takes_its_peer/1
]).

%% Run in the separate origin VM.
-export([origin_main/1]).

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [killed_origin_takes_its_peers, killed_controller_takes_its_peer].

wait_gone(OsPids, Tries) ->
    case [P || P <- OsPids, rpeer_test_lib:os_pid_exists(P)] of
        [] -> ok;
        Alive when Tries =:= 0 -> {still_alive, Alive};
        _ -> ct:sleep(100), wait_gone(OsPids, Tries - 1)
    end.

%%--------------------------------------------------------------------

killed_origin_takes_its_peers() ->
    [{doc, "An origin VM killed with SIGKILL: its standard_io, tcp and dist peers (and "
      "a fast-side peer) all exit within 5 s"}].

killed_origin_takes_its_peers(Config) when is_list(Config) ->
    {_Port, OriginPid, PeerPids} = Origin =
        rpeer_test_lib:start_origin(Config, ?MODULE, orphan_origin, 200),
    ct:log("origin ~s, peers ~p", [OriginPid, PeerPids]),
    ?assertEqual(4, length(PeerPids)),
    [?assert(rpeer_test_lib:os_pid_exists(P)) || P <- PeerPids],
    ok = rpeer_test_lib:kill_origin(Origin),
    ?assertEqual(ok, wait_gone(PeerPids, 50)).

%% The other origin: starts one peer per mode, writes the OS pids, waits to be killed.
-spec origin_main([string()]) -> no_return().
origin_main([File]) ->
    Modes = [#{connection => standard_io},
             #{connection => standard_io, peer_side => peer},
             #{connection => 0},
             #{name => rpeer:random_name(orphan_dist)}],
    Pids = [begin
                {ok, Peer, Node} = rpeer:start(Mode),
                case Mode of
                    #{connection := _} -> rpeer:call(Peer, os, getpid, []);
                    _ -> erpc:call(Node, os, getpid, [])
                end
            end || Mode <- Modes],
    rpeer_test_lib:report_origin(File, Pids).

killed_controller_takes_its_peer() ->
    [{doc, "exit(Controller, kill) in each mode: the peer's OS process exits"}].

killed_controller_takes_its_peer(Config) when is_list(Config) ->
    Modes = [#{connection => standard_io}, #{connection => 0}]
        ++ [#{name => rpeer:random_name(?FUNCTION_NAME)} || erlang:is_alive()],
    [begin
         {ok, Peer, Node} = rpeer:start(Mode),
         OsPid = case Mode of
                     #{connection := _} -> rpeer:call(Peer, os, getpid, []);
                     _ -> erpc:call(Node, os, getpid, [])
                 end,
         exit(Peer, kill),
         ?assertEqual(ok, wait_gone([OsPid], 50))
     end || Mode <- Modes],
    ok.

%%% @doc
%%% Faults and load: a peer that closes its channel in the middle of a frame, a corrupt
%%% frame over tcp, and rounds of many tcp peers started at once. Each ends in a clear
%%% error or a clean `{down, Reason}', and the origin keeps running.
%%% @end
-module(rpeer_faults_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0]).

-export([
    standard_io_peer_exits_mid_frame/0, standard_io_peer_exits_mid_frame/1,
    tcp_peer_closes_mid_frame/0, tcp_peer_closes_mid_frame/1,
    corrupt_tcp_frame_is_ignored/0, corrupt_tcp_frame_is_ignored/1,
    rounds_of_concurrent_tcp_peers/0, rounds_of_concurrent_tcp_peers/1,
    self_detaching_peer_still_boots/0, self_detaching_peer_still_boots/1,
    address_in_use_is_a_clear_error/0, address_in_use_is_a_clear_error/1
]).

%% Run on the peers.
-export([write_half_frame_and_halt/0, send_raw/1, send_raw/2]).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [standard_io_peer_exits_mid_frame, tcp_peer_closes_mid_frame,
     corrupt_tcp_frame_is_ignored, rounds_of_concurrent_tcp_peers,
     self_detaching_peer_still_boots, address_in_use_is_a_clear_error].

with_test_code(Peer) ->
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]).

wait_down(Peer) ->
    wait_down(Peer, 200).

wait_down(_Peer, 0) ->
    ct:fail(peer_not_down);
wait_down(Peer, Tries) ->
    case rpeer:get_state(Peer) of
        {down, Reason} -> Reason;
        _ -> ct:sleep(50), wait_down(Peer, Tries - 1)
    end.

%%--------------------------------------------------------------------

standard_io_peer_exits_mid_frame() ->
    [{doc, "A standard_io peer that writes half a frame to its stdout and exits: the "
      "half frame arrives as console text, the peer is {down, {exit_status, 3}}"}].

standard_io_peer_exits_mid_frame(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io, peer_down => continue}),
    with_test_code(Peer),
    ct:capture_start(),
    ok = rpeer:cast(Peer, ?MODULE, write_half_frame_and_halt, []),
    ?assertEqual({exit_status, 3}, wait_down(Peer)),
    ct:capture_stop(),
    Text = unicode:characters_to_binary(ct:capture_get()),
    ?assertNotEqual(nomatch, binary:match(Text, <<"before">>)),
    ok = rpeer:stop(Peer).

%% Writes the first half of a valid encoded frame straight to stdout, then halts.
write_half_frame_and_halt() ->
    Payload = term_to_binary({message, nobody, lists:seq(1, 100)}),
    Frame = << <<3:2, Hi:4, 3:2, 3:2, Lo:4, 3:2>>
               || <<Hi:4, Lo:4>> <= <<(byte_size(Payload)):32, Payload/binary, (erlang:crc32(Payload)):32>> >>,
    Half = binary:part(Frame, 0, byte_size(Frame) div 2),
    ok = file:write_file("/dev/stdout", [<<"before">>, Half]),
    erlang:halt(3).

tcp_peer_closes_mid_frame() ->
    [{doc, "A tcp peer that sends a frame header and part of its payload, then closes: "
      "the peer is {down, tcp_closed}"}].

tcp_peer_closes_mid_frame(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => 0, peer_down => continue}),
    with_test_code(Peer),
    ok = rpeer:cast(Peer, ?MODULE, send_raw, [[<<1000:32>>, <<"only a part">>]]),
    ?assertEqual(tcp_closed, wait_down(Peer)),
    rpeer:stop(Peer).

corrupt_tcp_frame_is_ignored() ->
    [{doc, "A tcp frame whose payload is not a valid term is logged and ignored: the "
      "channel stays up and calls keep working"}].

corrupt_tcp_frame_is_ignored(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => 0}),
    with_test_code(Peer),
    Garbage = <<131, 255, "not a term">>,
    ok = rpeer:cast(Peer, ?MODULE, send_raw, [[<<(byte_size(Garbage)):32>>, Garbage], keep]),
    ct:sleep(200),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(6, rpeer:call(Peer, erlang, '*', [2, 3])),
    rpeer:stop(Peer).

%% Runs on a tcp peer: writes raw bytes on its control socket; closes it unless `keep'.
send_raw(Bytes) ->
    send_raw(Bytes, close).

send_raw(Bytes, Then) ->
    [Socket] = [P || P <- erlang:ports(), erlang:port_info(P, name) =:= {name, "tcp_inet"}],
    ok = inet:setopts(Socket, [{packet, raw}]),
    ok = gen_tcp:send(Socket, Bytes),
    case Then of
        close -> gen_tcp:close(Socket);
        keep -> inet:setopts(Socket, [{packet, 4}])
    end.

rounds_of_concurrent_tcp_peers() ->
    [{doc, "10 rounds of 20 tcp peers (connection => 0) started at once: every peer "
      "boots within the default boot timeout and answers"}].

rounds_of_concurrent_tcp_peers(Config) when is_list(Config) ->
    [begin
         Self = self(),
         Starters = [spawn_link(fun () ->
                                        Result = rpeer:start(#{connection => 0}),
                                        Self ! {self(), Result}
                                end) || _ <- lists:seq(1, 20)],
         Peers = [receive {Starter, {ok, Peer, _}} -> Peer;
                          {Starter, Other} -> ct:fail({round, Round, Other})
                  end || Starter <- Starters],
         [?assertEqual(nonode@nohost, rpeer:call(Peer, erlang, node, [])) || Peer <- Peers],
         [ok = rpeer:stop(Peer) || Peer <- Peers]
     end || Round <- lists:seq(1, 10)],
    ok.

self_detaching_peer_still_boots() ->
    [{doc, "A dist peer whose program puts the node in the background and exits 0 at "
      "once (like run_erl) is not a boot failure: the node boots and runs"}].

self_detaching_peer_still_boots(Config) when is_list(Config) ->
    erlang:is_alive() orelse throw({skip, "the origin is not distributed"}),
    Script = filename:join(proplists:get_value(priv_dir, Config), "background_erl"),
    ok = file:write_file(Script, ["#!/bin/sh\n'", os:find_executable("erl"),
                                  "' \"$@\" </dev/null >/dev/null 2>&1 &\nexit 0\n"]),
    ok = file:change_mode(Script, 8#755),
    {ok, Peer, Node} = rpeer:start_link(#{name => rpeer:random_name(?FUNCTION_NAME),
                                          exec => Script}),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    rpeer:stop(Peer).

address_in_use_is_a_clear_error() ->
    [{doc, "A tcp port in use fails the start with {error, {eaddrinuse, {listen, Ip, Port}}} "
      "and nothing is spawned"}].

address_in_use_is_a_clear_error(Config) when is_list(Config) ->
    {ok, Busy} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(Busy),
    ?assertEqual({error, {eaddrinuse, {listen, {127, 0, 0, 1}, Port}}},
                 rpeer:start(#{connection => {{127, 0, 0, 1}, Port}})),
    gen_tcp:close(Busy).

%%% @doc
%%% Faults and load: a peer that closes its channel in the middle of a frame, a corrupt
%%% frame over tcp, rounds of many tcp peers started at once, a peer that halts with
%%% its output still in the pipe or whose child holds its stdout open, a controller
%%% killed outright. Each ends in a clear error or a clean `{down, Reason}', nothing is
%%% lost or leaked, and the origin keeps running.
%%% @end
-module(rpeer_faults_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0]).

-export([
    standard_io_peer_exits_mid_frame/0, standard_io_peer_exits_mid_frame/1,
    tcp_peer_closes_mid_frame/0, tcp_peer_closes_mid_frame/1,
    tcp_connection_reset_is_tcp_closed/0, tcp_connection_reset_is_tcp_closed/1,
    corrupt_tcp_frame_is_ignored/0, corrupt_tcp_frame_is_ignored/1,
    rounds_of_concurrent_tcp_peers/0, rounds_of_concurrent_tcp_peers/1,
    self_detaching_peer_still_boots/0, self_detaching_peer_still_boots/1,
    address_in_use_is_a_clear_error/0, address_in_use_is_a_clear_error/1,
    output_written_before_exit_comes_first/0, output_written_before_exit_comes_first/1,
    exit_reported_while_a_child_holds_stdout/0, exit_reported_while_a_child_holds_stdout/1,
    exit_waits_while_a_child_still_writes_stdout/0, exit_waits_while_a_child_still_writes_stdout/1,
    killed_controller_leaks_no_descriptor/0, killed_controller_leaks_no_descriptor/1,
    kept_crash_report_holds_no_descriptor/0, kept_crash_report_holds_no_descriptor/1
]).

%% Run on the peers.
-export([write_half_frame_and_halt/0, send_raw/1, send_raw/2, write_and_halt/1,
         reset_connection/0]).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [standard_io_peer_exits_mid_frame, tcp_peer_closes_mid_frame,
     tcp_connection_reset_is_tcp_closed,
     corrupt_tcp_frame_is_ignored, rounds_of_concurrent_tcp_peers,
     self_detaching_peer_still_boots, address_in_use_is_a_clear_error,
     output_written_before_exit_comes_first, exit_reported_while_a_child_holds_stdout,
     exit_waits_while_a_child_still_writes_stdout,
     killed_controller_leaks_no_descriptor, kept_crash_report_holds_no_descriptor].

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

tcp_connection_reset_is_tcp_closed() ->
    [{doc, "A tcp peer that resets its control connection (closed with linger 0): the "
      "peer is {down, tcp_closed} (the origin's port on the socket never reports a "
      "reset; rpeer's channel thread does)"}].

tcp_connection_reset_is_tcp_closed(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => 0, peer_down => continue}),
    with_test_code(Peer),
    ok = rpeer:cast(Peer, ?MODULE, reset_connection, []),
    ?assertEqual(tcp_closed, wait_down(Peer)),
    rpeer:stop(Peer).

%% Runs on a tcp peer: resets its control connection.
reset_connection() ->
    [Socket] = [P || P <- erlang:ports(), erlang:port_info(P, name) =:= {name, "tcp_inet"}],
    ok = inet:setopts(Socket, [{linger, {true, 0}}]),
    gen_tcp:close(Socket).

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

output_written_before_exit_comes_first() ->
    [{doc, "A standard_io peer writes 4 MB to its stdout and stderr and halts at once, and "
      "a child of its wrapper writes to its stdout half a second later: when the peer is "
      "reported down, every byte of it has reached the group leader (the exit status "
      "waits for the end of stdout, as a port's exit_status waits for eof)"}].

output_written_before_exit_comes_first(Config) when is_list(Config) ->
    Peer = start_wrapped(Config, "late_writer", "(sleep 0.5; echo late output) 2>/dev/null &"),
    with_test_code(Peer),
    ct:capture_start(),
    ok = rpeer:cast(Peer, ?MODULE, write_and_halt, [4]),
    ?assertEqual({exit_status, 0}, wait_down(Peer)),
    ct:capture_stop(),
    Text = unicode:characters_to_binary(ct:capture_get()),
    ?assertMatch({_, _}, binary:match(Text, <<"stdout done">>)),
    ?assertMatch({_, _}, binary:match(Text, <<"[stderr] stderr done">>)),
    ?assertMatch({_, _}, binary:match(Text, <<"late output">>)),
    ?assertEqual(4 * 1024 * 1024, length(binary:matches(Text, <<"x">>))).

%% A standard_io peer (peer_down => continue) started through a wrapper script that runs
%%  Shell, then execs erl with the arguments it is given.
start_wrapped(Config, Name, Shell) ->
    Script = filename:join(proplists:get_value(priv_dir, Config), Name),
    ok = file:write_file(Script, ["#!/bin/sh\n", Shell, "\nexec '", os:find_executable("erl"),
                                  "' \"$@\"\n"]),
    ok = file:change_mode(Script, 8#755),
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io, exec => Script,
                                       peer_down => continue}),
    Peer.

%% Writes MiB mebibytes of text to stdout, a line to stderr, and halts without flushing.
write_and_halt(MiB) ->
    Block = binary:copy(<<"x">>, 1024 * 1024),
    _ = [ok = file:write_file("/dev/stdout", Block) || _ <- lists:seq(1, MiB)],
    ok = file:write_file("/dev/stdout", <<"stdout done\n">>),
    ok = file:write_file("/dev/stderr", <<"stderr done\n">>),
    erlang:halt(0, [{flush, false}]).

exit_reported_while_a_child_holds_stdout() ->
    [{doc, "A standard_io peer whose wrapper left a child holding its stdout and stderr "
      "open halts: it is reported down a few seconds later, not when the child exits "
      "(stock peer waits for the child)"}].

exit_reported_while_a_child_holds_stdout(Config) when is_list(Config) ->
    Peer = start_wrapped(Config, "erl_with_child", "sleep 20 &"),
    Started = erlang:monotonic_time(millisecond),
    ok = rpeer:cast(Peer, erlang, halt, [7]),
    ?assertEqual({exit_status, 7}, wait_down(Peer)),
    Waited = erlang:monotonic_time(millisecond) - Started,
    ct:log("down after ~b ms", [Waited]),
    ?assert(Waited < 10000).

exit_waits_while_a_child_still_writes_stdout() ->
    [{doc, "A child of the peer's wrapper (which execs erl) writes to its stdout for 3 s "
      "once the node halted (longer than the 2 s grace for an idle stdout): all of it "
      "comes before the peer is reported down"}].

exit_waits_while_a_child_still_writes_stdout(Config) when is_list(Config) ->
    Peer = start_wrapped(Config, "ticking_child",
                         "(while kill -0 $$; do sleep 0.05; done; "
                         "i=0; while [ $i -lt 30 ]; do echo tick; sleep 0.1; i=$((i+1)); done; "
                         "echo ticks done) 2>/dev/null &"),
    ct:capture_start(),
    ok = rpeer:cast(Peer, erlang, halt, [0]),
    ?assertEqual({exit_status, 0}, wait_down(Peer)),
    ct:capture_stop(),
    Text = unicode:characters_to_binary(ct:capture_get()),
    ?assertMatch({_, _}, binary:match(Text, <<"ticks done">>)),
    ?assertEqual(30, length(binary:matches(Text, <<"tick\n">>))).

killed_controller_leaks_no_descriptor() ->
    [{doc, "Controllers of standard_io peers killed outright (no terminate/2): the peers "
      "go, and the origin's descriptors are back to their count a few seconds later "
      "(the stdout descriptor is closed after its port surely is)"}].

killed_controller_leaks_no_descriptor(Config) when is_list(Config) ->
    Before = open_descriptors(),
    Peers = [begin
                 {ok, Peer, _} = rpeer:start(#{connection => standard_io}),
                 Peer
             end || _ <- lists:seq(1, 3)],
    OsPids = [rpeer:call(Peer, os, getpid, []) || Peer <- Peers],
    ?assert(open_descriptors() > Before),
    [exit(Peer, kill) || Peer <- Peers],
    [ok = rpeer_test_lib:wait_os_pid_gone(OsPid, 10000) || OsPid <- OsPids],
    ?assertEqual(ok, rpeer_test_lib:wait_until(fun () -> open_descriptors() =< Before end, 15000)).

kept_crash_report_holds_no_descriptor() ->
    [{doc, "A controller with peer_down => crash whose peer halts logs a crash report; "
      "a log handler that keeps the report keeps no channel of the peer with it: the "
      "report shows the controller's state as a summary (format_status/1), and the "
      "origin's descriptors are back to their count while the report is still held"}].

kept_crash_report_holds_no_descriptor(Config) when is_list(Config) ->
    Keeper = spawn_link(fun () -> keep_events([]) end),
    ok = logger:add_handler(rpeer_keep_events, rpeer_test_lib, #{config => #{pid => Keeper}}),
    try
        Before = open_descriptors(),
        {ok, Peer, _} = rpeer:start(#{connection => standard_io, peer_down => crash}),
        OsPid = rpeer:call(Peer, os, getpid, []),
        Watch = monitor(process, Peer),
        ok = rpeer:cast(Peer, erlang, halt, [3]),
        receive {'DOWN', Watch, process, Peer, Reason} -> ?assertEqual({exit_status, 3}, Reason)
        after 10000 -> ct:fail(controller_still_up)
        end,
        ok = rpeer_test_lib:wait_os_pid_gone(OsPid, 10000),
        ok = rpeer_test_lib:wait_until(fun () -> terminate_report(Keeper, Peer) =/= false end,
                                       5000),
        ?assertEqual(ok, rpeer_test_lib:wait_until(fun () -> open_descriptors() =< Before end,
                                                   15000)),
        %% the report is still held
        #{state := Summary} = terminate_report(Keeper, Peer),
        ?assertMatch(#{state := {down, {exit_status, 3}}, node := nonode@nohost}, Summary),
        ?assertEqual([], references(Summary))
    after
        ok = logger:remove_handler(rpeer_keep_events),
        unlink(Keeper),
        exit(Keeper, kill)
    end.

%% Keeps every log event (as Common Test's log redirection may keep a report).
keep_events(Events) ->
    receive
        {logged, Event} -> keep_events([Event | Events]);
        {get, From} -> From ! {events, Events}, keep_events(Events)
    end.

%% gen_server's report of Peer's terminate, once the keeper has it.
terminate_report(Keeper, Peer) ->
    Keeper ! {get, self()},
    receive {events, Events} -> ok end,
    case [Report || #{msg := {report, #{label := {gen_server, terminate}} = Report}} <- Events,
                    maps:get(name, Report) =:= Peer] of
        [Report | _] -> Report;
        [] -> false
    end.

references(Term) when is_reference(Term) -> [Term];
references(Term) when is_map(Term) -> references(maps:to_list(Term));
references(Term) when is_tuple(Term) -> references(tuple_to_list(Term));
references([Head | Tail]) -> references(Head) ++ references(Tail);
references(_Other) -> [].

open_descriptors() ->
    {ok, Fds} = file:list_dir("/proc/self/fd"),
    length(Fds).

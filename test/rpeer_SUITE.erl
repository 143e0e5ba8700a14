%%% @doc
%%% Behaviour suite for rpeer, the drop-in replacement of OTP's `peer'.
%%%
%%% The same cases run once per connection kind, in groups (like OTP's
%%% peer_SUITE): `dist' (no alternative connection, needs a distributed
%%% origin), `standard_io', `tcp' (connection => 0) and `tcp_ip'
%%% (connection => {{127,0,0,1}, 0}, a subset). `common' holds the cases
%%% that do not depend on a connection kind.
%%%
%%% Every case that checks behaviour shared with stock OTP 25 `peer' passes
%%% against stock peer (run the suite with `rpeer:' replaced by `peer:').
%%% Cases about rpeer-only improvements say "rpeer-only" in their doc and
%%% are expected to fail against stock peer.
%%%
%%% Parallel groups start all their cases at once; init_per_testcase takes
%%% "peer slots" (see rpeer_test_lib) so that at most ?MAX_PEERS peers boot
%%% together on a small machine.
%%% @end
-module(rpeer_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

%% Common Test callbacks
-export([
    suite/0,
    all/0,
    groups/0,
    init_per_suite/1,
    end_per_suite/1,
    init_per_group/2,
    end_per_group/2,
    init_per_testcase/2,
    end_per_testcase/2
]).

%% Test cases: no connection kind
-export([
    random_name_default/0, random_name_default/1,
    frame_term_is_binary_to_term/0, frame_term_is_binary_to_term/1,
    random_name_prefix/0, random_name_prefix/1,
    boot_failed_start_link/0, boot_failed_start_link/1,
    boot_failed_start/0, boot_failed_start/1,
    exec_not_found/0, exec_not_found/1
]).

%% Test cases: dist only
-export([
    start_link_0/0, start_link_0/1,
    dist_no_alternative/0, dist_no_alternative/1,
    dist_disconnect/0, dist_disconnect/1,
    dist_disconnect_crash/0, dist_disconnect_crash/1,
    dist_localhost/0, dist_localhost/1,
    dist_io_redirect/0, dist_io_redirect/1
]).

%% Test cases: alternative connections (standard_io, tcp)
-export([
    start_unnamed/0, start_unnamed/1,
    start_named/0, start_named/1,
    call_result/0, call_result/1,
    call_throw/0, call_throw/1,
    call_error/0, call_error/1,
    call_exit/0, call_exit/1,
    call_with_timeout/0, call_with_timeout/1,
    call_timeout/0, call_timeout/1,
    call_late_reply/0, call_late_reply/1,
    call_large_binary/0, call_large_binary/1,
    call_large_term/0, call_large_term/1,
    call_term_of_many_binaries/0, call_term_of_many_binaries/1,
    concurrent_calls/0, concurrent_calls/1,
    cast/0, cast/1,
    cast_failure_ignored/0, cast_failure_ignored/1,
    send_to_pid/0, send_to_pid/1,
    send_to_name/0, send_to_name/1,
    forward_to_name/0, forward_to_name/1,
    peer_down_crash_erpc/0, peer_down_crash_erpc/1,
    channel_handler_killed/0, channel_handler_killed/1,
    dist_up_down/0, dist_up_down/1,
    io_redirect/0, io_redirect/1,
    io_redirect_unicode/0, io_redirect_unicode/1,
    dyn_peer/0, dyn_peer/1
]).

%% Test cases: standard_io only
-export([
    init_debug/0, init_debug/1,
    raw_console_output/0, raw_console_output/1,
    console_bytes_192_255/0, console_bytes_192_255/1,
    utf8_console_output/0, utf8_console_output/1
]).

%% Test cases: every connection kind
-export([
    peer_states/0, peer_states/1,
    wait_boot_false/0, wait_boot_false/1,
    wait_boot_integer/0, wait_boot_integer/1,
    wait_boot_infinity/0, wait_boot_infinity/1,
    wait_boot_too_short/0, wait_boot_too_short/1,
    peer_down_stop/0, peer_down_stop/1,
    peer_down_continue/0, peer_down_continue/1,
    peer_down_not_waited/0, peer_down_not_waited/1,
    peer_down_crash/0, peer_down_crash/1,
    stop_then_dead/0, stop_then_dead/1,
    stop_sleeping_peer/0, stop_sleeping_peer/1,
    controller_killed/0, controller_killed/1,
    owner_exit/0, owner_exit/1,
    multi_node/0, multi_node/1,
    duplicate_name/0, duplicate_name/1,
    shutdown_default/0, shutdown_default/1,
    shutdown_halt/0, shutdown_halt/1,
    shutdown_halt_timeout/0, shutdown_halt_timeout/1,
    shutdown_stop/0, shutdown_stop/1,
    shutdown_stop_timeout/0, shutdown_stop_timeout/1,
    shutdown_close/0, shutdown_close/1,
    shutdown_cover_form/0, shutdown_cover_form/1
]).

-import(rpeer_test_lib, [mode/1, mode_opts/2, merge_opts/2, peer_call/6,
                         halt_peer/4, down_reason/3, require_alive/0,
                         add_test_path/1, forward/2, wait_until/2,
                         wait_for_state/3, wait_os_pid_gone/2]).

%% At most this many peers booting/running at once (see rpeer_test_lib).
-define(MAX_PEERS, 6).

%% Starts a peer linked to the case process, in the group's mode.
-define(START(Config, Extra), rpeer_test_lib:start_link(Config, ?FUNCTION_NAME, Extra)).

%% Size of the payload of call_large_binary.
-define(LARGE, (5 * 1024 * 1024)).

%%--------------------------------------------------------------------
%% Common Test callbacks

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [{group, common}, {group, dist}, {group, standard_io}, {group, tcp}, {group, tcp_ip}].

groups() ->
    [{common, [parallel], common_cases()},
     {dist, [parallel], dist_cases() ++ every_mode_cases()},
     {standard_io, [parallel], standard_io_cases() ++ alternative_cases() ++ every_mode_cases()},
     {tcp, [parallel], [peer_down_not_waited | alternative_cases() ++ every_mode_cases()]},
     {tcp_ip, [parallel], tcp_ip_cases()}].

common_cases() ->
    [random_name_default, random_name_prefix, boot_failed_start_link, boot_failed_start,
     exec_not_found, frame_term_is_binary_to_term].

dist_cases() ->
    [start_link_0, dist_no_alternative, dist_disconnect, dist_disconnect_crash,
     dist_localhost, dist_io_redirect, peer_down_not_waited].

alternative_cases() ->
    [start_unnamed, start_named, call_result, call_throw, call_error, call_exit,
     call_with_timeout, call_timeout, call_late_reply, call_large_binary, call_large_term,
     call_term_of_many_binaries, concurrent_calls, cast, cast_failure_ignored, send_to_pid, send_to_name,
     forward_to_name, io_redirect, io_redirect_unicode, dyn_peer, peer_down_crash_erpc,
     channel_handler_killed, dist_up_down].

standard_io_cases() ->
    [init_debug, raw_console_output,
     console_bytes_192_255, utf8_console_output].   %% rpeer-only

every_mode_cases() ->
    [peer_states, wait_boot_false, wait_boot_integer, wait_boot_infinity,
     wait_boot_too_short, peer_down_stop, peer_down_continue, peer_down_crash,
     stop_then_dead, stop_sleeping_peer, controller_killed, owner_exit, multi_node,
     duplicate_name | shutdown_cases()].

shutdown_cases() ->
    [shutdown_default, shutdown_halt, shutdown_halt_timeout, shutdown_stop,
     shutdown_stop_timeout, shutdown_close, shutdown_cover_form].

tcp_ip_cases() ->
    [start_unnamed, call_result, call_error, call_large_binary, cast, send_to_pid,
     io_redirect, peer_down_crash, peer_down_crash_erpc, controller_killed, dist_up_down].

init_per_suite(Config) ->
    rpeer_test_lib:suite_setup(Config, ?MAX_PEERS).

end_per_suite(Config) ->
    rpeer_test_lib:suite_teardown(Config).

init_per_group(Group, Config) ->
    rpeer_test_lib:group_mode(Group, Config).

end_per_group(_Group, Config) ->
    proplists:delete(connection, Config).

init_per_testcase(Case, Config) ->
    ok = rpeer_test_lib:acquire(slots(Case)),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% How many peer slots a case takes (peers it runs at once, or its CPU weight).
slots(random_name_default) -> 0;
slots(random_name_prefix) -> 0;
slots(multi_node) -> 4;
slots(duplicate_name) -> 2;
slots(dist_localhost) -> 2;
slots(call_large_binary) -> 2;
slots(concurrent_calls) -> 2;
slots(_) -> 1.

%%--------------------------------------------------------------------
%% Helpers

conn(Config) ->
    proplists:get_value(connection, Config).

%% Host part of the origin node name (peers run on the same host).
origin_host() ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Host.

links() ->
    {links, Links} = process_info(self(), links),
    lists:sort(Links).

messages() ->
    {messages, Msgs} = process_info(self(), messages),
    Msgs.

receive_down(MRef, Timeout) ->
    receive
        {'DOWN', MRef, process, _, Reason} -> Reason
    after Timeout ->
            ct:fail({no_down_within, Timeout})
    end.

%%--------------------------------------------------------------------
%% Cases: no connection kind

frame_term_is_binary_to_term() ->
    [{doc, "A frame is decoded as binary_to_term/1 decodes it, whatever its shape; a large "
      "binary ending a large frame's tuple (a reply, a message, also {ok, Bin} in a reply) "
      "is a sub-binary of the frame, not a copy"}].

frame_term_is_binary_to_term(Config) when is_list(Config) ->
    Big = rand:bytes(1024 * 1024),
    Size = byte_size(Big),
    Terms = [{reply, 1, ok, Big}, {reply, 109, ok, Big}, {reply, 1 bsl 40, error, Big},
             {message, self(), Big}, {message, some_registered_name, Big}, {Big},
             {reply, 7, ok, {ok, Big}}, {reply, 7, ok, [Big]}, {reply, 7, ok, #{Big => Big}},
             {reply, 7, ok, <<Big/binary, 1:3>>}, {reply, 7, ok, binary:part(Big, 0, 100)},
             [Big], Big, {reply, 7, ok, lists:seq(1, 100000)}, {reply, 1, ok, <<>>},
             %% a candidate BINARY_EXT header inside the element before, whose size would
             %% run to the frame's end (the element is <<109, Size + 5:32>>)
             {<<109, (Size + 5):32>>, Big},
             {reply, 1, ok, small},
             %% nested: tuples last in tuples are shared; a list tail, a map value, an
             %% element not last, a [] before the binary are not (and stay correct)
             {reply, 7, ok, {ok, {nested, [], Big}}}, {reply, 7, ok, {[], Big}},
             {reply, 7, ok, [a | Big]}, {reply, 7, ok, #{k => Big}}, {reply, 7, ok, {Big, []}},
             {reply, 7, ok, {ok, {}, Big}}, {reply, 7, ok, {{<<109, (Size + 5):32>>}, Big}}],
    [begin
         Frame = term_to_binary(Term),
         ?assertEqual(Term, rpeer_frame:to_term(Frame)),
         Compressed = term_to_binary(Term, [compressed]),
         ?assertEqual(Term, rpeer_frame:to_term(Compressed))
     end || Term <- Terms],
    %% shared, not copied: the reply's binary is a part of the frame
    ReplyFrame = term_to_binary({reply, 1, ok, Big}),
    {reply, 1, ok, Shared} = rpeer_frame:to_term(ReplyFrame),
    ?assertEqual(byte_size(ReplyFrame), binary:referenced_byte_size(Shared)),
    NestedFrame = term_to_binary({reply, 1, ok, {ok, {nested, Big}}}),
    {reply, 1, ok, {ok, {nested, Nested}}} = rpeer_frame:to_term(NestedFrame),
    ?assertEqual(byte_size(NestedFrame), binary:referenced_byte_size(Nested)),
    %% a small frame is decoded as it is
    {reply, 1, ok, Small} = rpeer_frame:to_term(term_to_binary({reply, 1, ok, <<0:8000>>})),
    ?assertEqual(1000, byte_size(Small)),
    %% not a term: the same error as binary_to_term/1
    ?assertError(badarg, rpeer_frame:to_term(<<131, 104, 2, 109, 0:(70000 * 8)>>)).

random_name_default() ->
    [{doc, "random_name/0 is \"peer-N-OsPid\" and unique on each call"}].

random_name_default(Config) when is_list(Config) ->
    Name1 = rpeer:random_name(),
    Name2 = rpeer:random_name(),
    ?assert(io_lib:char_list(Name1)),
    Re = "^peer-[0-9]+-" ++ os:getpid() ++ "$",
    ?assertMatch({match, _}, re:run(Name1, Re), Name1),
    ?assertMatch({match, _}, re:run(Name2, Re), Name2),
    ?assertNotEqual(Name1, Name2).

random_name_prefix() ->
    [{doc, "random_name/1 accepts an atom or a string prefix: \"Prefix-N-OsPid\""}].

random_name_prefix(Config) when is_list(Config) ->
    OsPid = os:getpid(),
    FromAtom = rpeer:random_name(my_prefix),
    FromString = rpeer:random_name("str-prefix"),
    ?assertMatch({match, _}, re:run(FromAtom, "^my_prefix-[0-9]+-" ++ OsPid ++ "$"), FromAtom),
    ?assertMatch({match, _}, re:run(FromString, "^str-prefix-[0-9]+-" ++ OsPid ++ "$"), FromString),
    ?assertNotEqual(FromAtom, rpeer:random_name(my_prefix)).

boot_failed_start_link() ->
    [{doc, "A peer that exits while booting (standard_io, -no_epmd with a name) makes "
      "start_link/1 exit with {boot_failed, {exit_status, 1}}"}].

boot_failed_start_link(Config) when is_list(Config) ->
    Links = links(),
    ?assertException(exit, {boot_failed, {exit_status, 1}},
                     rpeer:start_link(#{connection => standard_io,
                                        name => rpeer:random_name(?FUNCTION_NAME),
                                        args => ["-no_epmd"]})),
    %% the controller is gone and did not leave a link behind
    wait_until(fun () -> links() =:= Links end, 5000).

boot_failed_start() ->
    [{doc, "Same boot failure with start/1 (not linked): exits with "
      "{boot_failed, {exit_status, 1}} like stock peer"}].

boot_failed_start(Config) when is_list(Config) ->
    ?assertException(exit, {boot_failed, {exit_status, 1}},
                     rpeer:start(#{connection => standard_io,
                                   name => rpeer:random_name(?FUNCTION_NAME),
                                   args => ["-no_epmd"]})).

exec_not_found() ->
    [{doc, "start/1 with an exec that does not exist returns {error, {enoent, _}} at once "
      "(standard_io and tcp), like stock peer's open_port failure"}].

exec_not_found(Config) when is_list(Config) ->
    ?assertMatch({error, {enoent, _}},
                 rpeer:start(#{connection => standard_io, exec => "/nonexistent/rpeer/erl"})),
    ?assertMatch({error, {enoent, _}},
                 rpeer:start(#{connection => 0, exec => "/nonexistent/rpeer/erl",
                               wait_boot => 5000})).

%%--------------------------------------------------------------------
%% Cases: dist only

start_link_0() ->
    [{doc, "start_link/0 starts a distributed peer with a random name: {ok, Pid, Node}, "
      "erpc works and rpeer:call has no alternative connection (error noconnection)"}].

start_link_0(Config) when is_list(Config) ->
    {ok, Peer, Node} = rpeer:start_link(),
    ?assert(is_pid(Peer)),
    ?assertMatch("peer-" ++ _, atom_to_list(Node)),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertException(error, noconnection, rpeer:call(Peer, erlang, node, [])),
    ?assertEqual(ok, rpeer:stop(Peer)),
    ?assertNot(lists:member(Node, nodes(connected))).

dist_no_alternative() ->
    [{doc, "Without an alternative connection call/4,5 raise error noconnection, while "
      "cast/4 and send/3 return ok and are ignored (the controller stays up)"}].

dist_no_alternative(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{}),
    ?assertException(error, noconnection, rpeer:call(Peer, erlang, node, [])),
    ?assertException(error, noconnection, rpeer:call(Peer, erlang, node, [], 1000)),
    ?assertEqual(ok, rpeer:cast(Peer, erlang, halt, [])),
    ?assertEqual(ok, rpeer:send(Peer, init, {stop, stop})),
    ct:sleep(200),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    rpeer:stop(Peer).

dist_disconnect() ->
    [{doc, "Dist mode: net_kernel:disconnect(Node) takes the peer node down and the "
      "controller stops normally (peer_SUITE dist case)"}].

dist_disconnect(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{}),
    OsPid = erpc:call(Node, os, getpid, []),
    MRef = monitor(process, Peer),
    ?assertEqual(true, net_kernel:disconnect(Node)),
    ?assertEqual(normal, receive_down(MRef, 5000)),
    ?assertException(exit, {noproc, _}, rpeer:get_state(Peer)),
    wait_os_pid_gone(OsPid, 10000).

dist_disconnect_crash() ->
    [{doc, "Dist mode with peer_down => crash: disconnecting makes the controller exit "
      "with {nodedown, Node}"}].

dist_disconnect_crash(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{peer_down => crash}),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    unlink(Peer),
    MRef = monitor(process, Peer),
    ?assertEqual(true, net_kernel:disconnect(Node)),
    ?assertEqual({nodedown, Node}, receive_down(MRef, 5000)).

dist_localhost() ->
    [{doc, "host => \"localhost\" gives Name@localhost; a second peer on the real host name "
      "can connect to it (peer_SUITE dist_localhost)"}].

dist_localhost(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{host => "localhost"}),
    ?assertMatch([_, "localhost"], string:lexemes(atom_to_list(Node), "@")),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    {ok, Host} = inet:gethostname(),
    {ok, Peer2, Node2} = ?START(Config, #{host => Host}),
    ?assertEqual(list_to_atom(lists:concat([hd(string:split(atom_to_list(Node2), "@")), "@", Host])),
                 Node2),
    ?assertEqual(true, erpc:call(Node, net_kernel, connect_node, [Node2])),
    rpeer:stop(Peer),
    rpeer:stop(Peer2).

dist_io_redirect() ->
    [{doc, "Dist mode: the peer's 'user' output (including -eval output at boot) reaches the "
      "group leader of the process that started the peer; send/3 is ignored"}].

dist_io_redirect(Config) when is_list(Config) ->
    ct:capture_start(),
    {ok, Peer, Node} = ?START(Config, #{args => ["-eval", "io:format(\"out\")."]}),
    %% erpc sets the group leader itself, so write to 'user' to go through the peer's relay
    ?assertEqual(ok, erpc:call(Node, io, format, [user, "STRONGFLOUR.", []])),
    ?assertEqual(ok, rpeer:send(Peer, init, {stop, stop})),
    ?assertEqual(ok, erpc:call(Node, erlang, apply, [io, format, ["second."]])),
    %% (a node of rpeer's pool ran -eval when it booted, for the pool's group leader)
    Booted = case rpeer_test_lib:from_pool(Peer) of true -> []; false -> ["out"] end,
    Expected = lists:sort(["STRONGFLOUR.", "second." | Booted]),
    %% -eval runs late in the boot: its output can come after start_link returned
    Texts = capture_until(fun (Strings) -> length(Strings) >= length(Expected) end, 10000),
    rpeer:stop(Peer),
    ct:capture_stop(),
    ?assertEqual(Expected, lists:sort(Texts ++ ct:capture_get())).

%%--------------------------------------------------------------------
%% Cases: alternative connections

start_unnamed() ->
    [{doc, "start_link/1 with only a connection starts a non-distributed peer: "
      "{ok, Pid, nonode@nohost}, state running, stop/1 returns ok"}].

start_unnamed(Config) when is_list(Config) ->
    {ok, Peer, Node} = rpeer:start_link(#{connection => conn(Config)}),
    ?assertEqual(nonode@nohost, Node),
    ?assertEqual(nonode@nohost, rpeer:call(Peer, erlang, node, [])),
    ?assertEqual(false, rpeer:call(Peer, erlang, is_alive, [])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(ok, rpeer:stop(Peer)),
    ?assertNot(is_process_alive(Peer)).

start_named() ->
    [{doc, "A named peer over an alternative connection returns its node name, which the "
      "peer reports itself; the origin is not dist-connected to it"}].

start_named(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = ?START(Config, #{name => Name}),
    ?assertMatch([Name, _Host], string:split(atom_to_list(Node), "@")),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    ?assertNot(lists:member(Node, nodes(connected))),
    rpeer:stop(Peer).

call_result() ->
    [{doc, "call/4 returns the result of M:F(A) on the peer, for all kinds of terms"}].

call_result(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertEqual([1, 2, 3, 4, 5], rpeer:call(Peer, lists, seq, [1, 5])),
    %% funs of this module run on the peer once it has the code path
    add_test_path(Peer),
    ?assertEqual({fun_ran, 1}, rpeer:call(Peer, erlang, apply, [fun (X) -> {fun_ran, X} end, [1]])),
    Term = #{atom => [1.5, -7, 1 bsl 100, <<1, 2, 3, 200, 255>>, "str", {tuple, []}],
             <<"bin key">> => <<7:3>>, [] => #{}},
    ?assertEqual(Term, rpeer:call(Peer, erlang, hd, [[Term]])),
    ?assertEqual(3, rpeer:call(Peer, erlang, length, [[a, b, c]])),
    ?assert(is_pid(rpeer:call(Peer, erlang, self, []))),
    ?assert(is_reference(rpeer:call(Peer, erlang, make_ref, []))),
    OsPid = rpeer:call(Peer, os, getpid, []),
    ?assertEqual(OsPid, rpeer:call(Peer, os, getpid, [])),
    ?assertNotEqual(os:getpid(), OsPid),
    rpeer:stop(Peer).

call_throw() ->
    [{doc, "A throw on the peer is re-raised by call/4 as throw with the same reason"}].

call_throw(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertException(throw, ball, rpeer:call(Peer, erlang, throw, [ball])),
    ?assertException(throw, {complex, [ball]}, rpeer:call(Peer, erlang, throw, [{complex, [ball]}])),
    %% still works after the exceptions
    ?assertEqual(6, rpeer:call(Peer, erlang, '*', [2, 3])),
    rpeer:stop(Peer).

call_error() ->
    [{doc, "Errors on the peer are re-raised by call/4 as error with the same reason "
      "(badarith, badarg, undef) and a stack trace"}].

call_error(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertException(error, badarith, rpeer:call(Peer, erlang, error, [badarith])),
    ?assertException(error, badarg, rpeer:call(Peer, erlang, binary_to_list, [1])),
    ?assertException(error, undef, rpeer:call(Peer, rpeer_no_such_module, no_fun, [])),
    ?assertException(error, {my, reason}, rpeer:call(Peer, erlang, error, [{my, reason}])),
    try rpeer:call(Peer, erlang, binary_to_list, [1]) of
        Result -> ct:fail({unexpected_result, Result})
    catch
        error:badarg:Stack -> ?assert(is_list(Stack))
    end,
    ?assertEqual(6, rpeer:call(Peer, erlang, '*', [2, 3])),
    rpeer:stop(Peer).

call_exit() ->
    [{doc, "An exit on the peer is re-raised by call/4 as exit with the same reason"}].

call_exit(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertException(exit, x, rpeer:call(Peer, erlang, exit, [x])),
    ?assertException(exit, {complex, "reason"}, rpeer:call(Peer, erlang, exit, [{complex, "reason"}])),
    ?assertEqual(6, rpeer:call(Peer, erlang, '*', [2, 3])),
    ?assert(is_process_alive(Peer)),
    rpeer:stop(Peer).

call_with_timeout() ->
    [{doc, "call/5 returns normally when the call finishes within its timeout, "
      "also with timeout infinity"}].

call_with_timeout(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertEqual(ok, rpeer:call(Peer, timer, sleep, [100], 5000)),
    ?assertEqual(ok, rpeer:call(Peer, timer, sleep, [100], infinity)),
    ?assertEqual([3, 2, 1], rpeer:call(Peer, lists, reverse, [[1, 2, 3]], 1000)),
    rpeer:stop(Peer).

call_timeout() ->
    [{doc, "call/5 that takes longer than its timeout exits with {timeout, _} from "
      "gen_server:call"}].

call_timeout(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertExit({timeout, {gen_server, call, _}},
                rpeer:call(Peer, timer, sleep, [2000], 100)),
    %% the peer is still served while that call runs on the peer
    ?assertEqual(true, rpeer:call(Peer, erlang, garbage_collect, [], 1000)),
    rpeer:stop(Peer).

call_late_reply() ->
    [{doc, "The reply of a timed-out call that arrives later neither crashes the controller "
      "nor lands in the caller's mailbox; the peer keeps working"}].

call_late_reply(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    %% (a wide margin: a caller stalled past the sleep would find the reply there)
    ?assertExit({timeout, _}, rpeer:call(Peer, timer, sleep, [1000], 50)),
    ?assertExit({timeout, _}, rpeer:call(Peer, erlang, throw, [late], 0)),
    %% wait well past the late replies
    ct:sleep(1500),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(42, rpeer:call(Peer, erlang, abs, [-42])),
    ?assertEqual([], messages()),
    rpeer:stop(Peer).

call_large_binary() ->
    [{doc, "A 5 MB binary with every byte value goes to the peer and comes back exactly "
      "(large argument and large result)"}].

call_large_binary(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    Bin = rand:bytes(?LARGE),
    %% the peer really got it all
    ?assertEqual(erlang:md5(Bin), rpeer:call(Peer, erlang, md5, [Bin], 30000)),
    %% and sends it back, computed on the peer
    [Tail, Back] = rpeer:call(Peer, lists, reverse, [[Bin, tail]], 30000),
    ?assertEqual(tail, Tail),
    ?assertEqual(byte_size(Bin), byte_size(Back)),
    ?assert(Bin =:= Back),
    %% a large result for a small argument
    Zeros = rpeer:call(Peer, binary, copy, [<<0>>, ?LARGE], 30000),
    ?assertEqual(?LARGE, byte_size(Zeros)),
    ?assertEqual(<<0:(?LARGE * 8)>>, Zeros),
    %% a part of the reply's frame as it came in (the NIF's resource binary, whose
    %% referenced size is its handle's), not a binary of its own, as a copy would be
    ?assertNotEqual(?LARGE, binary:referenced_byte_size(Zeros)),
    %% so is one in a tuple that ends the result, as {ok, Bin}
    {ok, Nested} = rpeer:call(Peer, erlang, list_to_tuple, [[ok, Bin]], 30000),
    ?assert(Bin =:= Nested),
    ?assertNotEqual(?LARGE, binary:referenced_byte_size(Nested)),
    rpeer:stop(Peer).

call_large_term() ->
    [{doc, "A large structured term (200 000 element list, deep tuples) round-trips"}].

call_large_term(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    List = [{I, integer_to_list(I), float(I)} || I <- lists:seq(1, 200000)],
    ?assertEqual(lists:reverse(List), rpeer:call(Peer, lists, reverse, [List], 30000)),
    Deep = lists:foldl(fun (I, Acc) -> {I, Acc} end, leaf, lists:seq(1, 10000)),
    ?assertEqual(Deep, rpeer:call(Peer, erlang, hd, [[Deep]], 30000)),
    rpeer:stop(Peer).

call_term_of_many_binaries() ->
    [{doc, "A term holding thousands of off-heap binaries (each a part of the frame as "
      "term_to_iovec/1 gives it, more than one write takes), sub-binaries and a large "
      "binary between small ones goes to the peer and comes back exactly"}].

call_term_of_many_binaries(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    Large = rand:bytes(3 * 1024 * 1024),
    Many = [rand:bytes(100 + I rem 300) || I <- lists:seq(1, 3000)],
    Term = {<<"small">>, Many, binary:part(Large, 1, 2 * 1024 * 1024), Large,
            [binary:part(B, 1, 64) || B <- lists:sublist(Many, 500)], self(), make_ref()},
    ?assertEqual(erlang:md5(term_to_binary(Term)),
                 rpeer:call(Peer, erlang, md5, [term_to_binary(Term)], 30000)),
    ?assertEqual(erlang:phash2(Term), rpeer:call(Peer, erlang, phash2, [Term], 30000)),
    ?assertEqual(Term, rpeer:call(Peer, erlang, hd, [[Term]], 30000)),
    rpeer:stop(Peer).

concurrent_calls() ->
    [{doc, "20 processes x 20 calls at once on one peer: each caller gets its own answers, "
      "in order, even when calls of different lengths interleave"}].

concurrent_calls(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    Self = self(),
    Workers = lists:seq(1, 20),
    Calls = lists:seq(1, 20),
    Pids = [spawn_link(
              fun () ->
                      Results = [begin
                                     I rem 5 =:= 0 andalso
                                         (ok = rpeer:call(Peer, timer, sleep, [W rem 3], 10000)),
                                     rpeer:call(Peer, lists, reverse, [[W, I]], 10000)
                                 end || I <- Calls],
                      Self ! {done, self(), Results}
              end) || W <- Workers],
    [receive
         {done, Pid, Results} ->
             ?assertEqual([[I, W] || I <- Calls], Results)
     after 40000 ->
             ct:fail({worker_timeout, W})
     end || {W, Pid} <- lists:zip(Workers, Pids)],
    ?assertEqual(running, rpeer:get_state(Peer)),
    rpeer:stop(Peer).

cast() ->
    [{doc, "cast/4 runs M:F(A) on the peer (effect seen by a later call) and returns ok"}].

cast(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertEqual(undefined, rpeer:call(Peer, application, get_env, [kernel, rpeer_cast])),
    ?assertEqual(ok, rpeer:cast(Peer, application, set_env, [kernel, rpeer_cast, bar])),
    %% the cast runs in its own process: wait until it is applied
    wait_until(fun () ->
                       {ok, bar} =:= rpeer:call(Peer, application, get_env, [kernel, rpeer_cast])
               end, 5000),
    rpeer:stop(Peer).

cast_failure_ignored() ->
    [{doc, "A cast/4 that crashes on the peer (undef, exception) does not affect the "
      "controller or later calls"}].

cast_failure_ignored(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ?assertEqual(ok, rpeer:cast(Peer, rpeer_no_such_module, no_fun, [])),
    ?assertEqual(ok, rpeer:cast(Peer, erlang, error, [badarith])),
    ?assertEqual(ok, rpeer:cast(Peer, erlang, throw, [ball])),
    ct:sleep(300),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(7, rpeer:call(Peer, erlang, '+', [3, 4])),
    rpeer:stop(Peer).

send_to_pid() ->
    [{doc, "send/3 delivers to a pid on the peer; the peer process answers through the "
      "alternative connection with {message, Dest, Msg} to its group leader"}].

send_to_pid(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    add_test_path(Peer),
    Control = self(),
    RFun = fun () -> receive {do, X} -> forward(Control, {done, X}) end end,
    RemotePid = rpeer:call(Peer, erlang, spawn, [RFun]),
    ?assert(is_pid(RemotePid)),
    ?assertEqual(ok, rpeer:send(Peer, RemotePid, {do, <<"payload">>})),
    receive
        {done, Payload} -> ?assertEqual(<<"payload">>, Payload)
    after 5000 ->
            ct:fail(no_forwarded_message)
    end,
    ?assertEqual(ok, rpeer:stop(Peer)),
    ?assertNot(is_process_alive(Peer)).

send_to_name() ->
    [{doc, "send/3 delivers to a registered name on the peer"}].

send_to_name(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    add_test_path(Peer),
    Control = self(),
    Name = rpeer_send_target,
    RFun = fun () ->
                   register(Name, self()),
                   receive Msg -> forward(Control, {got, Msg}) end
           end,
    _ = rpeer:call(Peer, erlang, spawn, [RFun]),
    wait_until(fun () -> is_pid(rpeer:call(Peer, erlang, whereis, [Name])) end, 5000),
    ?assertEqual(ok, rpeer:send(Peer, Name, {hello, [1, 2, 3]})),
    receive
        {got, Msg} -> ?assertEqual({hello, [1, 2, 3]}, Msg)
    after 5000 ->
            ct:fail(no_forwarded_message)
    end,
    rpeer:stop(Peer).

forward_to_name() ->
    [{doc, "A message the peer forwards to a registered name on the origin is delivered "
      "there; many forwarded messages arrive in order"}].

forward_to_name(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    add_test_path(Peer),
    Name = list_to_atom(rpeer:random_name(?FUNCTION_NAME)),
    true = register(Name, self()),
    ?assertEqual(ok, rpeer:call(Peer, lists, foreach,
                                [fun (I) -> forward(Name, {seq, I}) end, lists:seq(1, 100)])),
    Got = [receive {seq, I} -> I after 5000 -> ct:fail({missing, I}) end || I <- lists:seq(1, 100)],
    ?assertEqual(lists:seq(1, 100), Got),
    unregister(Name),
    rpeer:stop(Peer).

io_redirect() ->
    [{doc, "I/O on the peer (to 'user', and through the call's group leader) reaches the "
      "group leader of the process that started the peer (peer_SUITE io_redirect)"}].

io_redirect(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    ct:capture_start(),
    ?assertEqual(ok, rpeer:call(Peer, io, format, [user, "test.", []])),
    ?assertEqual(ok, rpeer:call(Peer, erlang, apply, [io, format, ["second."]])),
    ?assertEqual(ok, rpeer:call(Peer, io, put_chars, ["third."])),
    ct:capture_stop(),
    Texts = ct:capture_get(),
    rpeer:stop(Peer),
    ?assertEqual(["test.", "second.", "third."], Texts).

io_redirect_unicode() ->
    [{doc, "Unicode output from the peer's io:format(\"~ts\") reaches the origin group "
      "leader intact"}].

io_redirect_unicode(Config) when is_list(Config) ->
    {ok, Peer, _} = ?START(Config, #{}),
    Text = [$c, $a, $f, 233, $\s, 8364, $\s, 16#1F600],
    ct:capture_start(),
    ?assertEqual(ok, rpeer:call(Peer, io, format, [user, "~ts", [Text]])),
    ?assertEqual(ok, rpeer:call(Peer, io, format, ["~ts", [Text]])),
    ct:capture_stop(),
    Captured = rpeer_test_lib:captured_text(),
    rpeer:stop(Peer),
    ?assertEqual(Text ++ Text, Captured).

dyn_peer() ->
    [{doc, "A non-distributed peer becomes distributed later (net_kernel:start on the "
      "peer); calls keep working and report the new name"}].

dyn_peer(Config) when is_list(Config) ->
    case rpeer_test_lib:require_epmd() of
        ok ->
            {ok, Peer, nonode@nohost} = ?START(Config, #{}),
            Node = list_to_atom(lists:concat([rpeer:random_name(?FUNCTION_NAME), "@forced.host"])),
            {ok, _} = rpeer:call(Peer, net_kernel, start, [[Node, longnames]]),
            ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
            ?assertEqual(true, rpeer:call(Peer, erlang, is_alive, [])),
            ?assertException(throw, after_dyn, rpeer:call(Peer, erlang, throw, [after_dyn])),
            rpeer:stop(Peer);
        Skip ->
            Skip
    end.

peer_down_crash_erpc() ->
    [{doc, "Named peer over an alternative connection with peer_down => crash, halted "
      "through erpc (a dist connection the origin makes): the controller exits with the "
      "mode's reason, tcp_closed or {exit_status, 0} (peer_SUITE peer_down_crash_tcp)"}].

peer_down_crash_erpc(Config) when is_list(Config) ->
    case require_alive() of
        ok ->
            {ok, Peer, Node} = ?START(Config, #{name => rpeer:random_name(?FUNCTION_NAME),
                                                peer_down => crash,
                                                args => ["-setcookie",
                                                         atom_to_list(erlang:get_cookie())]}),
            ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
            unlink(Peer),
            MRef = monitor(process, Peer),
            ok = erpc:cast(Node, erlang, halt, [0]),
            ?assertEqual(down_reason(Config, Node, 0), receive_down(MRef, 10000));
        Skip ->
            Skip
    end.

channel_handler_killed() ->
    [{doc, "Killing the peer-side control channel handler (registered as user on the peer) "
      "halts the peer node; the controller stops (peer_SUITE cntrl_channel_handler_crash)"}].

channel_handler_killed(Config) when is_list(Config) ->
    {ok, Peer, _Node} = ?START(Config, #{}),
    OsPid = rpeer:call(Peer, os, getpid, []),
    Handler = rpeer:call(Peer, erlang, whereis, [user]),
    ?assert(is_pid(Handler)),
    MRef = monitor(process, Peer),
    ?assertEqual(ok, rpeer:cast(Peer, erlang, exit, [Handler, kill])),
    ?assertEqual(normal, receive_down(MRef, 10000)),
    wait_os_pid_gone(OsPid, 10000).

dist_up_down() ->
    [{doc, "A named peer over an alternative connection: the dist connection can go up, "
      "down and up again without affecting the control connection (peer_SUITE dist_up_down)"}].

dist_up_down(Config) when is_list(Config) ->
    case require_alive() of
        ok ->
            {ok, Peer, Node} = ?START(Config, #{name => rpeer:random_name(?FUNCTION_NAME),
                                                args => ["-connect_all", "false", "-setcookie",
                                                         atom_to_list(erlang:get_cookie())]}),
            ?assertEqual(true, net_kernel:connect_node(Node)),
            ?assertEqual(true, net_kernel:disconnect(Node)),
            ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
            ?assertEqual(true, net_kernel:connect_node(Node)),
            ?assertEqual(running, rpeer:get_state(Peer)),
            ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
            ?assertEqual(ok, rpeer:stop(Peer));
        Skip ->
            Skip
    end.

%%--------------------------------------------------------------------
%% Cases: standard_io only

init_debug() ->
    [{doc, "standard_io: console output printed by the peer at boot (-init_debug) reaches "
      "the caller's group leader"}].

init_debug(Config) when is_list(Config) ->
    ct:capture_start(),
    {ok, Peer, _Node} = rpeer:start_link(#{connection => standard_io, args => ["-init_debug"]}),
    ct:sleep(200),
    Pooled = rpeer_test_lib:from_pool(Peer),
    rpeer:stop(Peer),
    ct:capture_stop(),
    Texts = lists:append([string:trim(Str, trailing, "\r\n") || Str <- ct:capture_get()]),
    Expected = "{progress,preloaded}",
    case Pooled of
        %% (a node of rpeer's pool printed its boot for the pool's group leader)
        true -> ?assertEqual(nomatch, string:find(Texts, Expected));
        false -> ?assertEqual(Expected, lists:sublist(Texts, 1, length(Expected)))
    end.

raw_console_output() ->
    [{doc, "standard_io: raw text the peer writes to its stdout (erlang:display/1) arrives "
      "at the caller's group leader"}].

raw_console_output(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io}),
    ct:capture_start(),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [rpeer_display_marker])),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [{tuple, 42}])),
    Text = collect_captured("{tuple,42}", 3000),
    ct:capture_stop(),
    rpeer:stop(Peer),
    ?assertNotEqual(nomatch, string:find(Text, "rpeer_display_marker"), Text),
    ?assertNotEqual(nomatch, string:find(Text, "{tuple,42}"), Text).

%% Gathers captured text until it holds Marker, for up to Timeout ms.
collect_captured(Marker, Timeout) ->
    Text = fun (Strings) -> unicode:characters_to_list(Strings) end,
    Text(capture_until(fun (Strings) -> string:find(Text(Strings), Marker) =/= nomatch end,
                       Timeout)).

%% Gathers captured strings until Done(Strings) holds, for up to Timeout ms.
capture_until(Done, Timeout) ->
    capture_until(Done, erlang:monotonic_time(millisecond) + Timeout, []).

capture_until(Done, Deadline, Acc0) ->
    Acc = Acc0 ++ ct:capture_get(),
    case not Done(Acc) andalso erlang:monotonic_time(millisecond) < Deadline of
        true -> ct:sleep(20), capture_until(Done, Deadline, Acc);
        false -> Acc
    end.

console_bytes_192_255() ->
    [{doc, "rpeer-only (stock peer loses frame alignment or crashes): the peer printing "
      "bytes in 192-255 (erlang:display/1 of latin-1 text) over standard_io does not break "
      "the controller; later calls still work"}].

console_bytes_192_255(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io}),
    unlink(Peer),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [[233]], 5000)),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [[192, 195, 255, $a]], 5000)),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [lists:seq(192, 255)], 5000)),
    ct:sleep(200),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(3, rpeer:call(Peer, erlang, '+', [1, 2])),
    rpeer:stop(Peer).

utf8_console_output() ->
    [{doc, "rpeer-only (stock peer loses frame alignment or crashes): the peer writing "
      "UTF-8 text (\"café ü\", bytes 195 169 and 195 188) to its stdout over "
      "standard_io does not break the controller; later calls, also large ones, still work"}].

utf8_console_output(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io}),
    unlink(Peer),
    %% erlang:display/1 writes a printable latin-1 list byte by byte, so this
    %% list of UTF-8 bytes puts UTF-8 text on the peer's stdout
    Utf8 = binary_to_list(<<"caf", 195, 169, " ", 195, 188>>),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [Utf8], 5000)),
    ?assertEqual(true, rpeer:call(Peer, erlang, display, [Utf8], 5000)),
    ct:sleep(200),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(3, rpeer:call(Peer, erlang, '+', [1, 2])),
    Bin = rand:bytes(100000),
    ?assertEqual(Bin, rpeer:call(Peer, erlang, hd, [[Bin]])),
    rpeer:stop(Peer).

%%--------------------------------------------------------------------
%% Cases: every connection kind

peer_states() ->
    [{doc, "With wait_boot => {self(), Tag}: start returns {ok, Pid} while booting, "
      "{Tag, {started, Node, Pid}} arrives and the state is running; after the peer halts "
      "the state is {down, Reason} (peer_down => continue)"}].

peer_states(Config) when is_list(Config) ->
    {ok, Peer} = ?START(Config, #{wait_boot => {self(), ?FUNCTION_NAME}, peer_down => continue}),
    %% (a node of rpeer's pool, in the pass with the pool on, booted before)
    ?assertEqual(case rpeer_test_lib:from_pool(Peer) of true -> running; false -> booting end,
                 rpeer:get_state(Peer)),
    Node = receive
               {?FUNCTION_NAME, {started, N, Peer}} -> N
           after 15000 ->
                   ct:fail(no_started_notification)
           end,
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(Node, peer_call(Config, Peer, Node, erlang, node, [])),
    halt_peer(Config, Peer, Node, 0),
    Down = wait_for_state(Peer, fun ({down, _}) -> true; (_) -> false end, 10000),
    ?assertEqual({down, down_reason(Config, Node, 0)}, Down),
    ?assertEqual(ok, rpeer:stop(Peer)).

wait_boot_false() ->
    [{doc, "wait_boot => false returns {ok, Pid} at once (no node name without host); "
      "the peer boots anyway and becomes running"}].

wait_boot_false(Config) when is_list(Config) ->
    Opts = merge_opts(mode_opts(Config, ?FUNCTION_NAME), #{wait_boot => false}),
    {ok, Peer} = rpeer:start_link(Opts),
    ?assertEqual(running, wait_for_state(Peer, fun (S) -> S =:= running end, 15000)),
    case mode(Config) of
        dist ->
            Node = list_to_atom(maps:get(name, Opts) ++ "@" ++ origin_host()),
            wait_until(fun () -> lists:member(Node, nodes()) end, 5000),
            ?assertEqual(Node, erpc:call(Node, erlang, node, []));
        _ ->
            ?assertEqual(nonode@nohost, rpeer:call(Peer, erlang, node, []))
    end,
    ?assertEqual([], messages()),
    rpeer:stop(Peer).

wait_boot_integer() ->
    [{doc, "wait_boot => Timeout (integer) waits for the boot: {ok, Pid, Node}"}].

wait_boot_integer(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{wait_boot => 30000}),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(Node, peer_call(Config, Peer, Node, erlang, node, [])),
    ?assertEqual([], messages()),
    rpeer:stop(Peer).

wait_boot_infinity() ->
    [{doc, "wait_boot => infinity waits for the boot: {ok, Pid, Node}"}].

wait_boot_infinity(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{wait_boot => infinity}),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(Node, peer_call(Config, Peer, Node, erlang, node, [])),
    rpeer:stop(Peer).

wait_boot_too_short() ->
    [{doc, "A wait_boot timeout shorter than the boot makes start_link exit with timeout; "
      "the controller is stopped and no message or link is left behind"}].

wait_boot_too_short(Config) when is_list(Config) ->
    Links = links(),
    try ?START(Config, #{wait_boot => 1}) of
        %% (in the pass with rpeer's pool on, a warm node has no boot left to wait for)
        {ok, Peer, _} ->
            ?assert(rpeer_test_lib:from_pool(Peer)),
            rpeer:stop(Peer)
    catch
        exit:timeout -> ok
    end,
    ct:sleep(500),
    ?assertEqual(Links, links()),
    ?assertEqual([], messages()).

peer_down_stop() ->
    [{doc, "peer_down => stop (default): when the peer node halts the controller exits "
      "normally"}].

peer_down_stop(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{}),
    MRef = monitor(process, Peer),
    halt_peer(Config, Peer, Node, 0),
    ?assertEqual(normal, receive_down(MRef, 10000)),
    ?assertException(exit, {noproc, _}, rpeer:get_state(Peer)).

peer_down_not_waited() ->
    [{doc, "A dist or tcp peer that halts ends its controller (peer_down => stop) as soon "
      "as the connection ends, as stock's does, not once its OS process is gone: here a "
      "wrapper lingers 5 s after the node exited"}].

peer_down_not_waited(Config) when is_list(Config) ->
    Linger = "\"$0\" \"$@\"; sleep 5",
    {ok, Peer, Node} = ?START(Config, #{exec => {"/bin/sh", ["-c", Linger, os:find_executable("erl")]}}),
    NodeOsPid = peer_call(Config, Peer, Node, os, getpid, []),
    WrapperOsPid = rpeer_test_lib:os_parent_pid(NodeOsPid),
    MRef = monitor(process, Peer),
    halt_peer(Config, Peer, Node, 0),
    ?assertEqual(normal, receive_down(MRef, 2000)),
    ?assert(rpeer_test_lib:os_pid_alive(WrapperOsPid)),
    wait_os_pid_gone(NodeOsPid, 10000),
    wait_os_pid_gone(WrapperOsPid, 10000).

peer_down_continue() ->
    [{doc, "peer_down => continue: the controller stays after the peer halts, get_state "
      "gives {down, Reason} with the mode's reason, calls raise an exception"}].

peer_down_continue(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{peer_down => continue}),
    halt_peer(Config, Peer, Node, 0),
    Down = wait_for_state(Peer, fun ({down, _}) -> true; (_) -> false end, 10000),
    ?assertEqual({down, down_reason(Config, Node, 0)}, Down),
    ct:sleep(200),
    ?assert(is_process_alive(Peer)),
    ?assertEqual(Down, rpeer:get_state(Peer)),
    case mode(Config) of
        standard_io ->
            %% stock peer crashes its controller here (port_command on the closed
            %% port); only demand that the call fails
            unlink(Peer),
            Call = try rpeer:call(Peer, erlang, node, [], 2000) of
                       Result -> {returned, Result}
                   catch
                       Class:_ -> Class
                   end,
            ?assertNotMatch({returned, _}, Call),
            try rpeer:stop(Peer) catch exit:_ -> ok end,
            ok;
        _ ->
            ?assertException(error, noconnection, rpeer:call(Peer, erlang, node, [])),
            ?assertEqual(ok, rpeer:stop(Peer))
    end.

peer_down_crash() ->
    [{doc, "peer_down => crash: when the peer halts the controller exits with the mode's "
      "reason: {nodedown, Node} (dist), tcp_closed (tcp), {exit_status, N} (standard_io)"}].

peer_down_crash(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{peer_down => crash}),
    unlink(Peer),
    MRef = monitor(process, Peer),
    halt_peer(Config, Peer, Node, 3),
    ?assertEqual(down_reason(Config, Node, 3), receive_down(MRef, 10000)).

stop_then_dead() ->
    [{doc, "After stop/1 returns ok the controller is dead: get_state/call exit "
      "{noproc, _}, a second stop exits noproc"}].

stop_then_dead(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{}),
    ?assertEqual(ok, rpeer:stop(Peer)),
    ?assertNot(is_process_alive(Peer)),
    ?assertException(exit, {noproc, _}, rpeer:get_state(Peer)),
    ?assertException(exit, {noproc, _}, rpeer:call(Peer, erlang, node, [])),
    ?assertException(exit, noproc, rpeer:stop(Peer)),
    ?assertNot(lists:member(Node, nodes(connected))).

stop_sleeping_peer() ->
    [{doc, "stop/1 shuts the peer down even while the peer runs a long -eval "
      "(peer_SUITE stop_peer)"}].

stop_sleeping_peer(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{name => rpeer:random_name(?FUNCTION_NAME),
                                        args => ["-eval", "timer:sleep(60000)."]}),
    OsPid = peer_call(Config, Peer, Node, os, getpid, []),
    {Time, ok} = timer:tc(fun () -> rpeer:stop(Peer) end),
    ?assert(Time < 10000000, {stop_took_us, Time}),
    wait_os_pid_gone(OsPid, 10000).

controller_killed() ->
    [{doc, "Killing the controller (exit(Pid, kill)) makes the peer node go away: stdin "
      "EOF (standard_io), closed socket (tcp), DOWN of the origin process (dist)"}].

controller_killed(Config) when is_list(Config) ->
    {ok, Peer, Node} = rpeer_test_lib:start(Config, ?FUNCTION_NAME, #{}),
    OsPid = peer_call(Config, Peer, Node, os, getpid, []),
    ?assert(rpeer_test_lib:os_pid_alive(OsPid)),
    exit(Peer, kill),
    wait_os_pid_gone(OsPid, 10000).

owner_exit() ->
    [{doc, "When the process that called start_link/1 exits, the controller stops and the "
      "peer node goes away"}].

owner_exit(Config) when is_list(Config) ->
    Self = self(),
    Owner = spawn(fun () ->
                          {ok, P, N} = rpeer_test_lib:start_link(Config, owner_exit, #{}),
                          Self ! {peer, P, peer_call(Config, P, N, os, getpid, [])},
                          receive go -> exit(owner_done) end
                  end),
    {Peer, OsPid} = receive {peer, P, O} -> {P, O} after 20000 -> ct:fail(no_peer) end,
    MRef = monitor(process, Peer),
    Owner ! go,
    _ = receive_down(MRef, 10000),
    wait_os_pid_gone(OsPid, 10000).

multi_node() ->
    [{doc, "Several peers started at once with wait_boot => {self(), Tag} all report "
      "{Tag, {started, Node, Pid}} and work"}].

multi_node(Config) when is_list(Config) ->
    Peers = [?START(Config, #{name => rpeer:random_name(?FUNCTION_NAME),
                              wait_boot => {self(), tag}})
             || _ <- lists:seq(1, 4)],
    Started = [receive
                   {tag, {started, Node, Peer}} -> {Peer, Node}
               after 20000 ->
                       ct:fail({not_started, Peer})
               end || {ok, Peer} <- Peers],
    ?assertEqual(4, length(lists:usort([N || {_, N} <- Started]))),
    [?assertEqual(Node, peer_call(Config, Peer, Node, erlang, node, [])) || {Peer, Node} <- Started],
    [?assertEqual(ok, rpeer:stop(Peer)) || {ok, Peer} <- Peers].

duplicate_name() ->
    [{doc, "Starting a second peer (over standard_io) with the name of a running peer fails: "
      "start_link exits with {boot_failed, {exit_status, 1}}"}].

duplicate_name(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, _Node} = ?START(Config, #{name => Name}),
    ?assertException(exit, {boot_failed, {exit_status, 1}},
                     rpeer:start_link(#{connection => standard_io, name => Name})),
    ?assert(is_process_alive(Peer)),
    rpeer:stop(Peer).

%%--------------------------------------------------------------------
%% Shutdown modes (peer_SUITE shutdown_test). The peer runs with the origin's
%% cookie so that the origin reaches it over distribution (erpc) whatever the
%% control connection; the test blocks the peer's schedulers and measures stop/1.

shutdown_default() ->
    [{doc, "Default shutdown (halt): stop/1 waits until the dist connection to the peer is "
      "down"}].
shutdown_default(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{}, 500, false, 2000, false).

shutdown_halt() ->
    [{doc, "shutdown => halt: stop/1 waits until the dist connection to the peer is down"}].
shutdown_halt(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{shutdown => halt}, 500, false, 2000, false).

shutdown_halt_timeout() ->
    [{doc, "shutdown => {halt, 1000}: stop/1 takes the connection down forcefully after "
      "the timeout when the peer does not halt"}].
shutdown_halt_timeout(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{shutdown => {halt, 1000}}, 3000, true, 2500, false).

shutdown_stop() ->
    [{doc, "shutdown => infinity (init:stop): stop/1 waits until the dist connection is down"}].
shutdown_stop(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{shutdown => infinity}, 500, false, 3000, false).

shutdown_stop_timeout() ->
    [{doc, "shutdown => 1000 (init:stop): stop/1 takes the connection down forcefully "
      "after the timeout"}].
shutdown_stop_timeout(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{shutdown => 1000}, 3000, true, 2800, false).

shutdown_close() ->
    [{doc, "shutdown => close: stop/1 only closes the control channel and does not wait"}].
shutdown_close(Config) when is_list(Config) ->
    shutdown_test(Config, ?FUNCTION_NAME, #{shutdown => close}, 3000, true, 700, any).

shutdown_cover_form() ->
    [{doc, "shutdown => {Timeout, CoverNode} (the form test_server uses when cover runs) is "
      "accepted and stops the peer like an init:stop timeout, even when CoverNode is "
      "unreachable (a node that does not exist). From OTP 26 on, a dist peer asks its "
      "controller to start cover while it boots, which fails on an unreachable CoverNode "
      "and takes the controller and the start down, as with that release's stock peer"}].
shutdown_cover_form(Config) when is_list(Config) ->
    NoCover = #{shutdown => {5000, 'rpeer_no_cover@localhost'}},
    case mode(Config) =:= dist andalso rpeer_test_lib:otp_release() >= 26 of
        false ->
            shutdown_test(Config, ?FUNCTION_NAME, NoCover, 300, false, 5000, false);
        true ->
            Opts = merge_opts(mode_opts(Config, ?FUNCTION_NAME), NoCover),
            {Pid, MRef} = spawn_monitor(fun () -> rpeer:start_link(Opts) end),
            receive
                {'DOWN', MRef, process, Pid, Reason} ->
                    ?assertMatch({{erpc, noconnection}, [_ | _]}, Reason)
            after 20000 ->
                    error(start_did_not_fail)
            end
    end.

%% Starts a named peer with Shutdown, blocks its schedulers for BlockTime ms,
%% then stops it. StopWhileBlocked: stop/1 must return before the block ends;
%% otherwise it must wait for it. MaxWaitTime bounds stop/1. Connected is
%% what lists:member(Node, nodes(connected)) must be after stop/1 (any: don't care).
shutdown_test(Config, Case, Shutdown, BlockTime, StopWhileBlocked, MaxWaitTime, Connected) ->
    case require_alive() of
        ok ->
            do_shutdown_test(Config, Case, Shutdown, BlockTime, StopWhileBlocked,
                             MaxWaitTime, Connected);
        Skip ->
            Skip
    end.

do_shutdown_test(Config, Case, Shutdown, BlockTime, StopWhileBlocked, MaxWaitTime, Connected) ->
    Opts = merge_opts(Shutdown#{name => rpeer:random_name(Case)},
                      #{args => ["-hidden", "-pa", rpeer_test_lib:test_dir(),
                                 "-setcookie", atom_to_list(erlang:get_cookie())]}),
    {ok, Peer, Node} = rpeer_test_lib:start_link(Config, Case, Opts),
    EnsureBlockedWait = 500,
    BlockStart = erlang:monotonic_time(millisecond),
    ok = erpc:cast(Node,
                   fun () ->
                           erts_debug:set_internal_state(available_internal_state, true),
                           erts_debug:set_internal_state(block, BlockTime + EnsureBlockedWait)
                   end),
    ct:sleep(EnsureBlockedWait),
    Start = erlang:monotonic_time(millisecond),
    ?assertEqual(ok, rpeer:stop(Peer)),
    End = erlang:monotonic_time(millisecond),
    WaitTime = End - Start,
    BlockTimeLeft = BlockTime + EnsureBlockedWait - (Start - BlockStart),
    IsConnected = lists:member(Node, nodes(connected)),
    ct:log("Connected = ~p~nWaitTime = ~p~nBlockTimeLeft = ~p~n",
           [IsConnected, WaitTime, BlockTimeLeft]),
    ?assert(WaitTime =< MaxWaitTime, {wait_time, WaitTime, max, MaxWaitTime}),
    case StopWhileBlocked of
        true -> ?assert(WaitTime < BlockTimeLeft, {wait_time, WaitTime, block_left, BlockTimeLeft});
        false -> ?assert(WaitTime >= BlockTimeLeft, {wait_time, WaitTime, block_left, BlockTimeLeft})
    end,
    ?assertNot(is_process_alive(Peer)),
    case Connected of
        any -> ok;
        _ -> ?assertEqual(Connected, IsConnected)
    end.

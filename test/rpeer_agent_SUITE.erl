%%% @doc
%%% The fast peer side: standard_io peers started with `peer_side => rpeer' run OTP's
%%% peer module over rpeer_agent, which gives it the node's
%%% stdin/stdout as a socket coded by rpeer's Rust codec. The same behaviours as with
%%% stock peer's peer side: the node halts when its channel ends or its channel handler
%%% dies, and the node looks the same from inside.
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
    invalid_peer_side_is_rejected/0, invalid_peer_side_is_rejected/1,
    peer_side_chooses_the_peers_codec/0, peer_side_chooses_the_peers_codec/1,
    tcp_peer_boots_through_the_agent/0, tcp_peer_boots_through_the_agent/1,
    channel_handler_is_peers_own/0, channel_handler_is_peers_own/1,
    gen_tcp_is_untouched_on_the_peer/0, gen_tcp_is_untouched_on_the_peer/1,
    socket_backend_is_kept/0, socket_backend_is_kept/1,
    boot_skips_string_only/0, boot_skips_string_only/1,
    nif_loads_beside_its_ebin/0, nif_loads_beside_its_ebin/1
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
                          invalid_peer_side_is_rejected, peer_side_chooses_the_peers_codec,
                          tcp_peer_boots_through_the_agent,
                          channel_handler_is_peers_own, gen_tcp_is_untouched_on_the_peer,
                          socket_backend_is_kept, boot_skips_string_only,
                          nif_loads_beside_its_ebin]}].

start(Extra) ->
    rpeer:start_link(maps:merge(#{connection => standard_io, peer_side => rpeer}, Extra)).

%% Waits until Fun() is true, for up to 10 s.
wait_until(Fun) ->
    rpeer_test_lib:wait_until(Fun, 10000).

os_pid_alive(OsPid) ->
    rpeer_test_lib:os_pid_alive(OsPid).

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
    %% the cast runs in a process of its own: a later call can run first
    rpeer_test_lib:wait_until(
      fun () ->
              {ok, set} =:= rpeer:call(Peer, application, get_env, [kernel, rpeer_agent_test])
      end, 10000),
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

peer_side_chooses_the_peers_codec() ->
    [{doc, "By default a standard_io peer on this host runs rpeer's agent "
      "(-user rpeer_agent); one started through exec, or in a mode that loads no module "
      "on demand (embedded, minimal), peer's own codec as stock (-user peer); peer_side "
      "chooses either, with or without exec"}].

peer_side_chooses_the_peers_codec(Config) when is_list(Config) ->
    UserOf = fun (Options) -> user_of(Options#{connection => standard_io}, fun (_) -> ok end) end,
    Erl = os:find_executable("erl"),
    ?assertEqual([["rpeer_agent"]], UserOf(#{})),
    ?assertEqual([["rpeer_agent"]], UserOf(#{args => ["-mode", "interactive"]})),
    ?assertEqual([["peer"]], UserOf(#{exec => Erl})),
    ?assertEqual([["peer"]], UserOf(#{args => ["-mode", "embedded"]})),
    ?assertEqual([["peer"]], UserOf(#{args => ["-mode", "minimal"]})),
    ?assertEqual([["peer"]], UserOf(#{peer_side => peer})),
    ?assertEqual([["rpeer_agent"]], UserOf(#{peer_side => rpeer})),
    ?assertEqual([["rpeer_agent"]], UserOf(#{exec => Erl, peer_side => rpeer})).

tcp_peer_boots_through_the_agent() ->
    [{doc, "A tcp peer on this host starts through the agent (-user rpeer_agent), which "
      "only spares its boot user_sup's 100 ms wait for `user': the channel is peer's own "
      "gen_tcp socket, the tcp module the default; through exec, or with "
      "peer_side => peer, it starts as with stock (-user peer)"}].

tcp_peer_boots_through_the_agent(Config) when is_list(Config) ->
    PeersOwnChannel =
        fun (Peer) ->
                ?assertEqual(inet_tcp, rpeer:call(Peer, inet_db, tcp_module, [])),
                Names = [rpeer:call(Peer, erlang, port_info, [P, name])
                         || P <- rpeer:call(Peer, erlang, ports, [])],
                ?assertEqual(1, length([N || {name, "tcp_inet"} = N <- Names])),
                ?assert(is_pid(rpeer:call(Peer, erlang, whereis, [user])))
        end,
    UserOf = fun (Options) -> user_of(Options#{connection => 0}, PeersOwnChannel) end,
    Erl = os:find_executable("erl"),
    ?assertEqual([["rpeer_agent"]], UserOf(#{})),
    ?assertEqual([["peer"]], UserOf(#{peer_side => peer})),
    ?assertEqual([["peer"]], UserOf(#{exec => Erl})),
    %% through exec, the peer is offered every address of this host, comma-separated
    ?assertEqual([["rpeer_agent"]], UserOf(#{exec => Erl, peer_side => rpeer})).

%% The -user argument a peer started with Options has, after Check(Peer).
user_of(Options, Check) ->
    {ok, Peer, _} = rpeer:start_link(Options),
    {ok, User} = rpeer:call(Peer, init, get_argument, [user]),
    Check(Peer),
    ok = rpeer:stop(Peer),
    User.

channel_handler_is_peers_own() ->
    [{doc, "As OTP's peer_SUITE checks: the channel handler runs peer:io_server_loop, "
      "peer_supervision is linked to it, and killing it halts the node"}].

channel_handler_is_peers_own(Config) when is_list(Config) ->
    erlang:is_alive() orelse throw({skip, "the origin is not distributed"}),
    {ok, _Peer, Node} = start(#{name => rpeer:random_name(?FUNCTION_NAME)}),
    true = monitor_node(Node, true),
    InLoop = fun (Pid) ->
                     case erpc:call(Node, erlang, process_info, [Pid, current_stacktrace]) of
                         {current_stacktrace, Stack} ->
                             lists:any(fun ({peer, io_server_loop, _, _}) -> true;
                                           (_) -> false
                                       end, Stack);
                         undefined ->
                             false
                     end
             end,
    [Handler] = [Pid || Pid <- erpc:call(Node, erlang, processes, []), InLoop(Pid)],
    ?assertEqual(Handler, erpc:call(Node, erlang, whereis, [user])),
    PeerSup = erpc:call(Node, erlang, whereis, [peer_supervision]),
    {links, Links} = erpc:call(Node, erlang, process_info, [PeerSup, links]),
    ?assert(lists:member(Handler, Links)),
    ok = erpc:cast(Node, erlang, exit, [Handler, kill]),
    receive {nodedown, Node} -> ok after 5000 -> ct:fail(peer_did_not_halt) end.

gen_tcp_is_untouched_on_the_peer() ->
    [{doc, "The agent is gen_tcp's module only for the channel's own connect: afterwards "
      "the peer's default tcp module is back and gen_tcp works as usual"}].

gen_tcp_is_untouched_on_the_peer(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{}),
    ?assertEqual(inet_tcp, rpeer:call(Peer, inet_db, tcp_module, [])),
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]),
    Echo = fun () ->
                   {ok, Listen} = gen_tcp:listen(0, [binary, {active, false}]),
                   {ok, Port} = inet:port(Listen),
                   {ok, Client} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
                   {ok, Server} = gen_tcp:accept(Listen),
                   ok = gen_tcp:send(Client, <<"over loopback">>),
                   {ok, Got} = gen_tcp:recv(Server, 0),
                   Got
           end,
    ?assertEqual(<<"over loopback">>, rpeer:call(Peer, erlang, apply, [Echo, []])),
    rpeer:stop(Peer).

socket_backend_is_kept() ->
    [{doc, "A peer whose gen_tcp backend is socket (-kernel inet_backend socket) boots "
      "with the agent and keeps that backend"}].

socket_backend_is_kept(Config) when is_list(Config) ->
    {ok, Peer, _Node} = start(#{args => ["-kernel", "inet_backend", "socket"]}),
    ?assertEqual(socket, rpeer:call(Peer, persistent_term, get, [{kernel, inet_backend}])),
    ?assertEqual('nonode@nohost', rpeer:call(Peer, erlang, node, [])),
    rpeer:stop(Peer).

boot_skips_string_only() ->
    [{doc, "The agent's boot answers peer's split of the -origin address (exactly what "
      "string:lexemes/2 answers) without loading string and unicode_util, and leaves no "
      "trace of how: user_sup has the default error handler, and both modules load and "
      "work on the peer as usual"}].

boot_skips_string_only(Config) when is_list(Config) ->
    ["-user", "rpeer_agent", "-origin", Address, _Port, "-peer_detached"] = rpeer_agent:user_args(16#FFFFFFFF),
    [?assertEqual(string:lexemes(Addresses, ","),
                  rpeer_agent:undefined_function(string, lexemes, [Addresses, ","]))
     || Addresses <- [Address, "127.0.0.1,10.213.0.1", ",a,,b,", ""]],
    {ok, Peer, _Node} = start(#{}),
    ?assertEqual(false, rpeer:call(Peer, code, is_loaded, [string])),
    ?assertEqual(false, rpeer:call(Peer, code, is_loaded, [unicode_util])),
    [UserSup] = [Pid || {user, Pid, _, _} <- rpeer:call(Peer, supervisor, which_children,
                                                         [kernel_sup])],
    ?assertEqual({error_handler, error_handler},
                 rpeer:call(Peer, erlang, process_info, [UserSup, error_handler])),
    ?assertEqual(["a", "b"], rpeer:call(Peer, string, lexemes, ["a,b", ","])),
    ?assertEqual([$a | "b"], rpeer:call(Peer, unicode_util, cp, ["ab"])),
    ?assertMatch({file, _}, rpeer:call(Peer, code, is_loaded, [string])),
    ok = rpeer:stop(Peer).

nif_loads_beside_its_ebin() ->
    [{doc, "The agent's NIF loads from the priv directory beside rpeer's ebin, even when "
      "another directory named rpeer comes first in the peer's code path (which "
      "code:priv_dir(rpeer) would take)"}].

nif_loads_beside_its_ebin(Config) when is_list(Config) ->
    Decoy = filename:join([proplists:get_value(priv_dir, Config), "decoy", "rpeer"]),
    ok = filelib:ensure_path(Decoy),
    {ok, Peer, _} = start(#{args => ["-pa", Decoy]}),
    ?assertEqual(filename:join(Decoy, "priv"), rpeer:call(Peer, code, priv_dir, [rpeer])),
    ?assertEqual(node, rpeer:call(Peer, erlang, element, [1, {node}])),
    rpeer:stop(Peer).

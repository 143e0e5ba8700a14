%%% @doc
%%% The pool of warm nodes (rpeer_pool): off by default, what a template is, what a
%%% hand-out gives (the same as a cold start, and each difference that can be seen),
%%% refilling, idle stop, and that warm nodes never outlive the pool or the origin.
%%%
%%% The hand-out cases run once per alternative connection (groups standard_io and
%%% tcp); each case starts the rpeer application afresh with the pool on.
%%% @end
-module(rpeer_pool_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2, end_per_testcase/2]).

%% hand-out, per connection
-export([hit_after_cold/1, hit_is_another_node/1, start_link_owner_exit/1,
         start_without_link/1, wait_boot_tag/1, wait_boot_false/1,
         wait_boot_timeout_not_reached/1, group_leader_is_callers/1,
         peer_down_continue/1, warm_node_killed_while_waiting/1, same_priority_as_cold/1,
         named_same_as_cold/1, named_ct_peer_name/1, named_host/1, named_cookie/1,
         named_eval_runs_before_name/1, named_sname_argument_absent/1, named_info_args/1,
         named_name_taken/1, ct_peer_served/1]).

%% hand-out for a request without connection (a dist peer)
-export([dist_same_as_cold/1, dist_call_raises_noconnection/1, dist_cast_send_dropped/1,
         dist_nodedown_stops/1, dist_nodedown_continue/1, dist_shutdown_policies/1,
         dist_wait_boot_tag/1, dist_wait_boot_false/1, dist_user_io_to_group_leader/1,
         dist_controller_exit_halts_node/1, dist_disconnect_halts_node/1,
         dist_ct_peer_served/1, dist_differences/1, dist_name_taken/1]).

%% the pool itself
-export([off_by_default/1, works_without_application/1, template_rules/1,
         dist_template_rules/1, idle_stop/1, boots_at_most_pool_boots/1,
         application_stop_stops_warm_nodes/1, origin_sigkill_takes_warm_nodes/1,
         ct_hook_turns_pool_on/1, boots_at_low_priority/1, flush_stops_warm_nodes/1]).

%% Run in the separate origin VM.
-export([origin_main/1]).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, standard_io}, {group, tcp}, {group, dist}, {group, pool}].

groups() ->
    Handout = [hit_after_cold, hit_is_another_node, start_link_owner_exit, start_without_link,
               wait_boot_tag, wait_boot_false, wait_boot_timeout_not_reached,
               group_leader_is_callers, peer_down_continue,
               warm_node_killed_while_waiting, same_priority_as_cold,
               named_same_as_cold, named_ct_peer_name, named_host, named_cookie,
               named_eval_runs_before_name, named_sname_argument_absent, named_info_args,
               named_name_taken, ct_peer_served],
    [{standard_io, [], Handout},
     {tcp, [], Handout},
     {dist, [], [dist_same_as_cold, dist_call_raises_noconnection, dist_cast_send_dropped,
                 dist_nodedown_stops, dist_nodedown_continue, dist_shutdown_policies,
                 dist_wait_boot_tag, dist_wait_boot_false, dist_user_io_to_group_leader,
                 dist_controller_exit_halts_node, dist_disconnect_halts_node,
                 dist_ct_peer_served, dist_differences, dist_name_taken]},
     {pool, [], [off_by_default, works_without_application, template_rules,
                 dist_template_rules, idle_stop, boots_at_most_pool_boots,
                 application_stop_stops_warm_nodes, origin_sigkill_takes_warm_nodes,
                 ct_hook_turns_pool_on, boots_at_low_priority, flush_stops_warm_nodes]}].

init_per_suite(Config) ->
    true = erlang:is_alive(),
    _ = application:load(rpeer),
    Config.

end_per_suite(_Config) ->
    ok.

init_per_group(standard_io, Config) ->
    [{mode, #{connection => standard_io}} | Config];
init_per_group(tcp, Config) ->
    [{mode, #{connection => 0}} | Config];
init_per_group(dist, Config) ->
    [{mode, #{}} | Config];
init_per_group(_Group, Config) ->
    [{mode, #{connection => standard_io}} | Config].

end_per_group(_Group, _Config) ->
    ok.

init_per_testcase(Case, Config) when Case =:= off_by_default;
                                     Case =:= works_without_application;
                                     Case =:= origin_sigkill_takes_warm_nodes;
                                     Case =:= ct_hook_turns_pool_on ->
    Config;
init_per_testcase(_Case, Config) ->
    pool_on(#{pool_size => 1}),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = application:stop(rpeer),
    _ = application:unload(rpeer),
    ok = application:load(rpeer).

%%--------------------------------------------------------------------
%% Helpers

pool_on(Settings) ->
    _ = application:stop(rpeer),
    [application:set_env(rpeer, Key, Value) || {Key, Value} <- maps:to_list(Settings)],
    {ok, _} = application:ensure_all_started(rpeer),
    ok.

mode(Config) ->
    proplists:get_value(mode, Config).

%% Starts a peer cold (the pool learns its template), stops it, and waits for a warm node.
learn(Options) ->
    {ok, Peer, _} = rpeer:start(Options),
    ok = rpeer:stop(Peer),
    wait_warm(Options, 1).

template_info(Options) ->
    {ok, {Key, _Cookie, _MaxFrame}} = rpeer_pool:template(Options),
    case [I || #{template := T} = I <- rpeer_pool:info(), T =:= Key] of
        [Info] -> Info;
        [] -> #{warm => 0, hits => 0, misses => 0, booting => 0, preparing => 0}
    end.

wait_warm(Options, N) ->
    rpeer_test_lib:wait_until(fun () -> maps:get(warm, template_info(Options)) >= N end, 30000).

%% The warm nodes' controllers: the pool's links but its supervisor.
warm_controllers() ->
    {links, Links} = process_info(whereis(rpeer_pool), links),
    [P || P <- Links, is_pid(P), is_pid(P), P =/= whereis(rpeer_sup)].

os_pid(Peer) ->
    integer_to_list(maps:get(os_pid, rpeer:info(Peer))).

autogroup_nice(OsPid) ->
    {ok, Text} = file:read_file(["/proc/", OsPid, "/autogroup"]),
    [_, Nice] = string:split(string:trim(Text), " nice "),
    binary_to_integer(Nice).

name(Case) ->
    rpeer:random_name(Case).

host() ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Host.

%% What a named node looks like from both sides.
looks(Peer, Node, Name) ->
    #{node => rpeer:call(Peer, erlang, node, []),
      peer_nodes => rpeer:call(Peer, erlang, nodes, []),
      origin_sees => lists:member(Node, nodes()),
      epmd => lists:keymember(Name, 1, element(2, net_adm:names())),
      cookie => rpeer:call(Peer, erlang, get_cookie, []),
      alive => rpeer:call(Peer, erlang, is_alive, []),
      state => rpeer:get_state(Peer)}.

%%--------------------------------------------------------------------
%% Hand-out

hit_after_cold(Config) ->
    Options = mode(Config),
    learn(Options),
    {ok, Peer, Node} = rpeer:start_link(Options),
    ?assertEqual(nonode@nohost, Node),
    ?assertMatch(#{hits := 1, misses := 1}, template_info(Options)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(6, rpeer:call(Peer, erlang, '*', [2, 3])),
    ?assertMatch(#{state := running, node := nonode@nohost}, rpeer:info(Peer)),
    OsPid = os_pid(Peer),
    ok = rpeer:stop(Peer),
    ?assertNot(rpeer_test_lib:os_pid_exists(OsPid)),
    %% and the pool boots another
    wait_warm(Options, 1).

hit_is_another_node(Config) ->
    Options = mode(Config),
    {ok, Cold, _} = rpeer:start(Options),
    wait_warm(Options, 1),
    [Warm] = warm_controllers(),
    {ok, Hit, _} = rpeer:start(Options),
    ?assertEqual(Warm, Hit),
    ?assertNotEqual(os_pid(Cold), os_pid(Hit)),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

start_link_owner_exit(Config) ->
    Options = mode(Config),
    learn(Options),
    Self = self(),
    Owner = spawn(fun () ->
                          {ok, Peer, _} = rpeer:start_link(Options),
                          Self ! {peer, Peer},
                          receive go -> exit(boom) end
                  end),
    Peer = receive {peer, P} -> P end,
    ?assertMatch(#{hits := 1}, template_info(Options)),
    OsPid = os_pid(Peer),
    Watch = monitor(process, Peer),
    Owner ! go,
    receive {'DOWN', Watch, process, Peer, Reason} -> ?assertEqual(boom, Reason) end,
    ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000)).

start_without_link(Config) ->
    Options = mode(Config),
    learn(Options),
    Self = self(),
    Owner = spawn(fun () -> {ok, Peer, _} = rpeer:start(Options), Self ! {peer, Peer} end),
    Peer = receive {peer, P} -> P end,
    Watch = monitor(process, Owner),
    receive {'DOWN', Watch, process, Owner, _} -> ok end,
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    {links, Links} = process_info(Peer, links),
    ?assertEqual([], [L || L <- Links, is_pid(L)]),
    ok = rpeer:stop(Peer).

wait_boot_tag(Config) ->
    Options = mode(Config),
    learn(Options),
    Tag = make_ref(),
    {ok, Peer} = rpeer:start_link(Options#{wait_boot => {self(), Tag}}),
    %% a difference: the node is running already (a cold one is still booting)
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    receive {Tag, Told} -> ?assertEqual({started, nonode@nohost, Peer}, Told) end,
    ok = rpeer:stop(Peer).

wait_boot_false(Config) ->
    Options = mode(Config),
    learn(Options),
    {ok, Peer} = rpeer:start_link(Options#{wait_boot => false}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ok = rpeer:stop(Peer).

%% a difference: the timeout bounds a boot, and a warm node's is over (a cold start with
%%  this timeout exits timeout)
wait_boot_timeout_not_reached(Config) ->
    Options = mode(Config),
    learn(Options),
    {ok, Peer, nonode@nohost} = rpeer:start_link(Options#{wait_boot => 0}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ok = rpeer:stop(Peer).

group_leader_is_callers(Config) ->
    Options = mode(Config),
    learn(Options),
    Self = self(),
    Leader = spawn_link(fun () -> capture(Self) end),
    Original = group_leader(),
    true = group_leader(Leader, self()),
    try
        {ok, Peer, _} = rpeer:start_link(Options),
        ?assertEqual({group_leader, Leader}, process_info(Peer, group_leader)),
        ok = rpeer:call(Peer, io, format, ["from the warm node~n"]),
        receive {captured, Text} -> ?assertEqual(<<"from the warm node\n">>, Text) end,
        ok = rpeer:stop(Peer)
    after
        group_leader(Original, self())
    end.

capture(To) ->
    receive
        {io_request, From, ReplyAs, {put_chars, Encoding, Chars}} ->
            To ! {captured, unicode:characters_to_binary(Chars, Encoding)},
            From ! {io_reply, ReplyAs, ok};
        {io_request, From, ReplyAs, {put_chars, Encoding, M, F, A}} ->
            To ! {captured, unicode:characters_to_binary(apply(M, F, A), Encoding)},
            From ! {io_reply, ReplyAs, ok};
        {io_request, From, ReplyAs, _Other} ->
            From ! {io_reply, ReplyAs, {error, enotsup}}
    end,
    capture(To).

peer_down_continue(Config) ->
    Options = mode(Config),
    learn(Options),
    {ok, Peer, _} = rpeer:start_link(Options#{peer_down => continue}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ok = rpeer:cast(Peer, erlang, halt, []),
    {down, _} = rpeer_test_lib:wait_for_state(Peer, fun ({down, _}) -> true; (_) -> false end,
                                              10000),
    ?assertError(noconnection, rpeer:call(Peer, erlang, node, [])),
    ok = rpeer:stop(Peer).

warm_node_killed_while_waiting(Config) ->
    Options = mode(Config),
    learn(Options),
    [Warm] = warm_controllers(),
    Killed = os_pid(Warm),
    _ = os:cmd("kill -9 " ++ Killed),
    %% kill(2) returns before the process is gone: a node that still answers is alive
    ok = rpeer_test_lib:wait_os_pid_gone(Killed, 10000),
    {ok, Peer, _} = rpeer:start_link(Options),
    ?assertNotEqual(Killed, os_pid(Peer)),
    ?assertEqual(3, rpeer:call(Peer, erlang, '+', [1, 2])),
    ok = rpeer:stop(Peer).

same_priority_as_cold(Config) ->
    Options = mode(Config),
    {ok, Cold, _} = rpeer:start(Options),
    wait_warm(Options, 1),
    {ok, Hit, _} = rpeer:start(Options),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(autogroup_nice(os_pid(Cold)), autogroup_nice(os_pid(Hit))),
    ?assertEqual(0, autogroup_nice(os_pid(Hit))),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

named_same_as_cold(Config) ->
    Options = mode(Config),
    ColdName = name(named_cold),
    {ok, Cold, ColdNode} = rpeer:start(Options#{name => ColdName}),
    ColdLooks = looks(Cold, ColdNode, ColdName),
    wait_warm(Options, 1),
    HitName = name(named_hit),
    {ok, Hit, HitNode} = rpeer:start(Options#{name => HitName}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(list_to_atom(HitName ++ "@" ++ host()), HitNode),
    HitLooks = looks(Hit, HitNode, HitName),
    ?assertEqual(ColdLooks#{node := HitNode}, HitLooks),
    ?assertEqual(ColdNode, maps:get(node, rpeer:info(Cold))),
    ?assertEqual(HitNode, maps:get(node, rpeer:info(Hit))),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit),
    ?assertNot(lists:keymember(HitName, 1, element(2, net_adm:names()))).

named_ct_peer_name(Config) ->
    Options = mode(Config),
    learn(Options),
    Name = rpeer_ct:peer_name(?MODULE, ?FUNCTION_NAME),
    {ok, Peer, Node} = rpeer:start_link(Options#{name => Name}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    ?assertEqual(list_to_atom(Name ++ "@" ++ host()), Node),
    ok = rpeer:stop(Peer).

named_host(Config) ->
    Options = (mode(Config))#{host => host()},
    learn(Options#{name => name(named_host_cold)}),
    wait_warm(Options#{name => x}, 1),
    Name = name(named_host),
    {ok, Peer, Node} = rpeer:start_link(Options#{name => Name, wait_boot => false}),
    ?assertMatch(#{hits := 1}, template_info(Options#{name => Name})),
    ?assertEqual(list_to_atom(Name ++ "@" ++ host()), Node),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    ok = rpeer:stop(Peer).

named_cookie(Config) ->
    Options = (mode(Config))#{args => ["-setcookie", "pool_cookie"]},
    {ok, Cold, _} = rpeer:start(Options#{name => name(named_cookie_cold)}),
    ?assertEqual(pool_cookie, rpeer:call(Cold, erlang, get_cookie, [])),
    wait_warm(Options, 1),
    {ok, Hit, _} = rpeer:start(Options#{name => name(named_cookie)}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(pool_cookie, rpeer:call(Hit, erlang, get_cookie, [])),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% A difference: what `-eval' in args runs, runs before the node has its name (the
%%  pool waits for it: init reports the boot before -eval runs).
named_eval_runs_before_name(Config) ->
    Eval = "timer:sleep(500), persistent_term:put(pool_boot_node, node())",
    Options = (mode(Config))#{args => ["-eval", Eval]},
    ColdName = name(eval_cold),
    {ok, Cold, ColdNode} = rpeer:start(Options#{name => ColdName}),
    ?assertEqual(ColdNode, boot_node(Cold)),
    wait_warm(Options, 1),
    {ok, Hit, HitNode} = rpeer:start(Options#{name => name(eval_hit)}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(HitNode, rpeer:call(Hit, erlang, node, [])),
    ?assertEqual(nonode@nohost, boot_node(Hit)),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% What -eval saw as node() (it runs once the boot was reported, so it is waited for).
boot_node(Peer) ->
    Get = fun () -> rpeer:call(Peer, persistent_term, get, [pool_boot_node, undefined]) end,
    rpeer_test_lib:wait_until(fun () -> Get() =/= undefined end, 10000),
    Get().

%% A difference: the warm node's command line has no -sname (or -name).
named_sname_argument_absent(Config) ->
    Options = mode(Config),
    ColdName = name(sname_cold),
    {ok, Cold, _} = rpeer:start(Options#{name => ColdName}),
    ?assertEqual({ok, [[ColdName]]}, rpeer:call(Cold, init, get_argument, [sname])),
    wait_warm(Options, 1),
    {ok, Hit, _} = rpeer:start(Options#{name => name(sname_hit)}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(error, rpeer:call(Hit, init, get_argument, [sname])),
    ?assertEqual(error, rpeer:call(Hit, init, get_argument, [name])),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% A difference: info/1 gives the warm node's command line, without the name.
named_info_args(Config) ->
    Options = mode(Config),
    ColdName = name(info_cold),
    {ok, Cold, _} = rpeer:start(Options#{name => ColdName}),
    ?assertMatch(["-sname", ColdName | _], maps:get(args, rpeer:info(Cold))),
    wait_warm(Options, 1),
    {ok, Hit, _} = rpeer:start(Options#{name => name(info_hit)}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertNot(lists:member("-sname", maps:get(args, rpeer:info(Hit)))),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% A name in use: the warm node cannot take it, and the request fails as a cold start
%%  does (the warm node is stopped, not handed out).
named_name_taken(Config) ->
    Options = mode(Config),
    Name = name(taken),
    {ok, First, _} = rpeer:start(Options#{name => Name}),
    wait_warm(Options, 1),
    [Warm] = warm_controllers(),
    Watch = monitor(process, Warm),
    ?assertMatch({error, _}, catch_start(Options#{name => Name})),
    receive {'DOWN', Watch, process, Warm, _} -> ok end,
    ok = rpeer:stop(First).

catch_start(Options) ->
    process_flag(trap_exit, true),
    try rpeer:start(Options) of
        Started -> Started
    catch
        exit:Reason -> {error, Reason}
    after
        process_flag(trap_exit, false)
    end.

%%--------------------------------------------------------------------
%% Hand-out for a dist request: the warm node's control connection is hidden, and the
%%  peer behaves as a cold dist peer in every way stock peer shows

%% A cold dist peer, then the pool's warm node for the same options.
cold_and_hit(Case, Extra) ->
    Options = maps:merge(#{name => name(Case)}, Extra),
    {ok, Cold, ColdNode} = rpeer:start(Options),
    wait_warm(Options, 1),
    {ok, Hit, HitNode} = rpeer:start(Options#{name => name(Case)}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    {{Cold, ColdNode}, {Hit, HitNode}}.

dist_looks(Peer, Node) ->
    [Name, _Host] = string:split(atom_to_list(Node), "@"),
    #{node => erpc:call(Node, erlang, node, []),
      peer_nodes => erpc:call(Node, erlang, nodes, []),
      hidden => erpc:call(Node, erlang, nodes, [hidden]),
      origin_sees => lists:member(Node, nodes()),
      epmd => lists:keymember(Name, 1, element(2, net_adm:names())),
      cookie => erpc:call(Node, erlang, get_cookie, []),
      state => rpeer:get_state(Peer),
      connection => maps:get(connection, rpeer:info(Peer))}.

dist_same_as_cold(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_same, #{}),
    ?assertEqual((dist_looks(Cold, ColdNode))#{node := HitNode}, dist_looks(Hit, HitNode)),
    ?assertMatch(#{node := HitNode, state := running, connection := dist}, rpeer:info(Hit)),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit),
    ?assertNot(lists:member(HitNode, nodes())).

dist_call_raises_noconnection(_Config) ->
    {{Cold, _}, {Hit, _}} = cold_and_hit(dist_call, #{}),
    [?assertError(noconnection, rpeer:call(Peer, erlang, node, [])) || Peer <- [Cold, Hit]],
    [?assertError(noconnection, rpeer:call(Peer, erlang, node, [], 1000)) || Peer <- [Cold, Hit]],
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% cast/4 and send/3 have no connection to go over: nothing reaches the node
dist_cast_send_dropped(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_cast, #{}),
    [begin
         ok = rpeer:cast(Peer, persistent_term, put, [pool_cast, done]),
         ok = rpeer:send(Peer, init, {stop, stop}),
         ct:sleep(200),
         ?assertEqual(missing, erpc:call(Node, persistent_term, get, [pool_cast, missing])),
         ?assertEqual(running, rpeer:get_state(Peer))
     end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]],
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%% the node halts: the controller stops normally, when its nodedown comes
dist_nodedown_stops(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_nodedown, #{}),
    [begin
         Watch = monitor(process, Peer),
         ok = erpc:cast(Node, erlang, halt, []),
         receive {'DOWN', Watch, process, Peer, Reason} -> ?assertEqual(normal, Reason) end
     end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]].

dist_nodedown_continue(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_continue, #{peer_down => continue}),
    [begin
         OsPid = os_pid(Peer),
         ok = erpc:cast(Node, erlang, halt, []),
         Down = rpeer_test_lib:wait_for_state(Peer, fun ({down, _}) -> true; (_) -> false end,
                                              10000),
         ?assertEqual({down, {nodedown, Node}}, Down),
         ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000)),
         ?assertEqual({down, {nodedown, Node}}, rpeer:get_state(Peer)),
         ok = rpeer:stop(Peer)
     end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]].

%% stop/1 under each shutdown policy returns once the node is gone, as for a cold peer
dist_shutdown_policies(_Config) ->
    [begin
         {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_shutdown, #{shutdown => Policy}),
         [begin
              OsPid = os_pid(Peer),
              ok = rpeer:stop(Peer),
              ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000)),
              rpeer_test_lib:wait_until(fun () -> not lists:member(Node, nodes()) end, 10000)
          end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]]
     end || Policy <- [halt, {halt, 5000}, close, 5000]].

dist_wait_boot_tag(_Config) ->
    Options = #{name => name(dist_tag)},
    learn(Options),
    Tag = make_ref(),
    {ok, Peer} = rpeer:start_link(Options#{name => name(dist_tag), wait_boot => {self(), Tag}}),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    receive {Tag, {started, Node, Peer}} -> ?assertEqual(Node, erpc:call(Node, erlang, node, [])) end,
    ok = rpeer:stop(Peer).

dist_wait_boot_false(_Config) ->
    Options = #{name => name(dist_false)},
    learn(Options),
    {ok, Peer} = rpeer:start_link(Options#{name => name(dist_false), wait_boot => false}),
    ?assertMatch(#{hits := 1}, template_info(Options)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ok = rpeer:stop(Peer).

%% the node's `user' writes to the controller's group leader, the caller's
dist_user_io_to_group_leader(_Config) ->
    Options = #{name => name(dist_io)},
    Self = self(),
    Leader = spawn_link(fun () -> capture(Self) end),
    Original = group_leader(),
    true = group_leader(Leader, self()),
    try
        {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_io, Options),
        [begin
             ok = erpc:call(Node, io, format, [user, "to user of ~s~n", [Node]]),
             Expected = iolist_to_binary(io_lib:format("to user of ~s~n", [Node])),
             receive {captured, Text} -> ?assertEqual(Expected, Text) end,
             ok = rpeer:stop(Peer)
         end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]]
    after
        group_leader(Original, self())
    end.

%% the node halts when its controller goes, however
dist_controller_exit_halts_node(_Config) ->
    {{Cold, _}, {Hit, _}} = cold_and_hit(dist_controller_exit, #{}),
    [begin
         OsPid = os_pid(Peer),
         exit(Peer, kill),
         ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000))
     end || Peer <- [Cold, Hit]].

%% ... and when the distribution connection to it goes
dist_disconnect_halts_node(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_disconnect, #{peer_down => continue}),
    [begin
         OsPid = os_pid(Peer),
         true = erlang:disconnect_node(Node),
         ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000)),
         ?assertEqual({down, {nodedown, Node}}, rpeer:get_state(Peer)),
         ok = rpeer:stop(Peer)
     end || {Peer, Node} <- [{Cold, ColdNode}, {Hit, HitNode}]].

%% plain ?CT_PEER() through rpeer_ct: served by the pool, with its crash dump file
dist_ct_peer_served(_Config) ->
    {ok, Cold, _} = rpeer_ct:start_peer([], ?MODULE, ct_peer_cold),
    ok = rpeer:stop(Cold),
    [#{template := Template}] = rpeer_pool:info(),
    rpeer_test_lib:wait_until(fun () -> case rpeer_pool:info() of
                                            [#{warm := Warm}] -> Warm >= 1;
                                            _ -> false
                                        end end, 30000),
    {ok, Peer, Node} = rpeer_ct:start_peer([], ?MODULE, ct_peer_served),
    ?assertMatch([#{hits := 1, template := Template}], rpeer_pool:info()),
    ?assertError(noconnection, rpeer:call(Peer, erlang, node, [])),
    [Name, _Host] = string:split(atom_to_list(Node), "@"),
    ?assertEqual(filename:join(test_server_sup:crash_dump_dir(), "erl_crash_dump." ++ Name),
                 erpc:call(Node, os, getenv, ["ERL_CRASH_DUMP"])),
    ok = rpeer:stop(Peer).

%% A name in use: the warm node cannot take it and is stopped; the request fails as a
%%  cold start does
dist_name_taken(_Config) ->
    Name = name(dist_taken),
    {ok, First, _} = rpeer:start(#{name => Name}),
    wait_warm(#{name => Name}, 1),
    [Warm] = warm_controllers(),
    Watch = monitor(process, Warm),
    ?assertMatch({error, {boot_failed, _}}, catch_start(#{name => Name})),
    receive {'DOWN', Watch, process, Warm, _} -> ok end,
    ok = rpeer:stop(First).

%% What can be seen: the warm node's command line is a standard_io peer's without a
%%  name, and rpeer:info/1 says so; the node reads its stdin
dist_differences(_Config) ->
    {{Cold, ColdNode}, {Hit, HitNode}} = cold_and_hit(dist_differences, #{}),
    Arg = fun (Node, Flag) -> erpc:call(Node, init, get_argument, [Flag]) end,
    ?assertEqual({ok, [[]]}, Arg(ColdNode, noinput)),
    ?assertEqual(error, Arg(HitNode, noinput)),
    ?assertEqual({ok, [["peer"]]}, Arg(ColdNode, user)),
    ?assertEqual({ok, [["rpeer_agent"]]}, Arg(HitNode, user)),
    ?assertMatch({ok, [[_]]}, Arg(ColdNode, origin)),
    ?assertEqual({ok, [["127.0.0.1", "0"]]}, Arg(HitNode, origin)),
    ?assertEqual(error, Arg(HitNode, sname)),
    ?assertMatch(#{peer_side := peer}, rpeer:info(Cold)),
    ?assertMatch(#{peer_side := rpeer, frames_in := In} when In > 0, rpeer:info(Hit)),
    ok = rpeer:stop(Cold),
    ok = rpeer:stop(Hit).

%%--------------------------------------------------------------------
%% The pool

off_by_default(_Config) ->
    {ok, _} = application:ensure_all_started(rpeer),
    ?assertEqual(undefined, application:get_env(rpeer, pool_size_unset_here)),
    ?assertEqual({ok, 0}, application:get_env(rpeer, pool_size)),
    Options = #{connection => standard_io},
    {ok, Peer, _} = rpeer:start(Options),
    ok = rpeer:stop(Peer),
    ?assertEqual([], rpeer_pool:info()),
    ?assertEqual([], warm_controllers()).

works_without_application(_Config) ->
    ok = application:set_env(rpeer, pool_size, 2),
    ?assertEqual(undefined, whereis(rpeer_pool)),
    {ok, Peer, _} = rpeer:start_link(#{connection => standard_io}),
    ?assertEqual(2, rpeer:call(Peer, erlang, '+', [1, 1])),
    ok = rpeer:stop(Peer),
    ?assertEqual([], rpeer_pool:info()).

template_rules(_Config) ->
    ok = application:set_env(rpeer, pool_idle_ms, 600000),
    Base = #{connection => standard_io, args => ["-pool_test", "a"]},
    learn(Base),
    [Warm] = warm_controllers(),
    Others = [Base#{args => ["-pool_test", "b"]},
              Base#{env => [{"POOL_TEST", "1"}]},
              Base#{connection => 0},
              Base#{shutdown => close},
              Base#{peer_side => peer},
              Base#{post_process_args => fun (Args) -> Args end}],
    [begin
         {ok, Peer, _} = rpeer:start(Other),
         ok = rpeer:stop(Peer),
         ?assertMatch(#{hits := 0, warm := 1}, template_info(Base)),
         ?assert(lists:member(Warm, warm_controllers()))
     end || Other <- Others],
    %% the cookie of the origin is part of the template
    Cookie = erlang:get_cookie(),
    true = erlang:set_cookie(node(), pool_other_cookie),
    try
        ?assertNotEqual(rpeer_pool:template(Base#{cookie_test => 1}),
                        begin true = erlang:set_cookie(node(), Cookie),
                              rpeer_pool:template(Base#{cookie_test => 1}) end)
    after
        erlang:set_cookie(node(), Cookie)
    end,
    %% so is the frame size limit, read when a peer starts
    Unlimited = rpeer_pool:template(Base),
    ok = application:set_env(rpeer, max_frame, 1 bsl 20),
    try ?assertNotEqual(Unlimited, rpeer_pool:template(Base))
    after application:unset_env(rpeer, max_frame)
    end,
    %% a template that matches, with another name, wait_boot and peer_down, is served
    {ok, Hit} = rpeer:start(Base#{name => name(rules), wait_boot => false, peer_down => continue}),
    ?assertEqual(Warm, Hit),
    ?assertMatch(#{hits := 1}, template_info(Base)),
    ok = rpeer:stop(Hit).

dist_template_rules(_Config) ->
    ok = application:set_env(rpeer, pool_idle_ms, 600000),
    Named = #{name => name(dist_rules)},
    {ok, {Dist, _, _}} = rpeer_pool:template(Named),
    {ok, {Stdio, _, _}} = rpeer_pool:template(Named#{connection => standard_io}),
    ?assertNotEqual(Dist, Stdio),
    %% not pooled: no name (the node would not be distributed), a program of the caller's,
    %%  rewritten arguments, or arguments a standard_io boot cannot take
    NotPooled = [#{}, #{host => host()}, Named#{exec => os:find_executable("erl")},
                 Named#{post_process_args => fun (Args) -> Args end}, Named#{detached => true}]
        ++ [Named#{args => [Arg, "x"]} || Arg <- ["-detached", "-sname", "-name", "-user",
                                                  "-origin", "-noinput", "-mode"]],
    [?assertEqual(none, rpeer_pool:template(Options)) || Options <- NotPooled],
    %% a dist request is served by a warm node of its own template only
    learn(#{connection => standard_io}),
    {ok, Peer, Node} = rpeer:start(Named),
    ok = rpeer:stop(Peer),
    ?assertMatch(#{hits := 0, misses := 1}, template_info(Named)),
    ?assertMatch(#{hits := 0, warm := 1}, template_info(#{connection => standard_io})),
    wait_warm(Named, 1),
    {ok, Hit, HitNode} = rpeer:start(#{name => name(dist_rules_hit)}),
    ?assertNotEqual(Node, HitNode),
    ?assertMatch(#{hits := 1}, template_info(Named)),
    ok = rpeer:stop(Hit),
    %% pooled nodes are listed with the request's options
    ?assert(lists:member(#{}, [T || #{template := T} <- rpeer_pool:info()])).

idle_stop(_Config) ->
    %% A template not asked for within pool_idle_ms has its node stopped: warm, or still
    %%  booting when a boot at nice 19 on a busy machine takes longer than the idle time.
    ok = application:set_env(rpeer, pool_idle_ms, 5000),
    Options = #{connection => standard_io},
    {ok, Cold, _} = rpeer:start(Options),
    ok = rpeer:stop(Cold),
    rpeer_test_lib:wait_until(fun () -> warm_controllers() =/= [] end, 10000),
    [Refill] = warm_controllers(),
    %% (its OS process is started once the controller runs)
    rpeer_test_lib:wait_until(fun () -> is_integer(maps:get(os_pid, rpeer:info(Refill))) end,
                              5000),
    OsPid = os_pid(Refill),
    rpeer_test_lib:wait_until(fun () -> warm_controllers() =:= [] end, 30000),
    ?assertMatch(#{warm := 0, booting := 0}, template_info(Options)),
    ?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(OsPid, 10000)),
    %% asked for again, the template is refilled (kept this time, however slow the boot)
    ok = application:set_env(rpeer, pool_idle_ms, 600000),
    {ok, Peer, _} = rpeer:start(Options),
    ok = rpeer:stop(Peer),
    wait_warm(Options, 1).

boots_at_most_pool_boots(_Config) ->
    ok = application:set_env(rpeer, pool_size, 3),
    Options = #{connection => standard_io},
    {ok, Peer, _} = rpeer:start(Options),
    Booting = sample_booting(Options, []),
    ?assertEqual([1], lists:usort([B || B <- Booting, B > 0])),
    ok = application:set_env(rpeer, pool_boots, 3),
    {ok, Peer2, _} = rpeer:start(Options#{env => [{"POOL", "2"}]}),
    Booting2 = sample_booting(Options#{env => [{"POOL", "2"}]}, []),
    ?assert(lists:max(Booting2) =< 3),
    ok = rpeer:stop(Peer),
    ok = rpeer:stop(Peer2).

sample_booting(Options, Seen) ->
    case template_info(Options) of
        #{warm := 3} -> Seen;
        #{booting := B} -> timer:sleep(5), sample_booting(Options, [B | Seen])
    end.

application_stop_stops_warm_nodes(_Config) ->
    ok = application:set_env(rpeer, pool_size, 2),
    learn(#{connection => standard_io}),
    learn(#{connection => 0}),
    wait_warm(#{connection => standard_io}, 2),
    wait_warm(#{connection => 0}, 2),
    OsPids = [os_pid(W) || W <- warm_controllers()],
    ?assertEqual(4, length(OsPids)),
    ok = application:stop(rpeer),
    ?assertEqual([], [P || P <- OsPids, rpeer_test_lib:os_pid_exists(P)]).

origin_sigkill_takes_warm_nodes(Config) ->
    {_Port, _OriginPid, Warm} = Origin =
        rpeer_test_lib:start_origin(Config, ?MODULE, pool_origin, 300),
    ?assertEqual(6, length(Warm)),
    [?assert(rpeer_test_lib:os_pid_exists(P)) || P <- Warm],
    ok = rpeer_test_lib:kill_origin(Origin),
    [?assertEqual(ok, rpeer_test_lib:wait_os_pid_gone(P, 5000)) || P <- Warm].

%% The other origin: a pool of 2 for standard_io, tcp and dist requests, filled; writes the warm nodes'
%%  OS pids and waits to be killed.
-spec origin_main([string()]) -> no_return().
origin_main([File]) ->
    ok = application:load(rpeer),
    ok = application:set_env(rpeer, pool_size, 2),
    {ok, _} = application:ensure_all_started(rpeer),
    [begin learn(Mode), wait_warm(Mode, 2) end
     || Mode <- [#{connection => standard_io}, #{connection => 0},
                 #{name => rpeer:random_name(pool_origin_dist)}]],
    rpeer_test_lib:report_origin(File, [os_pid(W) || W <- warm_controllers()]).

ct_hook_turns_pool_on(_Config) ->
    {ok, State} = rpeer_pool_cth:init(rpeer_pool_cth, #{pool_size => 2}),
    try
        ?assertEqual(2, maps:get(pool_size, State)),
        ?assertEqual({ok, 2}, application:get_env(rpeer, pool_size)),
        ?assert(is_pid(whereis(rpeer_pool))),
        learn(#{connection => standard_io}),
        wait_warm(#{connection => standard_io}, 2)
    after
        rpeer_pool_cth:terminate(State)
    end,
    ?assertEqual(undefined, whereis(rpeer_pool)).

%% ?CT_PEER(#{connection => standard_io}) through rpeer_ct: served by the pool (the crash
%%  dump file, named after the node, is set once the node is handed out).
ct_peer_served(Config) ->
    Options = mode(Config),
    {ok, Cold, _} = rpeer_ct:start_peer(Options, ?MODULE, ct_peer_cold),
    ok = rpeer:stop(Cold),
    wait_warm(Options#{args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                                "-pa", filename:dirname(code:which(?MODULE))]}, 1),
    {ok, Peer, Node} = rpeer_ct:start_peer(Options, ?MODULE, ct_peer_served),
    ?assertMatch([#{hits := 1}], rpeer_pool:info()),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    [Name, _Host] = string:split(atom_to_list(Node), "@"),
    ?assertEqual(filename:join(test_server_sup:crash_dump_dir(), "erl_crash_dump." ++ Name),
                 rpeer:call(Peer, os, getenv, ["ERL_CRASH_DUMP"])),
    ok = rpeer:stop(Peer).

%% A warm node boots in a scheduling group (its session's autogroup) niced to 19, which
%%  goes back to 0 once it booted (see same_priority_as_cold).
boots_at_low_priority(_Config) ->
    case file:read_file("/proc/sys/kernel/sched_autogroup_enabled") of
        {ok, <<"1", _/binary>>} ->
            Options = #{connection => standard_io},
            {ok, Cold, _} = rpeer:start(Options),
            Nices = sample_nice([]),
            ?assert(lists:member(19, Nices)),
            wait_warm(Options, 1),
            [Warm] = warm_controllers(),
            ?assertEqual(0, autogroup_nice(os_pid(Warm))),
            ok = rpeer:stop(Cold);
        _ ->
            {skip, "no autogroups in this kernel"}
    end.

%% The nice values of the booting node's group, until it booted.
sample_nice(Seen) ->
    case warm_controllers() of
        [Booting] ->
            Nice = try os_pid(Booting) of
                       "undefined" -> none;
                       OsPid -> autogroup_nice(OsPid)
                   catch _:_ -> none
                   end,
            case rpeer:get_state(Booting) of
                running -> Seen;
                booting -> timer:sleep(2), sample_nice([Nice | Seen])
            end;
        [] ->
            timer:sleep(2),
            sample_nice(Seen)
    end.

flush_stops_warm_nodes(_Config) ->
    learn(#{connection => standard_io}),
    [Warm] = warm_controllers(),
    OsPid = os_pid(Warm),
    ok = rpeer_pool:flush(),
    ?assertEqual([], warm_controllers()),
    ?assertEqual([], rpeer_pool:info()),
    ?assertNot(rpeer_test_lib:os_pid_exists(OsPid)).

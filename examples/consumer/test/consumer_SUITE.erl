%% A Common Test suite written against OTP's peer and ct.hrl's ?CT_PEER, as found in
%% existing code bases. rebar.config compiles it with rpeer_transform, so it runs on
%% rpeer unchanged; each case checks that the controller really is rpeer's.
-module(consumer_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0]).
-export([ct_peer/1, ct_peer_from_pool/1, ct_peer_options/1, standard_io/1, library/1,
         compiled_for_rpeer/1]).

-spec suite() -> [tuple()].
suite() ->
    [{timetrap, {seconds, 60}}].

-spec all() -> [atom()].
all() ->
    [ct_peer, ct_peer_from_pool, ct_peer_options, standard_io, library, compiled_for_rpeer].

%% ?CT_PEER(): a distributed peer named after the suite and test case, with this suite's
%%  code, the cookie and the crash dump location of test_server.
-spec ct_peer(term()) -> term().
ct_peer(Config) when is_list(Config) ->
    CoverBefore = cover_calls(),
    {ok, Peer, Node} = ?CT_PEER(),
    ok = assert_controller(Peer),
    ?assertMatch("consumer_SUITE-ct_peer-" ++ _, atom_to_list(Node)),
    ?assertEqual(Node, erpc:call(Node, erlang, node, [])),
    ?assertEqual(running, peer:get_state(Peer)),
    %% -pa with the suite's directory, as test_server gives
    SuiteDir = filename:dirname(beam(?MODULE)),
    ?assert(lists:member(SuiteDir, erpc:call(Node, code, get_path, []))),
    [Name, _Host] = string:split(atom_to_list(Node), "@"),
    ?assertEqual("erl_crash_dump." ++ Name,
                 filename:basename(erpc:call(Node, os, getenv, ["ERL_CRASH_DUMP"]))),
    ok = cover_on_peer(Node),
    ok = peer:stop(Peer),
    ?assertNot(lists:member(Node, nodes())),
    ok = cover_collected(CoverBefore).

%% With rpeer's pool of warm nodes on (`rebar3 as pool ct', the rpeer_pool_cth hook): the
%%  pool learned ct_peer's ?CT_PEER(), and serves the same start again with a node booted
%%  ahead of time, which passes every check of ct_peer, cover's included.
-spec ct_peer_from_pool(term()) -> term().
ct_peer_from_pool(Config) when is_list(Config) ->
    case whereis(rpeer_pool) of
        undefined ->
            {skip, "rpeer's pool is off (rebar3 as pool ct turns it on)"};
        _ ->
            ok = wait_warm_dist_node(300),
            Hits = dist_hits(),
            ct_peer(Config),
            ?assertEqual(Hits + 1, dist_hits())
    end.

%% The pool's templates for dist peers (no connection): a warm node, and their hits.
wait_warm_dist_node(0) ->
    ct:fail(no_warm_dist_node);
wait_warm_dist_node(Tries) ->
    case [W || #{template := T, warm := W} <- rpeer_pool:info(), not is_map_key(connection, T)] of
        [W | _] when W > 0 -> ok;
        _ -> ct:sleep(100), wait_warm_dist_node(Tries - 1)
    end.

dist_hits() ->
    lists:sum([H || #{template := T, hits := H} <- rpeer_pool:info(), not is_map_key(connection, T)]).

%% ?CT_PEER(Options): the name is still the suite's; an alternative connection works.
-spec ct_peer_options(term()) -> term().
ct_peer_options(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?CT_PEER(#{connection => standard_io,
                                  args => ["-consumer_flag", "on"]}),
    ok = assert_controller(Peer),
    ?assertMatch("consumer_SUITE-ct_peer_options-" ++ _, atom_to_list(Node)),
    ?assertEqual({ok, [["on"]]}, peer:call(Peer, init, get_argument, [consumer_flag])),
    ?assertEqual(Node, peer:call(Peer, erlang, node, [], 5000)),
    ok = peer:stop(Peer).

%% peer:start_link with standard_io: a peer that is not distributed at all.
-spec standard_io(term()) -> term().
standard_io(Config) when is_list(Config) ->
    {ok, Peer, nonode@nohost} = peer:start_link(#{connection => standard_io}),
    ok = assert_controller(Peer),
    ?assertEqual(nonode@nohost, peer:call(Peer, erlang, node, [])),
    ?assertError(badarith, peer:call(Peer, erlang, '+', [1, a])),
    ok = peer:send(Peer, named_nowhere, hello),
    ok = peer:cast(Peer, erlang, node, []),
    ?assertEqual(running, peer:get_state(Peer)),
    ok = peer:stop(Peer).

%% The library module (src/) is switched too.
-spec library(term()) -> term().
library(Config) when is_list(Config) ->
    {ok, Peer} = consumer:start_helper(),
    ok = assert_controller(Peer),
    ?assertNotEqual(os:getpid(), consumer:os_pid(Peer)),
    ok = consumer:stop_helper(Peer),
    ?assertNot(is_process_alive(Peer)).

%% The compiled code calls rpeer and rpeer_ct only, and its specs name rpeer's types.
-spec compiled_for_rpeer(term()) -> term().
compiled_for_rpeer(Config) when is_list(Config) ->
    [begin
         {ok, {Module, [{imports, Imports}]}} = beam_lib:chunks(beam(Module), [imports]),
         ?assertEqual([], [MFA || {peer, _, _} = MFA <- Imports]),
         ?assertEqual([], [MFA || {test_server, _, _} = MFA <- Imports])
     end || Module <- [?MODULE, consumer]],
    {ok, {_, [{imports, SuiteImports}]}} = beam_lib:chunks(beam(?MODULE), [imports]),
    ?assert(lists:member({rpeer_ct, start_peer, 3}, SuiteImports)),
    ?assert(lists:member({rpeer, call, 4}, SuiteImports)),
    {ok, {consumer, [{abstract_code, {raw_abstract_v1, Forms}}]}} =
        beam_lib:chunks(beam(consumer), [abstract_code]),
    SpecTypes = [Type || {attribute, _, spec, {{start_helper, 0}, [Spec]}} <- Forms,
                         {remote_type, _, [{atom, _, _}, {atom, _, server_ref}, []]} = Type
                             <- remote_types(Spec)],
    ?assertMatch([{remote_type, _, [{atom, _, rpeer}, _, _]}], SpecTypes),
    %% rpeer is the checkout's, with its NIF built by its own rebar3 hook
    ?assert(filelib:is_regular(filename:join(code:priv_dir(rpeer), "rpeer_nif.so"))),
    ?assertEqual({module, rpeer}, erlang:fun_info(fun peer:stop/1, module)).

%%--------------------------------------------------------------------
%% Helpers

%% The controller is rpeer's gen_server (not peer's).
-spec assert_controller(peer:server_ref()) -> ok.
assert_controller(Peer) ->
    {dictionary, Dict} = erlang:process_info(Peer, dictionary),
    ?assertEqual({rpeer, init, 1}, proplists:get_value('$initial_call', Dict)),
    ?assertMatch({rpeer, init, [_]}, proc_lib:initial_call(Peer)),
    ok.

%% With cover running (rebar3 ct --cover), ?CT_PEER starts cover on the peer, and
%%  peer:stop hands the peer's coverage over before the node stops: a call made on the
%%  peer is counted here once the peer is gone.
cover_calls() ->
    case whereis(cover_server) of
        undefined ->
            no_cover;
        _ ->
            {ok, Functions} = cover:analyse(consumer, calls, function),
            proplists:get_value({consumer, helper_options, 0}, Functions)
    end.

cover_on_peer(Node) ->
    case whereis(cover_server) of
        undefined ->
            ct:comment("without cover");
        _ ->
            ?assert(lists:member(Node, cover:which_nodes())),
            ?assertEqual(cover_compiled, erpc:call(Node, code, which, [consumer])),
            #{} = erpc:call(Node, consumer, helper_options, []),
            ct:comment("with cover")
    end,
    ok.

cover_collected(no_cover) ->
    ok;
cover_collected(Before) ->
    ?assertEqual(Before + 1, cover_calls()),
    ok.

%% The module's compiled file (also when cover has loaded a cover-compiled version).
beam(Module) ->
    code:where_is_file(atom_to_list(Module) ++ ".beam").

remote_types({remote_type, _, _} = Type) ->
    [Type];
remote_types(Tuple) when is_tuple(Tuple) ->
    remote_types(tuple_to_list(Tuple));
remote_types(List) when is_list(List) ->
    lists:append([remote_types(E) || E <- List]);
remote_types(_) ->
    [].

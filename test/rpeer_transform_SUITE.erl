%% Tests of rpeer_transform (the parse transform switching code from peer to rpeer) and
%% rpeer_ct (test_server:start_peer/3,5 on rpeer): small modules are compiled with the
%% transform, and both the rewritten forms and their behaviour are checked.
-module(rpeer_transform_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([api_is_rpeers/1, types_are_rpeers/1, calls/1, funs/1, dynamic/1, types/1,
         imports/1, ct_macros/1, untouched/1, annotations/1, no_new_warnings/1,
         runs_on_rpeer/1, ct_peer/1, ct_peer_options/1]).

-spec suite() -> [tuple()].
suite() ->
    [{timetrap, {seconds, 60}}].

-spec all() -> [atom() | {group, atom()}].
all() ->
    [{group, forms}, {group, peers}].

-spec groups() -> [{atom(), list(), [atom()]}].
groups() ->
    [{forms, [parallel], [api_is_rpeers, types_are_rpeers, calls, funs, dynamic, types,
                          imports, ct_macros, untouched, annotations, no_new_warnings]},
     {peers, [], [runs_on_rpeer, ct_peer, ct_peer_options]}].

-spec init_per_testcase(atom(), list()) -> list().
init_per_testcase(Case, Config) ->
    [{case_name, Case} | Config].

-spec end_per_testcase(atom(), list()) -> ok.
end_per_testcase(_Case, _Config) ->
    ok.

%% What peer and rpeer export besides their API
-define(NOT_API, [{init, 1}, {handle_call, 3}, {handle_cast, 2}, {handle_info, 2},
                  {terminate, 2}, {module_info, 0}, {module_info, 1}]).

%%--------------------------------------------------------------------
%% The rewritten forms

%% The functions switched are those of peer's exports that rpeer has, the gen_server
%%  callbacks aside; peer's other exports (peer side, supervision) are left alone.
-spec api_is_rpeers(term()) -> term().
api_is_rpeers(Config) when is_list(Config) ->
    PeerExports = peer:module_info(exports),
    Api = [FA || FA <- PeerExports, lists:member(FA, rpeer:module_info(exports)),
                 not lists:member(FA, ?NOT_API)],
    ?assertEqual(11, length(Api)),
    Body = lists:append([[{'fun', 1, {function, {atom, 1, peer}, {atom, 1, F}, {integer, 1, A}}},
                          {call, 1, {remote, 1, {atom, 1, peer}, {atom, 1, F}},
                           [{nil, 1} || _ <- lists:seq(1, A)]}]
                         || {F, A} <- PeerExports]),
    [{function, 1, f, 0, [{clause, 1, [], [], NewBody}]}] =
        rpeer_transform:parse_transform([{function, 1, f, 0, [{clause, 1, [], [], Body}]}], []),
    Funs = [{M, F, A} || {'fun', 1, {function, {atom, 1, M}, {atom, 1, F}, {integer, 1, A}}}
                             <- NewBody],
    Calls = [{M, F, length(Args)}
             || {call, 1, {remote, 1, {atom, 1, M}, {atom, 1, F}}, Args} <- NewBody],
    Expected = [{case lists:member(FA, Api) of true -> rpeer; false -> peer end, F, A}
                || {F, A} = FA <- PeerExports],
    ?assertEqual(Expected, Funs),
    ?assertEqual(Expected, Calls).

%% The types switched are peer's exported types, which rpeer exports too.
-spec types_are_rpeers(term()) -> term().
types_are_rpeers(Config) when is_list(Config) ->
    Exported = fun (Module) ->
                       {ok, {Module, [{abstract_code, {raw_abstract_v1, Forms}}]}} =
                           beam_lib:chunks(code:where_is_file(atom_to_list(Module) ++ ".beam"),
                                           [abstract_code]),
                       lists:append([Ts || {attribute, _, export_type, Ts} <- Forms])
               end,
    Types = [server_ref, start_options, peer_state, exec, disconnect_timeout],
    ?assertEqual([], [{T, 0} || T <- Types] -- Exported(rpeer)),
    Source = ["-type t() :: {", lists:join(", ", ["peer:" ++ atom_to_list(T) ++ "()" || T <- Types]),
              "}.\n"],
    Forms = transform(Config, Source),
    ?assertEqual([{rpeer, T} || T <- Types], remote_types(Forms)).

-spec calls(term()) -> term().
calls(Config) when is_list(Config) ->
    Source = "f(P, O) ->\n"
             "    {ok, Q, _} = peer:start_link(O),\n"
             "    _ = peer:call(P, erlang, node, [], 1000),\n"
             "    [peer:stop(X) || X <- [peer:random_name(), Q]].\n",
    Forms = transform(Config, Source),
    ?assertEqual([{rpeer, start_link, 1}, {rpeer, call, 5}, {rpeer, stop, 1},
                  {rpeer, random_name, 0}],
                 remote_calls(Forms)),
    %% only the module atoms changed, annotations included
    ?assertEqual(forms(Config, Source), rename(rpeer, peer, Forms)).

-spec funs(term()) -> term().
funs(Config) when is_list(Config) ->
    Source = "f() -> [fun peer:call/4, fun peer:start/0, fun peer:send/3,\n"
             "        fun test_server:start_peer/3, fun test_server:is_cover/0].\n",
    Forms = transform(Config, Source),
    ?assertEqual([{rpeer, call, 4}, {peer, start, 0}, {rpeer, send, 3},
                  {rpeer_ct, start_peer, 3}, {test_server, is_cover, 0}],
                 [{M, F, A} || {'fun', _, {function, {atom, _, M}, {atom, _, F}, {integer, _, A}}}
                                   <- find(fun ({'fun', _, {function, _, _, _}}) -> true;
                                               (_) -> false
                                           end, Forms)]),
    ?assertEqual(forms(Config, Source), rename(rpeer_ct, test_server, rename(rpeer, peer, Forms))),
    Mod = load(Config, Source),
    ?assertEqual([rpeer, peer, rpeer, rpeer_ct, test_server],
                 [element(2, erlang:fun_info(Fun, module)) || Fun <- Mod:f()]).

%% peer:F(...) and fun peer:F/A with variables: the module is chosen at run time.
-spec dynamic(term()) -> term().
dynamic(Config) when is_list(Config) ->
    Source = "call0(F) -> peer:F().\n"
             "call6(F) -> peer:F(1, 2, 3, 4, 5, 6).\n"
             "fun_f(F) -> fun peer:F/4.\n"
             "fun_a(A) -> fun peer:call/A.\n"
             "fun_fa(F, A) -> fun peer:F/A.\n"
             "mod(M) -> M:random_name().\n",
    %% no API function has arity 6: left as it was
    ?assertEqual([peer], [M || {function, _, call6, 1, [{clause, _, _, _, [Call]}]}
                                   <- transform(Config, Source),
                               {call, _, {remote, _, {atom, _, M}, {var, _, 'F'}}, _} <- [Call]]),
    Mod = load(Config, Source),
    ok = trace_random_name(true),
    try
        ?assertMatch("peer-" ++ _, Mod:call0(random_name)),
        ?assertEqual(rpeer, traced()),
        %% a variable module is never switched
        ?assertMatch("peer-" ++ _, Mod:mod(peer)),
        ?assertEqual(peer, traced())
    after
        trace_random_name(false)
    end,
    ?assertError(undef, Mod:call0(not_a_peer_function)),
    ?assertEqual({module, rpeer}, erlang:fun_info(Mod:fun_f(cast), module)),
    ?assertEqual({module, peer}, erlang:fun_info(Mod:fun_f(start_supervision), module)),
    ?assertEqual({module, rpeer}, erlang:fun_info(Mod:fun_a(5), module)),
    ?assertEqual({module, peer}, erlang:fun_info(Mod:fun_a(3), module)),
    ?assertEqual({module, rpeer}, erlang:fun_info(Mod:fun_fa(get_state, 1), module)),
    ?assertEqual({module, peer}, erlang:fun_info(Mod:fun_fa(get_state, 2), module)).

-spec types(term()) -> term().
types(Config) when is_list(Config) ->
    Source = "-record(r, {p :: peer:server_ref(), o = #{} :: peer:start_options()}).\n"
             "-type s() :: peer:peer_state() | peer:exec() | peer:disconnect_timeout().\n"
             "-opaque o() :: {peer:server_ref()}.\n"
             "-callback cb(peer:server_ref()) -> peer:other().\n"
             "-spec f(peer:server_ref(), #r{}) -> {s(), o()} | peer:other().\n"
             "f(_, _) -> erlang:error(x).\n",
    Forms = transform(Config, Source),
    ?assertEqual([{rpeer, server_ref}, {rpeer, start_options}, {rpeer, peer_state},
                  {rpeer, exec}, {rpeer, disconnect_timeout}, {rpeer, server_ref},
                  {rpeer, server_ref}, {peer, other}, {rpeer, server_ref}, {peer, other}],
                 remote_types(Forms)),
    ?assertEqual(forms(Config, Source), rename(rpeer, peer, Forms)).

-spec imports(term()) -> term().
imports(Config) when is_list(Config) ->
    Source = "-import(peer, [call/4, start/0, stop/1]).\n"
             "-import(peer, [supervision_child_spec/0]).\n"
             "-import(lists, [map/2]).\n"
             "f(P) -> call(P, erlang, node, []), stop(P).\n",
    ?assertEqual([{rpeer, [{call, 4}, {stop, 1}]}, {peer, [{start, 0}]},
                  {peer, [{supervision_child_spec, 0}]}, {lists, [{map, 2}]}],
                 [Import || {attribute, _, import, Import} <- transform(Config, Source)]).

%% What ct.hrl's ?CT_PEER and ?CT_PEER_NAME expand to goes to rpeer_ct.
-spec ct_macros(term()) -> term().
ct_macros(Config) when is_list(Config) ->
    Source = "-include_lib(\"common_test/include/ct.hrl\").\n"
             "a() -> ?CT_PEER().\n"
             "b() -> ?CT_PEER([\"-x\"]).\n"
             %% the release form is ?CT_PEER_REL/3 from OTP 27 on, ?CT_PEER/3 before
             "-ifdef(CT_PEER_REL).\n"
             "c() -> ?CT_PEER_REL(#{}, \"24\", \"/tmp\").\n"
             "-else.\n"
             "c() -> ?CT_PEER(#{}, \"24\", \"/tmp\").\n"
             "-endif.\n"
             "d() -> ?CT_PEER_NAME().\n"
             "e() -> test_server:is_cover().\n",
    Forms = transform(Config, Source),
    ?assertEqual([{rpeer_ct, start_peer, 3}, {rpeer_ct, start_peer, 3}, {rpeer_ct, start_peer, 5},
                  {rpeer_ct, peer_name, 2}, {test_server, is_cover, 0}],
                 remote_calls(Forms)),
    ?assertEqual(forms(Config, Source), rename(rpeer_ct, test_server, Forms)).

%% The atom peer as data, local functions named like peer's, other modules, peer's
%%  non-API functions, other attributes: unchanged.
-spec untouched(term()) -> term().
untouched(Config) when is_list(Config) ->
    Source = "-peer({peer, start_link, 1}).\n"
             "-spec call(peer, atom()) -> {peer, atom()}.\n"
             "call(peer, F) -> {peer, F}.\n"
             "f(M, P) ->\n"
             "    Args = [\"-user\", \"peer\"],\n"
             "    _ = [call(peer, start_link), M:start_link(#{}), apply(peer, stop, [P]),\n"
             "         erpc:call(node(), peer, random_name, []), peer:start(),\n"
             "         peer:supervision_child_spec(), peer:call(P, m, f), peer:nope(),\n"
             "         {peer, start_link, [#{}]}, fun call/2, #{peer => peer},\n"
             "         test_server:start_peer(a, b), rpeer:stop(P)],\n"
             "    Args.\n",
    ?assertEqual(forms(Config, Source), transform(Config, Source)).

%% Errors and warnings point where they do without the transform.
-spec annotations(term()) -> term().
annotations(Config) when is_list(Config) ->
    Source = "-spec f(peer:server_ref()) -> ok.\n"
             "f(P) ->\n"
             "    Unused = 1,\n"
             "    peer:stop(Unbound),\n"
             "    peer:call(P, m, f, [Unbound2]).\n",
    {error, Errors, Warnings} = compile(Config, Source, []),
    %% lines of the file: Source starts on line 3
    %% OTP 29's erl_lint adds a suggestion to unbound_var: {unbound_var, Var, Suggestion}
    ?assertMatch([{_, [{{6, 15}, erl_lint, Unbound},
                       {{7, 25}, erl_lint, Unbound2}]}]
                   when element(1, Unbound) =:= unbound_var andalso element(2, Unbound) =:= 'Unbound'
                        andalso element(1, Unbound2) =:= unbound_var
                        andalso element(2, Unbound2) =:= 'Unbound2',
                 Errors),
    ?assertMatch([{_, [{{5, 5}, erl_lint, {unused_var, 'Unused'}}]}], Warnings),
    ?assertEqual({error, Errors, Warnings},
                 compile(Config, Source, [{parse_transform, rpeer_transform}])).

%% Switched code compiles with warnings as errors, dynamic calls included.
-spec no_new_warnings(term()) -> term().
no_new_warnings(Config) when is_list(Config) ->
    Source = "g() -> F = call, {fun peer:F/4, fun () -> peer:F(a, b, c, d) end, peer:stop(x)}.\n",
    ?assertMatch({ok, _, _, []},
                 compile(Config, Source, [{parse_transform, rpeer_transform}, warnings_as_errors])).

%%--------------------------------------------------------------------
%% Peers

%% A module written against peer starts, calls and stops an rpeer controller.
-spec runs_on_rpeer(term()) -> term().
runs_on_rpeer(Config) when is_list(Config) ->
    Mod = load(Config,
               "-spec f() -> {peer:peer_state(), node(), ok}.\n"
               "f() ->\n"
               "    {ok, P, _} = peer:start_link(#{connection => standard_io}),\n"
               "    {rpeer, init, _} = proc_lib:initial_call(P),\n"
               "    {peer:get_state(P), peer:call(P, erlang, node, []), peer:stop(P)}.\n"),
    ?assertEqual({running, nonode@nohost, ok}, Mod:f()).

%% ?CT_PEER() in a module compiled with the transform: test_server's node name, code
%%  path, cookie and crash dump file, on rpeer.
-spec ct_peer(term()) -> term().
ct_peer(Config) when is_list(Config) ->
    erlang:is_alive() orelse throw({skip, "the test node is not distributed"}),
    Mod = load(Config, "-include_lib(\"common_test/include/ct.hrl\").\n"
                       "start() -> ?CT_PEER().\n"),
    {ok, Peer, Node} = Mod:start(),
    try
        ?assertMatch({rpeer, init, _}, proc_lib:initial_call(Peer)),
        ?assertEqual(atom_to_list(Mod) ++ "-start-",
                     lists:sublist(atom_to_list(Node), length(atom_to_list(Mod)) + 7)),
        ?assert(lists:member(filename:dirname(code:which(Mod)),
                             erpc:call(Node, code, get_path, []))),
        ?assertEqual(erlang:get_cookie(), erpc:call(Node, erlang, get_cookie, [])),
        [Name, _Host] = string:split(atom_to_list(Node), "@"),
        ?assertEqual(filename:join(test_server_sup:crash_dump_dir(), "erl_crash_dump." ++ Name),
                     erpc:call(Node, os, getenv, ["ERL_CRASH_DUMP"]))
    after
        ok = rpeer:stop(Peer)
    end.

%% rpeer_ct with options: a given name is kept, a missing one made; args and a cookie
%%  of the caller's are kept.
-spec ct_peer_options(term()) -> term().
ct_peer_options(Config) when is_list(Config) ->
    erlang:is_alive() orelse throw({skip, "the test node is not distributed"}),
    Name = rpeer_ct:peer_name(?MODULE, "named"),
    ?assertMatch("rpeer_transform_SUITE-named-" ++ _, Name),
    {ok, Peer, Node} = rpeer_ct:start_peer(#{name => Name, connection => standard_io,
                                             args => ["-setcookie", "other", "-x", "y"]},
                                           ?MODULE, ?FUNCTION_NAME),
    ?assertEqual(Name, hd(string:split(atom_to_list(Node), "@"))),
    ?assertEqual({ok, [["y"]]}, rpeer:call(Peer, init, get_argument, [x])),
    ?assertEqual(other, rpeer:call(Peer, erlang, get_cookie, [])),
    ok = rpeer:stop(Peer),
    {ok, Peer2, Node2} = rpeer_ct:start_peer(#{connection => standard_io}, ?MODULE,
                                             ?FUNCTION_NAME),
    ?assertMatch("rpeer_transform_SUITE-ct_peer_options-" ++ _, atom_to_list(Node2)),
    ?assertEqual(erlang:get_cookie(), rpeer:call(Peer2, erlang, get_cookie, [])),
    ok = rpeer:stop(Peer2).

%%--------------------------------------------------------------------
%% Helpers

%% Writes Source as a module named after the test case into the priv_dir, behind
%%  "-module(Name)." and export_all (Source starts on line 3).
write(Config, Source) ->
    {Name, File} = file_name(Config),
    ok = file:write_file(File, ["-module(", atom_to_list(Name), ").\n",
                                "-compile([export_all, nowarn_export_all]).\n" , Source]),
    File.

file_name(Config) ->
    Name = list_to_atom("rt_" ++ atom_to_list(?config(case_name, Config))),
    {Name, filename:join(?config(priv_dir, Config), atom_to_list(Name) ++ ".erl")}.

%% Source's forms as the compiler sees them before parse transforms.
forms(Config, Source) ->
    {ok, Forms} = epp:parse_file(write(Config, Source), [{location, {1, 1}}]),
    Forms.

transform(Config, Source) ->
    rpeer_transform:parse_transform(forms(Config, Source), []).

compile(Config, Source, Options) ->
    compile:file(write(Config, Source), [binary, return | Options]).

%% Compiles Source with the transform into the priv_dir and loads it from there.
load(Config, Source) ->
    File = write(Config, Source),
    Dir = filename:dirname(File),
    {ok, Mod, []} = compile:file(File, [{outdir, Dir}, return, {parse_transform, rpeer_transform}]),
    {module, Mod} = code:load_abs(filename:join(Dir, atom_to_list(Mod))),
    Mod.

%% The forms with every atom From (as a module name) renamed To.
rename(To, From, Forms) ->
    rename_atom(To, From, Forms).

rename_atom(To, From, {atom, Anno, To}) -> {atom, Anno, From};
rename_atom(To, From, Tuple) when is_tuple(Tuple) ->
    list_to_tuple(rename_atom(To, From, tuple_to_list(Tuple)));
rename_atom(To, From, List) when is_list(List) -> [rename_atom(To, From, E) || E <- List];
rename_atom(_To, _From, Other) -> Other.

remote_calls(Forms) ->
    [{M, F, length(Args)}
     || {call, _, {remote, _, {atom, _, M}, {atom, _, F}}, Args}
            <- find(fun ({call, _, {remote, _, _, _}, _}) -> true;
                        (_) -> false
                    end, Forms)].

remote_types(Forms) ->
    [{M, T} || {remote_type, _, [{atom, _, M}, {atom, _, T}, []]}
                   <- find(fun ({remote_type, _, _}) -> true;
                               (_) -> false
                           end, Forms)].

%% Every subterm for which Pred is true, depth first, in order.
find(Pred, Term) ->
    lists:reverse(find(Pred, Term, [])).

find(Pred, Term, Acc0) ->
    Acc = case Pred(Term) of
              true -> [Term | Acc0];
              false -> Acc0
          end,
    if
        is_tuple(Term) -> find(Pred, tuple_to_list(Term), Acc);
        is_list(Term) -> lists:foldl(fun (T, A) -> find(Pred, T, A) end, Acc, Term);
        true -> Acc
    end.

%% Call tracing of peer:random_name/0,1 and rpeer:random_name/0,1 made by this process
%%  (a process cannot be its own tracer: a helper forwards the calls).
trace_random_name(true) ->
    {module, rpeer} = code:ensure_loaded(rpeer),
    {module, peer} = code:ensure_loaded(peer),
    Self = self(),
    Tracer = spawn_link(fun Forward() ->
                                receive
                                    {trace, Self, call, {Module, random_name, _}} ->
                                        Self ! {traced, Module},
                                        Forward()
                                end
                        end),
    1 = erlang:trace(self(), true, [call, {tracer, Tracer}]),
    2 = erlang:trace_pattern({rpeer, random_name, '_'}, true, [global]),
    2 = erlang:trace_pattern({peer, random_name, '_'}, true, [global]),
    ok;
trace_random_name(false) ->
    1 = erlang:trace(self(), false, [call]),
    _ = erlang:trace_pattern({rpeer, random_name, '_'}, false, [global]),
    _ = erlang:trace_pattern({peer, random_name, '_'}, false, [global]),
    ok.

%% The module of the next traced call.
traced() ->
    receive
        {traced, Module} -> Module
    after 1000 -> none
    end.

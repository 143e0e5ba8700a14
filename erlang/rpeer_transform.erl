%% @doc
%% Parse transform that switches a module from OTP's `peer' to `rpeer' without editing
%% its source: add `{parse_transform, rpeer_transform}' to the module's compile options
%% (rebar3 `erl_opts', `erlc +"{parse_transform, rpeer_transform}"', or
%% `-compile({parse_transform, rpeer_transform}).' in the module).
%%
%% == What is rewritten ==
%% Only peer's public API, by name and arity, as listed below (rpeer exports exactly
%% these; the list is fixed here because rpeer need not be loaded, or even compiled,
%% when the transform runs):
%% <ul>
%% <li>remote calls `peer:F(...)' of an API function: `peer:start_link/0,1',
%%     `start/1', `stop/1', `random_name/0,1', `get_state/1', `call/4,5', `cast/4',
%%     `send/3' become `rpeer:F(...)';</li>
%% <li>a call `peer:F(...)' where `F' is a variable: the module is chosen when the
%%     call runs, `rpeer' when `F' names an API function of that arity, else `peer';</li>
%% <li>`fun peer:F/A' of an API function (literal name and arity) becomes
%%     `fun rpeer:F/A'; with a variable name or arity the module is chosen when the fun
%%     is made, as for calls;</li>
%% <li>`-import(peer, [...])': the API functions are imported from `rpeer' instead;</li>
%% <li>the types `peer:server_ref()', `start_options()', `peer_state()', `exec()' and
%%     `disconnect_timeout()' wherever types appear: `-spec', `-callback', `-type',
%%     `-opaque' and typed record fields;</li>
%% <li>Common Test: `test_server:start_peer/3,5' (what the `?CT_PEER' macros of
%%     `ct.hrl' expand to) and `test_server:peer_name/2' (`?CT_PEER_NAME') become
%%     calls to {@link rpeer_ct}, also as `fun test_server:F/A'.</li>
%% </ul>
%%
%% == What is left alone ==
%% Everything else, notably: the atom `peer' as data (`["-user", "peer"]',
%% `{peer, start_link, [Opts]}', `apply(peer, F, Args)', `erpc:call(N, peer, ...)',
%% `spawn(peer, ...)'), calls `Mod:F(...)' where `Mod' is not the literal atom `peer',
%% peer's functions outside its API (`peer:start/0' runs on the peer node itself, the
%% `peer_supervision' and gen_server callbacks), local functions named like peer's,
%% `-spec' and `-type' names of the module itself, and any other attribute. Line and
%% column annotations are kept, so compiler messages point where they did.
%% @end
-module(rpeer_transform).

-export([parse_transform/2]).

%% peer's API (OTP 25), which rpeer exports: {Function, Arity}
-define(API, [{start_link, 0}, {start_link, 1}, {start, 1}, {stop, 1},
              {random_name, 0}, {random_name, 1}, {get_state, 1},
              {call, 4}, {call, 5}, {cast, 4}, {send, 3}]).

%% peer's exported types, which rpeer exports too: {Type, Arity}
-define(TYPES, [{server_ref, 0}, {start_options, 0}, {peer_state, 0}, {exec, 0},
                {disconnect_timeout, 0}]).

%% test_server's peer functions (ct.hrl's ?CT_PEER and ?CT_PEER_NAME), which rpeer_ct
%%  provides: {Function, Arity}
-define(CT_API, [{start_peer, 3}, {start_peer, 5}, {peer_name, 2}]).

%% @doc Rewrites the module's `peer' API calls, funs, imports and types to `rpeer',
%%  and test_server's `start_peer/3,5' and `peer_name/2' to `rpeer_ct'.
-spec parse_transform(Forms, Options :: [term()]) -> Forms
              when Forms :: [erl_parse:abstract_form() | erl_parse:form_info()].
parse_transform(Forms, _Options) ->
    lists:flatmap(fun form/1, Forms).

%% Functions and the attributes that hold abstract code (expressions or types). Other
%%  attributes hold plain terms, which are never rewritten.
form({function, Anno, Name, Arity, Clauses}) ->
    [{function, Anno, Name, Arity, walk(Clauses)}];
form({attribute, Anno, import, {peer, Functions}}) ->
    {Api, Other} = lists:partition(fun (FA) -> lists:member(FA, ?API) end, Functions),
    [{attribute, Anno, import, {rpeer, Api}} || Api =/= []]
        ++ [{attribute, Anno, import, {peer, Other}} || Other =/= []];
form({attribute, Anno, Kind, Value})
  when Kind =:= spec; Kind =:= callback; Kind =:= type; Kind =:= opaque; Kind =:= record ->
    [{attribute, Anno, Kind, walk(Value)}];
form(Other) ->
    [Other].

%% Walks abstract code depth first. In abstract code every term of the program is
%%  encoded ({atom, Anno, peer}, {tuple, Anno, Elements}, ...), so the shapes matched
%%  here cannot be data of the program.
walk({call, Anno, {remote, RAnno, {atom, MAnno, M}, {atom, _, F} = Fun}, Args}) ->
    Module = {atom, MAnno, function_module(M, F, length(Args))},
    {call, Anno, {remote, RAnno, Module, Fun}, walk(Args)};
walk({call, Anno, {remote, RAnno, {atom, MAnno, peer}, {var, _, _} = Fun}, Args}) ->
    Module = choose_module(MAnno, Fun, {integer, MAnno, length(Args)}),
    {call, Anno, {remote, RAnno, Module, Fun}, walk(Args)};
walk({'fun', Anno, {function, {atom, MAnno, M}, {atom, _, F} = Fun, {integer, _, A} = Arity}}) ->
    {'fun', Anno, {function, {atom, MAnno, function_module(M, F, A)}, Fun, Arity}};
walk({'fun', Anno, {function, {atom, MAnno, peer}, Fun, Arity}}) ->
    %% a variable name or arity (or both)
    {'fun', Anno, {function, choose_module(MAnno, Fun, Arity), Fun, Arity}};
walk({remote_type, Anno, [{atom, MAnno, M}, {atom, _, T} = Type, Args]}) ->
    {remote_type, Anno, [{atom, MAnno, type_module(M, T, length(Args))}, Type, walk(Args)]};
walk(Tuple) when is_tuple(Tuple) ->
    list_to_tuple(walk(tuple_to_list(Tuple)));
walk([Head | Tail]) ->
    [walk(Head) | walk(Tail)];
walk(Leaf) ->
    Leaf.

%% The module that provides Module:Function/Arity after the switch.
function_module(peer, F, A) ->
    case lists:member({F, A}, ?API) of
        true -> rpeer;
        false -> peer
    end;
function_module(test_server, F, A) ->
    case lists:member({F, A}, ?CT_API) of
        true -> rpeer_ct;
        false -> test_server
    end;
function_module(Module, _F, _A) ->
    Module.

%% The module that provides the type Module:Type/Arity after the switch.
type_module(peer, T, A) ->
    case lists:member({T, A}, ?TYPES) of
        true -> rpeer;
        false -> peer
    end;
type_module(Module, _T, _A) ->
    Module.

%% The module of `peer:F/A' where F or A is a variable: `peer' when no API function
%%  can match, else chosen when the code runs, as in `case F of call -> rpeer; cast ->
%%  rpeer; _ -> peer end' (A being 4). The case is marked as generated, so that the
%%  compiler does not warn about it (say, when F is known to be one atom).
choose_module(MAnno, F, A) ->
    case [{Fa, Aa} || {Fa, Aa} <- ?API, may_be(F, Fa), may_be(A, Aa)] of
        [] ->
            {atom, MAnno, peer};
        Candidates ->
            Anno = erl_anno:set_generated(true, MAnno),
            %% select on the variable parts only
            {Selector, Patterns} =
                case {F, A} of
                    {{var, _, _}, {var, _, _}} ->
                        {{tuple, Anno, [F, A]},
                         [{tuple, Anno, [{atom, Anno, Fa}, {integer, Anno, Aa}]}
                          || {Fa, Aa} <- Candidates]};
                    {{var, _, _}, _} ->
                        {F, [{atom, Anno, Fa} || Fa <- lists:usort([Fa || {Fa, _} <- Candidates])]};
                    {_, {var, _, _}} ->
                        {A, [{integer, Anno, Aa} || {_, Aa} <- Candidates]}
                end,
            Rpeer = [{clause, Anno, [Pattern], [], [{atom, Anno, rpeer}]} || Pattern <- Patterns],
            Peer = {clause, Anno, [{var, Anno, '_'}], [], [{atom, Anno, peer}]},
            {'case', Anno, Selector, Rpeer ++ [Peer]}
    end.

%% Whether the abstract expression (a literal or a variable) may have the value.
may_be({var, _, _}, _Value) -> true;
may_be({_Literal, _, Value}, Value) -> true;
may_be(_Other, _Value) -> false.

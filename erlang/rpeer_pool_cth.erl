%% @doc
%% A Common Test hook that turns rpeer's pool of warm nodes on for a test run: it starts
%% the `rpeer' application with `pool_size' set (1 unless the hook's options say), and
%% stops it (and so every warm node) when the run ends. In rebar.config:
%% ```
%% {ct_opts, [{ct_hooks, [rpeer_pool_cth]}]}.
%% '''
%% or `{ct_hooks, [{rpeer_pool_cth, #{pool_size => 2, pool_boots => 2}}]}'; with ct_run,
%% `-ct_hooks rpeer_pool_cth'. Options: `pool_size', `pool_boots', `pool_idle_ms' (see
%% rpeer_pool); what the application environment sets already is kept unless given.
%% @end
-module(rpeer_pool_cth).

-export([id/1, init/2, terminate/1]).

%% @doc The hook's id: one per run.
-spec id(term()) -> atom().
id(_Options) ->
    ?MODULE.

%% @doc Starts the rpeer application with the pool on.
-spec init(term(), map() | [{atom(), term()}] | term()) -> {ok, map()}.
init(_Id, Options) ->
    Given = case Options of
                #{} -> Options;
                [_ | _] -> maps:from_list(Options);
                _ -> #{}
            end,
    _ = application:load(rpeer),
    Settings = maps:merge(#{pool_size => max(1, env(pool_size))},
                          maps:with([pool_size, pool_boots, pool_idle_ms], Given)),
    _ = [application:set_env(rpeer, Key, Value) || {Key, Value} <- maps:to_list(Settings)],
    {ok, _} = application:ensure_all_started(rpeer),
    {ok, Settings}.

%% @doc Prints what the pool served (ct:pal: hits and misses over all templates), and
%%  stops the rpeer application: every warm node goes.
-spec terminate(map()) -> ok.
terminate(_State) ->
    Info = rpeer_pool:info(),
    Sum = fun (Key) -> lists:sum([maps:get(Key, I) || I <- Info]) end,
    ct:pal("rpeer_pool_cth: the pool served ~b starts, ~b cold-started, over ~b templates",
           [Sum(hits), Sum(misses), length(Info)]),
    _ = application:stop(rpeer),
    ok.

env(Key) ->
    case application:get_env(rpeer, Key) of
        {ok, Value} when is_integer(Value) -> Value;
        _ -> 0
    end.

%% @private
%% @doc The rpeer application: its supervisor runs the pool of warm nodes (see
%% rpeer_pool). rpeer works without the application running; the pool is then off.
-module(rpeer_app).
-behaviour(application).

-export([start/2, stop/1]).

-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    rpeer_sup:start_link().

-spec stop(term()) -> ok.
stop(_State) ->
    ok.

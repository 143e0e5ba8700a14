%% @private
%% @doc The rpeer application's supervisor: the pool of warm nodes (rpeer_pool).
-module(rpeer_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

%% How long the pool gets to stop its warm nodes (each one's own stop waits up to 5 s,
%%  all at once).
-define(POOL_SHUTDOWN, 20000).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    Pool = #{id => rpeer_pool, start => {rpeer_pool, start_link, []},
             shutdown => ?POOL_SHUTDOWN, type => worker, modules => [rpeer_pool]},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Pool]}}.

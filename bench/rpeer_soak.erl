%% @doc Soak test: many start/stop cycles of rpeer peers across the connection modes,
%% then the origin's open file descriptors, OS threads, child processes left behind
%% (zombies or not) and memory are compared with what they were before.
%%
%% Run by `bench/soak [Cycles] [pool]' (default 500). With `pool', the rpeer application
%% runs with a pool of 2 warm nodes per template (see rpeer_pool) during the cycles, and
%% is stopped before the figures are taken again: nothing of the pool may be left. Prints
%% a table and exits non-zero when a figure grew past its bound.
-module(rpeer_soak).

-export([main/1]).

%% Bounds on growth after all cycles (the first cycles warm up code loading and the
%% spawner threads, so the baseline is taken after a warm-up round).
-define(MAX_FD_GROWTH, 4).
-define(MAX_THREAD_GROWTH, 4).
-define(MAX_CHILDREN, 0).
-define(MAX_RSS_GROWTH_KB, 20 * 1024).

-spec main([string()]) -> no_return().
main(Args) ->
    Cycles = case Args of
                 [N | _] -> list_to_integer(N);
                 [] -> 500
             end,
    Pool = lists:member("pool", Args),
    Modes = [#{connection => standard_io},
             #{connection => standard_io, peer_side => peer},
             #{connection => 0},
             #{name => dist}],
    %% warm-up: one cycle per mode (with the pool: two, the second served by it)
    pool(Pool),
    [cycle(Mode) || Mode <- Modes],
    _ = Pool andalso ([cycle(Mode) || Mode <- Modes] =/= []),
    ok = application:stop(rpeer),
    erlang:garbage_collect(),
    Before = figures(),
    pool(Pool),
    T0 = erlang:monotonic_time(millisecond),
    run(Cycles, Modes),
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    Served = [{H, M} || #{hits := H, misses := M} <- rpeer_pool:info()],
    ok = application:stop(rpeer),
    erlang:garbage_collect(),
    timer:sleep(500),
    After = figures(),
    io:format("~nrpeer soak: ~b start/stop cycles across standard_io, standard_io with "
              "peer_side => peer, tcp and dist, in ~.1f s~s~n~n",
              [Cycles, Elapsed / 1000,
               case Pool of
                   true -> io_lib:format(", pool on (pool_size 2; hits and misses per "
                                         "template: ~p), then application:stop(rpeer)", [Served]);
                   false -> ""
               end]),
    io:format("| figure | before | after | growth | bound |~n|---|---|---|---|---|~n"),
    Checks = [check("open file descriptors", fds, Before, After, ?MAX_FD_GROWTH),
              check("OS threads", threads, Before, After, ?MAX_THREAD_GROWTH),
              check("child processes left (any state)", children, Before, After, ?MAX_CHILDREN),
              check("resident memory (KiB)", rss_kb, Before, After, ?MAX_RSS_GROWTH_KB),
              check("Erlang memory (KiB)", erlang_kb, Before, After, ?MAX_RSS_GROWTH_KB)],
    case lists:all(fun (Ok) -> Ok end, Checks) of
        true -> io:format("~nsoak: all figures within bounds~n"), halt(0);
        false -> io:format("~nsoak: FAILED, a figure grew past its bound~n"), halt(1)
    end.

%% The rpeer application runs, with the pool on or off.
pool(On) ->
    _ = application:load(rpeer),
    ok = application:set_env(rpeer, pool_size, case On of true -> 2; false -> 0 end),
    {ok, _} = application:ensure_all_started(rpeer),
    ok.

run(0, _Modes) ->
    ok;
run(N, Modes) ->
    cycle(lists:nth(1 + N rem length(Modes), Modes)),
    run(N - 1, Modes).

cycle(#{name := Prefix} = Mode) ->
    cycle(Mode#{name => rpeer:random_name(Prefix)}, dist);
cycle(Mode) ->
    cycle(Mode, alternative).

cycle(Mode, Kind) ->
    {ok, Peer, Node} = rpeer:start(Mode),
    _ = case Kind of
            dist -> erpc:call(Node, erlang, node, []);
            alternative -> rpeer:call(Peer, erlang, node, [])
        end,
    ok = rpeer:stop(Peer).

figures() ->
    Self = os:getpid(),
    #{fds => length(element(2, file:list_dir("/proc/" ++ Self ++ "/fd"))),
      threads => length(element(2, file:list_dir("/proc/" ++ Self ++ "/task"))),
      children => length(string:lexemes(os:cmd("ps -o pid= --ppid " ++ Self), "\n"))
                  - 1, %% the ps itself
      rss_kb => rss_kb(Self),
      erlang_kb => erlang:memory(total) div 1024}.

rss_kb(Pid) ->
    {ok, Status} = file:read_file("/proc/" ++ Pid ++ "/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]), binary:match(L, <<"VmRSS:">>) =/= nomatch],
    [_, Kb | _] = string:lexemes(binary_to_list(Line), " \t"),
    list_to_integer(Kb).

check(Label, Key, Before, After, Bound) ->
    B = maps:get(Key, Before),
    A = maps:get(Key, After),
    Ok = A - B =< Bound,
    io:format("| ~s | ~b | ~b | ~b | ~b~s |~n", [Label, B, A, A - B, Bound, case Ok of true -> ""; false -> " EXCEEDED" end]),
    Ok.

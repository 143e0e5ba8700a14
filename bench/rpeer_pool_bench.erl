%% @doc The pool of warm nodes (issue 30) against cold starts and stock peer.
%%
%% Run by `bench/pool [N]'. Two tables, in markdown, also written to bench/POOL.md:
%% <ol>
%% <li>start_link to returned, p50 and p99 over N starts (default 30): a pool hit (the
%%   pool refilled before each start, so every start is a hit), an rpeer cold start, and
%%   stock peer, per mode (standard_io, tcp, a named standard_io peer, and a dist peer as
%%   `?CT_PEER()' starts it).</li>
%% <li>the suite-shaped loop: 30 cases in sequence, each starting one (or two) peers
%%   named as `?CT_PEER()' names them, making 3 calls, running a test body (a sleep of
%%   150 or 20 ms) and stopping the peers, per mode (standard_io, tcp, dist: its calls go
%%   through erpc); wall time, and the CPU of the origin and of
%%   every peer (read from /proc before each is stopped; warm nodes never handed out
%%   included), against stock peer and against the same loop with no boots at all (one
%%   peer started before the loop).</li>
%% </ol>
-module(rpeer_pool_bench).

-export([main/1]).

-define(CASES, 30).
-define(CALLS, 3).

%% The pool_size of the loops (the latency figures refill a pool of 1 before each start).
-define(LOOP_POOL, 2).

%% How many bare VMs are booted to tell what a boot costs here.
-define(BARE_RUNS, 15).

-spec main([string()]) -> no_return().
main([Starts]) ->
    N = list_to_integer(Starts),
    _ = application:load(rpeer),
    Cookie = atom_to_list(erlang:get_cookie()),
    Modes = [{"standard_io", #{connection => standard_io}},
             {"tcp", #{connection => 0}},
             {"standard_io, named", #{connection => standard_io, name => named}},
             {"dist, named (?CT_PEER)", #{name => named}}],
    Latency = [latency_rows(Label, Options, N) || {Label, Options} <- Modes],
    LoopModes = [{Label, maps:without([name], Options)} || {Label, Options} <- Modes,
                                                           Label =/= "standard_io, named"],
    Bare = bare_boot(?BARE_RUNS),
    Loops = [loop_row(Label, Options#{args => ["-setcookie", Cookie]}, Body, Peers)
             || {Label, Options} <- LoopModes, Body <- [150, 20], Peers <- [1, 2]],
    Text = [io_lib:format("# The pool of warm nodes: rpeer ~s, OTP ~s, ~b CPUs, ~s~n~n",
                          [git_rev(), erlang:system_info(otp_release),
                           erlang:system_info(logical_processors_available), date_time()]),
            "## start_link to returned (ms), p50 / p99 over ", integer_to_list(N),
            " starts\n\n| mode | pool hit | rpeer cold | stock peer |\n|---|---|---|---|\n",
            [io_lib:format("| ~s | ~s | ~s | ~s |~n", [L, P, C, S]) || {L, P, C, S} <- Latency],
            "\nEvery pool start is a hit: the pool refilled before it (`pool_size` 1).\n\n",
            "## Suite-shaped loop: ", integer_to_list(?CASES), " cases, each: start, ",
            integer_to_list(?CALLS), " calls, body (sleep), stop\n\n",
            "Wall time in s (CPU of the origin and all peers in s). `no boots`: one peer "
            "started before the loop; the pool's columns have `pool_size` ",
            integer_to_list(?LOOP_POOL), " and `pool_boots` 1 or 2, and start with an empty "
            "pool (the first case learns the template). Ratios are stock wall time / pool wall "
            "time, and pool wall time / no boots.\n\n",
            "| mode | body | peers/case | no boots | stock peer | rpeer cold | pool, boots 1 "
            "| pool, boots 2 | stock/pool (1) | stock/pool (2) | pool (1)/no boots "
            "| CPU floor | stock/floor |\n",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            [loop_line(Row, Bare) || Row <- Loops],
            bare_text(Bare)],
    io:put_chars(Text),
    ok = file:write_file("bench/POOL.md", Text),
    halt(0).

%%--------------------------------------------------------------------
%% start_link latency

latency_rows(Label, Options, N) ->
    {Label, pool_latency(Options, N), cold_latency(Options, N), stock_latency(Options, N)}.

pool_latency(Options, N) ->
    pool_on(1, 1),
    Times = [begin
                 wait_warm(Options),
                 time_start(fun () -> rpeer:start_link(named(Options)) end, rpeer)
             end || _ <- lists:seq(1, N + 1)],
    pool_off(),
    p50_p99(tl(Times)).

cold_latency(Options, N) ->
    pool_off(),
    p50_p99([time_start(fun () -> rpeer:start_link(named(Options)) end, rpeer)
             || _ <- lists:seq(1, N)]).

stock_latency(Options, N) ->
    p50_p99([time_start(fun () -> peer:start_link(named(Options)) end, peer)
             || _ <- lists:seq(1, N)]).

time_start(Start, Module) ->
    T0 = erlang:monotonic_time(microsecond),
    {ok, Peer, _} = Start(),
    T = erlang:monotonic_time(microsecond) - T0,
    unlink(Peer),
    ok = Module:stop(Peer),
    T.

named(#{name := named} = Options) -> Options#{name => rpeer:random_name(pool_bench)};
named(Options) -> Options.

p50_p99(Times) ->
    Sorted = lists:sort(Times),
    Len = length(Sorted),
    At = fun (P) -> lists:nth(max(1, min(Len, round(P * Len))), Sorted) / 1000 end,
    io_lib:format("~.1f / ~.1f", [At(0.5), At(0.99)]).

%%--------------------------------------------------------------------
%% The suite-shaped loop

loop_row(Label, Options, Body, Peers) ->
    NoBoots = no_boots(Options, Body, Peers),
    Stock = loop(peer, Options, Body, Peers),
    pool_off(),
    Cold = loop(rpeer, Options, Body, Peers),
    pool_on(?LOOP_POOL, 1),
    Pool1 = loop(rpeer, Options, Body, Peers),
    Left1 = warm_cpu(),
    pool_on(?LOOP_POOL, 2),
    Pool2 = loop(rpeer, Options, Body, Peers),
    Left2 = warm_cpu(),
    pool_off(),
    {Label, Body, Peers, NoBoots, Stock, Cold, add_cpu(Pool1, Left1), add_cpu(Pool2, Left2)}.

loop_line({Label, Body, Peers, NoBoots, Stock, Cold, Pool1, Pool2}, Bare) ->
    Floor = max(wall(NoBoots), cpu_floor(?CASES * Peers, Bare)),
    io_lib:format("| ~s | ~b ms | ~b | ~s | ~s | ~s | ~s | ~s | ~.2fx | ~.2fx | ~.2f "
                  "| ~.2f | ~.2fx |~n",
                  [Label, Body, Peers, fmt(NoBoots), fmt(Stock), fmt(Cold), fmt(Pool1),
                   fmt(Pool2), wall(Stock) / wall(Pool1), wall(Stock) / wall(Pool2),
                   wall(Pool1) / wall(NoBoots), Floor, wall(Stock) / Floor]).

%%--------------------------------------------------------------------
%% What a VM boot costs here, whoever boots it: the floor under any pool's loop

%% Every case needs a node no one booted before the loop: whatever boots them, the loop
%%  lasts at least as long as the machine's CPUs take to boot that many bare VMs.
cpu_floor(Nodes, {_BootWall, BootCpu}) ->
    Nodes * BootCpu / erlang:system_info(logical_processors_available).

%% A bare VM named as the loops' peers are (`erl -sname N -noshell -eval "halt()"'), booted
%%  and halted Runs times one after the other: median wall and CPU (user + system) in s,
%%  as bash's `time' reads them.
bare_boot(Runs) ->
    Erl = os:find_executable("erl"),
    Times = [bare_boot_once(Erl, "rpeer_bench_bare" ++ integer_to_list(I))
             || I <- lists:seq(1, Runs)],
    {median([W || {W, _} <- Times]), median([C || {_, C} <- Times])}.

bare_boot_once(Erl, Name) ->
    Script = "TIMEFORMAT='%R %U %S'; time \"$0\" -sname " ++ Name
        ++ " -noshell -eval 'halt()' >/dev/null 2>&1",
    Port = open_port({spawn_executable, "/bin/bash"},
                     [{args, ["-c", Script, Erl]}, exit_status, stderr_to_stdout, binary]),
    Out = collect(Port, <<>>),
    [Wall, User, System] = [binary_to_float(F) || F <- string:lexemes(Out, " \n")],
    {Wall, User + System}.

collect(Port, Acc) ->
    receive
        {Port, {data, Data}} -> collect(Port, <<Acc/binary, Data/binary>>);
        {Port, {exit_status, 0}} -> Acc;
        {Port, {exit_status, Status}} -> error({bare_boot_failed, Status, Acc})
    end.

median(Values) ->
    lists:nth((length(Values) + 1) div 2, lists:sort(Values)).

bare_text({Wall, Cpu}) ->
    io_lib:format("~nA bare VM named as the peers are (`erl -sname N -noshell -eval "
                  "\"halt()\"`), booted and halted ~b times: median ~b ms wall, ~b ms "
                  "CPU. `CPU floor`: the shortest any pool's loop can be here, the no-boots "
                  "wall time or the time ~b CPUs take to boot a bare VM for every peer of "
                  "the loop, whichever is longer; `stock/floor`: the best ratio to stock "
                  "that leaves any pool.~n",
                  [?BARE_RUNS, round(Wall * 1000), round(Cpu * 1000),
                   erlang:system_info(logical_processors_available)]).

fmt({Wall, Cpu}) -> io_lib:format("~.2f (~.2f)", [Wall, Cpu]).
wall({Wall, _Cpu}) -> Wall.
add_cpu({Wall, Cpu}, More) -> {Wall, Cpu + More}.

%% 30 cases; each starts Peers peers as ?CT_PEER() names them, calls, sleeps, stops.
loop(Module, Options, Body, Peers) ->
    measure(fun () ->
                    lists:sum([one_case(Module, Options, Body, Peers, Case)
                               || Case <- lists:seq(1, ?CASES)])
            end).

one_case(Module, Options, Body, Peers, Case) ->
    Started = [begin
                   Name = rpeer_ct:peer_name(?MODULE, "case" ++ integer_to_list(Case)),
                   {ok, Peer, Node} = Module:start_link(Options#{name => Name}),
                   {Peer, Node}
               end || _ <- lists:seq(1, Peers)],
    [peer_call(Module, Options, Started1, erlang, node, [])
     || Started1 <- Started, _ <- lists:seq(1, ?CALLS)],
    timer:sleep(Body),
    Cpu = lists:sum([peer_cpu(Module, Options, Started1) || Started1 <- Started]),
    [begin unlink(Peer), ok = Module:stop(Peer) end || {Peer, _Node} <- Started],
    Cpu.

%% A call as a suite makes it: over the alternative connection, or erpc to a dist peer.
peer_call(_Module, Options, {_Peer, Node}, M, F, A) when not is_map_key(connection, Options) ->
    erpc:call(Node, M, F, A);
peer_call(Module, _Options, {Peer, _Node}, M, F, A) ->
    Module:call(Peer, M, F, A).

no_boots(Options, Body, Peers) ->
    pool_off(),
    Started = [begin
                   Named = Options#{name => rpeer:random_name(pool_bench)},
                   {ok, P, Node} = rpeer:start_link(Named),
                   {P, Node}
               end || _ <- lists:seq(1, Peers)],
    Result = measure(fun () ->
                             [begin
                                  [peer_call(rpeer, Options, S, erlang, node, [])
                                   || S <- Started, _ <- lists:seq(1, ?CALLS)],
                                  timer:sleep(Body)
                              end || _ <- lists:seq(1, ?CASES)],
                             lists:sum([peer_cpu(rpeer, Options, S) || S <- Started])
                     end),
    [begin unlink(P), rpeer:stop(P) end || {P, _} <- Started],
    Result.

%% Wall time and CPU (origin + what Run returns as the peers' CPU), in seconds.
measure(Run) ->
    Cpu0 = own_cpu(),
    T0 = erlang:monotonic_time(microsecond),
    PeersCpu = Run(),
    Wall = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    {Wall, own_cpu() - Cpu0 + PeersCpu}.

peer_cpu(Module, Options, Started) ->
    cpu_of(peer_call(Module, Options, Started, os, getpid, [])).

%% The CPU of the warm nodes left in the pool (booted, never handed out).
warm_cpu() ->
    {links, Links} = process_info(whereis(rpeer_pool), links),
    lists:sum([cpu_of(integer_to_list(maps:get(os_pid, rpeer:info(P))))
               || P <- Links, is_pid(P), P =/= whereis(rpeer_sup)]).

own_cpu() ->
    cpu_of(os:getpid()).

%% utime + stime of an OS process, in seconds (clock ticks of 10 ms).
cpu_of(OsPid) ->
    case file:read_file("/proc/" ++ OsPid ++ "/stat") of
        {ok, Stat} ->
            [_, After] = string:split(Stat, ")", trailing),
            Fields = string:lexemes(After, " \n"),
            (binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)))
                / 100;
        {error, _} ->
            0.0
    end.

%%--------------------------------------------------------------------

pool_on(Size, Boots) ->
    _ = application:stop(rpeer),
    ok = application:set_env(rpeer, pool_size, Size),
    ok = application:set_env(rpeer, pool_boots, Boots),
    {ok, _} = application:ensure_all_started(rpeer),
    ok.

pool_off() ->
    _ = application:stop(rpeer),
    ok = application:set_env(rpeer, pool_size, 0).

%% Waits until the pool has a warm node for these options (learning them first).
wait_warm(Options) ->
    {ok, {Key, _, _}} = rpeer_pool:template(named(Options)),
    Warm = [W || #{template := T, warm := W} <- rpeer_pool:info(), T =:= Key],
    case Warm of
        [W] when W > 0 -> ok;
        [] -> {ok, P, _} = rpeer:start(named(Options)), rpeer:stop(P), wait_warm(Options);
        _ -> timer:sleep(5), wait_warm(Options)
    end.

git_rev() ->
    string:trim(os:cmd("git rev-parse --short HEAD")).

date_time() ->
    calendar:system_time_to_rfc3339(erlang:system_time(second)).

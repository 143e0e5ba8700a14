%% @doc rpeer against stock OTP `peer', in the same run, interleaved where possible.
%%
%% Run it with `bench/run [quick|full] [key=value ...]' (see bench/README.md). Every
%% figure is shown for both implementations with the ratio rpeer/stock, since the
%% machine is shared and absolute numbers are noisy. The table's chart (rpeer_chart) is
%% written beside it: RESULTS.svg for RESULTS.md.
%%
%% Sections: boot, latency, throughput (with the long_schedule check), nif_calls,
%% console, concurrent, codec. Each measurement runs in its own process (trapping exits, so a
%% crashing controller is recorded as FAILED instead of ending the run); the peers it
%% started are linked to it and go away with it.
-module(rpeer_bench).

-export([main/1]).

-define(IMPLS, [peer, rpeer]).
-define(MiB, 1048576).
%% a block of the payloads, 1 KiB of random bytes, copied
-define(BLOCK_SIZE, 1024).
%% Pause before each measured transfer, and per MiB of the transfers (see settle/2).
-define(TPUT_SETTLE_MS, 50).
-define(TPUT_SETTLE_MS_PER_MIB, 10).
%% wait_idle/0: CPUs idle at least this share of a ?IDLE_SAMPLE_MS sample, waiting at
%%  most ?IDLE_WAIT_MS.
-define(IDLE_SHARE, 0.8).
-define(IDLE_SAMPLE_MS, 500).
-define(IDLE_WAIT_MS, 20000).

%%--------------------------------------------------------------------
%% entry point

-spec main([string()]) -> no_return().
main(Args) ->
    try
        Cfg = config(Args),
        run(Cfg),
        erlang:halt(0)
    catch
        C:R:St ->
            io:format("rpeer_bench crashed: ~p:~p~n~p~n", [C, R, St]),
            erlang:halt(1)
    end.

config(Args) ->
    Mode = case Args of
               ["quick" | _] -> quick;
               _ -> full
           end,
    Defaults =
        case Mode of
            quick ->
                #{boot_n => 5, calls => 1200, lat_pairs => 6, sizes => [1, 10], tput_reps => 1,
                  lines => 2000, console_reps => 1, npeers => 50, conc_reps => 1,
                  conc_modes => [standard_io, tcp, dist], codec_mb => 10, codec_reps => 2,
                  tput_modes => [standard_io, standard_io_peer_codec, tcp],
                  out => "bench/RESULTS-quick.md"};
            full ->
                #{boot_n => 10, calls => 3000, lat_pairs => 10, sizes => [1, 10, 100], tput_reps => 3,
                  lines => 10000, console_reps => 5, npeers => 50, conc_reps => 3,
                  conc_modes => [standard_io, tcp, dist], codec_mb => 10, codec_reps => 3,
                  tput_modes => [standard_io, standard_io_peer_codec, tcp],
                  out => "bench/RESULTS.md"}
        end,
    Base = Defaults#{mode => Mode,
                     sections => [boot, halt, latency, throughput, nif_calls, console, concurrent,
                                  codec]},
    lists:foldl(fun option/2, Base, [A || A <- Args, A =/= "quick", A =/= "full"]).

option(Arg, Cfg) ->
    case string:split(Arg, "=") of
        [Key, Value] ->
            K = list_to_atom(Key),
            case K of
                sizes -> Cfg#{sizes => ints(Value)};
                conc_modes -> Cfg#{conc_modes => atoms(Value)};
                tput_modes -> Cfg#{tput_modes => atoms(Value)};
                only -> Cfg#{sections => atoms(Value)};
                out -> Cfg#{out => Value};
                _ when is_map_key(K, Cfg) -> Cfg#{K => list_to_integer(Value)};
                _ -> error({unknown_option, Arg})
            end;
        _ ->
            error({unknown_option, Arg})
    end.

ints(S) -> [list_to_integer(X) || X <- string:lexemes(S, ",")].
atoms(S) -> [list_to_atom(X) || X <- string:lexemes(S, ",")].

run(Cfg = #{sections := Sections}) ->
    erlang:is_alive() orelse error(origin_not_distributed),
    Started = calendar:system_time_to_rfc3339(erlang:system_time(second)),
    Load0 = loadavg(),
    progress("rpeer_bench ~p, sections ~p, config ~0p", [maps:get(mode, Cfg), Sections,
                                                         maps:without([mode, sections], Cfg)]),
    Rows = lists:append([section(S, Cfg) || S <- Sections]),
    Load1 = loadavg(),
    Table = table(Rows),
    Notes = notes(),
    Text = [header(Cfg, Started, Load0, Load1), "\n", Table, "\n", Notes],
    io:put_chars(["\n", Table, "\n", Notes]),
    Out = maps:get(out, Cfg),
    ok = write_results(Out, Text),
    progress("written to ~s", [Out]),
    progress("chart written to ~s", [rpeer_chart:write(Out)]).

%% The generated part sits between two markers; whatever else the file holds (sections
%% others added below it) is kept. A file without the markers keeps its old content
%% after the new part.
-define(BEGIN_MARK, <<"<!-- rpeer_bench: begin of the generated part (bench/run replaces it) -->\n">>).
-define(END_MARK, <<"<!-- rpeer_bench: end of the generated part -->\n">>).

write_results(Out, Text) ->
    New = [?BEGIN_MARK, Text, "\n", ?END_MARK],
    case file:read_file(Out) of
        {ok, Old} ->
            case {binary:split(Old, ?BEGIN_MARK), binary:split(Old, ?END_MARK)} of
                {[Before, _], [_, After]} ->
                    file:write_file(Out, [Before, New, After]);
                _ ->
                    file:write_file(Out, [New, "\n", Old])
            end;
        {error, enoent} ->
            file:write_file(Out, New)
    end.

section(boot, Cfg) -> boot(Cfg);
section(halt, Cfg) -> peer_halts(Cfg);
section(latency, Cfg) -> latency(Cfg);
section(throughput, Cfg) -> throughput(Cfg);
section(nif_calls, Cfg) -> nif_calls(Cfg);
section(console, Cfg) -> console(Cfg);
section(concurrent, Cfg) -> concurrent(Cfg);
section(codec, Cfg) -> codec(Cfg).

%%--------------------------------------------------------------------
%% boot: start_link to running, and stop, per connection mode

boot(#{boot_n := N}) ->
    lists:append(
      [begin
           Runs = [begin
                       Order = order(I),
                       [{Impl, isolate(fun () -> boot_once(Impl, Mode) end, 120000)} || Impl <- Order]
                   end || I <- lists:seq(1, N)],
           Flat = lists:append(Runs),
           Boot = maps:from_list([{Impl, collect([case R of {ok, {B, _}} -> {ok, B}; F -> F end
                                     || {I2, R} <- Flat, I2 =:= Impl])}
                    || Impl <- ?IMPLS]),
           Stop = maps:from_list([{Impl, collect([case R of {ok, {_, S}} -> {ok, S}; F -> F end
                                     || {I2, R} <- Flat, I2 =:= Impl])}
                    || Impl <- ?IMPLS]),
           progress("boot ~p: ~s", [Mode, brief(median_of(Boot), ms)]),
           [row(io_lib:format("boot, start_link to running (median of ~b)", [N]), Mode, ms,
                lower, median_of(Boot)),
            row(io_lib:format("stop, until the peer's OS processes are gone (median of ~b)", [N]),
                Mode, ms, lower, median_of(Stop))]
       end || Mode <- [dist, standard_io, standard_io_peer_codec, tcp]]).

boot_once(Impl, Mode) ->
    OsTag = os_tag(),
    T0 = now_us(),
    P = pid_of(Impl:start_link(opts(Mode, OsTag))),
    T1 = now_us(),
    OsPids = tagged_os_pids(OsTag),
    TStop = now_us(),
    ok = Impl:stop(P),
    ok = wait_gone(OsTag, OsPids),
    T2 = now_us(),
    {(T1 - T0) / 1000, (T2 - TStop) / 1000}.

%%--------------------------------------------------------------------
%% halt: a named peer halts on its own; from the origin's nodedown to its controller's
%%  exit (peer_down => stop). The controller ends when the connection ends: at once in
%%  dist mode (nodedown is the end), on the tcp connection's close in tcp mode.

peer_halts(#{boot_n := N}) ->
    [begin
         Runs = [{Impl, isolate(fun () -> halt_once(Impl, Mode) end, 120000)}
                 || I <- lists:seq(1, N), Impl <- order(I)],
         Halt = maps:from_list([{Impl, collect([R || {I2, R} <- Runs, I2 =:= Impl])}
                                || Impl <- ?IMPLS]),
         progress("halt ~p: ~s", [Mode, brief(median_of(Halt), us)]),
         row(io_lib:format("peer halts: its nodedown to the controller's exit (median of ~b)",
                           [N]), Mode, us, lower, median_of(Halt))
     end || Mode <- [dist, tcp_named]].

halt_once(Impl, Mode) ->
    {ok, P, Node} = Impl:start(opts(Mode)),
    pong = net_adm:ping(Node),
    true = erlang:monitor_node(Node, true),
    MRef = monitor(process, P),
    ok = case Mode of
             dist -> erpc:cast(Node, erlang, halt, []);
             tcp_named -> Impl:cast(P, erlang, halt, [])
         end,
    Down = receive {nodedown, Node} -> now_us() after 10000 -> error(no_nodedown) end,
    receive {'DOWN', MRef, process, P, _} -> ok after 10000 -> error(controller_stayed) end,
    max(0, now_us() - Down).

%%--------------------------------------------------------------------
%% small-call latency: call(P, erlang, node, []), interleaved in blocks of 100

%% A peer's latency depends on where the OS happens to place its threads (on 2 vCPUs the
%%  same pair of peers gives 60 us in one run and 140 us in the next), so the calls are
%%  spread over several pairs of peers started one after the other.
latency(#{calls := Calls, lat_pairs := Pairs}) ->
    lists:append(
      [begin
           Runs = [isolate(fun () -> latency_case(Mode, Pair, max(100, Calls div Pairs)) end,
                           600000)
                   || Pair <- lists:seq(1, Pairs)],
           PerImpl = maps:from_list([{Impl, merge_latencies(Impl, Runs)} || Impl <- ?IMPLS]),
           P50 = maps:from_list([{Impl, pct(maps:get(Impl, PerImpl), 0.50)} || Impl <- ?IMPLS]),
           P99 = maps:from_list([{Impl, pct(maps:get(Impl, PerImpl), 0.99)} || Impl <- ?IMPLS]),
           progress("latency ~p: p50 ~s", [Mode, brief(P50, us)]),
           [row(io_lib:format("small call erlang:node(), p50 (~b calls over ~b peers)",
                              [Calls, Pairs]), Mode, us, lower, P50),
            row(io_lib:format("small call erlang:node(), p99 (~b calls over ~b peers)",
                              [Calls, Pairs]), Mode, us, lower, P99)]
       end || Mode <- [standard_io, standard_io_peer_codec, tcp]]).

%% One implementation's samples from every pair, or the first failure.
merge_latencies(Impl, Runs) ->
    lists:foldl(fun ({ok, #{Impl := {ok, Ts}}}, {ok, Acc}) -> {ok, Ts ++ Acc};
                    ({ok, #{Impl := Failed}}, {ok, _}) -> Failed;
                    ({ok, _}, Acc) -> Acc;
                    (Failed, {ok, _}) -> Failed;
                    (_, Failed) -> Failed
                end, {ok, []}, Runs).

latency_case(Mode, Pair, Calls) ->
    Peers = start_peers(Mode, order(Pair)),
    Node = fun (Impl, P) -> _ = Impl:call(P, erlang, node, []) end,
    %% warm up
    Peers1 = each_ok(Peers, fun (Impl, P, Acc) ->
                                    [Node(Impl, P) || _ <- lists:seq(1, 50)],
                                    Acc
                            end),
    Blocks = max(1, Calls div 100),
    Final = lists:foldl(
              fun (B, Ps) ->
                      lists:foldl(
                        fun (Impl, Ps2) ->
                                case maps:get(Impl, Ps2) of
                                    {ok, P, Acc} ->
                                        try
                                            Ts = [begin
                                                      T0 = erlang:monotonic_time(nanosecond),
                                                      Node(Impl, P),
                                                      (erlang:monotonic_time(nanosecond) - T0) / 1000
                                                  end || _ <- lists:seq(1, 100)],
                                            Ps2#{Impl => {ok, P, Ts ++ Acc}}
                                        catch C:R ->
                                                Ps2#{Impl => {failed, {C, R}}}
                                        end;
                                    Failed ->
                                        Ps2#{Impl => Failed}
                                end
                        end, Ps, order(B))
              end, Peers1, lists:seq(1, Blocks)),
    stop_peers(Final),
    maps:map(fun (_, {ok, _P, Ts}) -> {ok, Ts}; (_, F) -> F end, Final).

%%--------------------------------------------------------------------
%% payload throughput, with the long_schedule check

throughput(#{sizes := Sizes, tput_reps := Reps, tput_modes := Modes}) ->
    Collector = spawn_link(fun () -> collector([]) end),
    _ = erlang:system_monitor(Collector, [{long_schedule, 1}]),
    Block = rand:bytes(?BLOCK_SIZE),
    Results =
        [{Mode, isolate(fun () -> throughput_case(Mode, Sizes, Reps, Block) end, 3600000)}
         || Mode <- Modes],
    _ = erlang:system_monitor(undefined),
    Collector ! {get, self()},
    Events = receive {events, Es} -> Es after 10000 -> [] end,
    unlink(Collector),
    exit(Collector, kill),
    TputRows =
        lists:append(
          [case Res of
               {ok, {Figures, _Windows, _Ctrls}} ->
                   [begin
                        F = maps:get({Size, Dir}, Figures),
                        Med = median_of(F),
                        progress("throughput ~p ~b MB ~p: ~s", [Mode, Size, Dir, brief(Med, mbs)]),
                        row(io_lib:format("~b MiB ~s (median of ~b)",
                                          [Size, dir_name(Dir), tput_reps(Mode, Size, Reps)]),
                            Mode, mbs, higher, Med)
                    end || Size <- Sizes, Dir <- [to_peer, from_peer]];
               Failed ->
                   [row(io_lib:format("~b MiB ~s", [Size, dir_name(Dir)]), Mode, mbs, higher,
                        #{peer => Failed, rpeer => Failed})
                    || Size <- Sizes, Dir <- [to_peer, from_peer]]
           end || {Mode, Res} <- Results]),
    TputRows ++ long_schedule_rows(Results, Events, lists:max(Sizes)).

%% Transfers of milliseconds (under 10 MiB, and every tcp one) repeat three times as
%%  often: the scheduling noise of a shared machine moves a median of three of them a
%%  lot (tcp's 10 MiB took 6-13 ms in one loop, for either implementation).
tput_reps(tcp, _Size, Reps) -> 3 * Reps;
tput_reps(_Mode, Size, Reps) when Size < 10 -> 3 * Reps;
tput_reps(_Mode, _Size, Reps) -> Reps.

dir_name(to_peer) -> "origin to peer, call(P, erlang, byte_size, [Bin])";
dir_name(from_peer) -> "peer to origin, call(P, binary, copy, [Block, N])".

%% The transfers run over two pairs of peers, started in either order (the first started
%%  of a pair can be the faster, see start_peers/2), each taking half the repetitions.
throughput_case(Mode, Sizes, Reps, Block) ->
    Keys = [{S, D} || S <- Sizes, D <- [to_peer, from_peer]],
    Halves = [{?IMPLS, fun (Total) -> lists:seq(1, (Total + 1) div 2) end},
              {lists:reverse(?IMPLS), fun (Total) -> lists:seq((Total + 1) div 2 + 1, Total) end}],
    {PerKey, Windows, Ctrls} =
        lists:foldl(fun ({Order, RepsOf}, Acc) ->
                            pair_transfers(Mode, Order, Keys, fun (Size) ->
                                                                    RepsOf(tput_reps(Mode, Size, Reps))
                                                            end, Block, Acc)
                    end, {#{}, [], #{}}, Halves),
    Figures = maps:map(fun (_Key, PerImpl) ->
                               maps:from_list(
                                 [{Impl, case maps:get(Impl, PerImpl, []) of
                                             {failed, _} = F -> F;
                                             Rates -> collect([{ok, R} || R <- Rates])
                                         end} || Impl <- ?IMPLS])
                       end, PerKey),
    {Figures, Windows, Ctrls}.

%% Every transfer of Keys, RepsOf(Size) times, over a pair of peers started in Order.
pair_transfers(Mode, Order, Keys, RepsOf, Block, {PerKey0, Wins0, Ctrls0}) ->
    Peers0 = start_peers(Mode, Order),
    warm_up(Peers0, Block),
    {Peers, PerKey, Windows, Ctrls} =
        lists:foldl(
          fun ({Size, Dir} = Key, {Ps, PK, Wins, Cs}) ->
                  Bin = case Dir of
                            to_peer -> binary:copy(Block, Size * ?MiB div ?BLOCK_SIZE);
                            from_peer -> <<>>
                        end,
                  {Ps2, PerImpl, Wins2, Cs2} =
                      lists:foldl(
                        fun (Rep, Acc) ->
                                lists:foldl(fun (Impl, Acc2) ->
                                                    tput_once(Impl, Mode, Size, Dir, Bin, Block, Acc2)
                                            end, Acc, order(Rep))
                        end, {Ps, maps:get(Key, PK, #{}), Wins, Cs}, RepsOf(Size)),
                  garbage_collect(),
                  {Ps2, PK#{Key => PerImpl}, Wins2, Cs2}
          end, {Peers0, PerKey0, Wins0, maps:merge(Ctrls0, ctrls(Peers0))}, Keys),
    stop_peers(Peers),
    {PerKey, Windows, Ctrls}.

%% One 1 MiB transfer each way before the measured ones: every figure is of a peer past
%%  its first large frame (code loading, allocator carriers), for both implementations.
warm_up(Peers, Block) ->
    Bin = binary:copy(Block, ?MiB div ?BLOCK_SIZE),
    maps:foreach(fun (Impl, {ok, P, _}) ->
                         _ = caught(fun () -> Impl:call(P, erlang, byte_size, [Bin], 120000) end),
                         _ = caught(fun () -> Impl:call(P, binary, copy, [Block, ?MiB div ?BLOCK_SIZE], 120000) end);
                     (_Impl, _Failed) ->
                         ok
                 end, Peers).

%% The transfer before (the other implementation's, alternately) leaves work behind on
%%  2 CPUs: garbage collections in its controller and peer VM (stock's Erlang codec
%%  leaves lists many times the payload's size; an rpeer transfer of 100 MiB right after
%%  stock's ran at a quarter of its speed). Each transfer starts with both controllers
%%  collected and a pause for the peer VMs, longer after larger transfers.
settle(Peers, Size) ->
    _ = [erlang:garbage_collect(P) || {ok, P, _} <- maps:values(Peers)],
    timer:sleep(?TPUT_SETTLE_MS + ?TPUT_SETTLE_MS_PER_MIB * Size).

%% One transfer; a failed one restarts that implementation's peer for the next ones.
tput_once(Impl, Mode, Size, Dir, Bin, Block, {Ps, PerImpl, Wins, Cs}) ->
    Bytes = Size * ?MiB,
    Timeout = 60000 + 2000 * Size,
    case maps:get(Impl, Ps) of
        {ok, P, _} ->
            settle(Ps, Size),
            T0 = now_us(),
            Res = try
                      case Dir of
                          to_peer ->
                              Bytes = Impl:call(P, erlang, byte_size, [Bin], Timeout);
                          from_peer ->
                              R = Impl:call(P, binary, copy, [Block, Bytes div ?BLOCK_SIZE], Timeout),
                              Bytes = byte_size(R)
                      end,
                      ok
                  catch C:Reason ->
                          {failed, {C, Reason}}
                  end,
            T1 = now_us(),
            Win = {T0, T1, Mode, Size, Dir, Impl},
            case Res of
                ok ->
                    Rate = Bytes / 1.0e6 / ((T1 - T0) / 1.0e6),
                    progress("  ~p ~p ~b MiB ~p: ~s MB/s", [Impl, Mode, Size, Dir, num(Rate)]),
                    Prev = case maps:get(Impl, PerImpl, []) of
                               {failed, _} = F -> F;
                               L -> [Rate | L]
                           end,
                    {Ps, PerImpl#{Impl => Prev}, [Win | Wins], Cs};
                {failed, _} = Failed ->
                    progress("  FAILED ~p ~p ~b MB ~p: ~0P", [Impl, Mode, Size, Dir, Failed, 30]),
                    unlink(P),
                    exit(P, kill),
                    New = start_peer(Impl, Mode),
                    Cs2 = case New of {ok, NP, _} -> Cs#{NP => Impl}; _ -> Cs end,
                    {Ps#{Impl => New}, PerImpl#{Impl => Failed}, [Win | Wins], Cs2}
            end;
        Failed ->
            {Ps, PerImpl#{Impl => Failed}, Wins, Cs}
    end.

ctrls(Peers) ->
    maps:from_list([{P, Impl} || {Impl, {ok, P, _}} <- maps:to_list(Peers)]).

%% The system monitor: long_schedule events with the time they arrived and, for a port,
%% the process it is connected to.
collector(Events) ->
    receive
        {monitor, Who, long_schedule, Info} ->
            Owner = case is_port(Who) of
                        true ->
                            case erlang:port_info(Who, connected) of
                                {connected, C} -> C;
                                _ -> undefined
                            end;
                        false ->
                            Who
                    end,
            Name = case is_pid(Owner) of
                       true -> who_is(Owner);
                       false -> Who
                   end,
            collector([{now_us(), Name, Owner, Info} | Events]);
        {get, From} ->
            From ! {events, lists:reverse(Events)},
            collector(Events);
        _ ->
            collector(Events)
    end.

long_schedule_rows(Results, Events, MaxSize) ->
    lists:append(
      [case Res of
           {ok, {_Figures, Windows, Ctrls}} ->
               Classified = [{window(T, Windows), attribute(Owner, Info, Ctrls), Ms, Who, Info}
                             || {T, Who, Owner, Info} <- Events,
                                Ms <- [proplists:get_value(timeout, Info, 0)]],
               Mine = [C || C = {{M, _, _, _}, _, _, _, _} <- Classified, M =:= Mode],
               Own = fun (Impl, Pred) ->
                             Es = [{Ms, Info} || {{_, S, _, _}, Who2, Ms, _, Info} <- Mine,
                                                 Who2 =:= Impl, Pred(S)],
                             {ok, {length(Es), lists:max([0 | [M || {M, _} <- Es]]),
                                   lists:usort([locs(I) || {_, I} <- Es])}}
                     end,
               Other = fun (Impl, Pred) ->
                               Es = [Ms || {{_, S, _, WinImpl}, other, Ms, _, _} <- Mine,
                                           WinImpl =:= Impl, Pred(S)],
                               {ok, {length(Es), lists:max([0 | Es]), []}}
                       end,
               Largest = fun (S) -> S =:= MaxSize end,
               All = fun (_) -> true end,
               L = maps:from_list([{Impl, Own(Impl, Largest)} || Impl <- ?IMPLS]),
               A = maps:from_list([{Impl, Own(Impl, All)} || Impl <- ?IMPLS]),
               O = maps:from_list([{Impl, Other(Impl, Largest)} || Impl <- ?IMPLS]),
               record_locations(Mode, L),
               _ = [note(io_lib:format("long_schedule of another process during a ~p ~b MiB ~p run (~p): ~p ~b ms ~0p",
                                       [Mode, MaxSize, WinImpl, Dir, Who, Ms, locs(Info)]))
                    || {{_, S, Dir, WinImpl}, other, Ms, Who, Info} <- Mine, S =:= MaxSize],
               progress("long_schedule ~p ~b MB: ~s", [Mode, MaxSize, brief(L, events)]),
               [row(io_lib:format("long_schedule >1 ms naming the controller or its code, ~b MiB runs",
                                  [MaxSize]), Mode, events, lower, L),
                row("long_schedule >1 ms naming the controller or its code, all sizes", Mode,
                    events, lower, A),
                row(io_lib:format("long_schedule >1 ms of other processes (e.g. the bench caller) during ~b MiB runs",
                                  [MaxSize]), Mode, events, lower, O)];
           Failed ->
               [row("long_schedule >1 ms", Mode, events, lower, #{peer => Failed, rpeer => Failed})]
       end || {Mode, Res} <- Results]).

%% {Mode, Size, Dir, Impl} of the transfer running at time T (events arrive shortly
%% after they end, so a small grace period is allowed), or none.
window(T, Windows) ->
    case [{M, S, D, I} || {T0, T1, M, S, D, I} <- Windows, T >= T0, T =< T1 + 20000] of
        [W | _] -> W;
        [] -> {none, none, none, none}
    end.

attribute(Owner, Info, Ctrls) ->
    case maps:find(Owner, Ctrls) of
        {ok, Impl} ->
            Impl;
        error ->
            Mods = [M || K <- [in, out], {M, _, _} <- [proplists:get_value(K, Info)]],
            case {lists:member(rpeer, Mods) orelse lists:member(rpeer_nif, Mods),
                  lists:member(peer, Mods)} of
                {true, _} -> rpeer;
                {_, true} -> peer;
                _ -> other
            end
    end.

who_is(Port) when is_port(Port) ->
    Port;
who_is(Pid) ->
    case erlang:process_info(Pid, [registered_name, initial_call, current_function]) of
        undefined -> Pid;
        Info -> {Pid, [I || I = {_, V} <- Info, V =/= []]}
    end.

locs(Info) ->
    case proplists:get_value(port_op, Info) of
        undefined -> {proplists:get_value(in, Info), proplists:get_value(out, Info)};
        Op -> {port_op, Op}
    end.

record_locations(Mode, L) ->
    _ = [note(io_lib:format("long_schedule locations (in, out) of the ~p controller, ~p, largest size: ~0p",
                            [Impl, Mode, Locs]))
         || {Impl, {ok, {N, _, Locs}}} <- maps:to_list(L), N > 0],
    ok.

%%--------------------------------------------------------------------
%% how long rpeer's NIF calls hold a scheduler: every rpeer_nif call of an rpeer
%% controller, timed by call tracing, while it moves each size both ways (rpeer only:
%% stock peer has no NIFs). long_schedule above sees only the slices over 1 ms, whatever
%% ran in them, and also OS preemption; this times the NIF calls themselves, in the
%% scheduler thread's CPU time (cpu_timestamp: user and system time, page faults
%% included; not the time the OS gave the CPU to others, such as the busy peer VM,
%% which made single calls of 200 us take 2-4 ms of wall time).

nif_calls(#{sizes := Sizes, tput_modes := Modes}) ->
    Block = rand:bytes(?BLOCK_SIZE),
    [begin
         Res = isolate(fun () -> nif_calls_case(Mode, Sizes, Block) end, 3600000),
         Fig = case Res of
                   {ok, PerNif} ->
                       Longest = lists:max([Max || {_, {_, Max, _, _}} <- PerNif]),
                       Over = lists:sum([N || {_, {_, _, N, _}} <- PerNif]),
                       note(io_lib:format("rpeer_nif calls of the controller (CPU time), ~p: ~s", [Mode,
                            lists:join("; ", [io_lib:format("~p/~b x~b, longest ~b us (binary arguments: ~w bytes)",
                                                            [F, A, Count, Max, ArgSizes])
                                              || {{_, F, A}, {Count, Max, _, ArgSizes}} <- PerNif])])),
                       {ok, {Over, Longest, []}};
                   Failed ->
                       Failed
               end,
         progress("nif calls ~p: ~0p", [Mode, Res]),
         row(io_lib:format("rpeer_nif calls over 1 ms (and the longest) of the controller moving ~s MiB "
                           "each way (stock: no NIFs)", [lists:join(", ", [integer_to_list(S) || S <- Sizes])]),
             Mode, nif_events, lower, #{peer => {ok, none}, rpeer => Fig})
     end || Mode <- Modes].

nif_calls_case(Mode, Sizes, Block) ->
    {ok, P, _} = start_peer(rpeer, Mode),
    warm_up(#{rpeer => {ok, P, []}}, Block),
    Self = self(),
    Tracer = spawn_link(fun () -> nif_tracer(Self, #{}, #{}) end),
    _ = erlang:trace_pattern({rpeer_nif, '_', '_'}, [{'_', [], [{return_trace}]}], [local]),
    %% cpu_timestamp is node-wide: the timestamps of all tracing
    _ = erlang:trace(all, true, [cpu_timestamp]),
    1 = erlang:trace(P, true, [call, timestamp, {tracer, Tracer}]),
    _ = [begin
             timer:sleep(?TPUT_SETTLE_MS + ?TPUT_SETTLE_MS_PER_MIB * Size),
             Bytes = Size * ?MiB,
             Bytes = rpeer:call(P, erlang, byte_size, [binary:copy(Block, Bytes div ?BLOCK_SIZE)],
                                60000 + 2000 * Size),
             Bytes = byte_size(rpeer:call(P, binary, copy, [Block, Bytes div ?BLOCK_SIZE],
                                          60000 + 2000 * Size))
         end || Size <- Sizes],
    _ = erlang:trace(P, false, [call, timestamp]),
    _ = erlang:trace(all, false, [cpu_timestamp]),
    _ = erlang:trace_pattern({rpeer_nif, '_', '_'}, false, [local]),
    ok = rpeer:stop(P),
    Tracer ! {done, Self},
    receive {nif_calls, Tracer, PerNif} -> lists:sort(maps:to_list(PerNif)) after 60000 -> error(nif_tracer_timeout) end.

%% Pairs each traced call with its return: per function, {Calls, LongestUs, OverOneMs,
%%  the longest call's binary argument sizes}.
nif_tracer(Owner, Open, PerNif) ->
    receive
        {trace_ts, _Pid, call, {M, F, A}, T} ->
            nif_tracer(Owner, Open#{{M, F, length(A)} => {T, arg_sizes(A)}}, PerNif);
        {trace_ts, _Pid, return_from, MFA, _Value, T1} ->
            case maps:take(MFA, Open) of
                {{T0, Sizes}, Rest} ->
                    Us = timer:now_diff(T1, T0),
                    {Count, Max, Over, Longest} = maps:get(MFA, PerNif, {0, 0, 0, []}),
                    Counted = {Count + 1, max(Max, Us), Over + min(1, Us div 1001),
                               case Us > Max of true -> Sizes; false -> Longest end},
                    nif_tracer(Owner, Rest, PerNif#{MFA => Counted});
                error ->
                    nif_tracer(Owner, Open, PerNif)
            end;
        {done, Owner} ->
            Owner ! {nif_calls, self(), PerNif};
        _ ->
            nif_tracer(Owner, Open, PerNif)
    end.

arg_sizes(Args) ->
    [byte_size(A) || A <- Args, is_binary(A)].

%%--------------------------------------------------------------------
%% console output forwarded from the peer

console(#{lines := N, console_reps := Reps}) ->
    Cases = [{standard_io, put_chars}, {standard_io, display}, {standard_io_peer_codec, put_chars},
             {tcp, put_chars}],
    lists:append(
      [begin
           Runs = lists:append(
                    [[{Impl, isolate(fun () -> wait_idle(), console_once(Impl, Mode, Kind, N) end, 600000)}
                      || Impl <- order(I)] || I <- lists:seq(1, Reps)]),
           Fig = maps:from_list([{Impl, collect([R || {I2, R} <- Runs, I2 =:= Impl])} || Impl <- ?IMPLS]),
           Med = median_of(Fig),
           progress("console ~p ~p: ~s", [Mode, Kind, brief(Med, lps)]),
           [row(io_lib:format("console lines reaching the group leader, ~s x ~b (median of ~b)",
                              [kind_name(Kind), N, Reps]), Mode, lps, higher, Med)]
       end || {Mode, Kind} <- Cases]).

kind_name(put_chars) -> "io:put_chars(user, Line)";
kind_name(display) -> "erlang:display(Atom)".

console_once(Impl, Mode, Kind, N) ->
    Self = self(),
    GL = spawn_link(fun () -> gl_loop(#{count => 0, target => infinity, notify => Self, tail => <<>>}) end),
    Old = group_leader(),
    group_leader(GL, self()),
    Started = caught(fun () -> Impl:start_link(opts(Mode)) end),
    group_leader(Old, self()),
    P = pid_of(Started),
    GL ! {arm, N},
    Expr = case Kind of
               put_chars ->
                   "lists:foreach(fun (I) -> io:put_chars(user, [<<\"bench_line \">>, "
                   "integer_to_list(I), $\\n]) end, lists:seq(1, ~b)).";
               display ->
                   "lists:foreach(fun (_) -> erlang:display(bench_line) end, lists:seq(1, ~b))."
           end,
    {ok, Tokens, _} = erl_scan:string(lists:flatten(io_lib:format(Expr, [N]))),
    {ok, Exprs} = erl_parse:parse_exprs(Tokens),
    T0 = now_us(),
    {value, ok, _} = Impl:call(P, erl_eval, exprs, [Exprs, []], 300000),
    receive
        {gl_done, GL} -> ok
    after 60000 ->
            GL ! {count, self()},
            Got = receive {gl_count, C} -> C after 1000 -> unknown end,
            error({lines_missing, {expected, N}, {got, Got}})
    end,
    T1 = now_us(),
    ok = Impl:stop(P),
    N / ((T1 - T0) / 1.0e6).

%% A group leader that counts "bench_line" occurrences in what it is asked to write.
gl_loop(#{count := Count, target := Target, notify := Notify, tail := Tail} = St) ->
    receive
        {io_request, From, ReplyAs, Req} ->
            {Reply, Text} = io_req(Req),
            From ! {io_reply, ReplyAs, Reply},
            All = <<Tail/binary, Text/binary>>,
            New = Count + length(binary:matches(All, <<"bench_line">>)),
            Keep = min(byte_size(All), 9),
            NewTail = binary:part(All, byte_size(All) - Keep, Keep),
            (Target =/= infinity andalso Count < Target andalso New >= Target)
                andalso (Notify ! {gl_done, self()}),
            gl_loop(St#{count := New, tail := NewTail});
        {arm, N} ->
            gl_loop(St#{count := 0, target := N, tail := <<>>});
        {count, From} ->
            From ! {gl_count, Count},
            gl_loop(St);
        _ ->
            gl_loop(St)
    end.

io_req({put_chars, Enc, Chars}) ->
    {ok, to_bin(Enc, Chars)};
io_req({put_chars, Chars}) ->
    {ok, to_bin(latin1, Chars)};
io_req({put_chars, Enc, M, F, A}) ->
    try {ok, to_bin(Enc, apply(M, F, A))}
    catch _:_ -> {{error, badarg}, <<>>}
    end;
io_req({requests, Reqs}) ->
    lists:foldl(fun (R, {_, Acc}) ->
                        {Reply, T} = io_req(R),
                        {Reply, <<Acc/binary, T/binary>>}
                end, {ok, <<>>}, Reqs);
io_req(getopts) ->
    {[{binary, false}, {encoding, unicode}], <<>>};
io_req(_) ->
    {{error, enotsup}, <<>>}.

to_bin(unicode, Chars) ->
    case unicode:characters_to_binary(Chars) of
        B when is_binary(B) -> B;
        _ -> <<>>
    end;
to_bin(_, Chars) ->
    try iolist_to_binary(Chars) catch _:_ -> <<>> end.

%%--------------------------------------------------------------------
%% 50 peers started at once, wait_boot => {self(), Tag}

concurrent(#{npeers := N, conc_reps := Reps, conc_modes := Modes}) ->
    note(io_lib:format("concurrent: the ~b start_link calls return while the first peers boot on the "
                       "same CPUs; their time is mostly the caller waiting for a CPU (0.05-1.4 s for "
                       "the same code in focused reruns, either implementation), so that row has no "
                       "verdict", [N])),
    lists:append(
      [begin
           Runs = lists:append(
                    [[{Impl, isolate(fun () -> wait_idle(), concurrent_once(Impl, Mode, N) end, 600000)}
                      || Impl <- order(I)] || I <- lists:seq(1, Reps)]),
           Pick = fun (K) ->
                          maps:from_list([{Impl, collect([case R of {ok, T} -> {ok, element(K, T)}; F -> F end
                                                          || {I2, R} <- Runs, I2 =:= Impl])}
                                          || Impl <- ?IMPLS])
                  end,
           Boot = Pick(1),
           Stop = Pick(2),
           Loop = Pick(3),
           progress("concurrent ~p: ~s", [Mode, brief(median_of(Boot), ms)]),
           timer:sleep(1000),
           [row(io_lib:format("~b peers started at once, wall time until all running (median of ~b)",
                              [N, Reps]), Mode, ms, lower, median_of(Boot)),
            row(io_lib:format("... of which the ~b start_link calls returning (controller init incl. the OS spawn)",
                              [N]), Mode, ms, contended, median_of(Loop)),
            row(io_lib:format("... then stopping all ~b at once, until their OS processes are gone", [N]), Mode, ms, lower,
                median_of(Stop))]
       end || Mode <- Modes]).

concurrent_once(Impl, Mode, N) ->
    Tag = make_ref(),
    OsTag = os_tag(),
    T0 = now_us(),
    Pids = [pid_of(Impl:start_link((opts(Mode, OsTag))#{wait_boot => {self(), Tag}}))
            || _ <- lists:seq(1, N)],
    TLoop = now_us(),
    Failed = wait_started(Tag, Pids, []),
    OsPids = tagged_os_pids(OsTag),
    T1 = now_us(),
    Self = self(),
    Stoppers = [spawn_link(fun () -> Self ! {stopped, self(), caught(fun () -> Impl:stop(P) end)} end) || P <- Pids],
    Stops = [receive {stopped, S, R} -> R after 120000 -> timeout end || S <- Stoppers],
    Gone = wait_gone(OsTag, OsPids),
    T2 = now_us(),
    Gone =:= ok orelse error(Gone),
    Failed =:= [] orelse error({boot_failed, length(Failed), hd(Failed)}),
    [ok] =:= lists:usort(Stops) orelse error({stop_failed, lists:usort(Stops) -- [ok]}),
    {(T1 - T0) / 1000, (T2 - T1) / 1000, (TLoop - T0) / 1000}.

wait_started(_Tag, [], Failed) ->
    Failed;
wait_started(Tag, Pids, Failed) ->
    receive
        {Tag, {started, _Node, Pid}} ->
            wait_started(Tag, lists:delete(Pid, Pids), Failed);
        {Tag, {boot_failed, Reason, Pid}} ->
            wait_started(Tag, lists:delete(Pid, Pids), [Reason | Failed]);
        {'EXIT', Pid, Reason} when Reason =/= normal ->
            case lists:member(Pid, Pids) of
                true -> wait_started(Tag, lists:delete(Pid, Pids), [{exit, Reason} | Failed]);
                false -> wait_started(Tag, Pids, Failed)
            end
    after 180000 ->
            error({boot_timeout, {still_booting, length(Pids)}})
    end.

%%--------------------------------------------------------------------
%% the standard_io codec alone: OTP's Erlang encoder/decoder against rpeer's Rust one

codec(#{codec_mb := MB, codec_reps := Reps}) ->
    Payload = rand:bytes(MB * ?MiB),
    Bytes = byte_size(Payload),
    Enc = [begin
               T0 = now_us(),
               Wire = encode_port_data(Payload),
               T1 = now_us(),
               {Bytes / ((T1 - T0) / 1.0e6) / 1.0e6, Wire}
           end || _ <- lists:seq(1, Reps)],
    {_, Wire} = hd(Enc),
    Chunks = chunks(Wire, 65536),
    Dec = [begin
               T0 = now_us(),
               Bin = lists:foldl(fun (C, Acc) ->
                                         {_Str, Acc2} = decode_port_data(C, <<>>, Acc),
                                         Acc2
                                 end, <<>>, Chunks),
               <<Size:32, Out:Size/binary, Crc:32>> = Bin,
               Crc = erlang:crc32(Out),
               T1 = now_us(),
               Out =:= Payload orelse error(decode_mismatch),
               Bytes / ((T1 - T0) / 1.0e6) / 1.0e6
           end || _ <- lists:seq(1, Reps)],
    ErlEnc = median([R || {R, _} <- Enc]),
    ErlDec = median(Dec),
    progress("codec Erlang: encode ~.1f MB/s, decode ~.1f MB/s", [ErlEnc, ErlDec]),
    Rust = rust_codec(MB),
    RustRow = fun (Key) ->
                      case Rust of
                          {ok, Map} when is_map_key(Key, Map) -> {ok, maps:get(Key, Map)};
                          {ok, _} -> {failed, {missing, Key}};
                          Failed -> Failed
                      end
              end,
    Name = fun (S) -> io_lib:format("codec alone, ~b MiB frame: ~s", [MB, S]) end,
    [row(Name("encode (stock: encode_port_data; rpeer: encode_frame, fresh buffer)"), codec, mbs, higher,
         #{peer => {ok, ErlEnc}, rpeer => RustRow(encode_fresh)}),
     row(Name("encode (rpeer: FrameEncoder, 256 KiB parts, as the writer thread)"), codec, mbs, higher,
         #{peer => {ok, ErlEnc}, rpeer => RustRow(encode_256k_parts)}),
     row(Name("decode in 64 KiB reads (stock: decode_port_data + frame match)"), codec, mbs, higher,
         #{peer => {ok, ErlDec}, rpeer => RustRow(decode_64k_reads)})].

chunks(Bin, N) when byte_size(Bin) =< N -> [Bin];
chunks(Bin, N) -> <<C:N/binary, Rest/binary>> = Bin, [C | chunks(Rest, N)].

%% Runs bench/codec_bench (built by bench/run): "codec NAME MB MEDIAN BEST" lines.
rust_codec(MB) ->
    case os:getenv("RPEER_BENCH_CODEC_BIN") of
        false ->
            {failed, no_rust_codec_bench_binary};
        Bin ->
            Out = os:cmd(Bin ++ " " ++ integer_to_list(MB) ++ " 5 2>&1"),
            Lines = [string:lexemes(L, " ") || L <- string:lexemes(Out, "\n")],
            Map = maps:from_list([{list_to_atom(Name), list_to_float(Med)}
                                  || ["codec", Name, _, Med, _] <- Lines]),
            case map_size(Map) of
                0 -> {failed, {rust_codec_bench, string:slice(Out, 0, 300)}};
                _ -> {ok, Map}
            end
    end.

%% OTP 25.2.3 stdlib-4.2 peer.erl, verbatim: the standard_io codec of stock peer.
encode_port_data(Bytes) ->
    Size = byte_size(Bytes),
    Crc = erlang:crc32(Bytes),
    Total = <<Size:32, Bytes/binary, Crc:32>>,
    <<<<3:2, Upper:4, 3:2, 3:2, Lower:4, 3:2>> || <<Upper:4, Lower:4>> <= Total>>.

decode_port_data(<<>>, Str, Bin) ->
    {Str, Bin};
decode_port_data(<<3:2, Quad:4, 3:2, Rest/binary>>, Str, Bin) ->
    decode_port_data(Rest, Str, <<Bin/bitstring, Quad:4>>);
decode_port_data(<<Char:8, Rest/binary>>, Str, Bin) ->
    decode_port_data(Rest, <<Str/binary, Char>>, Bin).

%%--------------------------------------------------------------------
%% peers

opts(dist) -> #{name => peer:random_name(bench)};
opts(standard_io) -> #{connection => standard_io};
%% rpeer with peer's own Erlang codec on the peer side (its default with exec) instead of
%%  its agent; stock peer ignores the option (same as standard_io)
opts(standard_io_peer_codec) -> #{connection => standard_io, peer_side => peer};
opts(tcp) -> #{connection => 0};
opts(tcp_named) -> #{connection => 0, name => peer:random_name(bench)}.

%% Options with an extra (ignored) argument that marks the peer's OS processes.
opts(Mode, OsTag) -> (opts(Mode))#{args => ["-rpeer_bench_tag", OsTag]}.

os_tag() ->
    "rpbt_" ++ integer_to_list(erlang:unique_integer([positive])) ++ "_" ++ os:getpid() ++ "_".

%% The OS processes with OsTag on their command line (the peer VMs, and rpeer-wait for
%%  rpeer). The pattern does not match the shell that runs pgrep.
tagged_os_pids([First | Rest]) ->
    string:lexemes(os:cmd("pgrep -f '[" ++ [First] ++ "]" ++ Rest ++ "'"), "\n").

%% Waits (up to 60 s) until the peer's OS processes have exited: each of OsPids, found
%%  before the stop, has no thread left (pgrep alone misses a VM whose main thread has
%%  exited while its other threads still run: its command line reads empty then), and
%%  pgrep finds no process with OsTag (nothing re-forked away). One pid is watched at a
%%  time, every 1 ms, and the next ones are checked as soon as it is gone: the time is
%%  still that of the last to go, while the polling (through the file server) stays
%%  light on the CPUs the exiting processes need, whatever their number (rpeer has two
%%  per peer: the VM and its rpeer-wait; polling them all every 1 ms loaded rpeer's
%%  runs more).
wait_gone(OsTag, OsPids) ->
    wait_gone(OsTag, OsPids, now_us() + 60000000).

wait_gone(OsTag, [], Deadline) ->
    case tagged_os_pids(OsTag) of
        [] ->
            ok;
        Left ->
            case now_us() > Deadline of
                true -> {os_processes_left, length(Left)};
                false -> timer:sleep(20), wait_gone(OsTag, [], Deadline)
            end
    end;
wait_gone(OsTag, [OsPid | Rest] = OsPids, Deadline) ->
    case {os_process_gone(OsPid), now_us() > Deadline} of
        {true, _} ->
            wait_gone(OsTag, Rest, Deadline);
        {false, true} ->
            {os_processes_left, length([P || P <- OsPids, not os_process_gone(P)])};
        {false, false} ->
            timer:sleep(1),
            wait_gone(OsTag, OsPids, Deadline)
    end.

%% Gone: no /proc entry, or a zombie with no thread left running.
os_process_gone(OsPid) ->
    case file:list_dir("/proc/" ++ OsPid ++ "/task") of
        {error, _} -> true;
        {ok, [_]} -> zombie(OsPid);
        {ok, _} -> false
    end.

zombie(OsPid) ->
    case file:read_file("/proc/" ++ OsPid ++ "/stat") of
        {ok, Stat} -> binary:match(Stat, <<") Z ">>) =/= nomatch;
        {error, _} -> true
    end.

%% What `catch' gave (it is deprecated from OTP 29 on): the value, or the exception.
caught(Fun) ->
    try Fun()
    catch
        throw:Thrown -> Thrown;
        error:Reason:Stack -> {'EXIT', {Reason, Stack}};
        exit:Reason -> {'EXIT', Reason}
    end.

pid_of({ok, P, _}) when is_pid(P) -> P;
pid_of({ok, P}) when is_pid(P) -> P;
pid_of(Other) -> error({start_failed, Other}).

%% #{Impl => {ok, Pid, Acc} | {failed, Reason}}
%% The peer started first of a pair answers small calls faster, whichever implementation
%%  it is (20 pairs of stock and rpeer with `peer_side => peer': stock started first was
%%  1.09x faster, rpeer started first 1.25x), so the start order alternates too.
start_peers(Mode, Order) ->
    maps:from_list([{Impl, start_peer(Impl, Mode)} || Impl <- Order]).

start_peer(Impl, Mode) ->
    try {ok, pid_of(Impl:start_link(opts(Mode))), []}
    catch C:R -> {failed, {start, C, R}}
    end.

stop_peers(Peers) ->
    _ = [try Impl:stop(P) catch exit:_ -> ok end || {Impl, {ok, P, _}} <- maps:to_list(Peers)],
    ok.

each_ok(Peers, Fun) ->
    maps:map(fun (Impl, {ok, P, Acc}) ->
                     try {ok, P, Fun(Impl, P, Acc)}
                     catch C:R -> {failed, {C, R}}
                     end;
                 (_, Failed) ->
                     Failed
             end, Peers).

%% alternate which implementation goes first
order(I) when I rem 2 =:= 1 -> ?IMPLS;
order(_) -> lists:reverse(?IMPLS).

%% Waits until the CPUs are mostly idle (at most ?IDLE_WAIT_MS): the runs of the console
%%  and concurrent sections are short against what the run before leaves behind (50 peer
%%  VMs exiting, the load of the throughput section), which flipped their verdicts.
wait_idle() ->
    wait_idle(erlang:monotonic_time(millisecond) + ?IDLE_WAIT_MS).

wait_idle(Deadline) ->
    Before = cpu_times(),
    timer:sleep(?IDLE_SAMPLE_MS),
    After = cpu_times(),
    case {Before, After} of
        {{Busy0, Idle0}, {Busy1, Idle1}} when Idle1 - Idle0 >= ?IDLE_SHARE * (Busy1 - Busy0 + Idle1 - Idle0) ->
            ok;
        {{_, _}, {_, _}} ->
            erlang:monotonic_time(millisecond) < Deadline andalso wait_idle(Deadline),
            ok;
        _ ->
            ok %% no /proc/stat
    end.

%% {Busy, Idle} jiffies of all CPUs since boot (/proc/stat), or undefined.
cpu_times() ->
    case file:read_file("/proc/stat") of
        {ok, <<"cpu ", Rest/binary>>} ->
            [Line | _] = binary:split(Rest, <<"\n">>),
            [User, Nice, System, Idle, IoWait | More] =
                [binary_to_integer(F) || F <- binary:split(Line, <<" ">>, [global, trim_all])],
            {User + Nice + System + lists:sum(lists:sublist(More, 3)), Idle + IoWait};
        _ ->
            undefined
    end.

%% Runs Fun in a fresh process that traps exits; {ok, Result} or {failed, Reason}.
isolate(Fun, Timeout) ->
    Self = self(),
    {Pid, Ref} = spawn_monitor(
                   fun () ->
                           process_flag(trap_exit, true),
                           Res = try {ok, Fun()}
                                 catch C:R:St -> {failed, {C, R, top(St)}}
                                 end,
                           Self ! {isolated, self(), Res}
                   end),
    receive
        {isolated, Pid, Res} ->
            receive {'DOWN', Ref, process, Pid, _} -> ok end,
            Res;
        {'DOWN', Ref, process, Pid, Reason} ->
            {failed, {died, Reason}}
    after Timeout ->
            exit(Pid, kill),
            receive {'DOWN', Ref, process, Pid, _} -> ok end,
            {failed, {bench_timeout, Timeout}}
    end.

top([{M, F, A, _} | _]) when is_list(A) -> {M, F, length(A)};
top([{M, F, A, _} | _]) -> {M, F, A};
top(_) -> [].

%%--------------------------------------------------------------------
%% figures

%% [{ok, V} | {failed, R}] -> {ok, [V]} | {failed, R} (the first failure, with count)
collect(Results) ->
    case [R || {failed, R} <- Results] of
        [] -> {ok, [V || {ok, V} <- Results]};
        [R | _] = Fs ->
            note(io_lib:format("failures: ~b of ~b runs, first: ~0P", [length(Fs), length(Results), R, 40])),
            {failed, {length(Fs), length(Results), R}}
    end.

median_of(Map) ->
    maps:map(fun (_, {ok, L}) when is_list(L), L =/= [] -> {ok, median(L)};
                 (_, {ok, []}) -> {failed, no_samples};
                 (_, F) -> F
             end, Map).

median(L) ->
    S = lists:sort(L),
    N = length(S),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, S);
        0 -> (lists:nth(N div 2, S) + lists:nth(N div 2 + 1, S)) / 2
    end.

pct({ok, L}, P) when L =/= [] ->
    S = lists:sort(L),
    {ok, lists:nth(max(1, ceil(P * length(S))), S)};
pct({ok, []}, _) -> {failed, no_samples};
pct(F, _) -> F.

row(Measure, Mode, Unit, Better, Figures) ->
    #{measure => lists:flatten(Measure), mode => Mode, unit => Unit, better => Better,
      peer => maps:get(peer, Figures), rpeer => maps:get(rpeer, Figures)}.

table(Rows) ->
    Head = "| measure | mode | stock peer | rpeer | rpeer/stock | better | verdict |\n"
           "|---|---|---|---|---|---|---|\n",
    [Head | [table_row(R) || R <- Rows]].

table_row(#{measure := M, mode := Mode, unit := Unit, better := Better, peer := S, rpeer := R}) ->
    {Ratio, Verdict} = ratio(Unit, Better, S, R),
    io_lib:format("| ~s | ~s | ~s | ~s | ~s | ~s | ~s |\n",
                  [M, Mode, cell(Unit, S), cell(Unit, R), Ratio, better_cell(Better), Verdict]).

better_cell(contended) -> "-";
better_cell(Better) -> atom_to_list(Better).

ratio(nif_events, _, _, {ok, {0, _, _}}) -> {"-", "none over 1 ms"};
ratio(nif_events, _, _, {ok, {_, _, _}}) -> {"-", "rpeer: some OVER 1 ms"};
ratio(events, _, {ok, {A, _, _}}, {ok, {B, _, _}}) ->
    {"-", if B =:= 0, A =:= 0 -> "none in either";
             B =:= 0 -> "rpeer: none";
             B =< A -> "rpeer fewer or equal";
             true -> "rpeer MORE"
          end};
%% a part of a measure that is mostly waiting for the CPUs: shown, not judged
ratio(_, contended, {ok, S}, {ok, R}) when is_number(S), is_number(R), S > 0, R > 0 ->
    {num(R / S), "no verdict: OS contention (see the notes)"};
ratio(_, Better, {ok, S}, {ok, R}) when is_number(S), is_number(R), S > 0, R > 0 ->
    Q = R / S,
    Faster = case Better of lower -> 1 / Q; higher -> Q end,
    V = if Faster >= 1.05 -> io_lib:format("rpeer ~sx better", [num(Faster)]);
           Faster =< 0.95 -> io_lib:format("rpeer ~sx WORSE", [num(1 / Faster)]);
           true -> "about equal"
        end,
    {num(Q), V};
ratio(_, _, _, {failed, _}) -> {"-", "rpeer FAILED"};
ratio(_, _, {failed, _}, _) -> {"-", "stock failed"};
ratio(_, _, _, _) -> {"-", "-"}.

num(X) when X >= 100 -> integer_to_list(round(X));
num(X) when X >= 10 -> io_lib:format("~.1f", [X]);
num(X) -> io_lib:format("~.2f", [X]).

cell(_, {failed, R}) ->
    ["FAILED: ", escape(lists:flatten(io_lib:format("~0P", [R, 25])))];
cell(events, {ok, {N, Max, _}}) -> io_lib:format("~b (max ~b ms)", [N, Max]);
cell(nif_events, {ok, none}) -> "-";
cell(nif_events, {ok, {N, MaxUs, _}}) -> io_lib:format("~b (longest ~b us)", [N, MaxUs]);
cell(ms, {ok, V}) -> io_lib:format("~.1f ms", [V]);
cell(us, {ok, V}) -> [integer_to_list(round(V)), " us"];
cell(mbs, {ok, V}) -> [num(V), " MB/s"];
cell(lps, {ok, V}) -> [integer_to_list(round(V)), " lines/s"].

escape(S) -> lists:flatten(string:replace(S, "|", "\\|", all)).

brief(Map, Unit) ->
    lists:join(", ", [io_lib:format("~p ~s", [Impl, cell(Unit, maps:get(Impl, Map))]) || Impl <- ?IMPLS]).

%%--------------------------------------------------------------------
%% report

note(Text) ->
    Notes = case get(bench_notes) of undefined -> []; N -> N end,
    put(bench_notes, Notes ++ [lists:flatten(Text)]).

notes() ->
    case get(bench_notes) of
        undefined -> [];
        [] -> [];
        Ns -> ["Notes from the run:\n\n" | [["- ", escape(N), "\n"] || N <- Ns]]
    end.

header(Cfg, Started, Load0, Load1) ->
    Cpu = case file:read_file("/proc/cpuinfo") of
              {ok, Info} ->
                  case re:run(Info, "model name\\s*: ([^\n]*)", [{capture, all_but_first, binary}]) of
                      {match, [M]} -> M;
                      _ -> <<"unknown">>
                  end;
              _ -> <<"unknown">>
          end,
    Otp = case file:read_file(filename:join([code:root_dir(), "releases",
                                             erlang:system_info(otp_release), "OTP_VERSION"])) of
              {ok, V} -> string:trim(V);
              _ -> erlang:system_info(otp_release)
          end,
    Cmd = case os:getenv("RPEER_BENCH_CMD") of false -> "bench/run"; C -> C end,
    Rev = case os:getenv("RPEER_BENCH_REV") of false -> "unknown"; R -> R end,
    io_lib:format(
      "# rpeer vs stock peer: benchmark results\n\n"
      "- date: ~s\n"
      "- command: `~s` (mode ~p)\n"
      "- machine: ~s cores (nproc), ~s, Linux ~s, ~s MiB RAM\n"
      "- OTP ~s (erts ~s), ~b schedulers online\n"
      "- rpeer source: ~s; build: ~s\n"
      "- load average at start / end: ~s / ~s (the machine is shared: compare the ratios, not absolute figures)\n"
      "- settings: ~0p\n\n"
      "Both implementations run in the same origin VM (`-sname`), alternating which one goes first;\n"
      "each payload transfer starts with both controllers garbage-collected and after a pause of\n"
      "~b ms + ~b ms per MiB, for the one before to finish its trailing work.\n"
      "MiB = 2^20 bytes; MB/s = 10^6 bytes per second of payload. For times lower is better,\n"
      "for rates higher; the ratio is always rpeer/stock, the verdict says which way it goes.\n",
      [Started, Cmd, maps:get(mode, Cfg), string:trim(os:cmd("nproc")), Cpu,
       string:trim(os:cmd("uname -r")), mem_mib(), Otp, erlang:system_info(version),
       erlang:system_info(schedulers_online), Rev,
       case os:getenv("RPEER_BENCH_BUILD") of false -> "?"; B -> B end, Load0, Load1,
       maps:without([mode, sections, out], Cfg), ?TPUT_SETTLE_MS, ?TPUT_SETTLE_MS_PER_MIB]).

mem_mib() ->
    case file:read_file("/proc/meminfo") of
        {ok, <<"MemTotal:", Rest/binary>>} ->
            [Kb | _] = string:lexemes(binary_to_list(Rest), " \n"),
            integer_to_list(list_to_integer(Kb) div 1024);
        _ -> "?"
    end.

loadavg() ->
    case file:read_file("/proc/loadavg") of
        {ok, B} -> lists:join(" ", lists:sublist(string:lexemes(binary_to_list(B), " "), 3));
        _ -> "?"
    end.

progress(Fmt, Args) ->
    io:format("# " ++ Fmt ++ "~n", Args).

now_us() -> erlang:monotonic_time(microsecond).

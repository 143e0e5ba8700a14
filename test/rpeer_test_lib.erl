%%% @doc
%%% Helpers shared by the rpeer Common Test suites.
%%%
%%% == Modes ==
%%% Every suite group runs its cases in one "mode", kept in the CT Config
%%% as `{connection, Conn}':
%%%   * no `connection' key - `dist': the peer is controlled over Erlang
%%%     distribution only (the origin must be alive);
%%%   * `standard_io' - control frames over the peer's stdin/stdout;
%%%   * `0' or `{Ip, 0}' - control connection over TCP.
%%%
%%% == Peer slots ==
%%% Parallel groups start all their cases at once. To keep a small machine
%%% from starting dozens of Erlang nodes together, each case takes some
%%% "peer slots" from a limiter process (started in init_per_suite) before
%%% it runs; the slots return when the case process exits.
%%%
%%% This module is also loaded on the peers (the cases add its directory to
%%% the peer's code path), for `forward/2'.
%%% @end
-module(rpeer_test_lib).

-include_lib("stdlib/include/assert.hrl").

%% Suite and group setup
-export([
    suite_setup/2,
    suite_teardown/1,
    group_mode/2
]).

%% Modes and peer start
-export([
    mode/1,
    mode_opts/2,
    merge_opts/2,
    start_link/3,
    start/3,
    peer_call/6,
    halt_peer/4,
    down_reason/3,
    require_alive/0,
    require_epmd/0,
    test_dir/0,
    add_test_path/1
]).

%% Peer side helper
-export([forward/2]).

%% What differs between OTP releases
-export([otp_release/0]).

%% The second pass with rpeer's pool on
-export([from_pool/1]).

%% A logger handler (this module): the process in its config's `pid' gets every event
%%  it passes as {logged, Event}
-export([log/2]).

%% Another origin VM, killed with SIGKILL
-export([start_origin/4, report_origin/2, kill_origin/1]).

%% Waiting and OS processes
-export([
    wait_until/2,
    wait_for_state/3,
    os_pid_alive/1,
    os_parent_pid/1,
    os_pid_exists/1,
    os_pid_stat/1,
    wait_os_pid_gone/2,
    flush_captured/0,
    captured_text/0
]).

%% Peer slots limiter
-export([
    limiter_start/1,
    limiter_stop/0,
    acquire/1
]).

-define(LIMITER, rpeer_test_limiter).

%%--------------------------------------------------------------------
%% Suite and group setup

%% @doc For init_per_suite: like peer_SUITE, peers get one scheduler and one
%% dirty I/O thread, so that many boot quickly and do not run out of file
%% descriptors; the limiter starts with MaxPeers slots.
-spec suite_setup(proplists:proplist(), pos_integer()) -> proplists:proplist().
suite_setup(Config, MaxPeers) ->
    OldFlags = os:getenv("ERL_FLAGS"),
    os:putenv("ERL_FLAGS", "+S1 +SDio 1"),
    ok = limiter_start(MaxPeers),
    [{old_erl_flags, OldFlags} | Config].

%% @doc For end_per_suite: undoes suite_setup/2.
-spec suite_teardown(proplists:proplist()) -> ok.
suite_teardown(Config) ->
    limiter_stop(),
    case proplists:get_value(old_erl_flags, Config) of
        false -> os:unsetenv("ERL_FLAGS");
        Flags -> os:putenv("ERL_FLAGS", Flags)
    end,
    ok.

%% @doc For init_per_group: the Config of a mode group (dist, standard_io,
%% tcp, tcp_ip); any other group's Config is unchanged. The dist group is
%% skipped when the origin is not distributed.
-spec group_mode(atom(), proplists:proplist()) -> proplists:proplist() | {skip, string()}.
group_mode(dist, Config) ->
    case erlang:is_alive() of
        true -> Config;
        false -> {skip, "dist group needs a distributed origin node (run with --sname)"}
    end;
group_mode(standard_io, Config) ->
    [{connection, standard_io} | Config];
group_mode(tcp, Config) ->
    [{connection, 0} | Config];
group_mode(tcp_ip, Config) ->
    [{connection, {{127, 0, 0, 1}, 0}} | Config];
group_mode(_Group, Config) ->
    Config.

%%--------------------------------------------------------------------
%% Modes

%% @doc The mode of the current group: dist | standard_io | tcp.
-spec mode(proplists:proplist()) -> dist | standard_io | tcp.
mode(Config) ->
    case proplists:get_value(connection, Config) of
        undefined -> dist;
        standard_io -> standard_io;
        _Tcp -> tcp
    end.

%% @doc Base start options for the group's mode. In dist mode the peer
%% needs a name; it is started with the origin's cookie and without a
%% full mesh (parallel peers would otherwise all connect to each other).
-spec mode_opts(proplists:proplist(), atom()) -> map().
mode_opts(Config, Case) ->
    case proplists:get_value(connection, Config) of
        undefined ->
            #{name => rpeer:random_name(Case),
              args => ["-setcookie", atom_to_list(erlang:get_cookie()),
                       "-connect_all", "false"]};
        Conn ->
            #{connection => Conn}
    end.

%% @doc Merges start options; `args' lists are concatenated (Base first).
-spec merge_opts(map(), map()) -> map().
merge_opts(Base, Extra) ->
    Merged = maps:merge(Base, Extra),
    case {maps:find(args, Base), maps:find(args, Extra)} of
        {{ok, A1}, {ok, A2}} -> Merged#{args => A1 ++ A2};
        _ -> Merged
    end.

%% @doc rpeer:start_link/1 with the group's mode options plus Extra.
start_link(Config, Case, Extra) ->
    rpeer:start_link(merge_opts(mode_opts(Config, Case), Extra)).

%% @doc rpeer:start/1 (not linked) with the group's mode options plus Extra.
start(Config, Case, Extra) ->
    rpeer:start(merge_opts(mode_opts(Config, Case), Extra)).

%% @doc Calls M:F(A) on the peer: through erpc in dist mode (there is no
%% alternative connection), through rpeer:call/4 otherwise.
peer_call(Config, Peer, Node, M, F, A) ->
    case mode(Config) of
        dist -> erpc:call(Node, M, F, A);
        _ -> rpeer:call(Peer, M, F, A)
    end.

%% @doc Makes the peer halt with Status, without waiting.
halt_peer(Config, Peer, Node, Status) ->
    case mode(Config) of
        dist -> erpc:cast(Node, erlang, halt, [Status]);
        _ -> rpeer:cast(Peer, erlang, halt, [Status])
    end.

%% @doc The OTP release this node runs (and its peers, unless exec says otherwise).
otp_release() ->
    list_to_integer(erlang:system_info(otp_release)).

%% @doc The reason stock peer gives when the peer node halts with Status.
down_reason(Config, Node, Status) ->
    case mode(Config) of
        dist -> {nodedown, Node};
        standard_io -> {exit_status, Status};
        tcp -> tcp_closed
    end.

%% @doc ok, or a skip tuple when the origin is not distributed.
require_alive() ->
    case erlang:is_alive() of
        true -> ok;
        false -> {skip, "origin node is not distributed (start with -sname)"}
    end.

%% @doc ok, or a skip tuple when no epmd answers on this host.
require_epmd() ->
    case erl_epmd:names() of
        {ok, _} -> ok;
        {error, _} -> {skip, "epmd is not running"}
    end.

%% @doc The directory holding this module (and the suites) beam files.
test_dir() ->
    filename:dirname(code:which(?MODULE)).

%% @doc Adds the test beam directory to the peer's code path (alternative
%% connection only), so that funs and forward/2 work on the peer.
add_test_path(Peer) ->
    ?assertEqual(true, rpeer:call(Peer, code, add_path, [test_dir()])).

%%--------------------------------------------------------------------
%% Peer side

%% @doc Runs on the peer: sends Message to Dest (pid or registered name on
%% the origin) through the alternative connection (like peer_SUITE).
-spec forward(Dest :: pid() | atom(), Message :: term()) -> term().
forward(Dest, Message) ->
    group_leader() ! {message, Dest, Message}.

%%--------------------------------------------------------------------
%% Waiting

%% @doc Polls Fun every 20 ms until it returns true; fails after Timeout ms.
wait_until(Fun, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_until_loop(Fun, Deadline).

wait_until_loop(Fun, Deadline) ->
    case Fun() of
        true ->
            ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(wait_until_timeout);
                false -> timer:sleep(20), wait_until_loop(Fun, Deadline)
            end
    end.

%% @doc Polls rpeer:get_state(Peer) until Pred(State) is true and returns
%% that state; fails with the last state seen after Timeout ms.
wait_for_state(Peer, Pred, Timeout) ->
    wait_state_loop(Peer, Pred, erlang:monotonic_time(millisecond) + Timeout).

wait_state_loop(Peer, Pred, Deadline) ->
    State = rpeer:get_state(Peer),
    case Pred(State) of
        true ->
            State;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> ct:fail({peer_state_timeout, State});
                false -> timer:sleep(20), wait_state_loop(Peer, Pred, Deadline)
            end
    end.

%% @doc Whether an OS process exists and is not a zombie.
%% @doc The parent's OS pid of OS process OsPid (from /proc/OsPid/stat), or `none'
%% when it is gone.
-spec os_parent_pid(string()) -> string() | none.
os_parent_pid(OsPid) ->
    case file:read_file("/proc/" ++ OsPid ++ "/stat") of
        {ok, Stat} ->
            %% the fields after the command's closing parenthesis: state, then the parent
            [_, AfterCommand] = string:split(Stat, ") ", trailing),
            [_State, Parent | _] = string:lexemes(binary_to_list(AfterCommand), " "),
            Parent;
        {error, _} ->
            none
    end.

-spec os_pid_alive(string()) -> boolean().
os_pid_alive(OsPid) ->
    case os_pid_stat(OsPid) of
        {ok, [State | _]} ->
            State =/= <<"Z">> andalso State =/= <<"X">>;
        {error, enoent} ->
            false;
        {error, _} ->
            "yes" =:= string:trim(os:cmd("kill -0 " ++ OsPid ++ " 2>/dev/null && echo yes"))
    end.

%% @doc Whether an OS process exists at all, a zombie too: stricter than os_pid_alive/1
%% (which counts a zombie as gone).
-spec os_pid_exists(string()) -> boolean().
os_pid_exists(OsPid) ->
    os:cmd("kill -0 " ++ OsPid ++ " 2>/dev/null && echo alive") =:= "alive\n".

%% @doc The fields of /proc/OsPid/stat after the command name: state, parent pid, ...
-spec os_pid_stat(string()) -> {ok, [binary()]} | {error, file:posix()}.
os_pid_stat(OsPid) ->
    case file:read_file("/proc/" ++ OsPid ++ "/stat") of
        {ok, Stat} ->
            %% "pid (comm) S ..." - comm may hold spaces, the fields follow the last ')'
            [_, After] = string:split(Stat, ")", trailing),
            {ok, string:lexemes(After, " \n")};
        {error, _} = Error ->
            Error
    end.

%% @doc Fails unless the OS process OsPid is gone within Timeout ms.
wait_os_pid_gone(OsPid, Timeout) ->
    try wait_until(fun () -> not os_pid_alive(OsPid) end, Timeout)
    catch error:wait_until_timeout ->
            ct:fail({os_process_still_alive, OsPid,
                     string:trim(os:cmd("ps -o pid,stat,args -p " ++ OsPid))})
    end.

%% @doc Drops what ct:capture_start/0 has captured so far.
flush_captured() ->
    _ = ct:capture_get(),
    ok.

%% @doc Everything captured so far, as one flat unicode string.
captured_text() ->
    unicode:characters_to_list([unicode:characters_to_list(S) || S <- ct:capture_get()]).

%%--------------------------------------------------------------------
%% Peer slots limiter

%% @doc Starts the limiter with Max slots (not linked: it must outlive
%% init_per_suite's process).
limiter_start(Max) ->
    limiter_stop(),
    Pid = spawn(fun () -> limiter_loop(Max, #{}, queue:new()) end),
    register(?LIMITER, Pid),
    ok.

limiter_stop() ->
    case whereis(?LIMITER) of
        undefined -> ok;
        Pid ->
            MRef = monitor(process, Pid),
            exit(Pid, kill),
            receive {'DOWN', MRef, _, _, _} -> ok end
    end.

%% @doc Takes N slots for the calling process, blocking until they are free.
%% They are given back when the process exits. No-op without a limiter.
acquire(0) ->
    ok;
acquire(N) ->
    case whereis(?LIMITER) of
        undefined ->
            ok;
        Lim ->
            MRef = monitor(process, Lim),
            Lim ! {acquire, self(), N, MRef},
            receive
                {granted, MRef} -> demonitor(MRef, [flush]), ok;
                {'DOWN', MRef, _, _, _} -> ok
            end
    end.

%% Free: free slots; Holders: #{pid() => {Slots, MonitorRef}};
%% Waiting: FIFO of {Pid, N, Tag} (no overtaking, so big requests are not starved).
limiter_loop(Free, Holders, Waiting) ->
    receive
        {acquire, Pid, N, Tag} ->
            grant(Free, Holders, queue:in({Pid, N, Tag}, Waiting));
        {'DOWN', _MRef, process, Pid, _} ->
            case maps:take(Pid, Holders) of
                {{N, _}, Rest} -> grant(Free + N, Rest, Waiting);
                error -> limiter_loop(Free, Holders, Waiting)
            end
    end.

grant(Free, Holders, Waiting) ->
    case queue:peek(Waiting) of
        {value, {Pid, N, Tag}} when N =< Free; map_size(Holders) =:= 0 ->
            Pid ! {granted, Tag},
            MRef = monitor(process, Pid),
            Prev = case maps:find(Pid, Holders) of
                       {ok, {P, OldRef}} -> demonitor(OldRef, [flush]), P;
                       error -> 0
                   end,
            grant(Free - N, Holders#{Pid => {Prev + N, MRef}}, queue:drop(Waiting));
        _ ->
            limiter_loop(Free, Holders, Waiting)
    end.

%% @doc logger's handler callback: `logger:add_handler(Id, rpeer_test_lib,
%%  #{config => #{pid => Pid}})' has Pid sent `{logged, Event}' for each event.
-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {logged, Event},
    ok.

%% @doc Whether a peer's controller was booted by rpeer's pool (in the pass with the pool
%%  on): its node booted before the request, so it is running when start/1 returns, and
%%  what it printed while it booted went to the pool's group leader (see the README).
-spec from_pool(pid()) -> boolean().
from_pool(Peer) ->
    {dictionary, Dictionary} = process_info(Peer, dictionary),
    lists:member(rpeer_pool, proplists:get_value('$ancestors', Dictionary, [])).

%% @doc Starts another origin VM (distributed, with rpeer and the suite in its code path)
%%  that runs `Module:origin_main([File])', which ends by calling report_origin/2; waits
%%  for its report (up to `Tries' tenths of a second) and returns its port, its OS pid and
%%  the OS pids it reported.
-spec start_origin(proplists:proplist(), module(), atom(), pos_integer()) ->
          {port(), string(), [string()]}.
start_origin(Config, Module, Name, Tries) ->
    File = filename:join(proplists:get_value(priv_dir, Config), atom_to_list(Name) ++ "_pids"),
    Args = ["-sname", rpeer:random_name(Name), "-noshell",
            "-pa", filename:dirname(code:which(rpeer)),
            "-pa", filename:dirname(code:which(Module)),
            "-run", atom_to_list(Module), "origin_main", File],
    Port = open_port({spawn_executable, os:find_executable("erl")},
                     [{args, Args}, exit_status, binary]),
    {Origin, OsPids} = read_report(File, Tries),
    {Port, Origin, OsPids}.

read_report(_File, 0) ->
    ct:fail(origin_did_not_report);
read_report(File, Tries) ->
    case file:consult(File) of
        {ok, [{origin, Origin}, {os_pids, OsPids}]} -> {Origin, OsPids};
        _ -> ct:sleep(100), read_report(File, Tries - 1)
    end.

%% @doc In the other origin: writes its OS pid and `OsPids' to `File' (whole, or not at
%%  all) for start_origin/4, and waits to be killed.
-spec report_origin(file:filename(), [string()]) -> no_return().
report_origin(File, OsPids) ->
    Tmp = File ++ ".tmp",
    ok = file:write_file(Tmp, io_lib:format("~p.~n~p.~n", [{origin, os:getpid()}, {os_pids, OsPids}])),
    ok = file:rename(Tmp, File),
    timer:sleep(infinity).

%% @doc Kills the other origin with SIGKILL, and waits (up to 5 s) for its port's end.
-spec kill_origin({port(), string(), [string()]}) -> ok.
kill_origin({Port, Origin, _OsPids}) ->
    _ = os:cmd("kill -9 " ++ Origin),
    receive {Port, {exit_status, _}} -> ok after 5000 -> ok end.

%% @doc Checks the options of `rpeer:start/1' and `rpeer:start_link/1' before anything
%% is listened on or spawned.
%%
%% A bad option raises the error stock peer raises for it (`{invalid_arg, Arg}',
%% `not_alive', `{exec, Value}', `{shutdown, Value}'), OTP 27's
%% `{detached, cannot_detach_with_standard_io}', rpeer's `{peer_side, Value}', and, for
%% an option stock peer takes on trust, `{Option, Value}': a value of the wrong type or
%% out of range fails here, in the caller, rather than later inside the controller (or
%% never: a tcp port of 70000 would quietly listen on 4464). Options nobody knows are
%% let through, as stock peer lets them (test_server passes `start_cover').
%% The checks run in a fixed order, so a map with several bad options raises the same
%% error each time.
%% @end
-module(rpeer_options).

-export([check/1, is_stop_timeout/1]).

%% The largest timeout a receive takes, in milliseconds.
-define(LONGEST_WAIT, 4294967295).

%% A `shutdown' wait shorter than this would not give a node time to go.
-define(SHORTEST_STOP_WAIT, 1000).

%% @doc Returns `ok' for options rpeer can start a peer with; raises otherwise.
-spec check(map()) -> ok.
check(Options) ->
    ok = check_args(maps:get(args, Options, [])),
    ok = check_controllable(Options),
    ok = check_exec(Options),
    ok = check_shutdown(Options),
    ok = check_detached(Options),
    ok = check_peer_side(Options),
    maps:foreach(fun (Option, Value) ->
                         well_typed(Option, Value) orelse error({Option, Value})
                 end, Options).

%% @doc Whether `Wait' is a `disconnect_timeout()': how long `stop/1' gives the node.
-spec is_stop_timeout(term()) -> boolean().
is_stop_timeout(infinity) ->
    true;
is_stop_timeout(Wait) ->
    is_integer(Wait) andalso Wait >= ?SHORTEST_STOP_WAIT andalso Wait =< ?LONGEST_WAIT.

%%--------------------------------------------------------------------

%% Command line arguments are a list of strings; the first thing that is not a string is
%%  named (a list of characters is named by its first character, as stock peer does).
check_args(Args) when is_list(Args) ->
    case lists:dropwhile(fun io_lib:char_list/1, Args) of
        [] -> ok;
        [NotString | _] -> error({invalid_arg, NotString})
    end;
check_args(Args) ->
    error({invalid_arg, Args}).

%% A peer is controlled through its alternative connection, or, when it has a name,
%%  through the distribution, which this node must then be part of.
check_controllable(#{connection := _}) ->
    ok;
check_controllable(#{name := _}) ->
    case erlang:is_alive() of
        true -> ok;
        false -> error(not_alive)
    end;
check_controllable(_Options) ->
    error(not_alive).

%% exec is a program, or a program with the arguments that come before the node's own.
check_exec(#{exec := {Program, Leading}}) ->
    ok = exec_string(Program),
    %% a comprehension, so that a leading part that is no list fails as stock peer's does
    _ = [exec_string(Arg) || Arg <- Leading],
    ok;
check_exec(#{exec := Program}) ->
    exec_string(Program);
check_exec(_Options) ->
    ok.

exec_string(Value) ->
    case is_list(Value) andalso io_lib:char_list(Value) of
        true -> ok;
        false -> error({exec, Value})
    end.

check_shutdown(#{shutdown := Shutdown}) ->
    case stop_policy(Shutdown) of
        true -> ok;
        false -> error({shutdown, Shutdown})
    end;
check_shutdown(_Options) ->
    ok.

stop_policy(close) -> true;
stop_policy(halt) -> true;
stop_policy({halt, Wait}) -> is_stop_timeout(Wait);
stop_policy({Wait, CoverNode}) -> is_stop_timeout(Wait) andalso is_atom(CoverNode);
stop_policy(Wait) -> is_stop_timeout(Wait).

%% OTP 27 refuses `detached => false' next to `connection => standard_io'.
check_detached(#{detached := false, connection := standard_io}) ->
    error({detached, cannot_detach_with_standard_io});
check_detached(_Options) ->
    ok.

%% `peer_side => rpeer' with an alternative connection needs rpeer's beam files where
%%  a peer on this host can load them.
check_peer_side(#{peer_side := Side}) when Side =/= peer, Side =/= rpeer ->
    error({peer_side, Side});
check_peer_side(#{peer_side := rpeer, connection := _}) ->
    case rpeer_launch:agent_ebin() of
        {ok, _Ebin} -> ok;
        error -> error({peer_side, {rpeer, agent_not_installed}})
    end;
check_peer_side(_Options) ->
    ok.

%% The type of each option the checks above leave alone.
well_typed(name, Name) -> is_atom(Name) orelse is_string(Name);
well_typed(host, Host) -> is_string(Host);
well_typed(longnames, Long) -> is_boolean(Long);
well_typed(detached, Detached) -> is_boolean(Detached);
well_typed(peer_down, Down) -> Down =:= stop orelse Down =:= continue orelse Down =:= crash;
well_typed(connection, Connection) -> is_connection(Connection);
well_typed(env, Env) -> is_list(Env) andalso lists:all(fun is_variable/1, Env);
well_typed(wait_boot, Wait) -> is_boot_wait(Wait);
well_typed(post_process_args, Rewrite) -> is_function(Rewrite, 1);
well_typed(_Other, _Value) -> true.

is_connection(standard_io) -> true;
is_connection({Address, Port}) -> inet:is_ip_address(Address) andalso is_port_number(Port);
is_connection(Port) -> is_port_number(Port).

is_string(Term) -> is_list(Term) andalso io_lib:char_list(Term).

is_port_number(Port) -> is_integer(Port) andalso Port >= 0 andalso Port =< 65535.

%% An environment variable to set, or to unset (false).
is_variable({Name, false}) -> is_string(Name);
is_variable({Name, Value}) -> is_string(Name) andalso is_string(Value);
is_variable(_) -> false.

is_boot_wait(false) -> true;
is_boot_wait(infinity) -> true;
is_boot_wait({Pid, _Tag}) -> is_pid(Pid);
is_boot_wait(Wait) -> is_integer(Wait) andalso Wait >= 0 andalso Wait =< ?LONGEST_WAIT.

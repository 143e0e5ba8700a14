%%% @doc
%%% Start option suite for rpeer: option validation (errors raised in the
%%% caller before anything is spawned, exactly as stock `peer'), and the
%%% options that shape the peer's command line and environment (exec, args,
%%% env, name, host, longnames, and OTP 27's post_process_args / detached).
%%%
%%% Groups: `validation' (no peer is started), then `dist', `standard_io'
%%% and `tcp' running the same option cases once per connection kind.
%%% Cases marked "rpeer-only" in their doc cover options that stock OTP 25
%%% `peer' does not have; they are expected to fail against stock peer.
%%% @end
-module(rpeer_options_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

%% Common Test callbacks
-export([
    suite/0,
    all/0,
    groups/0,
    init_per_suite/1,
    end_per_suite/1,
    init_per_group/2,
    end_per_group/2,
    init_per_testcase/2,
    end_per_testcase/2
]).

%% Validation cases
-export([
    invalid_args_atom/0, invalid_args_atom/1,
    invalid_args_string/0, invalid_args_string/1,
    invalid_args_element/0, invalid_args_element/1,
    invalid_exec/0, invalid_exec/1,
    not_alive_without_name/0, not_alive_without_name/1,
    not_alive_origin_not_distributed/0, not_alive_origin_not_distributed/1,
    invalid_shutdown/0, invalid_shutdown/1,
    validation_order/0, validation_order/1,
    validation_in_caller/0, validation_in_caller/1,
    detached_with_standard_io/0, detached_with_standard_io/1,
    default_exec_found_as_os_does/0, default_exec_found_as_os_does/1
]).

%% Cases per connection kind
-export([
    exec_path/0, exec_path/1,
    exec_sh_wrapper/0, exec_sh_wrapper/1,
    args_app_env/0, args_app_env/1,
    args_verbatim/0, args_verbatim/1,
    env_set/0, env_set/1,
    default_exec_environment_is_erls/0, default_exec_environment_is_erls/1,
    env_unset/0, env_unset/1,
    name_atom/0, name_atom/1,
    host_localhost/0, host_localhost/1,
    host_no_wait_boot/0, host_no_wait_boot/1,
    longnames/0, longnames/1,
    detached_false/0, detached_false/1,
    post_process_args/0, post_process_args/1,
    post_process_args_input/0, post_process_args_input/1,
    option_types_checked_before_spawning/0, option_types_checked_before_spawning/1,
    random_option_maps/0, random_option_maps/1
]).

-import(rpeer_test_lib, [mode/1, mode_opts/2, merge_opts/2, peer_call/6, wait_for_state/3]).

-define(MAX_PEERS, 6).

%% Starts a peer linked to the case process, in the group's mode.
-define(START(Config, Extra), rpeer_test_lib:start_link(Config, ?FUNCTION_NAME, Extra)).

%%--------------------------------------------------------------------
%% Common Test callbacks

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [{group, validation}, {group, dist}, {group, standard_io}, {group, tcp},
     {group, random}].

groups() ->
    [{validation, [parallel], validation_cases()},
     {dist, [parallel], mode_cases() -- [longnames]},
     {standard_io, [parallel], mode_cases() -- [detached_false]},
     {tcp, [parallel], mode_cases()},
     {random, [], [random_option_maps]}].

validation_cases() ->
    [invalid_args_atom, invalid_args_string, invalid_args_element, invalid_exec,
     not_alive_without_name, not_alive_origin_not_distributed, invalid_shutdown,
     validation_order, validation_in_caller,
     detached_with_standard_io,                        %% rpeer-only
     option_types_checked_before_spawning,             %% rpeer-only
     default_exec_found_as_os_does].

mode_cases() ->
    [exec_path, exec_sh_wrapper, args_app_env, args_verbatim, env_set, env_unset,
     default_exec_environment_is_erls,
     name_atom, host_localhost, host_no_wait_boot, longnames, detached_false,
     post_process_args, post_process_args_input].   %% last two: rpeer-only

init_per_suite(Config) ->
    rpeer_test_lib:suite_setup(Config, ?MAX_PEERS).

end_per_suite(Config) ->
    rpeer_test_lib:suite_teardown(Config).

init_per_group(Group, Config) ->
    rpeer_test_lib:group_mode(Group, Config).

end_per_group(_Group, Config) ->
    proplists:delete(connection, Config).

init_per_testcase(Case, Config) ->
    Slots = case lists:member(Case, validation_cases()) of
                true -> 0;
                false -> 1
            end,
    ok = rpeer_test_lib:acquire(Slots),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%%--------------------------------------------------------------------
%% Helpers

erl_path() ->
    case os:find_executable("erl") of
        false -> ct:fail(erl_not_in_path);
        Erl -> Erl
    end.

links() ->
    {links, Links} = process_info(self(), links),
    lists:sort(Links).

%% The node runs and answers: returns the node name it reports.
check_running(Config, Peer, Node) ->
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(Node, peer_call(Config, Peer, Node, erlang, node, [])),
    Node.

%%--------------------------------------------------------------------
%% Validation cases (no peer is started)

invalid_args_atom() ->
    [{doc, "args => atom raises error {invalid_arg, atom}"}].

invalid_args_atom(Config) when is_list(Config) ->
    ?assertException(error, {invalid_arg, atom}, rpeer:start(#{args => atom})),
    ?assertException(error, {invalid_arg, atom}, rpeer:start_link(#{args => atom})).

invalid_args_string() ->
    [{doc, "args => \"string\" (a string instead of a list of strings) raises error "
      "{invalid_arg, $s}"}].

invalid_args_string(Config) when is_list(Config) ->
    ?assertException(error, {invalid_arg, $s}, rpeer:start(#{args => "string"})),
    ?assertException(error, {invalid_arg, $s},
                     rpeer:start(#{args => "string", connection => standard_io})).

invalid_args_element() ->
    [{doc, "A non-string element in args raises error {invalid_arg, Element}"}].

invalid_args_element(Config) when is_list(Config) ->
    ?assertException(error, {invalid_arg, ["2"]}, rpeer:start(#{args => ["1", ["2"]]})),
    ?assertException(error, {invalid_arg, atom}, rpeer:start(#{args => ["1", atom]})),
    ?assertException(error, {invalid_arg, <<"bin">>},
                     rpeer:start(#{args => [<<"bin">>], connection => 0})).

default_exec_found_as_os_does() ->
    [{doc, "Without exec, the program (the origin's progname) is found in PATH exactly as "
      "os:find_executable/2 finds it (rpeer reads the file information without the file "
      "server): relative and absolute names, empty, quoted and relative PATH elements"}].

default_exec_found_as_os_does(Config) when is_list(Config) ->
    Dir = ?config(priv_dir, Config),
    Script = filename:join(Dir, "runnable"),
    ok = file:write_file(Script, "#!/bin/sh\n"),
    ok = file:change_mode(Script, 8#755),
    Plain = filename:join(Dir, "plain"),
    ok = file:write_file(Plain, ""),
    Names = ["erl", "sh", "runnable", "plain", "no_such_program", Script, Plain,
             "/no/such/program", "bin/test", "./bin/test", "bin"],
    Paths = [os:getenv("PATH"), "", ":/usr/bin", "\"/usr/bin\":/bin", Dir ++ "::/usr/bin",
             "\"" ++ Dir, Dir ++ ":", "bin", "/usr/bin:" ++ Dir],
    Mismatches = [{Name, Path, Os, Ours}
                  || Name <- Names, Path <- Paths,
                     Os <- [os:find_executable(Name, Path)],
                     Ours <- [rpeer:find_executable(Name, Path)], Os =/= Ours],
    ?assertEqual([], Mismatches).

invalid_exec() ->
    [{doc, "exec => atom, {atom, []} and {\"erl\", [atom]} raise error {exec, atom}; "
      "a binary exec raises {exec, Binary}"}].

invalid_exec(Config) when is_list(Config) ->
    %% peer_SUITE's forms (name, no connection) need a distributed origin to get
    %% past the not_alive check
    Base = case erlang:is_alive() of
               true -> #{name => name};
               false -> #{name => name, connection => standard_io}
           end,
    ?assertException(error, {exec, atom}, rpeer:start(Base#{exec => atom})),
    ?assertException(error, {exec, atom}, rpeer:start(Base#{exec => {atom, []}})),
    ?assertException(error, {exec, atom}, rpeer:start(Base#{exec => {"erl", [atom]}})),
    ?assertException(error, {exec, atom},
                     rpeer:start(#{exec => atom, connection => standard_io})),
    ?assertException(error, {exec, <<"erl">>},
                     rpeer:start(#{exec => <<"erl">>, connection => 0})).

not_alive_without_name() ->
    [{doc, "Without connection and without name a peer cannot be controlled: error "
      "not_alive, from start/1 and start_link/1, on a distributed origin too"}].

not_alive_without_name(Config) when is_list(Config) ->
    ?assertException(error, not_alive, rpeer:start(#{})),
    ?assertException(error, not_alive, rpeer:start_link(#{})),
    ?assertException(error, not_alive, rpeer:start(#{args => ["-hidden"], wait_boot => false})).

not_alive_origin_not_distributed() ->
    [{doc, "On a non-distributed origin a name without connection raises error not_alive "
      "(skipped when the origin is distributed)"}].

not_alive_origin_not_distributed(Config) when is_list(Config) ->
    case erlang:is_alive() of
        true ->
            {skip, "origin is distributed"};
        false ->
            ?assertException(error, not_alive, rpeer:start(#{name => rpeer_name})),
            ?assertException(error, not_alive, rpeer:start_link(#{name => rpeer_name}))
    end.

invalid_shutdown() ->
    [{doc, "Invalid shutdown values raise error {shutdown, Value}: unknown atom, "
      "timeouts below 1000 (plain, {halt, T}, {T, Node}), above 2^32-1, non-atom CoverNode"}].

invalid_shutdown(Config) when is_list(Config) ->
    Opts = #{connection => standard_io},
    [?assertException(error, {shutdown, Bad}, rpeer:start(Opts#{shutdown => Bad}))
     || Bad <- [bad, 10, 999, 0, -1, {halt, 10}, {halt, bad}, {10, node()},
                {1000, "node"}, 16#100000000, {halt, 16#100000000}, "halt", {close}]].

validation_order() ->
    [{doc, "Options are checked in stock peer's order: args, then connection/name "
      "(not_alive), then exec, then shutdown"}].

validation_order(Config) when is_list(Config) ->
    ?assertException(error, {invalid_arg, bad},
                     rpeer:start(#{args => bad, exec => bad, shutdown => bad})),
    ?assertException(error, not_alive, rpeer:start(#{exec => bad, shutdown => bad})),
    ?assertException(error, {exec, bad},
                     rpeer:start(#{exec => bad, shutdown => bad, connection => 0})),
    ?assertException(error, {shutdown, bad},
                     rpeer:start(#{shutdown => bad, connection => standard_io})).

validation_in_caller() ->
    [{doc, "Validation errors are raised in the caller before anything is spawned: "
      "start_link/1 leaves no link, no message and no process behind"}].

validation_in_caller(Config) when is_list(Config) ->
    Links = links(),
    Procs = length(processes()),
    Ports = length(erlang:ports()),
    ?assertException(error, {invalid_arg, atom}, rpeer:start_link(#{args => atom, connection => 0})),
    ?assertException(error, {exec, 1}, rpeer:start_link(#{exec => 1, connection => standard_io})),
    ?assertException(error, {shutdown, 1}, rpeer:start_link(#{shutdown => 1, connection => 0})),
    ?assertEqual(Links, links()),
    ?assertEqual({messages, []}, process_info(self(), messages)),
    %% other cases run in parallel, so only a rough check on processes and ports
    ct:log("processes ~p -> ~p, ports ~p -> ~p",
           [Procs, length(processes()), Ports, length(erlang:ports())]).

detached_with_standard_io() ->
    [{doc, "rpeer-only (OTP 27 option, not in stock OTP 25): detached => false with "
      "connection standard_io raises error {detached, cannot_detach_with_standard_io}"}].

detached_with_standard_io(Config) when is_list(Config) ->
    %% start_link: on stock peer the option is ignored and the peer dies with this case
    ?assertException(error, {detached, cannot_detach_with_standard_io},
                     rpeer:start_link(#{connection => standard_io, detached => false,
                                        wait_boot => 5000})).

option_types_checked_before_spawning() ->
    [{doc, "rpeer-only: options stock peer does not check raise error({Option, Value}) "
      "before anything is spawned or listened on (stock fails inside, or not at all)"}].

option_types_checked_before_spawning(Config) when is_list(Config) ->
    Base = #{connection => standard_io},
    Bad = [{connection, 70000}, {connection, -1}, {connection, {{127, 0, 0, 1}, 65536}},
           {connection, {not_an_ip, 0}}, {connection, "0"}, {name, 123}, {host, localhost},
           {longnames, yes}, {detached, 1}, {peer_down, later}, {env, [{a, "b"}]},
           {env, [{"A", 1}]}, {env, bad}, {wait_boot, -1}, {wait_boot, 1 bsl 64},
           {wait_boot, {not_a_pid, tag}}, {wait_boot, soon}, {post_process_args, fun lists:sort/2}],
    Procs = length(processes()),
    [?assertException(error, {Option, Value}, rpeer:start(Base#{Option => Value}))
     || {Option, Value} <- Bad],
    ct:log("processes ~p -> ~p", [Procs, length(processes())]).

random_option_maps() ->
    [{doc, "200 random option maps (valid and invalid keys, types and ranges), each given "
      "to start/1: every start and stop returns or raises within a bound, every error is "
      "a documented one, and nothing is left behind (controllers, child OS processes, "
      "threads, pipes)"},
     {timetrap, {minutes, 8}}].

random_option_maps(Config) when is_list(Config) ->
    Seed = {erlang:unique_integer([positive]), erlang:system_time(), 7},
    ct:log("rand seed (exsss): ~p", [Seed]),
    _ = rand:seed(exsss, Seed),
    %% (warm nodes, when a pass runs with rpeer's pool on, are no leftovers)
    ok = rpeer_pool:flush(),
    Before = leftovers(),
    Outcomes = [random_start(I) || I <- lists:seq(1, 200)],
    ct:log("outcomes: ~p", [count(Outcomes)]),
    try rpeer_test_lib:wait_until(fun () -> ok = rpeer_pool:flush(), leftovers() =:= Before end,
                                  20000)
    catch error:wait_until_timeout -> ?assertEqual(Before, leftovers())
    end.

%% One start/1 with a random option map, in a process of its own (peer_down => crash
%%  may end it), then stop/1; the outcome's kind.
random_start(I) ->
    Options = random_options(I),
    Self = self(),
    {Pid, MRef} = spawn_monitor(fun () -> Self ! {self(), start_and_stop(Options)} end),
    receive
        {Pid, Outcome} ->
            erlang:demonitor(MRef, [flush]),
            Outcome;
        {'DOWN', MRef, process, Pid, Reason} ->
            ct:fail({start_process_died, Options, Reason})
    after 40000 ->
            ct:fail({no_outcome_within_40s, Options})
    end.

start_and_stop(Options) ->
    try rpeer:start(Options) of
        {ok, Peer} -> stopped(Peer);
        {ok, Peer, _Node} -> stopped(Peer);
        {error, {Errno, Path}} when is_atom(Errno), is_list(Path) -> spawn_error;
        Other -> ct:fail({undocumented_result, Options, Other})
    catch
        error:Error -> documented_error(Error, Options);
        exit:{boot_failed, _} -> boot_failed;
        exit:timeout -> boot_timeout
    end.

stopped(Peer) ->
    try rpeer:stop(Peer) of
        ok -> started
    catch
        %% peer_down => continue is the only way a failed boot leaves a controller
        %%  (wait_boot false or {Pid, Tag}: the caller holds it); it may be gone by now
        exit:noproc -> started
    end.

documented_error({invalid_arg, _}, _Options) -> invalid_option;
documented_error(not_alive, _Options) -> invalid_option;
documented_error({exec, _}, _Options) -> invalid_option;
documented_error({shutdown, _}, _Options) -> invalid_option;
documented_error({detached, cannot_detach_with_standard_io}, _Options) -> invalid_option;
documented_error({peer_side, _}, _Options) -> invalid_option;
documented_error({Option, Value} = Error, Options) ->
    case maps:find(Option, Options) of
        {ok, Value} -> invalid_option;
        _ -> ct:fail({undocumented_error, Options, Error})
    end;
documented_error(Error, Options) ->
    ct:fail({undocumented_error, Options, Error}).

random_options(I) ->
    Keys = [name, host, longnames, connection, exec, args, env, wait_boot, peer_down,
            shutdown, detached, peer_side, post_process_args, unknown_option],
    maps:from_list([{Key, pick(value_choices(Key, I))} || Key <- Keys, rand:uniform(3) =:= 1]).

%% {Valid, Invalid} values of each option; a valid one is picked 6 times in 7, so that
%%  about half of the maps start a peer.
value_choices(name, I) -> {[rpeer:random_name(lists:concat([random_, I])), list_to_atom(lists:concat([rnd_, I]))], [123, <<"bin">>]};
value_choices(host, _) -> {["localhost"], [localhost, 1]};
value_choices(longnames, _) -> {[false], [perhaps]};
value_choices(connection, _) -> {[standard_io, 0, {{127, 0, 0, 1}, 0}], [70000, -1, {bad, 0}, "0"]};
value_choices(exec, _) -> {[os:find_executable("erl"), "/nonexistent/erl", {"/bin/sh", ["-c", "exit 3"]}], [1]};
value_choices(args, _) -> {[[], ["-hidden"]], [atom, [1], "string"]};
value_choices(env, _) -> {[[{"RPEER_RANDOM", "1"}], [{"RPEER_RANDOM", false}]], [[{a, b}], bad]};
value_choices(wait_boot, _) -> {[10000, 0, false, {self(), tag}], [-1, 1 bsl 64, soon]};
value_choices(peer_down, _) -> {[stop, continue, crash], [later]};
value_choices(shutdown, _) -> {[halt, close, 2000, {halt, 2000}], [10, {halt, bad}]};
value_choices(detached, _) -> {[false, true], [1]};
value_choices(peer_side, _) -> {[peer, rpeer], [x]};
value_choices(post_process_args, _) -> {[fun (Args) -> Args end], [1]};
value_choices(unknown_option, _) -> {[anything], [anything]}.

pick({Valid, Invalid}) ->
    Choices = case rand:uniform(7) of
                  7 -> Invalid;
                  _ -> Valid
              end,
    lists:nth(rand:uniform(length(Choices)), Choices).

count(Outcomes) ->
    lists:foldl(fun (O, Acc) -> maps:update_with(O, fun (N) -> N + 1 end, 1, Acc) end, #{}, Outcomes).

%% What a start could leave: controllers, child OS processes of this VM, its threads and
%%  pipes (a channel's wakers are pipes).
leftovers() ->
    Controllers = [P || P <- processes(),
                        proc_lib:initial_call(P) =:= {rpeer, init, ['Argument__1']}],
    OsPid = os:getpid(),
    Children = [Pid || Pid <- filelib:wildcard("[0-9]*", "/proc"),
                        rpeer_test_lib:os_parent_pid(Pid) =:= OsPid],
    {ok, Tasks} = file:list_dir("/proc/self/task"),
    %% rpeer's spawner threads are a pool, long-lived by design (see spawn.rs)
    Threads = [Name || Task <- Tasks,
                       {ok, Comm} <- [file:read_file("/proc/self/task/" ++ Task ++ "/comm")],
                       Name <- [string:trim(Comm)], Name =/= <<"rpeer-spawner">>],
    #{controllers => length(Controllers), children => length(Children),
      threads => lists:sort(Threads), pipes => pipe_count()}.

pipe_count() ->
    length([Fd || Fd <- filelib:wildcard("*", "/proc/self/fd"),
                  {ok, "pipe:" ++ _} <- [file:read_link("/proc/self/fd/" ++ Fd)]]).

%%--------------------------------------------------------------------
%% Cases per connection kind

exec_path() ->
    [{doc, "exec => \"/path/to/erl\" (a plain path) starts the peer with that program"}].

exec_path(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{exec => erl_path()}),
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

exec_sh_wrapper() ->
    [{doc, "exec => {\"/bin/sh\", [\"-c\", \"exec \\\"$0\\\" \\\"$@\\\"\", Erl]}: a wrapper "
      "program gets its own arguments first, then the peer's, and the peer works"}].

exec_sh_wrapper(Config) when is_list(Config) ->
    Exec = {"/bin/sh", ["-c", "RPEER_WRAPPED=yes exec \"$0\" \"$@\"", erl_path()]},
    {ok, Peer, Node} = ?START(Config, #{exec => Exec}),
    check_running(Config, Peer, Node),
    %% the wrapper really ran
    ?assertEqual("yes", peer_call(Config, Peer, Node, os, getenv, ["RPEER_WRAPPED"])),
    rpeer:stop(Peer).

args_app_env() ->
    [{doc, "args are passed to the peer's command line: -kernel Key Value sets the "
      "application environment, custom flags are visible to init:get_argument/1"}].

args_app_env(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{args => ["-kernel", "rpeer_test_key", "bar",
                                                 "-rpeer_test_flag", "one", "two"]}),
    ?assertEqual({ok, bar}, peer_call(Config, Peer, Node, application, get_env,
                                      [kernel, rpeer_test_key])),
    ?assertEqual({ok, [["one", "two"]]},
                 peer_call(Config, Peer, Node, init, get_argument, [rpeer_test_flag])),
    rpeer:stop(Peer).

args_verbatim() ->
    [{doc, "args reach the peer verbatim, without shell expansion or splitting: spaces, "
      "quotes, $VARS, globs, empty and unicode strings"}].

args_verbatim(Config) when is_list(Config) ->
    Values = ["a b", "$HOME", "'q'\"x\"", "*", "", "back\\slash", "semi;colon", "ünï"],
    {ok, Peer, Node} = ?START(Config, #{args => ["-rpeer_verbatim" | Values]}),
    {ok, [Got]} = peer_call(Config, Peer, Node, init, get_argument, [rpeer_verbatim]),
    ?assertEqual(Values, Got),
    rpeer:stop(Peer).

env_set() ->
    [{doc, "env => [{Name, Value}] sets environment variables of the peer"}].

env_set(Config) when is_list(Config) ->
    Env = [{"RPEER_T", "x"}, {"RPEER_T_SPACES", "a b=c"}],
    {ok, Peer, Node} = ?START(Config, #{env => Env}),
    ?assertEqual("x", peer_call(Config, Peer, Node, os, getenv, ["RPEER_T"])),
    ?assertEqual("a b=c", peer_call(Config, Peer, Node, os, getenv, ["RPEER_T_SPACES"])),
    rpeer:stop(Peer).

default_exec_environment_is_erls() ->
    [{doc, "Without exec, the peer gets the variables erl's script sets (rpeer runs "
      "erlexec with them itself), over the env option as the script does"}].

default_exec_environment_is_erls(Config) when is_list(Config) ->
    Env = [{"ROOTDIR", "/nonexistent"}, {"PROGNAME", "bogus"}],
    {ok, Peer, Node} = ?START(Config, #{env => Env}),
    Root = code:root_dir(),
    BinDir = filename:join([Root, "erts-" ++ erlang:system_info(version), "bin"]),
    ?assertEqual([Root, BinDir, "beam", "erl"],
                 [peer_call(Config, Peer, Node, os, getenv, [Var])
                  || Var <- ["ROOTDIR", "BINDIR", "EMU", "PROGNAME"]]),
    ?assertEqual({ok, [["erl"]]}, peer_call(Config, Peer, Node, init, get_argument, [progname])),
    ?assertEqual(Root, peer_call(Config, Peer, Node, code, root_dir, [])),
    rpeer:stop(Peer).

env_unset() ->
    [{doc, "env => [{Name, false}] removes a variable the origin has from the peer's "
      "environment; other origin variables are inherited"}].

env_unset(Config) when is_list(Config) ->
    Suffix = integer_to_list(erlang:unique_integer([positive])),
    Unset = "RPEER_UNSET_" ++ Suffix,
    Kept = "RPEER_KEPT_" ++ Suffix,
    true = os:putenv(Unset, "present"),
    true = os:putenv(Kept, "kept"),
    try
        {ok, Peer, Node} = ?START(Config, #{env => [{Unset, false}]}),
        ?assertEqual(false, peer_call(Config, Peer, Node, os, getenv, [Unset])),
        ?assertEqual("kept", peer_call(Config, Peer, Node, os, getenv, [Kept])),
        rpeer:stop(Peer)
    after
        os:unsetenv(Unset),
        os:unsetenv(Kept)
    end.

name_atom() ->
    [{doc, "name may be an atom as well as a string; the node is Name@Host"}].

name_atom(Config) when is_list(Config) ->
    Name = list_to_atom(rpeer:random_name(?FUNCTION_NAME)),
    {ok, Peer, Node} = ?START(Config, #{name => Name}),
    ?assertMatch([_, _], string:split(atom_to_list(Node), "@")),
    ?assertEqual(atom_to_list(Name), hd(string:split(atom_to_list(Node), "@"))),
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

host_localhost() ->
    [{doc, "host => \"localhost\" makes the node Name@localhost"}].

host_localhost(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = ?START(Config, #{name => Name, host => "localhost"}),
    ?assertEqual(list_to_atom(Name ++ "@localhost"), Node),
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

host_no_wait_boot() ->
    [{doc, "With host set and wait_boot => false, start_link returns {ok, Pid, Node} at once, "
      "Node built from name and host; the peer then boots with that name"}].

host_no_wait_boot(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = ?START(Config, #{name => Name, host => "localhost", wait_boot => false}),
    ?assertEqual(list_to_atom(Name ++ "@localhost"), Node),
    ?assertEqual(running, wait_for_state(Peer, fun (S) -> S =:= running end, 15000)),
    case mode(Config) of
        dist -> rpeer_test_lib:wait_until(fun () -> lists:member(Node, nodes()) end, 5000);
        _ -> ok
    end,
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

longnames() ->
    [{doc, "longnames => true with host => \"127.0.0.1\" starts a long-names peer "
      "(alternative connections only: the short-names origin cannot reach it by dist)"}].

longnames(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = ?START(Config, #{name => Name, host => "127.0.0.1", longnames => true}),
    ?assertEqual(list_to_atom(Name ++ "@127.0.0.1"), Node),
    check_running(Config, Peer, Node),
    ?assertEqual(true, rpeer:call(Peer, net_kernel, longnames, [])),
    rpeer:stop(Peer).

detached_false() ->
    [{doc, "detached => false (OTP 27 option: the peer is not started with -detached) "
      "works over dist and tcp (stock OTP 25 ignores the option, so it passes there too)"}].

detached_false(Config) when is_list(Config) ->
    {ok, Peer, Node} = ?START(Config, #{detached => false}),
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

post_process_args() ->
    [{doc, "rpeer-only (OTP 27 option): post_process_args is applied to the final argument "
      "list; here it joins everything after -c into one string for exec => "
      "{\"/bin/sh\", [\"-c\", \"exec\", Erl]} (like OTP peer_SUITE post_process_args)"}].

post_process_args(Config) when is_list(Config) ->
    %% Unprocessed, "sh -c exec ARGS..." runs a bare `exec` and exits at once (no
    %% stray erl is left when the option is ignored); joined, it runs erl with all
    %% the arguments.
    Fun = fun (["-c" | Args]) -> ["-c", lists:flatten(lists:join($\s, Args))] end,
    {ok, Peer, Node} = ?START(Config, #{exec => {"/bin/sh", ["-c", "exec", erl_path()]},
                                        post_process_args => Fun,
                                        wait_boot => 10000}),
    check_running(Config, Peer, Node),
    rpeer:stop(Peer).

post_process_args_input() ->
    [{doc, "rpeer-only (OTP 27 option): post_process_args receives the complete argument "
      "list (exec's own arguments first, the name and the user args included) and what it "
      "returns is what the peer gets"}].

post_process_args_input(Config) when is_list(Config) ->
    Self = self(),
    Name = rpeer:random_name(?FUNCTION_NAME),
    Fun = fun (Args) -> Self ! {ppa_args, Args}, Args ++ ["-rpeer_ppa", "added"] end,
    {ok, Peer, Node} = ?START(Config, #{name => Name,
                                        exec => {erl_path(), ["-rpeer_pre", "x"]},
                                        args => ["-rpeer_user", "y"],
                                        post_process_args => Fun,
                                        wait_boot => 10000}),
    Args = receive {ppa_args, A} -> A after 0 -> ct:fail(post_process_args_not_called) end,
    ct:log("post_process_args got ~p", [Args]),
    ?assertMatch(["-rpeer_pre", "x" | _], Args),
    ?assert(lists:member(Name, Args), {name_not_in, Args}),
    ?assertMatch(["-rpeer_user", "y" | _], lists:dropwhile(fun (X) -> X =/= "-rpeer_user" end, Args)),
    ?assertEqual({ok, [["added"]]}, peer_call(Config, Peer, Node, init, get_argument, [rpeer_ppa])),
    ?assertEqual({ok, [["x"]]}, peer_call(Config, Peer, Node, init, get_argument, [rpeer_pre])),
    rpeer:stop(Peer).

%% @doc
%% Common Test helper: `test_server:start_peer/3,5' and `test_server:peer_name/2' (what
%% the `?CT_PEER' and `?CT_PEER_NAME' macros of `common_test/include/ct.hrl' expand
%% to), on rpeer. It mirrors OTP 25.2.3's test_server: the same node names (the suite
%% and test case, then a unique suffix), the same command line (`-setcookie' unless
%% given, `-pa' with the directory of the calling suite's module, `ERL_CRASH_DUMP' in
%% the log directory), and the same cover handling; only the controller is
%% `rpeer:start_link/1' instead of `peer:start_link/1'.
%%
%% Call it directly (`rpeer_ct:start_peer(Opts, ?MODULE, ?FUNCTION_NAME)'), or keep the
%% `?CT_PEER' macros and compile the suite with `{parse_transform, rpeer_transform}',
%% which routes them here.
%%
%% == Cover ==
%% When cover runs on this node (`test_server:is_cover()', as with `rebar3 ct --cover'
%% or a cover spec), the peer is started with `shutdown => {10000, CoverMainNode}', so
%% that stopping it collects its coverage (`cover:flush/1', then `init:stop()'), and
%% cover is started on the new node with the cover-compiled modules' sticky flags lifted
%% meanwhile. `start_cover => false' in the options (undocumented in OTP, meant for
%% cover's own tests) skips this, as in test_server.
%% @end
-module(rpeer_ct).

-export([peer_name/2, start_peer/3, start_peer/5]).

%% The time (ms) the peer gets to stop and hand its coverage over, when cover runs.
-define(COVER_SHUTDOWN_TIMEOUT, 10000).

%% @doc A random node name from the suite module and test case, as `?CT_PEER_NAME':
%%  `"Module-TestCase-N-OsPid"'.
-spec peer_name(Module :: atom() | string(), TestCase :: atom() | string()) -> string().
peer_name(Module, TestCase) ->
    rpeer:random_name(lists:concat([Module, "-", TestCase])).

%% @doc Starts a peer node linked to the caller, as `?CT_PEER(Opts)' does. `Args' is a
%%  list of extra command line arguments (the node gets a name from `peer_name/2'), or
%%  rpeer's start options (the name defaults to `peer_name/2'). `Module' is the calling
%%  suite: its ebin directory goes into the peer's code path.
-spec start_peer(Args :: [string()] | rpeer:start_options(), Module :: atom() | string(),
                 TestCase :: atom() | string()) ->
          {ok, rpeer:server_ref()} | {ok, rpeer:server_ref(), node()} | {error, term()}.
start_peer(Args, Module, TestCase) when is_list(Args) ->
    start_peer(#{args => Args, name => peer_name(Module, TestCase)}, Module);
start_peer(#{name := _Name} = Opts, Module, _TestCase) ->
    start_peer(Opts, Module);
start_peer(Opts, Module, TestCase) ->
    start_peer(Opts#{name => peer_name(Module, TestCase)}, Module).

%% @doc Starts a peer node running another OTP release, as `?CT_PEER(Opts, Release,
%%  PrivDir)' does (compatibility tests). `Release' is looked up as test_server does
%%  (`test_server:find_release/1', e.g. `"24"'); `not_available' when it is missing.
%%  OTP's `peer' module (which runs on the peer node) is compiled with that release's
%%  erlc into `OutDir', which goes into the peer's code path.
-spec start_peer(Args :: [string()] | rpeer:start_options(), Module :: atom() | string(),
                 TestCase :: atom() | string(), Release :: string(),
                 OutDir :: file:filename()) ->
          {ok, rpeer:server_ref()} | {ok, rpeer:server_ref(), node()} | {error, term()}
              | not_available.
start_peer(Args, Module, TestCase, Release, OutDir) when is_list(Args) ->
    start_peer(#{args => Args}, Module, TestCase, Release, OutDir);
start_peer(Opts, Module, TestCase, Release, OutDir) ->
    case test_server:find_release(Release) of
        not_available ->
            not_available;
        Erl ->
            %% remove ERL_AFLAGS, because they may contain "-emu_type debug" which does not
            %% exist for old releases. Keep ERL_FLAGS, and ERL_ZFLAGS for sometimes you
            %% might need it...
            Env = maps:get(env, Opts, []) ++ [{"ERL_AFLAGS", false}],
            NewArgs = ["-pa", peer_compile(Erl, code:which(peer), OutDir)
                       | maps:get(args, Opts, [])],
            start_peer(Opts#{exec => Erl, args => NewArgs, env => Env}, Module, TestCase)
    end.

%%--------------------------------------------------------------------
%% Internal implementation (test_server's, with rpeer as the controller)

start_peer(#{name := Name} = Opts, Module) ->
    CrashDir = test_server_sup:crash_dump_dir(),
    CrashFile = filename:join([CrashDir, lists:concat(["erl_crash_dump.", Name])]),
    Args = maps:get(args, Opts, []),
    CookieArg =
        case lists:member("-setcookie", Args) of
            false ->
                ["-setcookie", atom_to_list(erlang:get_cookie())];
            true ->
                []
        end,
    FullArgs = CookieArg ++ ["-pa", filename:dirname(code:which(Module)),
                             "-env", "ERL_CRASH_DUMP", CrashFile] ++ Args,
    %% start_cover => false is intentionally undocumented, and is not
    %%  expected to be used by anything but cover_SUITE test.
    case maps:get(start_cover, Opts, true) andalso test_server:is_cover() of
        true ->
            %% when cover is active, node must shut down gracefully, otherwise
            %% coverage information won't be sent to cover master
            CoverMain = cover:get_main_node(),
            %% (test_server hides this value from Dialyzer; rpeer's start_options()
            %%  type has it)
            Shutdown = {?COVER_SHUTDOWN_TIMEOUT, CoverMain},
            case rpeer:start_link(Opts#{args => FullArgs, shutdown => Shutdown}) of
                {ok, Peer, Node} ->
                    do_cover_for_node(Node, start),
                    {ok, Peer, Node};
                Other ->
                    Other
            end;
        false ->
            rpeer:start_link(Opts#{args => FullArgs})
    end.

%% Runs cover:CoverFunc(Node) on the main cover node, with the sticky cover-compiled
%%  modules unstuck on Node meanwhile (test_server:do_cover_for_node/2, not exported).
do_cover_for_node(Node, CoverFunc) ->
    %% In case a peer node is starting another peer node (the cover function must run
    %%  on the main node)
    MainCoverNode = cover:get_main_node(),
    Sticky = unstick_all_sticky(MainCoverNode, Node),
    _ = rpc:call(MainCoverNode, cover, CoverFunc, [Node]),
    stick_all_sticky(Node, Sticky).

unstick_all_sticky(MainCoverNode, Node) ->
    lists:filter(
      fun (M) ->
              case code:is_sticky(M) of
                  true ->
                      _ = rpc:call(Node, code, unstick_mod, [M]),
                      true;
                  false ->
                      false
              end
      end,
      rpc:call(MainCoverNode, cover, modules, [])).

stick_all_sticky(Node, Sticky) ->
    lists:foreach(fun (M) -> rpc:call(Node, code, stick_mod, [M]) end, Sticky).

%% When a different release is requested, peer.erl needs to be compiled for
%%  that specific release using the path supplied for 'erl'
peer_compile(Erl, cover_compiled, OutDir) ->
    {file, Path} = cover:is_compiled(peer),
    peer_compile(Erl, Path, OutDir);
peer_compile(Erl, ModPath, OutDir) ->
    {ok, ModSrc} = filelib:find_source(ModPath),
    Erlc = filename:join(filename:dirname(Erl), "erlc"),
    _ = cmd(Erlc, ["-o", OutDir, ModSrc]),
    OutDir.

%% Runs Exec with Args, returning its output; raises on a non-zero exit status.
cmd(Exec, Args) ->
    %% remove all ERL_AFLAGS to drop "-emu_type debug" and similar
    %% remote ERLC_COMPILE_SERVER because of a bug in pre 25.2 Erlang/OTP
    Env = [{"ERL_AFLAGS", false}, {"ERLC_USE_SERVER", false}],
    Port = open_port({spawn_executable, Exec}, [{args, Args}, {env, Env},
                                                stream, binary, exit_status, stderr_to_stdout]),
    read_std(Port, lists:join(" ", [Exec | Args]), <<>>).

read_std(Port, Exec, Out) ->
    receive
        {Port, {data, More}} ->
            read_std(Port, Exec, <<Out/binary, More/binary>>);
        {Port, {exit_status, 0}} ->
            Out;
        {Port, {exit_status, Status}} ->
            erlang:error({exit, Status, Exec, Out})
    end.

%% @doc
%% Common Test's peer helpers with rpeer as the controller: what `?CT_PEER',
%% `?CT_PEER_REL' (`?CT_PEER/3' before OTP 27) and `?CT_PEER_NAME' of
%% `common_test/include/ct.hrl' expand to (`test_server:start_peer/3,5' and
%% `test_server:peer_name/2'). Compile a suite with `{parse_transform, rpeer_transform}'
%% to route those macros here, or call this module directly.
%%
%% A peer started here looks as one started by the test_server of the OTP release this
%% node runs:
%% <ul>
%% <li>its name is `"Module-TestCase-N-OsPid"', unless the options name it;</li>
%% <li>its command line starts with this node's cookie (unless the arguments set one),
%%   the calling suite's ebin directory, and an `ERL_CRASH_DUMP' file in the crash dump
%%   directory of the run, then the caller's arguments (a peer that rpeer's pool may
%%   serve, see rpeer_pool, gets `ERL_CRASH_DUMP' set by `os:putenv/2' once started
%%   instead);</li>
%% <li>when cover runs here, `stop/1' gives the node time to send its coverage to the
%%   main cover node (`shutdown => {10000, MainCoverNode}'), and cover runs on the node.
%%   Who starts it there changed in OTP 26, see {@link cover_on_peer/2}.</li>
%% </ul>
%% @end
-module(rpeer_ct).

-export([peer_name/2, start_peer/3, start_peer/5]).
-export([cover_on_peer/2, starts_cover_itself/0]).

%% How long stop/1 waits for a node to send its coverage and stop, when cover runs.
-define(COVER_FLUSH_TIMEOUT, 10000).

%% @doc The name `?CT_PEER_NAME' gives: `"Module-TestCase-N-OsPid"'.
-spec peer_name(Module :: atom() | string(), TestCase :: atom() | string()) -> string().
peer_name(Module, TestCase) ->
    rpeer:random_name(lists:concat([Module, "-", TestCase])).

%% @doc Starts a peer linked to the caller, as `?CT_PEER(Args)' does. `Args' is either
%%  extra command line arguments, or rpeer start options (`start_cover => false' keeps
%%  cover off the node). The node is named by peer_name/2 unless the options name it.
%%  `Module' is the calling suite, whose ebin directory the node gets in its code path.
-spec start_peer(Args :: [string()] | rpeer:start_options(), Module :: atom() | string(),
                 TestCase :: atom() | string()) ->
          {ok, rpeer:server_ref()} | {ok, rpeer:server_ref(), node()} | {error, term()}.
start_peer(ArgsOrOptions, Module, TestCase) ->
    start_named(named(as_options(ArgsOrOptions), Module, TestCase), Module).

%% @doc Starts a peer running another OTP release, as `?CT_PEER_REL(Args, Release,
%%  OutDir)' does. `Release' is found by `test_server:find_release/1' (`not_available'
%%  when it is not installed). That release's erlc compiles this node's `peer' module
%%  into `OutDir', which the node gets in its code path. Its environment loses
%%  `ERL_AFLAGS', which may hold flags that only this release knows.
-spec start_peer(Args :: [string()] | rpeer:start_options(), Module :: atom() | string(),
                 TestCase :: atom() | string(), Release :: string(),
                 OutDir :: file:filename()) ->
          {ok, rpeer:server_ref()} | {ok, rpeer:server_ref(), node()} | {error, term()}
              | not_available.
start_peer(ArgsOrOptions, Module, TestCase, Release, OutDir) ->
    case test_server:find_release(Release) of
        not_available ->
            not_available;
        Erl ->
            Options = as_options(ArgsOrOptions),
            Other = Options#{exec => Erl,
                             args => ["-pa", compile_peer(Erl, OutDir) | maps:get(args, Options, [])],
                             env => maps:get(env, Options, []) ++ [{"ERL_AFLAGS", false}]},
            start_peer(other_release_cover(Other), Module, TestCase)
    end.

%% @doc Starts cover on `Node' from the main cover node, with the cover-compiled modules
%%  that are sticky on `Node' unstuck meanwhile (cover loads its own versions of them).
%%
%%  Up to OTP 25, test_server does this once the start returned. From OTP 26 on, the
%%  peer side of a dist peer calls its controller with `{starting, Node}' while it boots,
%%  and the controller does it when its `shutdown' option names a cover node (the
%%  controller of an alternative connection is never called so, and such a node runs
%%  without cover, as with stock peer); test_server no longer does it, and starts a peer
%%  of another release with `start_cover => false'. rpeer_ct follows the release it runs
%%  on: see starts_cover_itself/0.
%%
%%  An unreachable main cover node raises `{erpc, noconnection}', as in stock peer.
-spec cover_on_peer(node(), node()) -> ok.
cover_on_peer(Node, MainCoverNode) ->
    Covered = erpc:call(MainCoverNode, cover, modules, []),
    Unstuck = [Module || Module <- Covered, erpc:call(Node, code, is_sticky, [Module])],
    _ = [erpc:call(Node, code, unstick_mod, [Module]) || Module <- Unstuck],
    _ = erpc:call(MainCoverNode, cover, start, [Node]),
    _ = [erpc:call(Node, code, stick_mod, [Module]) || Module <- Unstuck],
    ok.

%%--------------------------------------------------------------------

%% The macros take either command line arguments or start options.
as_options(Args) when is_list(Args) -> #{args => Args};
as_options(Options) when is_map(Options) -> Options.

%% A peer the options do not name gets peer_name/2's name.
named(#{name := _} = Options, _Module, _TestCase) -> Options;
named(Options, Module, TestCase) -> Options#{name => peer_name(Module, TestCase)}.

start_named(#{name := Name} = Options, Module) ->
    Args = maps:get(args, Options, []),
    Cookie = case lists:member("-setcookie", Args) of
                 true -> [];
                 false -> ["-setcookie", atom_to_list(erlang:get_cookie())]
             end,
    CrashDump = filename:join(test_server_sup:crash_dump_dir(),
                              lists:concat(["erl_crash_dump.", Name])),
    Base = Options#{args => Cookie ++ ["-pa", filename:dirname(code:which(Module)) | Args]},
    %% the crash dump's name holds the node's: a peer the pool may serve gets it once
    %%  started, so that its template is the same whatever the name
    Pooled = rpeer_pool:is_on(Base),
    Full = case Pooled of
               true -> Base;
               false -> Base#{args => Cookie ++ ["-pa", filename:dirname(code:which(Module)),
                                                 "-env", "ERL_CRASH_DUMP", CrashDump | Args]}
           end,
    Started = case maps:get(start_cover, Options, true) andalso test_server:is_cover() of
                  true -> start_covered(Full, cover:get_main_node());
                  false -> rpeer:start_link(Full)
              end,
    case Started of
        {ok, _Peer, Node} when Pooled, not is_map_key(connection, Base) ->
            true = erpc:call(Node, os, putenv, ["ERL_CRASH_DUMP", CrashDump]);
        {ok, Peer, _} when Pooled ->
            true = rpeer:call(Peer, os, putenv, ["ERL_CRASH_DUMP", CrashDump]);
        _ -> ok
    end,
    Started.

%% `shutdown => {Timeout, MainCoverNode}' makes stop/1 flush the node's coverage to
%%  MainCoverNode before it stops it (and, from OTP 26 on, the controller start cover on
%%  a dist peer while it boots).
start_covered(Options, MainCoverNode) ->
    Started = rpeer:start_link(Options#{shutdown => {?COVER_FLUSH_TIMEOUT, MainCoverNode}}),
    case Started of
        {ok, _Peer, Node} ->
            starts_cover_itself() andalso cover_on_peer(Node, MainCoverNode),
            Started;
        _ ->
            Started
    end.

%% @doc Whether test_server starts cover on a peer itself once the start returned: up to
%%  OTP 25, the release whose test_server behaves so (see cover_on_peer/2); from OTP 26
%%  on, a booting dist peer has its controller do it. The version of this node's OTP
%%  decides, since rpeer_ct stands in for this node's test_server (and rpeer's pool boots
%%  its dist nodes with this node's release).
-spec starts_cover_itself() -> boolean().
starts_cover_itself() ->
    list_to_integer(erlang:system_info(otp_release)) < 26.

other_release_cover(Options) ->
    case starts_cover_itself() of
        true -> Options;
        false -> Options#{start_cover => false}
    end.

%% The other release's erlc compiles this node's peer.erl (peer:start/0 runs on the
%%  node, and must be of the node's release); a cover-compiled peer is found by the file
%%  cover compiled.
compile_peer(Erl, OutDir) ->
    Beam = case code:which(peer) of
               cover_compiled ->
                   {file, Compiled} = cover:is_compiled(peer),
                   Compiled;
               Path ->
                   Path
           end,
    {ok, Source} = filelib:find_source(Beam),
    Erlc = filename:join(filename:dirname(Erl), "erlc"),
    _ = run(Erlc, ["-o", OutDir, Source]),
    OutDir.

%% Runs Program and returns its output, or raises when it fails. Without ERL_AFLAGS
%%  (see start_peer/5) and without the compile server (which before OTP 25.2 could
%%  answer for the wrong release).
run(Program, Args) ->
    Port = open_port({spawn_executable, Program},
                     [{args, Args}, {env, [{"ERL_AFLAGS", false}, {"ERLC_USE_SERVER", false}]},
                      stream, binary, exit_status, stderr_to_stdout]),
    collect(Port, Program, Args, []).

collect(Port, Program, Args, Output) ->
    receive
        {Port, {data, Bytes}} ->
            collect(Port, Program, Args, [Output, Bytes]);
        {Port, {exit_status, 0}} ->
            iolist_to_binary(Output);
        {Port, {exit_status, Status}} ->
            error({exit, Status, lists:join(" ", [Program | Args]), iolist_to_binary(Output)})
    end.

%% @doc How a peer is started: the tcp control port it connects to, its command line,
%% the program that runs it and its environment, and the spawn itself.
%%
%% The command line has four parts, in this order: the program (the `exec' option, or
%% the program this node runs as) with a wrapper's own arguments, the node name, what
%% starts the peer's side of the control connection (OTP's `peer' module, directly or
%% through {@link rpeer_agent}), and the caller's `args'. `post_process_args' may then
%% rewrite everything after the program.
%% @end
-module(rpeer_launch).

-export([listen/3, launch/5, agent_ebin/0, agent_runs/1, find_executable/2]).
-export([connection_of/2, peer_side_of/1, node_name/1, name_flag/1]).
-export_type([listening/0, launched/0]).

-include_lib("kernel/include/file.hrl").
-include("rpeer_peer_side.hrl").

%% How long a tcp controller waits for its peer to connect, in milliseconds.
-define(ACCEPT_TIMEOUT, 60000).

%% The dead-link timeout of the tcp connection when the distribution has no tick time.
-define(DEFAULT_DEAD_LINK, 60000).

%% Where the peer connects to: the addresses it tries, in order, and the port.
-type listening() :: undefined | {[inet:ip_address()], inet:port_number()}.

%% A spawned peer: the command line it was given (before post_process_args), and its
%%  OS process as the channel whose messages carry `tag' (a standard_io peer's channel
%%  is its control connection). An `attached' process is the node itself: its exit is
%%  the peer's, and stop/1 waits for it; a -detached one is only the launcher.
-type launched() :: #{exec := file:name(), args := [string()], tag := reference(),
                      process := rpeer_nif:channel(), attached := boolean()}.

%%--------------------------------------------------------------------
%% The tcp control port

%% @doc For a tcp connection, the channel that listens for the peer and where the
%%  peer finds it. A port number alone listens on loopback for a peer on this host (no
%%  `exec'), and on every address for a peer that a wrapper starts, maybe elsewhere,
%%  which is offered this host's IPv4 addresses, loopback first; `{Ip, Port}' listens,
%%  and is offered, exactly there. Without tcp: `{ok, undefined, undefined}'.
-spec listen(reference(), map(), rpeer_frame:limit()) ->
          {ok, rpeer_nif:channel() | undefined, listening()} | {error, term()}.
listen(Tag, #{connection := {Ip, Port}} = Options, MaxFrame) when is_integer(Port) ->
    listen_on(Tag, Ip, Port, [Ip], Options, MaxFrame);
listen(Tag, #{connection := Port} = Options, MaxFrame) when is_integer(Port) ->
    Loopback = {127, 0, 0, 1},
    case is_local(Options) of
        true -> listen_on(Tag, Loopback, Port, [Loopback], Options, MaxFrame);
        false -> listen_on(Tag, {0, 0, 0, 0}, Port, ipv4_addresses(), Options, MaxFrame)
    end;
listen(_Tag, _Options, _MaxFrame) ->
    {ok, undefined, undefined}.

listen_on(Tag, Ip, Port, Offered, Options, MaxFrame) ->
    Timeouts = {?ACCEPT_TIMEOUT, dead_link_timeout()},
    case rpeer_nif:listen(Tag, Ip, Port, Timeouts, MaxFrame, verifies_peer(Options)) of
        {ok, Channel, Bound} -> {ok, Channel, {Offered, Bound}};
        {error, Reason} -> {error, {Reason, {listen, Ip, Port}}}
    end.

%% A tcp connection that dies without a word (a pulled cable, a vanished host) is taken
%%  down, with keepalive probes and TCP_USER_TIMEOUT, after as long as the distribution
%%  would wait for a silent node: the net tick time. The peer is then down with
%%  tcp_closed. In milliseconds.
dead_link_timeout() ->
    case net_kernel:get_net_ticktime() of
        ignored -> ?DEFAULT_DEAD_LINK;
        {ongoing_change_to, Seconds} -> timer:seconds(Seconds);
        Seconds -> timer:seconds(Seconds)
    end.

%% Only where rpeer can tell the peer's OS process (its own child, attached: its process
%%  group) does the listener check who connects; through a wrapper, or -detached, the
%%  first connection is taken as the peer's, as stock peer takes it.
verifies_peer(Options) ->
    is_local(Options) andalso not maps:get(detached, Options, false).

%% Whether the peer runs on this host, started by rpeer itself (no `exec' wrapper).
is_local(#{exec := {_Wrapper, _Leading}}) -> false;
is_local(_Options) -> true.

%% The IPv4 addresses of the interfaces that are up, loopback ones first. No IPv6: the
%%  listener is bound to 0.0.0.0, and OTP's peer side, handed an IPv6 address, crashes
%%  with badarg rather than trying the next address.
ipv4_addresses() ->
    {ok, Interfaces} = inet:getifaddrs(),
    Up = [Address || {_Name, Props} <- Interfaces,
                     lists:member(up, proplists:get_value(flags, Props, [])),
                     {addr, Address} <- Props, inet:is_ipv4_address(Address)],
    {Loopback, Other} = lists:partition(fun ({First, _, _, _}) -> First =:= 127 end, Up),
    %% each group in the reverse of the order the interfaces were listed in
    lists:reverse(Loopback) ++ lists:reverse(Other).

%%--------------------------------------------------------------------
%% Spawning

%% @doc Spawns the peer's OS process with its command line and environment. With a tcp
%%  `Listener', a peer on this host is the only one it accepts (when it checks at all).
-spec launch(reference(), rpeer_nif:channel() | undefined, listening(), map(),
             rpeer_frame:limit()) -> {ok, launched()} | {error, term()}.
launch(Tag, Listener, Listening, Options, MaxFrame) ->
    {Exec, Args} = command_line(Listening, Options, MaxFrame),
    Rewrite = maps:get(post_process_args, Options, fun (Same) -> Same end),
    UserEnv = maps:get(env, Options, []),
    {Program, ScriptEnv} = launch_program(Exec, UserEnv, Options),
    Detached = maps:get(detached, Options, false) =:= true,
    %% a standard_io peer's process is the control connection: its messages carry the
    %%  connection's tag
    {ProcessTag, Mode} = case Options of
                             #{connection := standard_io} -> {Tag, standard_io};
                             _ when Detached -> {make_ref(), detached};
                             _ -> {make_ref(), standard_io}
                         end,
    NativeArgs = [native(Arg) || Arg <- Rewrite(Args)],
    Env = environment(UserEnv ++ ScriptEnv),
    case rpeer_nif:spawn(ProcessTag, native(Program), NativeArgs, Env, Mode, MaxFrame) of
        {ok, Process} ->
            _ = Listener =/= undefined andalso verifies_peer(Options)
                andalso rpeer_nif:expect_peer(Listener, Process),
            {ok, #{exec => Exec, args => Args, tag => ProcessTag, process => Process,
                   attached => not Detached}};
        {error, Reason} ->
            {error, spawn_error(Reason)}
    end.

%% What a failed spawn reports: `{Errno, Path}' when the program could not be run (as
%%  open_port would crash with, but naming the path), `{Errno, spawn}' otherwise.
spawn_error({exec, Errno, Path}) ->
    {Errno, unicode:characters_to_list(Path, file:native_name_encoding())};
spawn_error(Errno) ->
    {Errno, spawn}.

%%--------------------------------------------------------------------
%% What a command line says (for rpeer:info/1)

%% @doc The control connection of a peer started with `Options' and command line
%%  `Args': standard_io, tcp to the port it was given (the one bound, when 0 was asked
%%  for), or the distribution alone.
-spec connection_of(map(), [string()]) -> standard_io | {tcp, inet:port_number()} | dist.
connection_of(#{connection := standard_io}, _Args) ->
    standard_io;
connection_of(#{connection := _}, Args) ->
    case lists:dropwhile(fun (Arg) -> Arg =/= "-origin" end, Args) of
        ["-origin", _Addresses, Port | _] -> {tcp, list_to_integer(Port)};
        _ -> dist
    end;
connection_of(_Options, _Args) ->
    dist.

%% @doc Which peer side the command line starts: rpeer's agent or OTP's peer alone.
-spec peer_side_of([string()]) -> rpeer | peer.
peer_side_of(["-user", "rpeer_agent" | _]) -> rpeer;
peer_side_of([_ | Args]) -> peer_side_of(Args);
peer_side_of([]) -> peer.

%%--------------------------------------------------------------------
%% The command line

command_line(Listening, Options, MaxFrame) ->
    {Program, WrapperArgs} = program(Options),
    {Program, WrapperArgs ++ name_args(Options) ++ peer_side_args(Listening, Options, MaxFrame)
     ++ maps:get(args, Options, [])}.

%% `-name' or `-sname' with the peer's node name; nothing for a peer that is not
%%  distributed. `host' without `name' names the peer as this node is named.
name_args(Options) ->
    case node_name(Options) of
        undefined -> [];
        Name -> [name_flag(Options), Name]
    end.

-spec node_name(rpeer:start_options()) -> string() | undefined.
node_name(#{name := Name, host := Host}) ->
    lists:concat([Name, "@", Host]);
node_name(#{name := Name}) ->
    lists:concat([Name]);
node_name(#{host := Host}) ->
    [Own | _] = string:split(atom_to_list(node()), "@"),
    lists:concat([Own, "@", Host]);
node_name(_Options) ->
    undefined.

%% Long or short names: the `longnames' option, else what this node uses; a node that
%%  is not distributed has no say, and the peer gets a short name.
-spec name_flag(rpeer:start_options()) -> string().
name_flag(Options) ->
    Long = case maps:find(longnames, Options) of
               {ok, Given} -> Given;
               error -> net_kernel:longnames()
           end,
    case Long of
        true -> "-name";
        _ShortOrIgnored -> "-sname"
    end.

%% What starts the peer's side of the control connection: standard_io, tcp (connecting
%%  back to `Listening'), or the distribution (the peer sends `{started, Node}' to
%%  this controller, whose pid it is given). A dist or tcp peer reads no input.
peer_side_args(undefined, #{connection := standard_io} = Options, MaxFrame) ->
    stdio_user(Options, MaxFrame);
peer_side_args(undefined, Options, _MaxFrame) ->
    Controller = base64:encode_to_string(term_to_binary(self())),
    detach_args(Options) ++ ["-noinput", "-user", "peer", "-origin", Controller,
                             ?HANDLER_IS_USER];
peer_side_args({Addresses, Port}, Options, MaxFrame) ->
    Listed = lists:join(",", [inet:ntoa(Address) || Address <- Addresses]),
    detach_args(Options) ++ ["-noinput" | tcp_user(Options, lists:concat(Listed), Port, MaxFrame)].

%% A dist or tcp node runs attached (its exit status and output are rpeer's) unless
%%  `detached => true' asks for -detached.
detach_args(#{detached := true}) -> ["-detached"];
detach_args(_Options) -> [].

%% The peer side of a standard_io connection: OTP's peer module, coding frames itself or
%%  through rpeer's agent, which gives it the node's standard I/O as a socket (see
%%  rpeer_agent). The agent is the default for a peer on this host (no exec), which loads
%%  it from the directory this node loads rpeer from, unless the peer's args choose a code
%%  loading mode that would not load it (embedded, minimal); a peer started through exec
%%  may run where rpeer is not installed.
stdio_user(Options, MaxFrame) ->
    case peer_side(Options) of
        {rpeer, Ebin} -> ["-pa", Ebin | rpeer_agent:user_args(MaxFrame)];
        peer -> ["-user", "peer"]
    end.

%% The peer side of a tcp connection: OTP's peer module, started directly or through
%%  rpeer's agent, which spares the boot user_sup's 100 ms wait for peer's `user' (see
%%  rpeer_agent); the same choice as for standard_io.
tcp_user(Options, Addresses, Port, MaxFrame) ->
    case peer_side(Options) of
        {rpeer, Ebin} -> ["-pa", Ebin | rpeer_agent:tcp_user_args(Addresses, Port, MaxFrame)];
        peer -> ["-user", "peer", "-origin", Addresses, integer_to_list(Port), ?HANDLER_IS_USER]
    end.

%% @doc Whether rpeer's agent can be the peer side of a node started with Options on
%%  this host, whatever peer side they ask for: the choice peer_side/1 makes by default.
-spec agent_runs(rpeer:start_options()) -> boolean().
agent_runs(Options) ->
    peer_side(maps:remove(peer_side, Options)) =/= peer.

peer_side(#{peer_side := peer}) ->
    peer;
peer_side(#{peer_side := rpeer}) ->
    {ok, Ebin} = agent_ebin(), %% rpeer_options:check/1 made sure
    {rpeer, Ebin};
peer_side(#{exec := _}) ->
    peer;
peer_side(Options) ->
    case loads_on_demand(maps:get(args, Options, [])) of
        true ->
            case agent_ebin() of
                {ok, Ebin} -> {rpeer, Ebin};
                error -> peer
            end;
        false ->
            peer
    end.

loads_on_demand(["-mode", Mode | _]) when Mode =/= "interactive" ->
    false;
loads_on_demand([_ | Args]) ->
    loads_on_demand(Args);
loads_on_demand([]) ->
    true.

%% @doc The directory of rpeer's beam files, if they are plain files (not in an
%%  archive) that a peer on this host can load; absolute, as the peer may start in
%%  another directory (a wrapper in `exec' may change it).
-spec agent_ebin() -> {ok, file:filename()} | error.
agent_ebin() ->
    case code:which(rpeer_agent) of
        Beam when is_list(Beam) ->
            Ebin = filename:absname(filename:dirname(Beam)),
            case prim_file:read_file_info(Ebin) of
                {ok, #file_info{type = directory}} -> {ok, Ebin};
                _ -> error
            end;
        _ ->
            error
    end.

%%--------------------------------------------------------------------
%% The program

%% The program and the arguments that come before the node's own: `exec' (a program,
%%  or a wrapper with its arguments), else the program this node was started as (found
%%  in PATH), else this installation's erlexec.
program(#{exec := {Wrapper, WrapperArgs}}) ->
    {Wrapper, WrapperArgs};
program(#{exec := Program}) ->
    {Program, []};
program(_Options) ->
    case init:get_argument(progname) of
        {ok, [[Name]]} -> started_as(Name, find_executable(Name));
        _ -> {erlexec(), []}
    end.

%% OTP's own test suites run nodes through the `cerl' script, which gives them a
%%  progname of the script's path and a flag ("/path/cerl -debug"): no file has that
%%  name, but the script with that flag starts a peer of the same kind.
started_as(_Name, Path) when is_list(Path) ->
    {Path, []};
started_as(Name, false) ->
    case string:split(Name, "cerl ") of
        [Dir, Flags] -> {filename:join(Dir, "cerl"), words(Flags)};
        _ -> {erlexec(), []}
    end.

%% The words of a command line: blanks outside quotes ('...' or "...") separate them, and
%%  a backslash keeps the character after it in the word (both stay). A word that is all
%%  one quoted string loses its quotes.
words(Line) ->
    words(Line, none, [], []).

words([], _Quote, Word, Words) ->
    lists:reverse(add_word(Word, Words));
words([$\\, Char | Rest], Quote, Word, Words) ->
    words(Rest, Quote, [Char, $\\ | Word], Words);
words([Blank | Rest], none, Word, Words) when Blank =:= $\s; Blank =:= $\t; Blank =:= $\n ->
    words(Rest, none, [], add_word(Word, Words));
words([Quote | Rest], none, Word, Words) when Quote =:= $"; Quote =:= $' ->
    words(Rest, Quote, [Quote | Word], Words);
words([Quote | Rest], Quote, Word, Words) ->
    words(Rest, none, [Quote | Word], Words);
words([Char | Rest], Quote, Word, Words) ->
    words(Rest, Quote, [Char | Word], Words).

add_word([], Words) ->
    Words;
add_word(Reversed, Words) ->
    [without_quotes(lists:reverse(Reversed)) | Words].

without_quotes([Quote | Inside] = Word) when Quote =:= $"; Quote =:= $' ->
    case lists:reverse(Inside) of
        [Quote | Reversed] -> lists:reverse(Reversed);
        _ -> Word
    end;
without_quotes(Word) ->
    Word.

%% The directory of this node's emulator and its launcher, erlexec.
erts_bin() ->
    filename:join([code:root_dir(), "erts-" ++ erlang:system_info(version), "bin"]).

erlexec() ->
    filename:join(erts_bin(), "erlexec").

%% The program launched for Exec, and the environment variables it needs on top. The
%%  default `erl' of this installation is a shell script that sets four variables and
%%  runs erlexec, forking five helpers on the way (dirname, basename, dyn_erl): ~4 ms of
%%  every boot. rpeer runs erlexec with those variables itself, as the script sets them.
%%  An exec option, another installation's erl, or ERL_ROOTDIR (which OTP's script
%%  honours) launch Exec as it is.
launch_program(Exec, UserEnv, Options) when not is_map_key(exec, Options) ->
    Root = code:root_dir(),
    BinDir = erts_bin(),
    Erlexec = erlexec(),
    %% The script is in both bin directories (the erts one comes first in the PATH the
    %%  VM's erlexec set).
    Script = (same_file(Exec, filename:join([Root, "bin", "erl"]))
              orelse same_file(Exec, filename:join(BinDir, "erl")))
        andalso is_executable(Erlexec)
        andalso os:getenv("ERL_ROOTDIR") =:= false
        andalso not lists:keymember("ERL_ROOTDIR", 1, UserEnv),
    case Script of
        true ->
            {Erlexec, [{"ROOTDIR", Root}, {"BINDIR", BinDir}, {"EMU", "beam"},
                       {"PROGNAME", filename:basename(Exec)}]};
        false ->
            {Exec, []}
    end;
launch_program(Exec, _UserEnv, _Options) ->
    {Exec, []}.

%% Whether two paths name the same file (through symbolic links).
same_file(A, B) ->
    case {prim_file:read_file_info(A), prim_file:read_file_info(B)} of
        {{ok, #file_info{major_device = Dev, inode = Inode}},
         {ok, #file_info{major_device = Dev, inode = Inode}}} ->
            Inode =/= 0;
        _ ->
            false
    end.

%% @doc os:find_executable/2 (on Unix), reading file information in this process:
%%  through the file server, the lookups of many peers started at once queue behind each
%%  other while the first peers' boots take the CPU (up to a second for 50 peers).
-spec find_executable(string(), string()) -> string() | false.
find_executable(Name, Path) ->
    Candidates = case filename:pathtype(Name) of
                     relative ->
                         [filename:join(path_dir(Dir), Name)
                          || Dir <- string:split(Path, ":", all)];
                     _ ->
                         [Name]
                 end,
    case lists:dropwhile(fun (File) -> not is_executable(File) end, Candidates) of
        [Exec | _] -> Exec;
        [] -> false
    end.

find_executable(Name) ->
    find_executable(Name, os:getenv("PATH", "")).

%% A PATH element as os:find_executable reads it: empty is ".", "quoted" is unquoted.
path_dir("") ->
    ".";
path_dir([$" | Rest] = Dir) ->
    case lists:reverse(Rest) of
        [$" | Unquoted] -> lists:reverse(Unquoted);
        _ -> Dir
    end;
path_dir(Dir) ->
    Dir.

%% os:find_executable's test: a regular file with any execute bit.
is_executable(File) ->
    case prim_file:read_file_info(File) of
        {ok, #file_info{type = regular, mode = Mode}} -> Mode band 8#111 =/= 0;
        _ -> false
    end.

%%--------------------------------------------------------------------
%% The environment

%% The peer's whole environment, as open_port builds it: the origin's current
%%  environment (including os:putenv changes) with the `env' option applied on top,
%%  `false' removing a variable.
environment(Extra) ->
    Current = maps:from_list([split_env(Var) || Var <- os:getenv()]),
    Env = lists:foldl(fun ({Name, false}, Acc) -> maps:remove(Name, Acc);
                          ({Name, Value}, Acc) -> Acc#{Name => Value}
                      end, Current, Extra),
    [{native(Name), native(Value)} || {Name, Value} <- maps:to_list(Env)].

split_env(Var) ->
    case string:split(Var, "=") of
        [Name, Value] -> {Name, Value};
        [Name] -> {Name, ""}
    end.

%% Strings as the OS sees them, in the VM's file name encoding.
native(String) ->
    unicode:characters_to_binary(String, unicode, file:native_name_encoding()).

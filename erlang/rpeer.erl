%% @doc
%% Drop-in replacement for OTP's `peer': starts and controls additional Erlang nodes,
%% locally or through a wrapper (ssh, docker). The API, options, return values and
%% exceptions are peer's; rename `peer:' to `rpeer:' and nothing else.
%%
%% == Terms ==
%% Origin node - Erlang VM instance that spawns additional nodes.
%% Peer node - a node spawned by the origin.
%% Control process - this gen_server, on the origin; if it terminates, the peer node
%%  terminates too.
%% Control connection - a connection between origin and peer: either the Erlang
%%  distribution, or an alternative connection (standard_io or tcp).
%% Channel - rpeer's alternative connection, owned by the Rust NIF (`rpeer_nif'):
%%  one abstraction for standard_io and tcp. It spawns the peer's OS process, encodes
%%  and writes frames on its own threads, and delivers what comes back as messages.
%%  What comes back is the exception (the peer's stdout, the tcp connection): the
%%  controller reads it through a port, as peer reads its standard_io (the VM polls the
%%  descriptor, so a reply wakes the controller directly), and the NIF decodes what the
%%  port delivers; the rest of a large frame, and the frames after it while they are
%%  large too, are read on a thread of the NIF.
%%
%% == Protocol ==
%% The peer node runs OTP's own peer module (`-user peer'), so nothing needs to be
%% installed where it runs. Frames are the external term format of (the origin sends
%% `term_to_iovec/1''s binaries, so a large binary goes out uncopied):
%%  origin to peer: `{call, Seq, M, F, A}', `{cast, M, F, A}', `{message, To, Msg}',
%%                  `{io_reply, From, ReplyAs, Reply}';
%%  peer to origin: `{started, Node}', `{reply, Seq, Class, Result}',
%%                  `{message, To, Msg}', `{io_request, From, ReplyAs, Request}'.
%% On standard_io a frame is `<<Size:32, Payload/binary, Crc32:32>>' with every byte
%% written as two `11xxxx11' bytes, interleaved with console text on the peer's stdout;
%% on tcp it is `<<Size:32, Payload/binary>>' (`{packet, 4}'). In dist mode there is no
%% alternative connection: the peer calls this process with `group_leader' (and
%% `{starting, Node}' on OTP 26+) and sends `{started, Node}'.
%% @end
-module(rpeer).

%% API
-export([
         start_link/0,
         start_link/1,
         start/1,
         stop/1,

         random_name/0,
         random_name/1,

         get_state/1,

         call/4,
         call/5,
         cast/4,
         send/3
        ]).

-export_type([server_ref/0]).

-type server_ref() :: % What stop, get_state, call, cast, send accepts
        pid().

-behaviour(gen_server).

-include_lib("kernel/include/file.hrl").
-include("rpeer_peer_side.hrl").

-ifdef(TEST).
-export([find_executable/2]).
-endif.

%% gen_server callbacks
-export([
         init/1,
         handle_call/3,
         handle_cast/2,
         handle_info/2,
         terminate/2
        ]).

%% Origin node will listen to the specified port (port 0 is auto-select),
%%  or specified IP/Port, and expect peer node to connect to this port.
-type connection() ::
        Port :: 0..65535 |
        {inet:ip_address(), 0..65535} |
        standard_io.

%% Specification for boot waiting
-type wait_boot() ::
        timeout() |                 %% wait for node to boot (default, 15 sec),
        {pid(), Tag :: term()} |    %% do not wait, send {Tag, {started, node(), pid()}} to Pid when node boots
        false.                      %% don't wait, don't notify

-type exec() ::
        file:name() |               %% path to "erl" (default is init:get_argument(progname))
        {file:name(), [string()]}.  %% SSH support: {"/usr/bin/ssh", ["account@host_b", "/usr/bin/erl"]}

%% Peer node start options
-type start_options() ::
        #{
          name => atom() | string(),          %% node name (part before @), if not defined, peer
                                              %%  starts in non-distributed mode (requires alternative connection)
          longnames => boolean(),             %% long/short names (default is net_kernel:longnames(), and shortnames)
          host => string(),                   %% force hostname (when not specified, actual peer node hostname is used)
          peer_down => stop | continue | crash,   %% stop (default): when peer terminates, peer control process
                                              %%  stops normally regardless of the reason.
                                              %% continue: when peer terminates, peer control process stays up
                                              %%  saving exit reason in the state
                                              %% crash: when peer terminates, origin process
                                              %%  terminates with underlying reason
          connection => connection(),         %% alternative connection specification
          exec => exec(),                     %% path to executable, or SSH/Docker support
          detached => boolean(),              %% start the node with -detached (default true; not with standard_io)
          args => [string()],                 %% additional command line parameters to append
          post_process_args =>
              fun(([string()]) -> [string()]),%% rewrites the final argument list (e.g. for a wrapper)
          peer_side => peer | rpeer,          %% how the peer node starts OTP's peer module:
                                              %%  `rpeer' through rpeer_agent (standard_io coded by
                                              %%  rpeer's Rust codec, 50-400x faster; tcp booting
                                              %%  without user_sup's 100 ms wait; rpeer's code path
                                              %%  is added to the command line, so its files must
                                              %%  be there: the default without exec) or `peer'
                                              %%  directly, standard_io with peer's own Erlang
                                              %%  codec (nothing needed where the peer runs: the
                                              %%  default with exec)
          env => [{string(), string() | false}],  %% additional environment variables (false unsets)
          wait_boot => wait_boot(),           %% default is synchronous start with 15 sec timeout
          shutdown => close |                 %% close supervision channel
                      halt |                  %% stop node using erlang:halt() wait default timeout for nodedown (the default)
                      {halt, disconnect_timeout()} |  %% stop node using erlang:halt() wait timeout() for nodedown
                      disconnect_timeout() |  %% send init:stop() request and wait up to specified timeout for nodedown
                      {disconnect_timeout(), CoverMainNode :: node()} %% as above, flushing cover data first
         }.

%% Peer node states
-type peer_state() :: booting | running | {down, Reason :: term()}.

-export_type([
              start_options/0,
              peer_state/0,
              exec/0,
              disconnect_timeout/0
             ]).

%% Maximum integer timeout value in a receive...
-define(MAX_INT_TIMEOUT, 4294967295).

%% Default time we wait for distributed connection to be removed,
%% when shutdown type is halt, before we disconnect from the node...
-define(DEFAULT_HALT_DISCONNECT_TIMEOUT, 5000).

%% Minimum time we wait for distributed connection to be removed,
%% before we disconnect from the node (except in the shutdown
%% close case)...
-define(MIN_DISCONNECT_TIMEOUT, 1000).

%% Socket accept timeout, for TCP connection.
-define(ACCEPT_TIMEOUT, 60000).

%% Synchronous RPC timeout for alternative connection.
-define(SYNC_RPC_TIMEOUT, 5000).

%% Default timeout for peer node to boot.
-define(WAIT_BOOT_TIMEOUT, 15000).

%% How much of the peer's latest console and stderr output is kept, for boot failures.
-define(OUTPUT_TAIL, 4096).

%% Marks each line the peer writes to stderr in the group leader's output.
-define(STDERR_PREFIX, <<"[stderr] ">>).

%% How long an exit status of the peer's OS process waits for the end of its stdout
%%  (a process the peer started may hold it open).
-define(STDOUT_GRACE, 2000).

%% How long stop/1 waits for a killed peer's OS process to be gone.
-define(KILL_WAIT, 5000).

%% Where start_it/2 keeps the output of a peer that failed to boot (see rpeer_output).
-define(BOOT_OUTPUT_KEY, '$rpeer_last_boot_output').

-type disconnect_timeout() :: ?MIN_DISCONNECT_TIMEOUT..?MAX_INT_TIMEOUT | infinity.

%% @doc Creates random node name, using "peer" as prefix.
-spec random_name() -> string().
random_name() ->
    random_name(peer).

%% @doc Creates sufficiently random node name,
%%      using OS process ID for origin VM, resulting name
%%      looks like prefix-3-7161
-spec random_name(Prefix :: string() | atom()) -> string().
random_name(Prefix) ->
    OsPid = os:getpid(),
    Uniq = erlang:unique_integer([positive]),
    lists:concat([Prefix, "-", Uniq, "-", OsPid]).

%% @doc Starts a distributed node with random name, on this host,
%%      and waits for that node to boot. Returns full node name.
-spec start_link() -> {ok, pid(), node()} | {error, Reason :: term()}.
start_link() ->
    start_link(#{name => random_name()}).

%% @doc Starts peer node, linked to the calling process.
%%      Accepts additional command line arguments and
%%      other important options.
-spec start_link(start_options()) -> {ok, pid()} | {ok, pid(), node()} | {error, Reason}
              when Reason :: term().
start_link(Options) ->
    start_it(Options, start_link).

%% @doc Starts peer node, not linked to the calling process.
-spec start(start_options()) -> {ok, pid()} | {ok, pid(), node()} | {error, Reason}
              when Reason :: term().
start(Options) ->
    start_it(Options, start).

%% @doc Stops controlling process, shutting down peer node synchronously
-spec stop(Dest :: server_ref()) -> ok.
stop(Dest) ->
    gen_server:stop(Dest).

%% @doc returns peer node state.
-spec get_state(Dest :: server_ref()) -> peer_state().
get_state(Dest) ->
    gen_server:call(Dest, get_state).

%% @doc Calls M:F(A) remotely, via alternative connection, with default 5 seconds timeout
-spec call(Dest :: server_ref(), Module :: module(), Function :: atom(),
           Args :: [term()]) -> Result :: term().
call(Dest, M, F, A) ->
    call(Dest, M, F, A, ?SYNC_RPC_TIMEOUT).

%% @doc Call M:F(A) remotely, timeout is explicitly specified
-spec call(Dest :: server_ref(), Module :: module(), Function :: atom(),
           Args :: [term()], Timeout :: timeout()) -> Result :: term().
call(Dest, M, F, A, Timeout) ->
    case gen_server:call(Dest, {call, M, F, A}, Timeout) of
        {ok, Reply} ->
            Reply;
        {Class, {Reason, Stack}} ->
            erlang:raise(Class, Reason, Stack);
        {error, Reason} ->
            erlang:error(Reason)
    end.

%% @doc Cast M:F(A) remotely, don't care about the result
-spec cast(Dest :: server_ref(), Module :: module(), Function :: atom(), Args :: [term()]) -> ok.
cast(Dest, M, F, A) ->
    ok = rpeer_frame:fits({cast, M, F, A}),
    gen_server:cast(Dest, {cast, M, F, A}).

%% @doc Sends a message to pid or named process on the peer node
%%  using alternative connection. No delivery guarantee.
-spec send(Dest :: server_ref(), To :: pid() | atom(), Message :: term()) -> ok.
send(Dest, To, Message) ->
    ok = rpeer_frame:fits({message, To, Message}),
    gen_server:cast(Dest, {send, To, Message}).

%%--------------------------------------------------------------------
%%% gen_server callbacks

-record(peer_state, {
          options :: start_options(),
          %% full node name, can be 'undefined'
          node :: atom(),
          %% debugging information: executable and arguments used to
          %%  start the peer
          exec :: file:name(),
          args :: [string()],
          %% the alternative connection's channel (standard_io or tcp), from init on
          channel :: undefined | rpeer_nif:channel(),
          %% tags the channel's messages: {rpeer, Tag, Event}
          tag :: reference(),
          %% the largest frame either way (see rpeer_frame), read at the start
          max_frame :: rpeer_frame:limit(),
          %% the channel once frames can be sent: after the tcp peer connected, and
          %%  until the peer is gone
          connection :: undefined | rpeer_nif:channel(),
          %% the peer's OS process while it runs, with the tag of its messages (for a
          %%  standard_io peer, its channel and tag): its output is forwarded, and its
          %%  exit is the peer's unless it was started -detached
          launcher :: undefined | {reference(), rpeer_nif:channel(), Attached :: boolean()},
          %% the incoming streams we read, by whose events they carry: the stdout of the
          %%  peer's OS process (spawned with pipes; a standard_io peer's channel), a tcp
          %%  peer's connection (the channel); what reads each (a port, or while a large
          %%  frame comes in, the channel's thread) and the channel that decodes it
          incoming = #{} :: #{channel | launcher => {port() | thread, rpeer_nif:channel()}},
          %% an exit status that came before the end of stdout: handled after it, as a
          %%  port's exit_status follows its eof (or once ?STDOUT_GRACE passed with
          %%  nothing read), with the grace timer and the stdout bytes read at its start
          exit_held :: undefined | {channel | launcher, {exit_status, term()}, reference(),
                                    non_neg_integer()},
          %% the latest console and stderr output of the peer, at most ?OUTPUT_TAIL bytes
          output = <<>> :: binary(),
          %% whether the next stderr text starts a line (and gets ?STDERR_PREFIX)
          stderr_line_start = true :: boolean(),
          %% peer state
          peer_state = booting :: peer_state(),
          %% who to tell when the node booted or failed: start_it/2 waiting
          %%  ({wait, ...}: also gets the output of a failed boot), a wait_boot
          %%  {Pid, Tag}, or nobody
          notify = false :: false | {pid(), term()} | {wait, pid(), reference()},
          %% counter (reference) for calls.
          %% it is not possible to use erlang reference, or pid,
          %%  because it changes when node becomes distributed dynamically.
          seq = 0 :: non_neg_integer(),
          %% outstanding calls
          outstanding = #{} :: #{non_neg_integer() => gen_server:from()}
         }).

-type state() :: #peer_state{}.

-spec init([term()]) -> {ok, state()} | {stop, term()}.
init([Notify, Options, MaxFrame]) ->
    process_flag(trap_exit, true), %% need this to ensure terminate/2 is called
    Tag = make_ref(),
    case maybe_listen(Tag, Options, MaxFrame) of
        {ok, Channel, Listen} ->
            {Exec, Args} = command_line(Listen, Options, MaxFrame),
            PostProcessArgs = maps:get(post_process_args, Options, fun (As) -> As end),
            FinalArgs = PostProcessArgs(Args),
            UserEnv = maps:get(env, Options, []),
            {Program, ScriptEnv} = launch_program(Exec, UserEnv, Options),
            Env = environment(UserEnv ++ ScriptEnv),
            Detached = maps:get(detached, Options, false) =:= true,
            {SpawnTag, Mode} = case Options of
                                   #{connection := standard_io} -> {Tag, standard_io};
                                   _ when Detached -> {make_ref(), detached};
                                   _ -> {make_ref(), standard_io}
                               end,
            case rpeer_nif:spawn(SpawnTag, native(Program), [native(A) || A <- FinalArgs], Env, Mode,
                                 MaxFrame) of
                {ok, Spawned} ->
                    _ = Channel =/= undefined andalso verifies_peer(Options)
                        andalso rpeer_nif:expect_peer(Channel, Spawned),
                    State = #peer_state{options = saved_options(Options), notify = Notify,
                                        args = Args, exec = Exec, tag = Tag,
                                        max_frame = MaxFrame},
                    Launched = State#peer_state{launcher = {SpawnTag, Spawned, not Detached}},
                    {ok, read_stdout(Spawned, connected(Spawned, Channel, Launched))};
                {error, Reason} ->
                    Channel =/= undefined andalso rpeer_nif:close(Channel),
                    {stop, spawn_error(Reason)}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

%% Remove the default 'halt' shutdown option if present; the default is
%% defined in terminate()...
saved_options(#{shutdown := halt} = Options) ->
    maps:remove(shutdown, Options);
saved_options(Options) ->
    Options.

%% standard_io: the spawned program is the connection. tcp: the connection comes with
%%  the accept; dist: there is no alternative connection. A dist or tcp peer runs with
%%  -noinput, so its stdin is closed at once; its output is still read.
connected(Spawned, undefined, #peer_state{options = #{connection := standard_io}} = State) ->
    State#peer_state{channel = Spawned, connection = Spawned};
connected(Launcher, Listening, State) ->
    ok = rpeer_nif:close(Launcher),
    State#peer_state{channel = Listening}.

%% The stdout of the peer's OS process (unless detached) is read through a port: a
%%  standard_io peer's frames and console text, a dist or tcp peer's console text.
read_stdout(Spawned, #peer_state{options = #{connection := standard_io}} = State) ->
    start_reading(channel, Spawned, State);
read_stdout(Spawned, State) ->
    start_reading(launcher, Spawned, State).

%% An incoming stream (see the incoming field) is read through a port; the channel
%%  decodes it.
start_reading(Source, Channel, #peer_state{incoming = Incoming} = State) ->
    case rpeer_nif:incoming_fd(Channel) of
        undefined ->
            State;
        Fd ->
            State#peer_state{incoming = Incoming#{Source => {fd_port(Fd), Channel}}}
    end.

%% Who reads an incoming stream next: a new port (after large frames came in on the
%%  thread), or the channel's thread. The reply to the frame just handled goes to a
%%  caller that may wait in our scheduler's run queue: it runs before the port opens
%%  (~50 us).
reading(Source, port, State) ->
    erlang:yield(),
    start_reading(Source, incoming_channel(Source, State), State);
reading(Source, thread, #peer_state{incoming = Incoming} = State) ->
    State#peer_state{incoming = Incoming#{Source := {thread, incoming_channel(Source, State)}}}.

incoming_channel(Source, #peer_state{incoming = Incoming}) ->
    {_Reader, Channel} = maps:get(Source, Incoming),
    Channel.

%% Which incoming stream a port reads.
port_source(Port, #peer_state{incoming = Incoming}) ->
    case maps:keys(maps:filter(fun (_Source, {Reader, _}) -> Reader =:= Port end, Incoming)) of
        [Source] -> Source;
        [] -> undefined
    end.

fd_port(Fd) ->
    open_port({fd, Fd, Fd}, [in, binary, eof]).

%% not connected: no alternative connection available
-spec handle_call(term(), gen_server:from(), state()) ->
          {reply, term(), state()} | {noreply, state()}.
handle_call({call, _M, _F, _A}, _From, #peer_state{connection = undefined} = State) ->
    {reply, {error, noconnection}, State};

handle_call({call, M, F, A}, From, #peer_state{connection = Conn, outstanding = Out, seq = Seq,
                                               max_frame = MaxFrame} = State) ->
    case rpeer_frame:check({call, Seq, M, F, A}, MaxFrame) of
        {ok, Frame} ->
            _ = rpeer_nif:send(Conn, Frame),
            {noreply, State#peer_state{outstanding = Out#{Seq => From}, seq = Seq + 1}};
        {too_large, Size} ->
            {reply, {error, rpeer_frame:too_large(Size, MaxFrame)}, State}
    end;

%% OTP 26+ peer side, while booting: start cover on the peer when test_server asked for it.
handle_call({starting, Node}, _From, #peer_state{options = Options} = State) ->
    case maps:find(shutdown, Options) of
        {ok, {Timeout, MainCoverNode}} when is_integer(Timeout), is_atom(MainCoverNode) ->
            rpeer_ct:cover_on_peer(Node, MainCoverNode);
        _ ->
            ok
    end,
    {reply, ok, State};

handle_call(get_node, _From, #peer_state{node = Node} = State) ->
    {reply, Node, State};

handle_call(get_state, _From, #peer_state{peer_state = PeerState} = State) ->
    {reply, PeerState, State};

%% rpeer_output:last/1
handle_call(last_output, _From, #peer_state{output = Output} = State) ->
    {reply, Output, State};

%% dist mode peer side, while booting: where its 'user' output goes.
handle_call(group_leader, _From, State) ->
    {reply, group_leader(), State}.

-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({cast, _M, _F, _A}, #peer_state{connection = undefined} = State) ->
    {noreply, State};

handle_cast({cast, M, F, A}, State) ->
    {noreply, origin_to_peer({cast, M, F, A}, State)};

handle_cast({send, _Dest, _Message}, #peer_state{connection = undefined} = State) ->
    {noreply, State};

handle_cast({send, Dest, Message}, State) ->
    {noreply, origin_to_peer({message, Dest, Message}, State)}.

%%--------------------------------------------------------------------
%% events of the alternative connection's channel and of the peer's OS process

-spec handle_info(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
%% an event of the channel or of the peer's OS process (see channel_event/3)
handle_info({rpeer, Tag, Event}, State) ->
    outcome(event(source(Tag, State), Event, State));

%% the port reading an incoming stream (see incoming_message/3), or its exit
handle_info({Port, _} = Message, State) when is_port(Port) ->
    outcome(incoming_message(port_source(Port, State), Message, State));
handle_info({'EXIT', Port, _Reason}, State) when is_port(Port) ->
    outcome(incoming_ended(port_source(Port, State), State));
handle_info({timeout, Timer, stdout_grace}, #peer_state{exit_held = {_, _, Timer, _}} = State) ->
    outcome(stdout_grace(State));

%% booting: peer notifies via Erlang distribution
handle_info({started, Node}, State) ->
    true = erlang:monitor_node(Node, true),
    {noreply, boot_complete(Node, started, State)};

%% nodedown: no-alternative dist-connected peer node is down
handle_info({nodedown, Node}, #peer_state{connection = undefined, channel = undefined} = State) ->
    maybe_stop({nodedown, Node}, State);

handle_info(_Other, State) ->
    {noreply, State}.

outcome({ok, State}) ->
    {noreply, State};
outcome({down, Reason, State}) ->
    maybe_stop(Reason, State);
outcome({stop, Reason, State}) ->
    {stop, Reason, State}.

%% Which of our channels a message tag belongs to: the alternative connection's, or the
%%  launcher's (the OS process of a dist or tcp peer). A standard_io peer's process is
%%  its connection.
source(Tag, #peer_state{tag = Tag}) ->
    channel;
source(Tag, #peer_state{launcher = {Tag, _, _}}) ->
    launcher;
source(_Tag, _State) ->
    unknown.

%% An event of the channel or the launcher. The exit status of the process whose stdout
%%  is still open waits for its end: what the peer wrote before it exited comes first.
event(Source, {exit_status, _} = Event, #peer_state{incoming = Incoming} = State)
  when is_map_key(Source, Incoming) ->
    Read = rpeer_nif:incoming_read_bytes(incoming_channel(Source, State)),
    {ok, State#peer_state{exit_held = {Source, Event, grace_timer(), Read}}};
event(Source, Event, State) ->
    channel_event(Source, Event, State).

%% Handles one event of the channel or the launcher. Returns the new state, and whether
%%  the peer went down or the controller must stop; terminate/2 uses it too, while it
%%  waits for the peer to go.
-spec channel_event(channel | launcher | unknown, term(), state()) ->
          {ok, state()} | {down, term(), state()} | {stop, term(), state()}.
%% a control frame: request or response from the peer
channel_event(channel, {frame, Frame}, #peer_state{channel = Channel} = State) ->
    ok = rpeer_nif:ack(Channel, 1),
    {ok, handle_frame(Frame, State)};

%% stderr of the peer's OS process, or its stdout's console text while the channel
%%  reads a large frame there: to our group leader
channel_event(channel, {Stream, Text}, #peer_state{channel = Channel} = State)
  when Stream =:= console; Stream =:= stderr ->
    ok = rpeer_nif:ack(Channel, 1),
    {ok, forward_output(Stream, Text, State)};
channel_event(launcher, {Stream, Text}, #peer_state{launcher = {_, Launcher, _}} = State)
  when Stream =:= console; Stream =:= stderr ->
    ok = rpeer_nif:ack(Launcher, 1),
    {ok, forward_output(Stream, Text, State)};
%% a dist or tcp peer's stdout carries no control frames
channel_event(launcher, {frame, _Frame}, #peer_state{launcher = {_, Launcher, _}} = State) ->
    ok = rpeer_nif:ack(Launcher, 1),
    {ok, State};

%% the large frames are in: a port reads the stream again
channel_event(Source, resume, #peer_state{incoming = Incoming} = State)
  when element(1, map_get(Source, Incoming)) =:= thread ->
    {ok, reading(Source, port, State)};

%% booting: the tcp peer connected; a port reads its connection
channel_event(channel, accepted, #peer_state{channel = Channel} = State) ->
    {ok, start_reading(channel, Channel, State#peer_state{connection = Channel})};

%% booting: a connection that was not the peer's was closed unread
channel_event(channel, {rejected, Address}, State) ->
    logger:warning("rpeer: closed a connection to the control port from ~ts that is not "
                   "the peer's; still waiting for the peer", [Address]),
    {ok, State};

%% booting: no tcp peer connected within the accept timeout
channel_event(channel, {accept_failed, Reason}, State) ->
    %% stop unconditionally, it is essentially a part of gen_server:init callback
    {stop, {inet_async, Reason}, State#peer_state{connection = undefined}};

%% the tcp connection ended, whatever the socket said: assume node is stopped
channel_event(channel, {closed, _Reason}, #peer_state{channel = Channel} = State) ->
    ok = rpeer_nif:close(Channel),
    {down, tcp_closed, close_incoming(channel, State#peer_state{connection = undefined})};

%% a tcp frame over the limit was read past (see rpeer_frame): a reply fails its call
channel_event(channel, {frame_too_large, Size, Head}, State) ->
    {ok, frame_too_large(Size, Head, State)};

%% the standard_io peer exited, returned Status code
channel_event(channel, {exit_status, Status}, State) ->
    {down, {exit_status, Status}, State#peer_state{connection = undefined, launcher = undefined}};

%% a channel thread of rpeer failed: the channel is gone
channel_event(Source, {failed, Why}, State) when Source =/= unknown ->
    logger:error("rpeer: a channel thread failed: ~ts", [Why]),
    {down, {rpeer_channel_failed, Why}, State#peer_state{connection = undefined, launcher = undefined}};

%% the peer's program could not be launched (spawn/5 returns before the launch)
channel_event(Source, {launch_failed, Errno}, State) when Source =/= unknown ->
    {down, {launch_failed, Errno}, State#peer_state{connection = undefined, launcher = undefined}};

%% the OS process of a dist or tcp peer exited with an error while booting: the boot
%%  failed (status 0 is a wrapper that put the node in the background, like run_erl or
%%  `-detached' in args: the node may still connect)
channel_event(launcher, {exit_status, Status}, #peer_state{launcher = {_, _, true}, peer_state = booting} = State)
  when Status =/= 0 ->
    {down, {exit_status, Status}, State#peer_state{launcher = undefined}};

%% the OS process of a running dist or tcp peer exited (nodedown or tcp_closed tell
%%  the peer is down, as in peer), or the launcher of a -detached peer did
channel_event(launcher, {exit_status, _Status}, State) ->
    {ok, State#peer_state{launcher = undefined}};

%% a late event of a channel we no longer follow
channel_event(_Source, _Event, State) ->
    {ok, State}.

%% What a port reading an incoming stream delivers: bytes (frames, a standard_io peer's
%%  console text), or the stream's end.
incoming_message(undefined, _Message, State) ->
    {ok, State};
incoming_message(Source, {_Port, {data, Bytes}}, State) ->
    case decode_incoming(Source, Bytes, State) of
        {port, Decoded} -> Decoded;
        {thread, {ok, Decoded}} -> read_large_frame(Source, Decoded);
        {thread, Other} -> Other
    end;
incoming_message(Source, {_Port, eof}, State) ->
    incoming_ended(Source, State);
incoming_message(_Source, _Other, State) ->
    {ok, State}.

decode_incoming(Source, Bytes, State) ->
    {Events, Next} = rpeer_nif:decode_incoming(incoming_channel(Source, State), Bytes),
    {Next, incoming_events(Source, Events, State)}.

%% A large frame is coming: a port reads 64 KiB at a time, a message each, so the port
%%  is closed, what the stream holds of the frame is read at once, and the channel's
%%  thread reads on in large reads (the frame's rest, and the frames after it while
%%  they are large). What the port read before it closed is decoded first: maybe the
%%  frame, or the stream, ended there.
read_large_frame(Source, #peer_state{incoming = Incoming} = State) ->
    {Port, Channel} = maps:get(Source, Incoming),
    true = erlang:port_close(Port),
    case drain_port(Source, Port, thread, State) of
        {eof, Drained} ->
            incoming_ended(Source, Drained);
        {port, {ok, Drained}} ->
            {ok, reading(Source, port, Drained)};
        {thread, {ok, Drained}} ->
            {Events, Next} = rpeer_nif:read_incoming(Channel),
            case incoming_events(Source, Events, Drained) of
                {ok, Read} -> {ok, reading(Source, Next, Read)};
                Other -> Other
            end;
        {_Next, Other} ->
            Other
    end.

drain_port(Source, Port, Next, State) ->
    receive
        {Port, {data, Bytes}} ->
            case decode_incoming(Source, Bytes, State) of
                {Next2, {ok, Decoded}} -> drain_port(Source, Port, Next2, Decoded);
                {Next2, Other} -> {Next2, Other}
            end;
        {Port, eof} ->
            {eof, State}
    after 0 ->
            {Next, {ok, State}}
    end.

%% An incoming stream ended (end of file, a read error, or ?STDOUT_GRACE after the exit
%%  status): the decoder says what that means (console text it held back, the end of the
%%  tcp connection), and a held exit status is handled now.
incoming_ended(undefined, State) ->
    {ok, State};
incoming_ended(Source, #peer_state{incoming = Incoming} = State) when is_map_key(Source, Incoming) ->
    {Events, _} = rpeer_nif:decode_incoming(incoming_channel(Source, State), eof),
    case incoming_events(Source, Events, close_incoming(Source, State)) of
        {ok, Ended} -> held_exit(Source, Ended);
        Other -> Other
    end;
incoming_ended(_Source, State) ->
    {ok, State}.

%% The exit status held for the end of the stream comes now.
held_exit(Source, #peer_state{exit_held = {Source, Event, Timer, _Read}} = State) ->
    _ = erlang:cancel_timer(Timer),
    channel_event(Source, Event, State#peer_state{exit_held = undefined});
held_exit(_Source, State) ->
    {ok, State}.

grace_timer() ->
    erlang:start_timer(?STDOUT_GRACE, self(), stdout_grace).

%% ?STDOUT_GRACE after the exit status (or the last look): a stdout still read from (a
%%  large frame coming in) gets another grace; one nothing was read from is held open by
%%  a process the peer started, and is given up.
stdout_grace(#peer_state{exit_held = {Source, Event, _, Read}} = State) ->
    case rpeer_nif:incoming_read_bytes(incoming_channel(Source, State)) of
        Read -> incoming_ended(Source, State);
        Now -> {ok, State#peer_state{exit_held = {Source, Event, grace_timer(), Now}}}
    end.

%% Handles the events decoded from an incoming stream, in order, until one takes the
%%  peer down.
incoming_events(_Source, [], State) ->
    {ok, State};
incoming_events(Source, [Event | Events], State) ->
    case incoming_event(Source, Event, State) of
        {ok, Next} -> incoming_events(Source, Events, Next);
        Other -> Other
    end.

incoming_event(channel, {frame, Frame}, State) ->
    {ok, handle_frame(Frame, State)};
incoming_event(_Source, {console, Text}, State) ->
    {ok, forward_output(console, Text, State)};
%% the end of the tcp connection, a frame over the limit
incoming_event(channel, Event, State) when element(1, Event) =:= closed;
                                          element(1, Event) =:= frame_too_large ->
    channel_event(channel, Event, State);
%% a dist or tcp peer's stdout carries no control frames
incoming_event(launcher, {frame, _Frame}, State) ->
    {ok, State}.

%% The port is closed before its descriptor: a descriptor closed under a port could be
%%  reused by another. A port that failed is closed already; a reader thread is stopped
%%  by the release.
close_incoming(Source, #peer_state{incoming = Incoming} = State) ->
    case maps:take(Source, Incoming) of
        {{Reader, Channel}, Rest} ->
            try is_port(Reader) andalso erlang:port_close(Reader)
            catch error:badarg -> ok
            end,
            ok = rpeer_nif:release_incoming(Channel),
            State#peer_state{incoming = Rest};
        error ->
            State
    end.

%%--------------------------------------------------------------------
%% cleanup/termination

-spec terminate(Reason :: term(), state()) -> ok.
terminate(Reason, #peer_state{notify = Notify} = State) when Notify =/= false ->
    %% Whoever waited for the boot has given up (or was told): a boot that completes
    %%  while the peer is being stopped is not reported.
    terminate(Reason, State#peer_state{notify = false});
%% The peer went down on its own while running (see down/2): there is nobody to ask to
%%  stop, and nothing to wait for.
terminate(_Reason, #peer_state{peer_state = {down, _}, launcher = undefined} = State) ->
    close(State),
    close_all_incoming(State);
terminate(_Reason, #peer_state{connection = Conn, options = Options, node = Node} = State) ->
    case {maps:get(shutdown, Options, {halt, ?DEFAULT_HALT_DISCONNECT_TIMEOUT}),
          maps:is_key(connection, Options)} of
        {close, true} ->
            close(State);
        {close, false} ->
            _ = erlang:disconnect_node(Node);
        {{halt, Timeout}, true} ->
            Deadline = deadline(Timeout),
            close(State),
            wait_disconnected(Node, Deadline),
            wait_os_exit(State, Deadline);
        {{halt, Timeout}, false} ->
            Deadline = deadline(Timeout),
            halt_node(Node, Timeout),
            wait_os_exit(State, Deadline);
        {Shutdown, false} ->
            Deadline = deadline(shutdown(dist, Node, Shutdown)),
            wait_disconnected(Node, Deadline),
            wait_os_exit(State, Deadline);
        {Shutdown, true} ->
            Deadline = deadline(shutdown(Conn, Node, Shutdown)),
            {_, Ended} = await(fun (S) -> S#peer_state.connection =:= undefined end, State, Deadline),
            close(Ended),
            wait_disconnected(Node, Deadline),
            wait_os_exit(Ended, Deadline)
    end,
    %% The ports may be closed already (State is from before the waits).
    close_all_incoming(State).

close_all_incoming(#peer_state{incoming = Incoming} = State) ->
    _ = [close_incoming(Source, State) || Source <- maps:keys(Incoming)],
    ok.

%%--------------------------------------------------------------------
%% Internal implementation

%% Closes the channel: the peer sees end of file on stdin or the socket and halts.
close(#peer_state{channel = undefined}) ->
    ok;
close(#peer_state{channel = Channel}) ->
    ok = rpeer_nif:close(Channel).

halt_node(undefined, _Timeout) ->
    ok; %% never booted: no node to halt
halt_node(Node, Timeout) ->
    try
        _ = erpc:call(Node, erlang, halt, [], Timeout),
        ok
    catch
        error:{erpc, noconnection} -> ok;
        _:_ -> force_disconnect_node(Node)
    end.

%% stop/1 returns once the peer's OS process is gone (when rpeer started it attached):
%%  waits for its exit until the shutdown deadline, then kills its process group.
wait_os_exit(#peer_state{launcher = {_, Process, true}} = State, Deadline) ->
    case await(fun os_exited/1, State, Deadline) of
        {true, _} ->
            ok;
        {false, Running} ->
            ok = rpeer_nif:kill(Process),
            _ = await(fun os_exited/1, Running, deadline(?KILL_WAIT)),
            ok
    end;
wait_os_exit(_State, _Deadline) ->
    ok.

%% While stopping, what matters of an event is the state after it.
state_after({ok, State}) ->
    State;
state_after({_DownOrStop, _Reason, State}) ->
    State.

os_exited(#peer_state{launcher = Launcher}) ->
    not (is_tuple(Launcher) andalso element(3, Launcher)).

%% Waits until Done(State) holds, or the deadline passes, handling the events of the
%%  channel and the launcher meanwhile (output is forwarded, frames are served).
await(Done, State, Deadline) ->
    case Done(State) of
        true ->
            {true, State};
        false ->
            Tag = State#peer_state.tag,
            Launcher = State#peer_state.launcher,
            Held = case State#peer_state.exit_held of
                       {_, _, Timer, _} -> Timer;
                       undefined -> undefined
                   end,
            receive
                {rpeer, T, Event} when T =:= Tag; is_tuple(Launcher), T =:= element(1, Launcher) ->
                    await(Done, state_after(event(source(T, State), Event, State)), Deadline);
                {P, _} = Message when is_port(P) ->
                    await(Done, state_after(incoming_message(port_source(P, State), Message, State)),
                          Deadline);
                {'EXIT', P, _} when is_port(P) ->
                    await(Done, state_after(incoming_ended(port_source(P, State), State)), Deadline);
                {timeout, T, stdout_grace} when T =:= Held ->
                    await(Done, state_after(stdout_grace(State)), Deadline)
            after time_left(Deadline) ->
                    {false, State}
            end
    end.

%% The peer's output goes to our group leader (the starter's), as peer's console text
%%  does; stderr lines are marked with ?STDERR_PREFIX. The latest output is kept for
%%  boot failures.
forward_output(console, Text, #peer_state{output = Output} = State) ->
    put_chars(Text),
    State#peer_state{output = tail(Output, Text)};
forward_output(stderr, Text, #peer_state{output = Output, stderr_line_start = AtStart} = State) ->
    {Marked, NextAtStart} = mark_lines(Text, AtStart),
    put_chars(Marked),
    State#peer_state{output = tail(Output, Marked), stderr_line_start = NextAtStart}.

%% Prefixes every line that starts in Text; tells whether the next text starts a line.
mark_lines(Text, AtStart) ->
    [First | Rest] = binary:split(Text, <<"\n">>, [global]),
    Lines = [mark_line(First, AtStart, Rest =:= []) | mark_rest(Rest)],
    {iolist_to_binary(lists:join(<<"\n">>, Lines)), lists:last([First | Rest]) =:= <<>>}.

mark_rest([]) ->
    [];
mark_rest([Line | Rest]) ->
    [mark_line(Line, true, Rest =:= []) | mark_rest(Rest)].

%% the empty text after a final newline starts no line yet
mark_line(<<>>, _AtStart, true) ->
    <<>>;
mark_line(Line, true, _Last) ->
    <<?STDERR_PREFIX/binary, Line/binary>>;
mark_line(Line, false, _Last) ->
    Line.

tail(Output, Text) ->
    Both = <<Output/binary, Text/binary>>,
    Size = byte_size(Both),
    binary:part(Both, max(0, Size - ?OUTPUT_TAIL), min(Size, ?OUTPUT_TAIL)).

%% A group leader that is gone (the test case that started the peer ended) does not
%%  stop the controller.
put_chars(Text) ->
    try io:put_chars(Text)
    catch error:_ -> ok
    end.

deadline(infinity) ->
    {timeout, infinity};
deadline(Timeout) when is_integer(Timeout) ->
    {deadline, erlang:monotonic_time(millisecond) + Timeout}.

time_left({timeout, T}) ->
    T;
time_left({deadline, T}) ->
    max(0, T - erlang:monotonic_time(millisecond)).

wait_disconnected(Node, WaitUntil) ->
    %% Should only be called just before we are exiting the caller, so
    %% we do not bother disabling nodes monitoring if we enable it and
    %% do not flush any nodeup/nodedown messages that we got due to the
    %% nodes monitoring...
    case lists:member(Node, nodes(connected)) of
        false ->
            ok;
        true ->
            _ = net_kernel:monitor_nodes(true, [{node_type, all}]),
            %% Need to check connected nodes list again, since it
            %% might have disconnected before we enabled nodes
            %% monitoring...
            case lists:member(Node, nodes(connected)) of
                false ->
                    ok;
                true ->
                    receive {nodedown, Node, _} -> ok
                    after time_left(WaitUntil) -> force_disconnect_node(Node)
                    end
            end
    end.

force_disconnect_node(Node) ->
    _ = erlang:disconnect_node(Node),
    logger:warning("rpeer:stop() timed out waiting for disconnect from "
                   "node ~p. The connection was forcefully taken down.",
                   [Node]).

%% Asks the node to stop with init:stop(), flushing cover data first when asked to.
%%  With an alternative connection the request goes over it, which works whether or
%%  not the peer is distributed (peer uses erpc:cast, which on a non-distributed origin
%%  and peer would stop the origin itself); in dist mode over the distribution.
shutdown(Via, Node, {Timeout, CoverNode}) when is_integer(Timeout); Timeout =:= infinity ->
    _ = rpc:call(CoverNode, cover, flush, [Node]),
    shutdown(Via, Node, Timeout);
shutdown(dist, undefined, Timeout) ->
    Timeout; %% never booted: no node to ask
shutdown(dist, Node, Timeout) ->
    ok = erpc:cast(Node, init, stop, []),
    Timeout;
shutdown(undefined, _Node, Timeout) ->
    Timeout; %% the alternative connection is already gone
shutdown(Conn, _Node, Timeout) ->
    _ = rpeer_nif:send(Conn, erlang:term_to_iovec({cast, init, stop, []})),
    Timeout.

%% Verify options correctness (Dialyzer also does the job, but slightly less convenient)
verify_args(Options) ->
    %% verify that "Args" is valid - common problem is when Args aren't strings
    Args = maps:get(args, Options, []),
    is_list(Args) orelse error({invalid_arg, Args}),
    _ = [error({invalid_arg, Arg}) || Arg <- Args, not io_lib:char_list(Arg)],
    %% alternative connection must be requested for non-distributed node,
    %%  or a distributed node when origin is not alive
    is_map_key(connection, Options)
        orelse (is_map_key(name, Options) andalso erlang:is_alive())
        orelse error(not_alive),
    %% exec must be a string, or a tuple of string(), [string()]
    case maps:find(exec, Options) of
        {ok, {Exec, Strs}} ->
            io_lib:char_list(Exec) orelse error({exec, Exec}),
            _ = [error({exec, Str}) || Str <- Strs, not io_lib:char_list(Str)],
            ok;
        {ok, Exec} when is_list(Exec) ->
            io_lib:char_list(Exec) orelse error({exec, Exec}),
            ok;
        error ->
            ok;
        {ok, Err} ->
            error({exec, Err})
    end,
    case maps:find(shutdown, Options) of
        {ok, close} ->
            ok;
        {ok, halt} ->
            ok;
        {ok, {halt, Tmo}} when ?MIN_DISCONNECT_TIMEOUT =< Tmo, Tmo =< ?MAX_INT_TIMEOUT, is_integer(Tmo);
                               Tmo =:= infinity ->
            ok;
        {ok, Tmo} when ?MIN_DISCONNECT_TIMEOUT =< Tmo, Tmo =< ?MAX_INT_TIMEOUT, is_integer(Tmo);
                       Tmo =:= infinity ->
            ok;
        {ok, {Tmo, Node}} when (?MIN_DISCONNECT_TIMEOUT =< Tmo andalso Tmo =< ?MAX_INT_TIMEOUT
                                andalso is_integer(Tmo)) orelse Tmo =:= infinity,
                               is_atom(Node) ->
            ok;
        error ->
            ok;
        {ok, Err2} ->
            error({shutdown, Err2})
    end,
    case maps:find(detached, Options) of
        {ok, false} when map_get(connection, Options) =:= standard_io ->
            error({detached, cannot_detach_with_standard_io});
        _ ->
            ok
    end,
    case maps:find(peer_side, Options) of
        {ok, Side} when Side =/= peer, Side =/= rpeer ->
            error({peer_side, Side});
        {ok, rpeer} when is_map_key(connection, Options) ->
            case agent_ebin() of
                {ok, _} -> ok;
                error -> error({peer_side, {rpeer, agent_not_installed}})
            end;
        _ ->
            ok
    end,
    maps:foreach(fun (Option, Value) -> valid(Option, Value) orelse error({Option, Value}) end,
                 Options).

%% The options stock peer does not check above: a value of the wrong type or range
%%  raises error({Option, Value}) here, before anything is spawned or listened on,
%%  instead of failing later inside the controller (or not at all: a port of 70000 would
%%  listen on 4464). Unknown options are ignored, as by stock peer (test_server passes
%%  `start_cover').
valid(name, Name) -> is_atom(Name) orelse is_string(Name);
valid(host, Host) -> is_string(Host);
valid(longnames, Long) -> is_boolean(Long);
valid(detached, Detached) -> is_boolean(Detached);
valid(peer_down, Down) -> lists:member(Down, [stop, continue, crash]);
valid(connection, standard_io) -> true;
valid(connection, {Ip, Port}) -> inet:is_ip_address(Ip) andalso is_port_number(Port);
valid(connection, Port) -> is_port_number(Port);
valid(env, Env) -> is_list(Env) andalso lists:all(fun is_env_entry/1, Env);
valid(wait_boot, Wait) -> is_wait_boot(Wait);
valid(post_process_args, Fun) -> is_function(Fun, 1);
valid(_Checked, _Value) -> true.

is_string(Term) -> is_list(Term) andalso io_lib:char_list(Term).

is_port_number(Port) -> is_integer(Port) andalso 0 =< Port andalso Port =< 65535.

is_env_entry({Name, Value}) -> is_string(Name) andalso (Value =:= false orelse is_string(Value));
is_env_entry(_) -> false.

is_wait_boot(infinity) -> true;
is_wait_boot(false) -> true;
is_wait_boot({Pid, _Tag}) -> is_pid(Pid);
is_wait_boot(Timeout) -> is_integer(Timeout) andalso 0 =< Timeout andalso Timeout =< ?MAX_INT_TIMEOUT.

make_notify_ref(infinity) ->
    {wait, self(), make_ref()};
make_notify_ref(WaitBoot) when is_integer(WaitBoot) ->
    {wait, self(), make_ref()};
make_notify_ref({ReplyTo, Tag}) when is_pid(ReplyTo) ->
    {ReplyTo, Tag};
make_notify_ref(false) ->
    false.

start_it(Options, StartFun) ->
    verify_args(Options),
    MaxFrame = rpeer_frame:max_size(),
    WaitBoot = maps:get(wait_boot, Options, ?WAIT_BOOT_TIMEOUT),
    Notify = make_notify_ref(WaitBoot),
    case gen_server:StartFun(?MODULE, [Notify, Options, MaxFrame], []) of
        {ok, Pid} when WaitBoot =:= infinity; is_integer(WaitBoot) ->
            {wait, _, Ref} = Notify,
            Mref = erlang:monitor(process, Pid),
            receive
                {Ref, {started, NodeName, Pid}} ->
                    erlang:demonitor(Mref, [flush]),
                    {ok, Pid, NodeName};
                {Ref, {boot_failed, Reason, Pid}} ->
                    erlang:demonitor(Mref, [flush]),
                    receive {Ref, {boot_output, Output}} -> put(?BOOT_OUTPUT_KEY, Output)
                    after 0 -> ok
                    end,
                    erlang:exit({boot_failed, Reason});
                {'DOWN', Mref, _, _, Reason} ->
                    erlang:exit(Reason)
            after
                WaitBoot ->
                    _ = gen_server:stop(Pid),
                    erlang:demonitor(Mref, [flush]),
                    erlang:exit(timeout)
            end;
        {ok, Pid} when is_map_key(host, Options) ->
            {ok, Pid, node_name(Options)};
        {ok, Pid} ->
            {ok, Pid};
        Error ->
            Error
    end.

node_name(#{name := Name, host := Host}) ->
    list_to_atom(lists:concat([Name, "@", Host]));
node_name(_Options) ->
    undefined.

%% Lost control connection to the peer while the node was
%%  booting, this generally means a crash
maybe_stop(Reason, #peer_state{peer_state = booting, exec = Exec, output = Output,
                                notify = Notify, options = Options} = State) ->
    logger:warning("rpeer: the peer (~ts) failed to boot: ~0p~nits last output:~n~ts",
                   [Exec, Reason, Output], log_metadata(State)),
    _ = boot_complete(Reason, boot_failed, State),
    Failed = State#peer_state{peer_state = {down, Reason}},
    case Notify of
        %% start/1 or start_link/1 raises, so nobody holds this controller: it must not
        %%  stay, whatever peer_down says (crash keeps its exit reason)
        {wait, _, _} when map_get(peer_down, Options) =/= crash -> {stop, normal, Failed};
        _ -> maybe_stop(Reason, Failed)
    end;
maybe_stop(Reason, #peer_state{options = #{peer_down := crash}} = State) ->
    {stop, Reason, down(Reason, State#peer_state{connection = undefined})};
%% if state was already down, keep the original reason
maybe_stop(_Reason, #peer_state{options = #{peer_down := continue}, peer_state = {down, _}} = State) ->
    {noreply, State};
%% continue working setting peer state to down
maybe_stop(Reason, #peer_state{options = #{peer_down := continue}} = State) ->
    {noreply, State#peer_state{peer_state = {down, Reason}}};
%% default: ignore Reason and shut down normally
maybe_stop(Reason, State) ->
    {stop, normal, down(Reason, State)}.

%% The controller stops because its peer went down. A peer that was running is not
%%  waited for in terminate/2 (stop/1 waits): the controller ends as promptly as stock
%%  peer's, when the connection ends. Its OS process is exiting already (the node halted,
%%  or its connection ended, which halts it), and is not killed, so a crash dump it
%%  writes is finished. A peer that failed to boot is waited for: what it prints while
%%  it exits explains the failure.
down(Reason, #peer_state{peer_state = running} = State) ->
    State#peer_state{peer_state = {down, Reason}, launcher = undefined};
down(Reason, State) ->
    State#peer_state{peer_state = {down, Reason}}.

%% Handles one frame from the alternative connection, forwarding as needed. A frame the
%%  controller cannot act on is dropped (see dropped/3): the peer's mistake never takes
%%  the controller, and with it the peer, down.
handle_frame(Frame, State) ->
    try rpeer_frame:to_term(Frame) of
        Term ->
            handle_alternative_data(Term, byte_size(Frame), State)
    catch
        error:badarg ->
            dropped(not_a_term, byte_size(Frame), State)
    end.

handle_alternative_data({io_request, From, FromRef, IoReq}, _Size, State) ->
    Reply = {io_reply, From, FromRef, forward_request(IoReq)},
    origin_to_peer(Reply, State);
handle_alternative_data({message, To, Content}, Size, State) ->
    try To ! Content of
        _ -> State
    catch
        error:badarg when is_atom(To) -> dropped({message_to_unregistered_name, To}, Size, State);
        error:badarg -> dropped(message_to_bad_destination, Size, State)
    end;
handle_alternative_data({reply, Seq, Class, Result}, Size, #peer_state{outstanding = Out} = State) ->
    case maps:take(Seq, Out) of
        {From, NewOut} ->
            gen:reply(From, {Class, Result}),
            State#peer_state{outstanding = NewOut};
        error ->
            dropped(reply_to_unknown_call, Size, State)
    end;
handle_alternative_data({started, NodeName}, _Size, State) ->
    boot_complete(NodeName, started, State);
handle_alternative_data(Other, Size, State) when is_tuple(Other), tuple_size(Other) > 0,
                                                is_atom(element(1, Other)) ->
    dropped({unknown_frame, element(1, Other), tuple_size(Other)}, Size, State);
handle_alternative_data(_Other, Size, State) ->
    dropped(unknown_frame, Size, State).

%% A frame from the peer that the controller cannot act on: one warning per frame, with
%%  what was wrong and the frame's size, never its content (which may be large, or
%%  private); the frame is dropped and the peer goes on. The kinds:
%%  not_a_term - the payload does not decode (binary_to_term/1 fails);
%%  {message_to_unregistered_name, Name} - `{message, Name, _}' to a name not registered here;
%%  message_to_bad_destination - `{message, To, _}' where To is no pid, name or {Name, Node};
%%  reply_to_unknown_call - `{reply, Seq, _, _}' for no outstanding call;
%%  {unknown_frame, Tag, Arity} or unknown_frame - any other term;
%%  {frame_too_large, Limit} - a tcp frame over the limit that is no reply to a call.
dropped(Kind, Size, State) ->
    logger:warning("rpeer: dropped a frame of ~b bytes from the peer: ~0p", [Size, Kind],
                   log_metadata(State)),
    State.

%% A frame from the peer over the limit, read past and dropped by the channel (see
%%  rpeer_frame): a reply fails its call, anything else is logged as dropped.
frame_too_large(Size, Head, #peer_state{outstanding = Out, max_frame = MaxFrame} = State) ->
    case rpeer_frame:reply_seq(Head) of
        {ok, Seq} when is_map_key(Seq, Out) ->
            {From, Rest} = maps:take(Seq, Out),
            gen:reply(From, {error, rpeer_frame:too_large(Size, MaxFrame)}),
            State#peer_state{outstanding = Rest};
        _ ->
            dropped({frame_too_large, MaxFrame}, Size, State)
    end.

%% What every log event of a controller carries, for filters and handlers.
log_metadata(#peer_state{node = Node}) ->
    #{domain => [rpeer], rpeer_controller => self(), rpeer_node => Node}.

forward_request(Req) ->
    GL = group_leader(),
    MRef = erlang:monitor(process, GL),
    GL ! {io_request, self(), MRef, Req},
    receive
        {io_reply, MRef, Reply} ->
            erlang:demonitor(MRef, [flush]),
            Reply;
        {'DOWN', MRef, _, _, _} ->
            {error, terminated}
    end.

%% Sends a term to the peer over the alternative connection, if there is one: as
%%  term_to_iovec/1's binaries, so that a large binary in it goes out as it is, not
%%  copied into the frame (term_to_binary/1 copies 100 MiB into fresh memory). A channel
%%  that closed meanwhile is not an error here: its end arrives as an event. The caller
%%  of cast/4 and send/3 checked the size; a frame over the limit here (the limit
%%  changed since, or an answer to an I/O request) is not sent.
origin_to_peer(_Term, #peer_state{connection = undefined} = State) ->
    State;
origin_to_peer(Term, #peer_state{connection = Conn, max_frame = MaxFrame} = State) ->
    case rpeer_frame:check(Term, MaxFrame) of
        {ok, Frame} ->
            _ = rpeer_nif:send(Conn, Frame),
            State;
        {too_large, Size} ->
            not_sent(Term, rpeer_frame:too_large(Size, MaxFrame), State)
    end.

%% A frame over the limit: the I/O request it answers gets the error instead.
not_sent({io_reply, From, FromRef, _Reply}, Reason, State) ->
    origin_to_peer({io_reply, From, FromRef, {error, Reason}}, State);
not_sent(Term, Reason, State) ->
    logger:warning("rpeer: did not send a ~0p frame to the peer: ~0p", [element(1, Term), Reason],
                   log_metadata(State)),
    State.

boot_complete(Node, _Result, #peer_state{notify = false} = State) ->
    State#peer_state{peer_state = running, node = Node};
boot_complete(Reason, boot_failed, #peer_state{notify = {wait, Caller, Ref}, output = Output} = State) ->
    Caller ! {Ref, {boot_output, Output}},
    boot_complete(Reason, boot_failed, State#peer_state{notify = {Caller, Ref}});
boot_complete(Node, Result, #peer_state{notify = {wait, Caller, Ref}} = State) ->
    boot_complete(Node, Result, State#peer_state{notify = {Caller, Ref}});
boot_complete(Node, Result, #peer_state{notify = {ReplyTo, Tag}} = State) ->
    ReplyTo ! {Tag, {Result, Node, self()}},
    State#peer_state{peer_state = running, node = Node}.

%% Starts the tcp listener when a tcp connection is requested:
%%  {ok, Channel, {ListenAddresses, Port}}; dist and standard_io: {ok, undefined, undefined}.
%%  With `Port' alone, a local peer (no exec wrapper) is offered, and listened for on,
%%  loopback only; a peer started through a wrapper, maybe elsewhere, every local
%%  IPv4 address, loopback first, as peer does. `{Ip, Port}' listens where it says.
maybe_listen(Tag, #{connection := Port} = Options, MaxFrame) when is_integer(Port) ->
    case local_exec(Options) of
        true ->
            listen(Tag, {{127, 0, 0, 1}, Port}, [{127, 0, 0, 1}], Options, MaxFrame);
        false ->
            listen(Tag, {{0, 0, 0, 0}, Port}, local_addresses(), Options, MaxFrame)
    end;
maybe_listen(Tag, #{connection := {Ip, Port}} = Options, MaxFrame) when is_integer(Port) ->
    listen(Tag, {Ip, Port}, [Ip], Options, MaxFrame);
maybe_listen(_Tag, _Options, _MaxFrame) ->
    {ok, undefined, undefined}.

listen(Tag, {Ip, Port}, Offered, Options, MaxFrame) ->
    Timeouts = {?ACCEPT_TIMEOUT, dead_link_timeout()},
    case rpeer_nif:listen(Tag, Ip, Port, Timeouts, MaxFrame, verifies_peer(Options)) of
        {ok, Channel, WaitPort} ->
            {ok, Channel, {Offered, WaitPort}};
        {error, Reason} ->
            {error, {Reason, {listen, Ip, Port}}}
    end.

%% A tcp control connection whose link dies silently (a cable pulled, a host gone) is
%%  closed after the origin's net_ticktime without an answer from the peer's host, as
%%  a distribution connection would be: keepalive probes and TCP_USER_TIMEOUT. The
%%  peer is then down with tcp_closed. Milliseconds.
dead_link_timeout() ->
    case net_kernel:get_net_ticktime() of
        Seconds when is_integer(Seconds) -> Seconds * 1000;
        {ongoing_change_to, Seconds} -> Seconds * 1000;
        ignored -> 60000
    end.

%% A tcp connection is taken only from the peer's own OS process (its process group)
%%  where rpeer can see it: a local, attached peer. Through a wrapper (ssh, docker,
%%  a network namespace) or -detached, the first connection is the peer's, as in peer.
verifies_peer(Options) ->
    local_exec(Options) andalso maps:get(detached, Options, false) =/= true.

local_exec(Options) ->
    not is_tuple(maps:get(exec, Options, default)).

%% IPv4 addresses of all local interfaces that are up: loopback first, as peer does.
%%  Only IPv4: the listener is 0.0.0.0, and OTP's peer side (loop_connect/2) crashes
%%  with badarg on an IPv6 address instead of trying the next one, so the ::1 that peer
%%  offers second ends every remote peer whose own 127.0.0.1 refused.
local_addresses() ->
    {ok, Ifs} = inet:getifaddrs(),
    LocalUp = lists:append(
                [proplists:get_all_values(addr, Opts)
                 || {_, Opts} <- Ifs, lists:member(up, proplists:get_value(flags, Opts, []))]),
    prefer_localhost([Valid || Valid <- LocalUp, tuple_size(Valid) =:= 4,
                               is_list(inet:ntoa(Valid))], [], []).

%% prefer localhost, then everything else
prefer_localhost([], Preferred, Other) ->
    Preferred ++ Other;
prefer_localhost([{127, _, _, _} = Local | Tail], Preferred, Other) ->
    prefer_localhost(Tail, [Local | Preferred], Other);
prefer_localhost([Local | Tail], Preferred, Other) ->
    prefer_localhost(Tail, Preferred, [Local | Other]).

%% A failed spawn names what failed: {Errno, Path} for the executable, like open_port's
%%  {Errno, _} crash but with the path instead of a stack.
spawn_error({exec, Errno, Path}) ->
    {Errno, unicode:characters_to_list(Path, file:native_name_encoding())};
spawn_error(Errno) ->
    {Errno, spawn}.

name_arg(error, error, _) ->
    []; %% no name, no host - starting node that is not distributed
name_arg(error, {ok, Host}, LongOrShort) ->
    %% interesting fallback: host is set, name is not. Do what predecessor did,
    %%  take the current node name and use it...
    [Name, _] = string:lexemes(atom_to_list(node()), "@"),
    name_arg(Name ++ "@" ++ Host, error, LongOrShort);
name_arg({ok, Name}, Host, LongOrShort) ->
    name_arg(Name, Host, LongOrShort); %% unpack node name
name_arg(Name, Host, LongOrShort) when is_atom(Name) ->
    name_arg(atom_to_list(Name), Host, LongOrShort); %% convert atom to list for command line
name_arg(Name, Host, {ok, ignored}) ->
    name_arg(Name, Host, {ok, false}); %% fallback to shortnames when origin is not distributed
name_arg(Name, Host, error) ->
    name_arg(Name, Host, {ok, net_kernel:longnames()}); %% no longnames present it start options
name_arg(Name, {ok, Host}, LongOrShort) ->
    name_arg(Name ++ "@" ++ Host, error, LongOrShort); %% merge host part
%% only these are actual name creation clauses
name_arg(Name, error, {ok, true}) ->
    ["-name", Name];
name_arg(Name, error, {ok, false}) ->
    ["-sname", Name].

command_line(Listen, Options, MaxFrame) ->
    %% Node name/sname
    NameArg = name_arg(maps:find(name, Options), maps:find(host, Options), maps:find(longnames, Options)),
    %% additional command line args
    CmdOpts = maps:get(args, Options, []),
    %% A dist or tcp node runs attached (its exit status and output are ours) unless
    %%  `detached => true' asks for -detached.
    DetachArgs = case maps:get(detached, Options, false) of
                     true -> ["-detached"];
                     false -> []
                 end,
    %% start command
    StartCmd =
        case Listen of
            undefined when map_get(connection, Options) =:= standard_io ->
                stdio_user(Options, MaxFrame);
            undefined ->
                Self = base64:encode_to_string(term_to_binary(self())),
                DetachArgs ++ ["-noinput", "-user", "peer", "-origin", Self, ?HANDLER_IS_USER];
            {Ips, Port} ->
                IpStr = lists:concat(lists:join(",", [inet:ntoa(Ip) || Ip <- Ips])),
                DetachArgs ++ ["-noinput" | tcp_user(Options, IpStr, Port, MaxFrame)]
        end,
    %% build command line
    {Exec, PreArgs} = exec(Options),
    {Exec, PreArgs ++ NameArg ++ StartCmd ++ CmdOpts}.

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
tcp_user(Options, IpStr, Port, MaxFrame) ->
    case peer_side(Options) of
        {rpeer, Ebin} -> ["-pa", Ebin | rpeer_agent:tcp_user_args(IpStr, Port, MaxFrame)];
        peer -> ["-user", "peer", "-origin", IpStr, integer_to_list(Port), ?HANDLER_IS_USER]
    end.

peer_side(#{peer_side := peer}) ->
    peer;
peer_side(#{peer_side := rpeer}) ->
    {ok, Ebin} = agent_ebin(), %% verify_args/1 checked it
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

%% The directory of rpeer's beam files, if they are plain files (not in an archive) that
%%  a peer on this host can load; absolute, as the peer may start in another directory
%%  (a wrapper in `exec' may change it).
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

exec(#{exec := Prog}) when is_list(Prog) ->
    {Prog, []};
exec(#{exec := {Prog, Args}}) when is_list(Prog), is_list(Args) ->
    {Prog, Args};
exec(Options) when not is_map_key(exec, Options) ->
    case init:get_argument(progname) of
        {ok, [[Prog]]} ->
            case find_executable(Prog) of
                Exec when is_list(Exec) ->
                    {Exec, []};
                false ->
                    maybe_otp_test_suite(Prog)
            end;
        _ ->
            default_erts()
    end.

maybe_otp_test_suite(Prog) ->
    case string:split(Prog, "cerl ") of
        [CerlPath, Args] ->
            %% The 'cerl' script of OTP's own test suites sets progname to
            %% "<path>/cerl -debug" (or -asan, -gcov): run cerl with that argument.
            {filename:join(CerlPath, "cerl"), parse_args(Args)};
        _ ->
            default_erts()
    end.

%% Split command line string into a list of arguments.
-spec parse_args(string()) -> [string()].
parse_args([]) ->
    [];
parse_args([Deep | _] = AlreadyParsed) when is_list(Deep) ->
    AlreadyParsed;
parse_args(CmdLine) ->
    %% following regex splits command line, preserving quoted arguments, into argv[] list
    Re = <<"((?:\"[^\"\\\\]*(?:\\\\[\\S\\s][^\"\\\\]*)*\"|'[^'\\\\]*(?:\\\\[\\S\\s][^'\\\\]*)*'|\\/[^\\/\\\\]*(?:\\\\[\\S\\s][^\\/\\\\]*)*\\/[gimy]*(?=\\s|$)|(?:\\\\\\s|\\S))+)(?=\\s|$)">>,
    {match, Args} = re:run(CmdLine, Re, [{capture, all_but_first, list}, global]),
    %% unquote arguments. It is possible to change regex capture groups to avoid extra processing.
    [unquote(Arg) || [Arg] <- Args].

unquote([Q | Arg]) when Q =:= $\"; Q =:= $\' ->
    case lists:last(Arg) of
        Q -> lists:droplast(Arg);
        _ -> [Q | Arg]
    end;
unquote(Arg) ->
    Arg.

%% if progname is not known, use `erlexec` from the same ERTS version we're currently running
%% BINDIR environment variable is already set
%% EMU variable it also set
default_erts() ->
    Root = code:root_dir(),
    Erts = filename:join(Root, lists:concat(["erts-", erlang:system_info(version)])),
    BinDir = filename:join(Erts, "bin"),
    {filename:join(BinDir, "erlexec"), []}.

%% os:find_executable/1 (on Unix), reading file information in this process: through the
%%  file server, the lookups of many peers started at once queue behind each other while
%%  the first peers' boots take the CPU (up to a second for 50 peers).
find_executable(Name) ->
    find_executable(Name, os:getenv("PATH", "")).

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

%% The program launched for Exec, and the environment variables it needs on top. The
%%  default `erl' of this installation is a shell script that sets four variables and
%%  runs erlexec, forking five helpers on the way (dirname, basename, dyn_erl): ~4 ms of
%%  every boot. rpeer runs erlexec with those variables itself, as the script sets them.
%%  An exec option, another installation's erl, or ERL_ROOTDIR (which OTP's script
%%  honours) launch Exec as it is.
launch_program(Exec, UserEnv, Options) when not is_map_key(exec, Options) ->
    Root = code:root_dir(),
    BinDir = filename:join([Root, "erts-" ++ erlang:system_info(version), "bin"]),
    Erlexec = filename:join(BinDir, "erlexec"),
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

%% os:find_executable's test: a regular file with any execute bit.
is_executable(File) ->
    case prim_file:read_file_info(File) of
        {ok, #file_info{type = regular, mode = Mode}} -> Mode band 8#111 =/= 0;
        _ -> false
    end.

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

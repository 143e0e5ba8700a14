%% @doc
%% Drop-in replacement for OTP's `peer': starts and controls additional Erlang nodes,
%% locally or through a wrapper (ssh, docker). The API, options, return values and
%% exceptions are peer's; rename `peer:' to `rpeer:' and nothing else.
%%
%% == Terms ==
%% Origin - the node that calls `start/1' or `start_link/1'.
%% Peer - the node started that way, in an OS process of its own.
%% Controller - the gen_server of this module, on the origin, one per peer; the peer
%%  does not outlive it.
%% Control connection - how the controller reaches the peer: the Erlang distribution,
%%  or an alternative connection over the peer's standard I/O or over tcp.
%% Channel - rpeer's alternative connection, owned by the Rust NIF (`rpeer_nif'):
%%  one abstraction for standard_io and tcp. It spawns the peer's OS process, encodes
%%  and writes frames on its own threads, and delivers what comes back as messages.
%%  What comes back is the exception (the peer's stdout, the tcp connection): the
%%  controller reads it through a port, as peer reads its standard_io (the VM polls the
%%  descriptor, so a reply wakes the controller directly), and the NIF decodes what the
%%  port delivers; the rest of a large frame, and the frames after it while they are
%%  large too, are read on a thread of the NIF (see rpeer_incoming).
%%
%% == Modules ==
%% `rpeer_options' checks the options, `rpeer_launch' listens for a tcp peer, builds
%% the command line and spawns the peer, `rpeer_incoming' keeps track of who reads the
%% streams that come from the peer, and `rpeer_frame' sizes and decodes frames. This
%% module is the controller: the API, and what happens on each event.
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
-behaviour(gen_server).

%% API: peer's
-export([start_link/0, start_link/1, start/1, stop/1,
         random_name/0, random_name/1,
         get_state/1,
         call/4, call/5, cast/4, send/3]).

%% API: rpeer's own
-export([info/1]).

-export_type([server_ref/0, start_options/0, peer_state/0, exec/0, disconnect_timeout/0,
              info/0]).

%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         format_status/1]).

-ifdef(TEST).
-export([find_executable/2]).
-endif.

%%--------------------------------------------------------------------
%% Types

-type server_ref() :: pid().
%% A controller, as start/1 and start_link/1 return it.

%% The alternative connection: the peer's standard I/O, or tcp to a port the origin
%%  listens on (0: any free port; with an address, only there).
-type connection() :: standard_io | 0..65535 | {inet:ip_address(), 0..65535}.

%% start/1 and start_link/1 either wait for the boot (up to a timeout, 15 s unless
%%  given), or return at once: then `{Pid, Tag}' is sent
%%  `{Tag, {started, Node, Controller}}' when the node is up (or
%%  `{Tag, {boot_failed, Reason, Controller}}'), and `false' is told nothing.
-type wait_boot() :: timeout() | {pid(), Tag :: term()} | false.

-type exec() :: file:name() | {file:name(), [string()]}.
%% The program that starts the node: its path (by default, the program this node was
%%  started as), or a wrapper with the arguments that come before the node's own, such
%%  as `{"/usr/bin/ssh", ["user@host", "/usr/bin/erl"]}'.

-type disconnect_timeout() :: 1000..4294967295 | infinity.
%% How long stop/1 waits for the node to disconnect before taking the connection down.

-type start_options() ::
        #{name => atom() | string(),
          longnames => boolean(),
          host => string(),
          peer_down => stop | continue | crash,
          connection => connection(),
          exec => exec(),
          detached => boolean(),
          args => [string()],
          post_process_args => fun(([string()]) -> [string()]),
          peer_side => peer | rpeer,
          env => [{string(), string() | false}],
          wait_boot => wait_boot(),
          shutdown => close | halt | {halt, disconnect_timeout()} | disconnect_timeout()
                    | {disconnect_timeout(), CoverMainNode :: node()}}.
%% The options of start/1 and start_link/1; all may be left out:
%%  name - the node name (before the @); without it, the peer is not distributed and
%%   needs a `connection';
%%  longnames - `-name' rather than `-sname' (default: as this node);
%%  host - the host part of the name (default: the host the peer runs on);
%%  peer_down - when the peer goes away, the controller stops normally (`stop', the
%%   default), keeps running with get_state/1 saying `{down, Reason}' (`continue'), or
%%   exits with Reason (`crash');
%%  connection - the alternative connection (default: the distribution only);
%%  exec - see exec();
%%  detached - start the node with -detached (not with standard_io);
%%  args - more arguments for the node's command line;
%%  post_process_args - rewrites the whole argument list last (e.g. for a wrapper);
%%  peer_side - what runs the peer's end of the alternative connection: `rpeer', rpeer's
%%   agent around OTP's peer (standard_io coded by rpeer's Rust codec, 50-400x faster; a
%%   tcp boot without user_sup's 100 ms wait; needs rpeer's beam files on the peer's
%%   host, and is the default without exec), or `peer', OTP's peer module alone (needs
%%   nothing where the peer runs; the default with exec);
%%  env - environment variables to set (`false' unsets one);
%%  wait_boot - see wait_boot();
%%  shutdown - how stop/1 takes the node down: `close' the connection and return;
%%   `halt' it (erlang:halt/0) and wait up to 5 s, or `{halt, Timeout}', for it to
%%   disconnect; ask it to stop (init:stop/0) and wait up to `Timeout'; or, as
%%   `{Timeout, CoverMainNode}', first have its coverage sent to the main cover node.

%% What start/1 and start_link/1 return: the controller, with the node's name once it
%%  booted (or when `name' and `host' give it).
-type started() :: {ok, pid()} | {ok, pid(), node()} | {error, Reason :: term()}.

-type peer_state() :: booting | running | {down, Reason :: term()}.
%% What get_state/1 says of the peer.

-type info() :: #{node := node() | undefined,
                  state := peer_state(),
                  os_pid := non_neg_integer() | undefined,
                  connection := standard_io | {tcp, inet:port_number()} | dist,
                  peer_side := rpeer | peer,
                  boot_time := non_neg_integer() | undefined,
                  frames_in := non_neg_integer(),
                  bytes_in := non_neg_integer(),
                  frames_out := non_neg_integer(),
                  bytes_out := non_neg_integer(),
                  console_bytes := non_neg_integer(),
                  stderr_bytes := non_neg_integer(),
                  exec := file:name(),
                  args := [string()]}.
%% What info/1 tells of a peer:
%%  node - its node name, once known (`undefined' for a peer that is not distributed);
%%  state - as get_state/1;
%%  os_pid - the OS pid of the program rpeer started (the node, or the wrapper that
%%   runs it), while it runs;
%%  connection - the control connection: `standard_io', tcp on the origin's port
%%   (the port it listens on, also when 0 was asked for), or the distribution only;
%%  peer_side - what runs the peer's end of it (see the `peer_side' option; a dist
%%   peer runs OTP's peer);
%%  boot_time - milliseconds from the start to the peer's report that it booted;
%%  frames_in, bytes_in - frames (and their payload bytes) from the peer, including
%%   those dropped (see the README);
%%  frames_out, bytes_out - frames (and payload bytes) sent to the peer;
%%  console_bytes, stderr_bytes - bytes of the peer's console text and stderr that
%%   reached the group leader;
%%  exec, args - the program and arguments it was started with (before
%%   `post_process_args').

%%--------------------------------------------------------------------
%% Constants

%% stop/1 with `shutdown => halt' (the default) gives the node this long to disconnect.
-define(HALT_WAIT, 5000).

%% call/4 gives the peer this long to answer.
-define(CALL_TIMEOUT, 5000).

%% start/1 and start_link/1 wait this long for the boot, unless told otherwise.
-define(BOOT_WAIT, 15000).

%% How much of the peer's latest console and stderr output is kept, for boot failures.
-define(OUTPUT_TAIL, 4096).

%% Marks each line the peer writes to stderr in the group leader's output.
-define(STDERR_PREFIX, <<"[stderr] ">>).

%% How long stop/1 waits for a killed peer's OS process to be gone.
-define(KILL_WAIT, 5000).

%% Where start_it/2 keeps the output of a peer that failed to boot (see rpeer_output).
-define(BOOT_OUTPUT_KEY, '$rpeer_last_boot_output').

%%--------------------------------------------------------------------
%% API

%% @doc A node name for a new peer: `"peer-N-OsPid"' (see random_name/1).
-spec random_name() -> string().
random_name() ->
    random_name(peer).

%% @doc A node name for a new peer: `Prefix', a number unique in this node, and this
%%  node's OS pid, joined with dashes (`"prefix-3-7161"'), so that peers of other
%%  origins on the host do not take the same name.
-spec random_name(Prefix :: string() | atom()) -> string().
random_name(Prefix) ->
    lists:concat([Prefix, "-", erlang:unique_integer([positive]), "-", os:getpid()]).

%% @doc Starts a distributed peer on this host, with a name from random_name/0, linked
%%  to the caller; returns when it booted.
-spec start_link() -> {ok, pid(), node()} | {error, Reason :: term()}.
start_link() ->
    start_link(#{name => random_name()}).

%% @doc Starts a peer as `Options' say (see start_options()), its controller linked to
%%  the caller.
-spec start_link(start_options()) -> started().
start_link(Options) ->
    start_it(Options, start_link).

%% @doc As start_link/1, without the link.
-spec start(start_options()) -> started().
start(Options) ->
    start_it(Options, start).

%% @doc Takes the peer down as its `shutdown' option says, and stops its controller;
%%  returns when both are gone.
-spec stop(Peer :: server_ref()) -> ok.
stop(Peer) ->
    gen_server:stop(Peer).

%% @doc Whether the peer is booting, running, or down (and why).
-spec get_state(Peer :: server_ref()) -> peer_state().
get_state(Peer) ->
    gen_server:call(Peer, get_state).

%% @doc What is going on in a peer: its node, state, OS pid, connection and peer side,
%%  how long it took to boot, and the traffic each way so far (see info()). Not in
%%  stock peer.
-spec info(Peer :: server_ref()) -> info().
info(Peer) ->
    gen_server:call(Peer, info).

%% @doc Runs `apply(Module, Function, Args)' on the peer over the alternative
%%  connection and returns its result, waiting up to 5 s (see call/5).
-spec call(Peer :: server_ref(), Module :: module(), Function :: atom(), Args :: [term()]) ->
          Result :: term().
call(Peer, Module, Function, Args) ->
    call(Peer, Module, Function, Args, ?CALL_TIMEOUT).

%% @doc Runs `apply(Module, Function, Args)' on the peer over the alternative
%%  connection, waiting up to `Timeout'. What it raises there is raised here, with the
%%  peer's stack; without an alternative connection this raises `noconnection'.
-spec call(Peer :: server_ref(), Module :: module(), Function :: atom(),
           Args :: [term()], Timeout :: timeout()) -> Result :: term().
call(Peer, Module, Function, Args, Timeout) ->
    call_result(gen_server:call(Peer, {call, Module, Function, Args}, Timeout)).

%% What the peer made of a call: a value, an exception with its stack, or the
%%  controller's own error.
call_result({ok, Value}) -> Value;
call_result({Class, {Reason, Stack}}) -> erlang:raise(Class, Reason, Stack);
call_result({error, Reason}) -> erlang:error(Reason).

%% @doc Has the peer run `apply(Module, Function, Args)', without waiting or an answer.
-spec cast(Peer :: server_ref(), Module :: module(), Function :: atom(), Args :: [term()]) -> ok.
cast(Peer, Module, Function, Args) ->
    ok = rpeer_frame:fits({cast, Module, Function, Args}),
    gen_server:cast(Peer, {cast, Module, Function, Args}).

%% @doc Has the peer send `Message' to `To' (a pid or a registered name there), over
%%  the alternative connection; whether it arrives is not checked.
-spec send(Peer :: server_ref(), To :: pid() | atom(), Message :: term()) -> ok.
send(Peer, To, Message) ->
    ok = rpeer_frame:fits({message, To, Message}),
    gen_server:cast(Peer, {send, To, Message}).

-ifdef(TEST).
-spec find_executable(string(), string()) -> string() | false.
find_executable(Name, Path) ->
    rpeer_launch:find_executable(Name, Path).
-endif.

%% Checks the options; hands out a warm node of the pool when it has one (see
%%  rpeer_pool), else starts a controller and, unless told not to, waits for the boot.
start_it(Options, How) ->
    ok = rpeer_options:check(Options),
    case rpeer_pool:take(Options) of
        {ok, Pool, Pid} ->
            Handed = rpeer_pool:hand_out(Pool, Pid, Options, How),
            ok = rpeer_pool:handed(Pool, Pid),
            case Handed of
                {ok, Node} -> handed_out(Pid, Node, Options);
                error -> cold_start(Options, How)
            end;
        miss ->
            Started = cold_start(Options, How),
            _ = element(1, Started) =:= ok andalso rpeer_pool:learn(Options),
            Started
    end.

cold_start(Options, How) ->
    MaxFrame = rpeer_frame:max_size(),
    WaitBoot = maps:get(wait_boot, Options, ?BOOT_WAIT),
    Notify = case WaitBoot of
                 false -> false;
                 {_Pid, _Tag} -> WaitBoot;
                 _Timeout -> {wait, self(), make_ref()}
             end,
    case gen_server:How(?MODULE, [Notify, Options, MaxFrame], []) of
        {ok, Pid} -> started(Pid, Notify, WaitBoot, Options);
        Error -> Error
    end.

%% What a hand-out returns: what a cold start that waited for the boot returns; a
%%  wait_boot {Pid, Tag} is told that the node started.
handed_out(Pid, Node, Options) ->
    case maps:get(wait_boot, Options, ?BOOT_WAIT) of
        {To, Tag} ->
            To ! {Tag, {started, Node, Pid}},
            started(Pid, To, {To, Tag}, Options);
        false ->
            started(Pid, false, false, Options);
        _Timeout ->
            {ok, Pid, Node}
    end.

%% What start/1 returns: the controller, and the node once it booted, or when `name'
%%  and `host' tell it beforehand (`undefined' with `host' alone).
started(Pid, {wait, _Self, Ref}, Timeout, _Options) ->
    await_boot(Pid, Ref, Timeout);
started(Pid, _Notify, _WaitBoot, #{name := Name, host := Host}) ->
    {ok, Pid, list_to_atom(lists:concat([Name, "@", Host]))};
started(Pid, _Notify, _WaitBoot, #{host := _}) ->
    {ok, Pid, undefined};
started(Pid, _Notify, _WaitBoot, _Options) ->
    {ok, Pid}.

%% A boot that fails, a controller that dies and a boot that takes too long all raise,
%%  as exits; a failed boot leaves the peer's last output for rpeer_output.
await_boot(Pid, Ref, Timeout) ->
    Watch = erlang:monitor(process, Pid),
    Outcome = receive
                  {Ref, {started, Node, Pid}} -> {ok, Pid, Node};
                  {Ref, {boot_failed, Reason, Pid}} -> {exit, {boot_failed, Reason}};
                  {'DOWN', Watch, process, _, Reason} -> {exit, Reason}
              after Timeout ->
                      %% (a boot that fails at once may end the controller meanwhile)
                      try gen_server:stop(Pid) catch exit:_ -> ok end,
                      {exit, timeout}
              end,
    erlang:demonitor(Watch, [flush]),
    case Outcome of
        {exit, {boot_failed, _} = Failed} ->
            receive {Ref, {boot_output, Output}} -> put(?BOOT_OUTPUT_KEY, Output)
            after 0 -> ok
            end,
            exit(Failed);
        {exit, Why} ->
            exit(Why);
        Booted ->
            Booted
    end.

%%--------------------------------------------------------------------
%% The controller's state

%% The peer's OS process, while it runs: its channel, the tag of that channel's
%%  messages, and whether it is the node itself (not a -detached launcher).
-record(launcher, {tag :: reference(),
                   process :: rpeer_nif:channel(),
                   attached :: boolean()}).

-record(state, {
          options :: start_options(),
          %% the peer's node name, once known
          node :: node() | undefined,
          %% the command line the peer was started with, for logs and debugging
          exec :: file:name(),
          args :: [string()],
          %% the alternative connection's channel (the spawned process for standard_io,
          %%  the listener and then the connection for tcp), and the tag of its messages
          channel :: undefined | rpeer_nif:channel(),
          tag :: reference(),
          %% the largest frame either way (see rpeer_frame), read at the start
          max_frame :: rpeer_frame:limit(),
          %% the channel while frames can be sent: from the tcp peer's connection on,
          %%  and until the peer is gone
          connection :: undefined | rpeer_nif:channel(),
          %% the peer's OS process while it runs (a standard_io peer's is the channel)
          launcher :: undefined | #launcher{},
          %% the streams read from the peer (see rpeer_incoming)
          incoming :: rpeer_incoming:streams(),
          %% the latest console and stderr output of the peer, at most ?OUTPUT_TAIL bytes
          output = <<>> :: binary(),
          %% whether the next stderr text starts a line (and gets ?STDERR_PREFIX)
          stderr_line_start = true :: boolean(),
          peer_state = booting :: peer_state(),
          %% a warm node's hand-out linked it to this process (see rpeer_pool): its
          %%  exit stops the controller, as a start_link caller's does
          owner = none :: pid() | none,
          %% a warm node handed out for a dist request: its standard_io connection is
          %%  hidden, kept only for the node's `user' I/O and its life (see rpeer_pool)
          hidden = false :: boolean(),
          %% who hears how the boot ended: start_it/2 waiting ({wait, ...}, which also
          %%  gets the output of a failed boot), a wait_boot {Pid, Tag}, or nobody
          notify = false :: false | {pid(), term()} | {wait, pid(), reference()},
          %% the number of the next call: a counter, as the peer matches replies by it
          %%  and a reference or pid would change if this node became distributed
          seq = 0 :: non_neg_integer(),
          %% the calls the peer has not answered yet
          outstanding = #{} :: #{non_neg_integer() => gen_server:from()},
          %% when the controller started (monotonic ms), and how long the boot took
          started_at :: integer(),
          boot_time :: undefined | non_neg_integer(),
          %% frames, bytes and output counted for info/1
          traffic = #{frames_in => 0, bytes_in => 0, frames_out => 0, bytes_out => 0,
                      console_bytes => 0, stderr_bytes => 0} :: #{atom() => non_neg_integer()}
         }).

-type state() :: #state{}.

%% What an event leaves: the controller goes on, the peer went down (see peer_down/2),
%%  or the controller must stop.
-type outcome() :: {ok, state()} | {down, term(), state()} | {stop, term(), state()}.

%%--------------------------------------------------------------------
%% gen_server callbacks

%% @private gen_server callback.
-spec init([term()]) -> {ok, state()} | {stop, term()}.
init([Notify, Options, MaxFrame]) ->
    %% terminate/2 must run, to take the peer down
    process_flag(trap_exit, true),
    StartedAt = erlang:monotonic_time(millisecond),
    Tag = make_ref(),
    case rpeer_launch:listen(Tag, Options, MaxFrame) of
        {ok, Listener, Listening} ->
            case rpeer_launch:launch(Tag, Listener, Listening, Options, MaxFrame) of
                {ok, #{exec := Exec, args := Args, tag := ProcessTag, process := Process,
                       attached := Attached}} ->
                    Launcher = #launcher{tag = ProcessTag, process = Process, attached = Attached},
                    State = #state{options = Options, notify = Notify, tag = Tag,
                                   max_frame = MaxFrame, exec = Exec, args = Args,
                                   launcher = Launcher, incoming = rpeer_incoming:new(),
                                   started_at = StartedAt},
                    {ok, connect(Process, Listener, State)};
                {error, Reason} ->
                    _ = Listener =/= undefined andalso rpeer_nif:close(Listener),
                    {stop, Reason}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

%% The peer's process is spawned. A standard_io peer's process is its connection, read
%%  from its stdout. A dist or tcp peer reads no input (-noinput), so its stdin is
%%  closed; its stdout is read for console text; a tcp peer is still to connect to the
%%  listener (a dist peer has no channel).
connect(Process, _Listener, #state{options = #{connection := standard_io}} = State) ->
    read_from(channel, Process, State#state{channel = Process, connection = Process});
connect(Process, Listener, State) ->
    ok = rpeer_nif:close(Process),
    read_from(launcher, Process, State#state{channel = Listener}).

read_from(Source, Channel, #state{incoming = Incoming} = State) ->
    State#state{incoming = rpeer_incoming:open(Source, Channel, Incoming)}.

%% @private gen_server callback.
-spec handle_call(term(), gen_server:from(), state()) ->
          {reply, term(), state()} | {noreply, state()}.
%% call/5 without an alternative connection, or once it is gone
handle_call({call, _M, _F, _A}, _From, #state{connection = undefined} = State) ->
    {reply, {error, noconnection}, State};
handle_call({call, _M, _F, _A}, _From, #state{hidden = true} = State) ->
    {reply, {error, noconnection}, State};
%% call/5: the reply comes as a frame, matched by Seq
handle_call({call, M, F, A}, From, #state{seq = Seq, max_frame = MaxFrame} = State) ->
    case rpeer_frame:check({call, Seq, M, F, A}, MaxFrame) of
        {ok, Frame, Size} ->
            _ = rpeer_nif:send(State#state.connection, Frame),
            Outstanding = State#state.outstanding,
            {noreply, count(out, Size, State#state{seq = Seq + 1,
                                                   outstanding = Outstanding#{Seq => From}})};
        {too_large, Size} ->
            {reply, {error, rpeer_frame:too_large(Size, MaxFrame)}, State}
    end;
%% get_state/1, rpeer_output:last/1, and the node's name
handle_call(Query, _From, State) when is_atom(Query) ->
    {reply, query(Query, State), State};
%% rpeer_pool hands this warm controller out: from now on it is the caller's
handle_call({handover, Owner, Link, Leader, Options, Node, Pool}, _From,
            #state{peer_state = running} = State) ->
    true = group_leader(Leader, self()),
    _ = Link andalso link(Owner),
    true = unlink(Pool),
    Dist = not is_map_key(connection, Options),
    _ = Dist andalso erlang:monitor_node(Node, true),
    {reply, ok, State#state{options = Options, node = Node, notify = false, hidden = Dist,
                            owner = case Link of true -> Owner; false -> none end}};
handle_call({handover, _Owner, _Link, _Leader, _Options, _Node, _Pool}, _From, State) ->
    {reply, {error, State#state.peer_state}, State};
%% a dist peer while it boots (OTP 26+): cover starts there if test_server asked for it
handle_call({starting, Node}, _From, #state{options = Options} = State) ->
    _ = case Options of
            #{shutdown := {Timeout, CoverNode}} when is_integer(Timeout), is_atom(CoverNode) ->
                rpeer_ct:cover_on_peer(Node, CoverNode);
            _ ->
                ok
        end,
    {reply, ok, State}.

%% (a dist peer, while it boots, asks where its `user' writes: to our group leader)
query(get_state, #state{peer_state = PeerState}) -> PeerState;
query(last_output, #state{output = Output}) -> Output;
query(get_node, #state{node = Node}) -> Node;
query(group_leader, _State) -> group_leader();
query(info, State) -> info_of(State).

info_of(#state{options = Options, launcher = Launcher, traffic = Traffic} = State) ->
    OsPid = case Launcher of
                #launcher{process = Process} -> rpeer_nif:os_pid(Process);
                undefined -> undefined
            end,
    Traffic#{node => State#state.node, state => State#state.peer_state, os_pid => OsPid,
             connection => rpeer_launch:connection_of(Options, State#state.args),
             peer_side => rpeer_launch:peer_side_of(State#state.args),
             boot_time => State#state.boot_time,
             exec => State#state.exec, args => State#state.args}.

%% Counts a frame of Size payload bytes each way (`in', `out'), or output bytes.
count(Direction, Size, #state{traffic = Traffic} = State) ->
    {Frames, Bytes} = case Direction of
                          in -> {frames_in, bytes_in};
                          out -> {frames_out, bytes_out}
                      end,
    #{Frames := F, Bytes := B} = Traffic,
    State#state{traffic = Traffic#{Frames := F + 1, Bytes := B + Size}}.

count_output(Key, Text, #state{traffic = Traffic} = State) ->
    State#state{traffic = maps:update_with(Key, fun (Bytes) -> Bytes + byte_size(Text) end,
                                           Traffic)}.

%% @private gen_server callback.
-spec handle_cast(term(), state()) -> {noreply, state()}.
%% cast/4 and send/3: nothing to do without an alternative connection
handle_cast(_CastOrSend, #state{hidden = true} = State) ->
    {noreply, State};
handle_cast({cast, M, F, A}, State) ->
    {noreply, to_peer({cast, M, F, A}, State)};
handle_cast({send, To, Message}, State) ->
    {noreply, to_peer({message, To, Message}, State)}.

%% @private gen_server callback.
-spec handle_info(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
handle_info(Message, State) ->
    case on_message(Message, State) of
        {ok, Next} -> {noreply, Next};
        {down, Reason, Next} -> peer_down(Reason, Next);
        {stop, Reason, Next} -> {stop, Reason, Next}
    end.

%% @private gen_server callback: what crash reports and sys:get_status/1 show of the
%%  state: what info/1 says, and the options, calls and output. Not the channels: they
%%  are NIF resources, and a report that a log handler keeps (Common Test's does) would
%%  keep the peer's pipes open as long as it.
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(#{state := #state{} = State} = Status) ->
    Summary = (info_of(State))#{options => State#state.options,
                                connected => State#state.connection =/= undefined,
                                hidden => State#state.hidden,
                                outstanding_calls => map_size(State#state.outstanding),
                                output => State#state.output},
    Status#{state := Summary};
format_status(Status) ->
    Status.

%%--------------------------------------------------------------------
%% Events: one dispatcher for handle_info/2, and for terminate/2 while it waits

%% A message to the controller, as an event of one of its sources.
-spec on_message(term(), state()) -> outcome().
%% from the alternative connection's channel, or the peer's OS process
on_message({rpeer, Tag, Event}, State) ->
    from_channel(source(Tag, State), Event, State);
%% from a port reading a stream of the peer: bytes, its end, or its failure
on_message({Port, _} = Message, #state{incoming = Incoming} = State) when is_port(Port) ->
    incoming(rpeer_incoming:on_port_message(Message, Incoming), State);
on_message({'EXIT', Port, _} = Message, #state{incoming = Incoming} = State) when is_port(Port) ->
    incoming(rpeer_incoming:on_port_message(Message, Incoming), State);
%% the peer's exit status waited long enough for the end of its stdout
on_message({timeout, Timer, stdout_grace}, #state{incoming = Incoming} = State) ->
    incoming(rpeer_incoming:on_grace_timer(Timer, Incoming), State);
%% a dist peer booted
on_message({started, Node}, State) ->
    true = erlang:monitor_node(Node, true),
    {ok, booted(Node, State)};
%% whoever a warm node was handed out to with start_link/1 exited (see rpeer_pool)
on_message({'EXIT', Owner, Reason}, #state{owner = Owner} = State) ->
    {stop, Reason, State};
%% a dist peer (with no alternative connection) went away
on_message({nodedown, Node}, #state{options = Options} = State)
  when not is_map_key(connection, Options) ->
    {down, {nodedown, Node}, State};
on_message(_Other, State) ->
    {ok, State}.

%% Whose messages a tag marks: the alternative connection's channel, or the OS process
%%  of a dist or tcp peer (a standard_io peer's process is its channel).
source(Tag, #state{tag = Tag}) -> channel;
source(Tag, #state{launcher = #launcher{tag = Tag}}) -> launcher;
source(_Tag, _State) -> unknown.

%% A channel's message. Frames and output are flow-controlled: each one taken lets the
%%  channel send another.
from_channel(unknown, _Event, State) ->
    {ok, State};
from_channel(Source, {Kind, _} = Event, State)
  when Kind =:= frame; Kind =:= console; Kind =:= stderr ->
    ok = rpeer_nif:ack(sender(Source, State), 1),
    handle_event(Source, Event, State);
from_channel(Source, Event, State) ->
    handle_event(Source, Event, State).

sender(channel, #state{channel = Channel}) -> Channel;
sender(launcher, #state{launcher = #launcher{process = Process}}) -> Process.

%% A step of the incoming streams: its events are handled in order until one takes the
%%  peer down, and then the step after it is taken (see rpeer_incoming).
incoming(unknown, State) ->
    {ok, State};
incoming({Source, Events, Next, Incoming}, State) ->
    case handle_events(Source, Events, State#state{incoming = Incoming}) of
        {ok, Handled} when Next =:= done ->
            {ok, Handled};
        {ok, Handled} ->
            incoming(rpeer_incoming:continue(Next, Source, Handled#state.incoming), Handled);
        Ended ->
            Ended
    end.

handle_events(_Source, [], State) ->
    {ok, State};
handle_events(Source, [Event | Events], State) ->
    case handle_event(Source, Event, State) of
        {ok, Next} -> handle_events(Source, Events, Next);
        Ended -> Ended
    end.

%% One event of the channel or the peer's OS process, whether it came as a message or
%%  was decoded from a stream.
-spec handle_event(channel | launcher, term(), state()) -> outcome().
%% a frame from the peer: a request, a reply, a message, or its boot
handle_event(channel, {frame, Frame}, State) ->
    {ok, handle_frame(Frame, count(in, byte_size(Frame), State))};
%% a dist or tcp peer's stdout carries no control frames
handle_event(launcher, {frame, _Frame}, State) ->
    {ok, State};
%% the peer's console text and stderr: to our group leader
handle_event(_Source, {Stream, Text}, State) when Stream =:= console; Stream =:= stderr ->
    {ok, forward_output(Stream, Text, State)};
%% the channel's thread read the large frames in: a port reads the stream again
handle_event(Source, resume, #state{incoming = Incoming} = State) ->
    {ok, State#state{incoming = rpeer_incoming:resume(Source, Incoming)}};
%% booting: the tcp peer connected; its connection is read from now on
handle_event(channel, accepted, #state{channel = Channel} = State) ->
    {ok, read_from(channel, Channel, State#state{connection = Channel})};
%% booting: a connection that was not the peer's was closed unread
handle_event(channel, {rejected, Address}, State) ->
    logger:warning("rpeer: closed a connection to the control port from ~ts that is not "
                   "the peer's; still waiting for the peer", [Address], log_metadata(State)),
    {ok, State};
%% booting: no tcp peer connected in time; the start fails whatever peer_down says
handle_event(channel, {accept_failed, Reason}, State) ->
    {stop, {inet_async, Reason}, State#state{connection = undefined}};
%% the tcp connection ended, however: the peer halts when it loses it
handle_event(channel, {closed, _Reason}, #state{channel = Channel, incoming = Incoming} = State) ->
    ok = rpeer_nif:close(Channel),
    Closed = rpeer_incoming:close(channel, Incoming),
    {down, tcp_closed, State#state{connection = undefined, incoming = Closed}};
%% a tcp frame over the limit was read past (see rpeer_frame): a reply fails its call
handle_event(channel, {frame_too_large, Size, Head}, State) ->
    {ok, frame_too_large(Size, Head, count(in, Size, State))};
%% the peer's OS process exited: what it wrote to stdout comes first
handle_event(Source, {exit_status, _} = Exit, #state{incoming = Incoming} = State) ->
    case rpeer_incoming:hold_exit(Source, Exit, Incoming) of
        {held, Holding} -> {ok, State#state{incoming = Holding}};
        not_open -> exited(Source, Exit, State)
    end;
%% a thread of the channel failed (a bug in rpeer): the channel is gone
handle_event(_Source, {failed, Why}, State) ->
    logger:error("rpeer: a channel thread failed: ~ts", [Why], log_metadata(State)),
    {down, {rpeer_channel_failed, Why}, State#state{connection = undefined, launcher = undefined}};
%% the peer's program could not be run (spawn/6 returns before it is)
handle_event(_Source, {launch_failed, Errno}, State) ->
    {down, {launch_failed, Errno}, State#state{connection = undefined, launcher = undefined}};
%% late news of a channel that is no longer followed
handle_event(_Source, _Event, State) ->
    {ok, State}.

%% The peer's OS process exited, after the end of its stdout.
%% A dist peer's hidden connection (see rpeer_pool): its nodedown says it is down.
exited(channel, _Exit, #state{hidden = true} = State) ->
    {ok, State#state{launcher = undefined}};
%% A standard_io peer's process is its connection: the peer is down.
exited(channel, {exit_status, Status}, State) ->
    {down, {exit_status, Status}, State#state{connection = undefined, launcher = undefined}};
%% A dist or tcp node that fails while it boots: the boot failed. Status 0 is a wrapper
%%  that put the node in the background (run_erl, `-detached' in args): it may still
%%  connect.
exited(launcher, {exit_status, Status},
       #state{launcher = #launcher{attached = true}, peer_state = booting} = State)
  when Status =/= 0 ->
    {down, {exit_status, Status}, State#state{launcher = undefined}};
%% A running dist or tcp node (its nodedown or tcp_closed says it is down, as in peer),
%%  or the launcher of a -detached one.
exited(launcher, _Exit, State) ->
    {ok, State#state{launcher = undefined}}.

%%--------------------------------------------------------------------
%% The peer went down

%% What the controller does once its peer is gone, as `peer_down' says: stop normally
%%  (the default), stay with get_state/1 telling the first reason (`continue'), or exit
%%  with the reason (`crash'). A peer that was still booting failed to boot: that is
%%  logged with its last output and told to who waits; start/1 waiting for it raises,
%%  so its controller has no one to serve and stops (with the reason, under `crash').
-spec peer_down(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
peer_down(Reason, #state{peer_state = booting, notify = Notify} = State) ->
    logger:warning("rpeer: the peer (~ts) failed to boot: ~0p~nits last output:~n~ts",
                   [State#state.exec, Reason, State#state.output], log_metadata(State)),
    _ = tell_boot(boot_failed, Reason, State),
    Failed = State#state{peer_state = {down, Reason}},
    case {Notify, on_peer_down(State)} of
        {{wait, _, _}, Policy} when Policy =/= crash -> {stop, normal, Failed};
        {_, Policy} -> after_down(Policy, Reason, Failed)
    end;
peer_down(Reason, State) ->
    after_down(on_peer_down(State), Reason, State).

on_peer_down(#state{options = Options}) ->
    maps:get(peer_down, Options, stop).

after_down(continue, _Reason, #state{peer_state = {down, _First}} = State) ->
    {noreply, State};
after_down(continue, Reason, State) ->
    {noreply, State#state{peer_state = {down, Reason}}};
after_down(crash, Reason, State) ->
    {stop, Reason, down(Reason, State#state{connection = undefined})};
after_down(stop, Reason, State) ->
    {stop, normal, down(Reason, State)}.

%% The controller stops because its peer went down. A peer that was running is not
%%  waited for in terminate/2 (stop/1 waits): the controller ends as promptly as stock
%%  peer's, when the connection ends. Its OS process is exiting already (the node halted,
%%  or its connection ended, which halts it), and is not killed, so a crash dump it
%%  writes is finished. A peer that failed to boot is waited for: what it prints while
%%  it exits explains the failure.
down(Reason, #state{peer_state = running} = State) ->
    State#state{peer_state = {down, Reason}, launcher = undefined};
down(Reason, State) ->
    State#state{peer_state = {down, Reason}}.

%%--------------------------------------------------------------------
%% Stopping

%% @private gen_server callback.
-spec terminate(Reason :: term(), state()) -> ok.
%% Whoever waited for the boot has given up (or was told): a boot that completes while
%%  the peer is being stopped is not reported.
terminate(Reason, #state{notify = Notify} = State) when Notify =/= false ->
    terminate(Reason, State#state{notify = false});
%% The peer went down on its own while running (see down/2): there is nobody to ask to
%%  stop, and nothing to wait for.
terminate(_Reason, #state{peer_state = {down, _}, launcher = undefined} = State) ->
    ok = close(State),
    rpeer_incoming:close_all(State#state.incoming);
terminate(_Reason, #state{options = Options} = State) ->
    Policy = case maps:get(shutdown, Options, halt) of
                 halt -> {halt, ?HALT_WAIT};
                 Given -> Given
             end,
    #state{incoming = Incoming} = Final = take_down(Policy, State),
    %% a dist peer's hidden connection: the peer halts when it closes, as when a dist
    %%  peer's controller goes
    ok = close(Final),
    rpeer_incoming:close_all(Incoming).

%% Takes the peer down as the `shutdown' option says, and returns the state after
%%  whatever events came meanwhile. Once the node is asked to go, stop/1 waits (up to the
%%  option's time) for it to disconnect and for its OS process to exit.
take_down(close, #state{options = #{connection := _}} = State) ->
    ok = close(State),
    State;
take_down(close, #state{node = Node} = State) ->
    _ = erlang:disconnect_node(Node),
    State;
take_down({halt, Wait}, State) ->
    Deadline = deadline(Wait),
    ok = halt_peer(Wait, Deadline, State),
    wait_os_exit(State, Deadline);
take_down({Wait, CoverNode}, #state{node = Node} = State) ->
    _ = rpc:call(CoverNode, cover, flush, [Node]),
    take_down(Wait, State);
take_down(Wait, State) ->
    Deadline = deadline(Wait),
    Stopping = ask_to_stop(Deadline, State),
    wait_disconnected(State#state.node, Deadline),
    wait_os_exit(Stopping, Deadline).

%% `halt': with an alternative connection, closing it halts the peer; a dist peer is
%%  halted over the distribution.
halt_peer(_Wait, Deadline, #state{options = #{connection := _}, node = Node} = State) ->
    ok = close(State),
    wait_disconnected(Node, Deadline);
halt_peer(_Wait, _Deadline, #state{node = undefined}) ->
    ok;
halt_peer(Wait, _Deadline, #state{node = Node}) ->
    try erpc:call(Node, erlang, halt, [], Wait) of
        _ -> ok
    catch
        error:{erpc, noconnection} -> ok;
        _:_ -> force_disconnect(Node)
    end.

%% A timeout policy: the peer is asked to run init:stop/0. With an alternative
%%  connection the request goes over it, whether or not the peer is distributed, and the
%%  connection is closed once the peer closed it or the time ran out (peer's erpc:cast
%%  would, between two nodes that are not distributed, stop the origin itself). A dist
%%  peer is asked over the distribution.
ask_to_stop(Deadline, #state{options = #{connection := _}, connection = Conn} = State) ->
    _ = Conn =/= undefined
        andalso rpeer_nif:send(Conn, erlang:term_to_iovec({cast, init, stop, []})),
    {_Closed, Stopping} = await(fun (#state{connection = C}) -> C =:= undefined end,
                                State, Deadline),
    ok = close(Stopping),
    Stopping;
ask_to_stop(_Deadline, #state{node = undefined} = State) ->
    State;
ask_to_stop(_Deadline, #state{node = Node} = State) ->
    ok = erpc:cast(Node, init, stop, []),
    State.

%% Closes the channel: the peer sees the end of its stdin or its socket, and halts.
close(#state{channel = undefined}) ->
    ok;
close(#state{channel = Channel}) ->
    rpeer_nif:close(Channel).

%% stop/1 returns once the peer's OS process is gone (when rpeer started it attached):
%%  waits for its exit until the shutdown deadline, then kills its process group.
wait_os_exit(#state{launcher = #launcher{attached = true, process = Process}} = State, Deadline) ->
    case await(fun os_exited/1, State, Deadline) of
        {true, Exited} ->
            Exited;
        {false, Running} ->
            ok = rpeer_nif:kill(Process),
            {_, Killed} = await(fun os_exited/1, Running, deadline(?KILL_WAIT)),
            Killed
    end;
wait_os_exit(State, _Deadline) ->
    State.

os_exited(#state{launcher = #launcher{attached = Attached}}) -> not Attached;
os_exited(#state{launcher = undefined}) -> true.

%% Waits until Done(State) holds, or the deadline passes, while the events of the
%%  channels and the streams are handled by on_message/2 as ever (output is forwarded,
%%  frames are served). What an event says of the peer's fate no longer matters.
await(Done, State, Deadline) ->
    case Done(State) of
        true ->
            {true, State};
        false ->
            receive
                {rpeer, _Tag, _Event} = Message -> await_next(Done, Message, State, Deadline);
                {Port, _} = Message when is_port(Port) -> await_next(Done, Message, State, Deadline);
                {'EXIT', Port, _} = Message when is_port(Port) -> await_next(Done, Message, State, Deadline);
                {timeout, _Timer, stdout_grace} = Message -> await_next(Done, Message, State, Deadline)
            after time_left(Deadline) ->
                    {false, State}
            end
    end.

await_next(Done, Message, State, Deadline) ->
    After = case on_message(Message, State) of
                {ok, Next} -> Next;
                {_DownOrStop, _Reason, Next} -> Next
            end,
    await(Done, After, Deadline).

%% Returns once Node is disconnected, or takes the connection down at the deadline.
%%  The node's disconnection is watched for before the second look, so that it cannot
%%  slip in between; the controller is ending, so the watch is left on.
wait_disconnected(Node, Deadline) ->
    case is_connected(Node) andalso watch_nodes() andalso is_connected(Node) of
        false ->
            ok;
        true ->
            receive {nodedown, Node, _Info} -> ok
            after time_left(Deadline) -> force_disconnect(Node)
            end
    end.

is_connected(Node) ->
    lists:member(Node, nodes(connected)).

watch_nodes() ->
    _ = net_kernel:monitor_nodes(true, [{node_type, all}]),
    true.

force_disconnect(Node) ->
    _ = erlang:disconnect_node(Node),
    logger:warning("rpeer: ~p did not disconnect within the shutdown time of stop/1; "
                   "the connection to it was taken down", [Node], node_metadata(Node)).

%% Deadlines are monotonic milliseconds, or infinity.
deadline(infinity) -> infinity;
deadline(Wait) -> erlang:monotonic_time(millisecond) + Wait.

time_left(infinity) -> infinity;
time_left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

%%--------------------------------------------------------------------
%% Frames from the peer

%% Handles one frame from the alternative connection. A frame the controller cannot act
%%  on is dropped (see dropped/3): the peer's mistake never takes the controller, and
%%  with it the peer, down.
handle_frame(Frame, State) ->
    try rpeer_frame:to_term(Frame) of
        Term -> from_peer(Term, byte_size(Frame), State)
    catch
        error:badarg -> dropped(not_a_term, byte_size(Frame), State)
    end.

%% the peer's `user' asks our group leader for I/O
from_peer({io_request, From, ReplyAs, Request}, _Size, State) ->
    to_peer({io_reply, From, ReplyAs, io_answer(group_leader(), Request)}, State);
%% send/3 the other way: a message for a process here
from_peer({message, To, Content}, Size, State) ->
    try To ! Content of
        _ -> State
    catch
        error:badarg when is_atom(To) -> dropped({message_to_unregistered_name, To}, Size, State);
        error:badarg -> dropped(message_to_bad_destination, Size, State)
    end;
%% the answer to a call/5
from_peer({reply, Seq, Class, Result}, Size, #state{outstanding = Outstanding} = State) ->
    case maps:take(Seq, Outstanding) of
        {From, Waiting} ->
            gen:reply(From, {Class, Result}),
            State#state{outstanding = Waiting};
        error ->
            dropped(reply_to_unknown_call, Size, State)
    end;
%% a standard_io or tcp peer booted
from_peer({started, Node}, _Size, State) ->
    booted(Node, State);
from_peer(Other, Size, State) when is_tuple(Other), tuple_size(Other) > 0,
                                   is_atom(element(1, Other)) ->
    dropped({unknown_frame, element(1, Other), tuple_size(Other)}, Size, State);
from_peer(_Other, Size, State) ->
    dropped(unknown_frame, Size, State).

%% The answer of our group leader (the starter's) to an I/O request of the peer, or
%%  {error, terminated} when the group leader is gone.
io_answer(Leader, Request) ->
    Watch = erlang:monitor(process, Leader),
    Leader ! {io_request, self(), Watch, Request},
    io_reply(Watch).

io_reply(Watch) ->
    receive
        {io_reply, Watch, Answer} -> true = erlang:demonitor(Watch, [flush]), Answer;
        {'DOWN', Watch, process, _Leader, _Why} -> {error, terminated}
    end.

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
frame_too_large(Size, Head, #state{outstanding = Outstanding, max_frame = MaxFrame} = State) ->
    case rpeer_frame:reply_seq(Head) of
        {ok, Seq} when is_map_key(Seq, Outstanding) ->
            {From, Rest} = maps:take(Seq, Outstanding),
            gen:reply(From, {error, rpeer_frame:too_large(Size, MaxFrame)}),
            State#state{outstanding = Rest};
        _ ->
            dropped({frame_too_large, MaxFrame}, Size, State)
    end.

%% What every log event of a controller carries, for filters and handlers.
log_metadata(#state{node = Node}) ->
    node_metadata(Node).

node_metadata(Node) ->
    #{domain => [rpeer], rpeer_controller => self(), rpeer_node => Node}.

%% Sends a term to the peer over the alternative connection, if there is one: as
%%  term_to_iovec/1's binaries, so that a large binary in it goes out as it is, not
%%  copied into the frame (term_to_binary/1 copies 100 MiB into fresh memory). A channel
%%  that closed meanwhile is not an error here: its end arrives as an event. The caller
%%  of cast/4 and send/3 checked the size; a frame over the limit here (the limit
%%  changed since, or an answer to an I/O request) is not sent.
to_peer(_Term, #state{connection = undefined} = State) ->
    State;
to_peer(Term, #state{connection = Conn, max_frame = MaxFrame} = State) ->
    case rpeer_frame:check(Term, MaxFrame) of
        {ok, Frame, Size} ->
            _ = rpeer_nif:send(Conn, Frame),
            count(out, Size, State);
        {too_large, Size} ->
            not_sent(Term, rpeer_frame:too_large(Size, MaxFrame), State)
    end.

%% A frame over the limit: the I/O request it answers gets the error instead.
not_sent({io_reply, From, ReplyAs, _Reply}, Reason, State) ->
    to_peer({io_reply, From, ReplyAs, {error, Reason}}, State);
not_sent(Term, Reason, State) ->
    logger:warning("rpeer: did not send a ~0p frame to the peer: ~0p", [element(1, Term), Reason],
                   log_metadata(State)),
    State.

%%--------------------------------------------------------------------
%% The boot

%% The peer booted as Node: it runs, and whoever waits hears it.
booted(Node, #state{started_at = StartedAt} = State) ->
    State#state{peer_state = running, node = Node,
                boot_time = erlang:monotonic_time(millisecond) - StartedAt,
                notify = tell_boot(started, Node, State)}.

%% Tells whoever waits for the boot how it ended (`started' with the node, or
%%  `boot_failed' with the reason), and returns who to tell from now on: start_it/2
%%  waiting is then told as a wait_boot {Pid, Tag} is. When the boot failed, start_it/2
%%  gets the peer's last output first.
tell_boot(_Result, _What, #state{notify = false}) ->
    false;
tell_boot(Result, What, #state{notify = {wait, Caller, Ref}, output = Output} = State) ->
    _ = Result =:= boot_failed andalso (Caller ! {Ref, {boot_output, Output}}),
    tell_boot(Result, What, State#state{notify = {Caller, Ref}});
tell_boot(Result, What, #state{notify = {To, Tag}}) ->
    To ! {Tag, {Result, What, self()}},
    {To, Tag}.

%%--------------------------------------------------------------------
%% The peer's output

%% The peer's output goes to our group leader (the starter's), as peer's console text
%%  does; stderr lines are marked with ?STDERR_PREFIX. The latest output is kept for
%%  boot failures.
forward_output(console, Text, #state{output = Output} = State) ->
    put_chars(Text),
    count_output(console_bytes, Text, State#state{output = tail(Output, Text)});
forward_output(stderr, Text, #state{output = Output, stderr_line_start = AtStart} = State) ->
    {Marked, NextAtStart} = mark_lines(Text, AtStart),
    put_chars(Marked),
    count_output(stderr_bytes, Text,
                 State#state{output = tail(Output, Marked), stderr_line_start = NextAtStart}).

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

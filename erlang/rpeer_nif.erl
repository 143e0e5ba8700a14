%% @doc The NIF behind rpeer: spawning the peer, the standard_io and tcp channels.
%%
%% A channel delivers its events to the process that created it as
%% `{rpeer, Tag, Event}' messages, in stream order:
%% <ul>
%% <li>`{frame, Binary}': a control frame (external term format) from the incoming
%%     stream (a spawned program's stdout, the tcp connection) while the channel reads
%%     it (read_incoming/1);</li>
%% <li>`{console, Binary}': console text from that stdout, as stderr's text;</li>
%% <li>`resume': the channel stopped reading the incoming stream (read_incoming/1);</li>
%% <li>`{stderr, Binary}': text the peer wrote to stderr (valid UTF-8; bytes that are
%%     not UTF-8 arrive as Latin-1 characters);</li>
%% <li>`{exit_status, Status | unknown}': the spawned program exited; last event of a
%%     spawned channel;</li>
%% <li>`{failed, Why}': a channel thread failed (a bug in rpeer); last event;</li>
%% <li>`{launch_failed, Errno}': the program could not be started at all (it is
%%     launched after spawn/6 returned); last event of a spawned channel;</li>
%% <li>`accepted': the tcp peer connected: its connection is the incoming stream;</li>
%% <li>`{accept_failed, timeout | Errno}': no tcp peer connected in time;</li>
%% <li>`{rejected, Address}': a verifying tcp channel closed, unread, a connection that
%%     did not come from the peer (Address is its "ip:port");</li>
%% <li>`{closed, Errno}': the tcp connection failed (a reset, a dead link's timeout:
%%     errors a port reading it does not report) or could not be set up after the
%%     accept.</li>
%% </ul>
%% Frame, console and stderr events are flow-controlled: at most a window of them is
%% outstanding until the owner acknowledges them with {@link ack/2}.
%% The channel is closed when its owner exits.
%%
%% The incoming stream (the stdout of a program spawned with pipes, or the tcp
%% connection once accepted) is not read by the channel: the owner opens a port on
%% {@link incoming_fd/1} (`open_port({fd, Fd, Fd}, [in, binary, eof])'), so that the VM
%% polls it in the scheduler's pollset as it polls stock peer's standard_io port, and
%% decodes what the port delivers with {@link decode_incoming/2} into `{frame, Binary}'
%% and `{console, Binary}' events (console text as stderr's); the end of the tcp
%% connection decodes as `{closed, closed}'; a tcp frame over the limit is read past and
%% dropped, and decodes as `{frame_too_large, Size, Head}' (Head: its first bytes, at
%% most 64). When a large frame is coming, the owner closes the
%% port and reads what the stream holds of the frame ({@link read_incoming/1}); if the
%% frame goes on, the channel's thread reads its rest (a port reads 64 KiB at a time, a
%% message each) and then sends `resume': the owner opens a port again. The exit status
%% can arrive before the end of stdout: the owner orders them.
-module(rpeer_nif).

-export([spawn/6, listen/6, expect_peer/2, attach_stdio/1, attach_tcp/2, send/2, ack/2, close/1, kill/1, os_pid/1,
         incoming_fd/1, decode_incoming/2, read_incoming/1, incoming_read_bytes/1,
         release_incoming/1]).
-export_type([channel/0, incoming_event/0]).

-nifs([spawn/6, listen/6, expect_peer/2, attach_stdio/1, attach_tcp/2, send/2, ack/2, close/1, kill/1, os_pid/1,
       incoming_fd/1, decode_incoming/2, read_incoming/1, incoming_read_bytes/1,
       release_incoming/1]).
-on_load(load/0).

-opaque channel() :: reference().
-type incoming_event() :: {frame | console, binary()}
                        | {frame_too_large, Size :: non_neg_integer(), Head :: binary()}
                        | {closed, closed}.

-spec load() -> ok | {error, term()}.
load() ->
    Dir = priv_dir(),
    %% rpeer-wait, which runs every spawned program, is installed next to the NIF.
    Waiter = filename:join(Dir, "rpeer-wait"),
    erlang:load_nif(filename:join(Dir, "rpeer_nif"),
                    unicode:characters_to_binary(Waiter, unicode, file:native_name_encoding())).

%% The priv directory beside the ebin this module was loaded from (as rebar3 and releases
%%  lay it out), else the application's: code:priv_dir/1 alone takes the first directory
%%  named rpeer in the code path, which may be another one. Absolute: rpeer-wait is run
%%  from there whatever the current directory is then.
priv_dir() ->
    Beside = filename:join(filename:dirname(filename:dirname(filename:absname(code:which(?MODULE)))),
                           "priv"),
    case prim_file:read_file_info(filename:join(Beside, "rpeer_nif.so")) of
        {ok, _} ->
            Beside;
        {error, _} ->
            case code:priv_dir(rpeer) of
                {error, bad_name} -> Beside;
                Priv -> filename:absname(Priv)
            end
    end.

%% @doc Starts `Exec' with `Args' and exactly the environment `Env'. `standard_io'
%% connects its stdin/stdout/stderr to the channel; `detached' gives it /dev/null and the
%% origin's stderr, and the channel only reports the exit status. A frame on its stdout
%% is at most `MaxFrame' bytes: a longer one is taken for console text.
-spec spawn(Tag :: term(), Exec :: binary(), Args :: [binary()], Env :: [{binary(), binary()}],
            standard_io | detached, MaxFrame :: non_neg_integer()) ->
          {ok, channel()} | {error, {exec, Errno :: atom(), Path :: binary()} | atom()}.
spawn(_Tag, _Exec, _Args, _Env, _Mode, _MaxFrame) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Listens on `Ip:Port' (SO_REUSEADDR) and accepts one connection within
%% `AcceptTimeout' milliseconds. A connection whose other end leaves data or keepalive
%% probes unanswered for `DeadLink' milliseconds (0: never) is closed with
%% `{closed, etimedout}'. Frames longer than `MaxFrame' are dropped unread and reported
%% (`{frame_too_large, Size, Head}'). With
%% `Verify', only a connection from the peer's process group (see {@link expect_peer/2})
%% is accepted; others are closed unread and reported as `{rejected, Address}'.
-spec listen(Tag :: term(), inet:ip_address(), inet:port_number(),
             {AcceptTimeout :: non_neg_integer(), DeadLink :: non_neg_integer()},
             MaxFrame :: non_neg_integer(), Verify :: boolean()) ->
          {ok, channel(), inet:port_number()} | {error, atom()}.
listen(_Tag, _Ip, _Port, _Timeouts, _MaxFrame, _Verify) ->
    erlang:nif_error(nif_not_loaded).

%% @doc A verifying tcp channel accepts only a connection from a process of the process
%% group of `Peer', a spawned channel (the peer's OS process).
-spec expect_peer(channel(), Peer :: channel()) -> ok.
expect_peer(_Channel, _Peer) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The peer node's side of the standard_io channel (used by rpeer_agent): frames
%% are read from this node's stdin and written to its stdout. The caller receives them
%% as from an active gen_tcp socket `Socket': `{tcp, Socket, Frame}', and
%% `{tcp_closed, Socket}' when stdin ends; each frame is acknowledged with {@link ack/2}.
%% Bytes on stdin that are not frames are dropped.
-spec attach_stdio(Socket :: term()) -> {ok, channel()} | {error, atom()}.
attach_stdio(_Socket) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The reading half of the peer node's side of the tcp channel (rpeer's agent): the
%% frames of the connection whose descriptor is `Fd' (a gen_tcp socket's, which stays
%% open and sends; rpeer's thread reads it borrowed, holding no reference while it waits)
%% are delivered as by {@link attach_stdio/1}:
%% `{tcp, Socket, Frame}', and `{tcp_closed, Socket}' when the connection ends.
-spec attach_tcp(Socket :: term(), Fd :: non_neg_integer()) -> {ok, channel()} | {error, atom()}.
attach_tcp(_Socket, _Fd) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Queues a frame for the peer: an external term format binary, or the binaries of
%% `term_to_iovec/1' (whose large binaries are the term's own, not copies). Never blocks;
%% never copies the frame's binaries.
-spec send(channel(), binary() | [binary()]) -> ok | {error, closed}.
send(_Channel, _Frame) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Acknowledges `Count' handled frame, console or stderr events.
-spec ack(channel(), pos_integer()) -> ok.
ack(_Channel, _Count) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Closes the sending side: queued frames are written while the peer reads them,
%% then the peer sees end of file. Events keep coming until the channel ends.
-spec close(channel()) -> ok.
close(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Kills (SIGKILL) the spawned program and what it started in its process group
%% (not rpeer-wait, which leads the group). Its exit status still arrives.
-spec kill(channel()) -> ok.
kill(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The OS pid of the spawned program's rpeer-wait (the program's process group).
-spec os_pid(channel()) -> non_neg_integer() | undefined.
os_pid(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc The descriptor of the incoming stream, to open a port on; `undefined' without
%% one (a program spawned detached), before the tcp peer connected, or once released.
-spec incoming_fd(channel()) -> non_neg_integer() | undefined.
incoming_fd(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Decodes bytes the port delivered (one port read, at most 64 KiB), or `eof' at
%% the stream's end: the events they complete, in stream order, and `thread' when a large
%% frame is coming whose rest {@link read_incoming/1} reads faster (else `port').
-spec decode_incoming(channel(), binary() | eof) -> {[incoming_event()], port | thread}.
decode_incoming(_Channel, _Bytes) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Reads the large frame coming on the incoming stream as far as the stream holds
%% it now (for about 250 us, without waiting; call it only while no port reads it): the
%% events completed, and who reads on. With `port', open a port on
%% {@link incoming_fd/1} again; with `thread', the channel's thread reads until the
%% frame is in: its events come as the channel's (flow-controlled), then `resume'.
-spec read_incoming(channel()) -> {[incoming_event()], port | thread}.
read_incoming(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Bytes read from the incoming stream so far, by the port or the channel's
%% thread: whether it is still written to.
-spec incoming_read_bytes(channel()) -> non_neg_integer().
incoming_read_bytes(_Channel) ->
    erlang:nif_error(nif_not_loaded).

%% @doc Closes the origin's end of the incoming stream. Call it after the port on it is
%% closed: a descriptor closed under a port could be reused by another. (If the owner
%% dies without calling it, the descriptor is closed a few seconds later.)
-spec release_incoming(channel()) -> ok.
release_incoming(_Channel) ->
    erlang:nif_error(nif_not_loaded).

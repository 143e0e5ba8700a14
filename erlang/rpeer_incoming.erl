%% @doc The streams a controller reads from its peer, and who reads each.
%%
%% A controller reads up to two streams, named by whose messages they go with:
%% `channel', the control connection (a standard_io peer's stdout, or a tcp peer's
%% connection once accepted), and `launcher', the stdout of a dist or tcp peer's OS
%% process (console text only). Their bytes are decoded by the channel of the NIF that
%% owns the descriptor ({@link rpeer_nif:decode_incoming/2}).
%%
%% Who reads a stream:
%% <ul>
%% <li>a port (`open_port({fd, Fd, Fd}, ...)'), most of the time: the VM polls the
%%     descriptor, and a reply wakes the controller at once;</li>
%% <li>the channel's thread, while large frames come in: a port delivers 64 KiB a
%%     message, so when the decoder says a large frame is coming the port is closed, its
%%     last messages are decoded, what the stream holds is read at once
%%     ({@link rpeer_nif:read_incoming/1}), and the thread reads the rest until it sends
%%     `resume'; then a port reads again.</li>
%% </ul>
%% The peer's exit status can arrive before the end of its stdout. It is held until
%% that end (as a port's `exit_status' follows its `eof'), or until ?STDOUT_GRACE
%% passed with nothing read, when a process the peer started holds stdout open.
%%
%% This module does not act on what it decodes: each function returns a step, the
%% events of one stream, in order, for the controller to handle, and what to do once
%% they are handled ({@link continue/3}). Between the steps the controller answers the
%% frames just decoded before it reads on.
%% @end
-module(rpeer_incoming).

-export([new/0, open/3, on_port_message/2, continue/3, hold_exit/3, on_grace_timer/2,
         resume/2, close/2, close_all/1]).
-export_type([streams/0, source/0, step/0, next/0]).

%% How long an exit status waits for the end of stdout while nothing more is read.
-define(STDOUT_GRACE, 2000).

-type source() :: channel | launcher.

%% What reads a stream now.
-type reader() :: port() | thread.

%% An exit status waiting for the end of its stream: the timer that gives up waiting,
%%  and how many bytes had been read from the stream when it started.
-record(held, {source :: source(),
               event :: {exit_status, term()},
               timer :: reference(),
               read :: non_neg_integer()}).

-record(streams, {open = #{} :: #{source() => {reader(), rpeer_nif:channel()}},
                  held :: undefined | #held{}}).

-opaque streams() :: #streams{}.

%% What to do once the events of a step are handled:
%%  done     - nothing, until the next message;
%%  hand_off - a large frame is coming: stop the port and read it at once;
%%  read     - read what the stream holds of it, and let the thread read the rest;
%%  reopen   - the large frames are in: a port reads the stream again;
%%  ended    - the stream ended.
-type next() :: done | hand_off | read | reopen | ended.

-type event() :: rpeer_nif:incoming_event() | {exit_status, term()}.

-type step() :: {source(), [event()], next(), streams()}.

%% @doc No stream read yet.
-spec new() -> streams().
new() ->
    #streams{}.

%% @doc Starts reading the incoming stream of `Channel', if it has one (a program
%%  spawned detached has none, nor a tcp channel before its peer connected).
-spec open(source(), rpeer_nif:channel(), streams()) -> streams().
open(Source, Channel, #streams{open = Open} = Streams) ->
    case rpeer_nif:incoming_fd(Channel) of
        undefined -> Streams;
        Fd -> Streams#streams{open = Open#{Source => {fd_port(Fd), Channel}}}
    end.

fd_port(Fd) ->
    open_port({fd, Fd, Fd}, [in, binary, eof]).

%% @doc What a port message means: bytes (`{Port, {data, Bytes}}'), the stream's end
%%  (`{Port, eof}'), or the port's failure (`{'EXIT', Port, Reason}'). `unknown' for a
%%  port that reads none of the streams, or a message that says nothing.
-spec on_port_message(term(), streams()) -> step() | unknown.
on_port_message({Port, {data, Bytes}}, Streams) ->
    case source_of(Port, Streams) of
        undefined -> unknown;
        Source -> decode(Source, Bytes, Streams)
    end;
on_port_message({Port, eof}, Streams) ->
    end_of(source_of(Port, Streams), Streams);
on_port_message({'EXIT', Port, _Reason}, Streams) ->
    end_of(source_of(Port, Streams), Streams);
on_port_message(_Other, _Streams) ->
    unknown.

end_of(undefined, _Streams) ->
    unknown;
end_of(Source, Streams) ->
    ended(Source, Streams).

source_of(Port, #streams{open = Open}) ->
    case [Source || {Source, {Reader, _Channel}} <- maps:to_list(Open), Reader =:= Port] of
        [Source] -> Source;
        [] -> undefined
    end.

%% @doc The step after the events of `Next''s step were handled.
-spec continue(next(), source(), streams()) -> step().
continue(done, Source, Streams) ->
    {Source, [], done, Streams};
continue(hand_off, Source, Streams) ->
    hand_off(Source, Streams);
continue(read, Source, Streams) ->
    {Events, Reader} = rpeer_nif:read_incoming(channel(Source, Streams)),
    case Reader of
        thread -> {Source, Events, done, Streams};
        port -> {Source, Events, reopen, Streams}
    end;
continue(reopen, Source, Streams) ->
    {Source, [], done, reopen(Source, Streams)};
continue(ended, Source, Streams) ->
    ended(Source, Streams).

%% The port is closed; the messages it sent before are decoded now (the frame, or the
%%  stream, may have ended in them), and then who reads on is what the last of them
%%  said. Until then, nothing but this step reads the stream.
hand_off(Source, #streams{open = Open} = Streams) ->
    {Port, Channel} = maps:get(Source, Open),
    true = erlang:port_close(Port),
    Handed = Streams#streams{open = Open#{Source := {thread, Channel}}},
    {Events, Next} = drain(Port, Channel, read, []),
    {Source, Events, Next, Handed}.

drain(Port, Channel, Next, Events) ->
    receive
        {Port, {data, Bytes}} ->
            {More, Reader} = rpeer_nif:decode_incoming(Channel, Bytes),
            drain(Port, Channel, after_drained(Reader), Events ++ More);
        {Port, eof} ->
            {Events, ended}
    after 0 ->
            {Events, Next}
    end.

%% Who reads on after the drained messages: the decoder says whether the large frame
%%  is still coming.
after_drained(thread) -> read;
after_drained(port) -> reopen.

decode(Source, Bytes, Streams) ->
    case rpeer_nif:decode_incoming(channel(Source, Streams), Bytes) of
        {Events, port} -> {Source, Events, done, Streams};
        {Events, thread} -> {Source, Events, hand_off, Streams}
    end.

%% A port reads the stream again. The frame just handled may have been a reply whose
%%  caller waits in this scheduler's run queue: it runs first (the port takes ~50 us to
%%  open).
reopen(Source, Streams) ->
    erlang:yield(),
    open(Source, channel(Source, Streams), Streams).

%% The stream ended (end of file, a read error, or the grace after the exit status ran
%%  out): what the decoder held back (console text, the end of the tcp connection), and
%%  then the exit status held for this end.
ended(Source, #streams{held = Held} = Streams) ->
    {Events, _Reader} = rpeer_nif:decode_incoming(channel(Source, Streams), eof),
    Closed = close(Source, Streams),
    case Held of
        #held{source = Source, event = Exit, timer = Timer} ->
            _ = erlang:cancel_timer(Timer),
            {Source, Events ++ [Exit], done, Closed#streams{held = undefined}};
        _ ->
            {Source, Events, done, Closed}
    end.

%% @doc Holds the exit status of the process whose stdout `Source' still reads, until
%%  that stream ends; `not_open' when it is not read (any more).
-spec hold_exit(source(), {exit_status, term()}, streams()) -> {held, streams()} | not_open.
hold_exit(Source, Exit, #streams{open = Open} = Streams) when is_map_key(Source, Open) ->
    Read = rpeer_nif:incoming_read_bytes(channel(Source, Streams)),
    {held, Streams#streams{held = #held{source = Source, event = Exit, timer = grace_timer(),
                                        read = Read}}};
hold_exit(_Source, _Exit, _Streams) ->
    not_open.

grace_timer() ->
    erlang:start_timer(?STDOUT_GRACE, self(), stdout_grace).

%% @doc The grace timer of a held exit status ran out: a stream that was read from
%%  meanwhile (a large frame coming in) gets another grace; one nothing came from is
%%  held open by some other process, and is taken as ended. `unknown' for a timer that
%%  is not the current one.
-spec on_grace_timer(reference(), streams()) -> step() | unknown.
on_grace_timer(Timer, #streams{held = #held{timer = Timer, source = Source, read = Read} = Held}
               = Streams) ->
    case rpeer_nif:incoming_read_bytes(channel(Source, Streams)) of
        Read ->
            ended(Source, Streams);
        Now ->
            Again = Held#held{timer = grace_timer(), read = Now},
            {Source, [], done, Streams#streams{held = Again}}
    end;
on_grace_timer(_Timer, _Streams) ->
    unknown.

%% @doc The channel's thread read the large frames in (`resume'): a port reads again.
-spec resume(source(), streams()) -> streams().
resume(Source, #streams{open = Open} = Streams) ->
    case Open of
        #{Source := {thread, _Channel}} -> reopen(Source, Streams);
        _ -> Streams
    end.

%% @doc Stops reading a stream, and closes this end of it. The port goes before the
%%  descriptor (a descriptor closed under a port could be reused by another); a port
%%  that failed is closed already, and a reader thread stops when the stream is
%%  released.
-spec close(source(), streams()) -> streams().
close(Source, #streams{open = Open} = Streams) ->
    case maps:take(Source, Open) of
        {{Reader, Channel}, Rest} ->
            try is_port(Reader) andalso erlang:port_close(Reader)
            catch error:badarg -> ok
            end,
            ok = rpeer_nif:release_incoming(Channel),
            Streams#streams{open = Rest};
        error ->
            Streams
    end.

%% @doc Stops reading every stream (the controller ends).
-spec close_all(streams()) -> ok.
close_all(#streams{open = Open} = Streams) ->
    _ = [close(Source, Streams) || Source <- maps:keys(Open)],
    ok.

channel(Source, #streams{open = Open}) ->
    {_Reader, Channel} = maps:get(Source, Open),
    Channel.

%% @doc
%% rpeer's peer side for the standard_io connection: started on the peer node as its
%% `user' (`-user rpeer_agent', with rpeer's code path added by the origin) when the
%% peer is started with `peer_side => rpeer'.
%%
%% It speaks exactly the protocol of OTP's peer module (see rpeer), but frames are
%% decoded from the node's stdin and encoded to its stdout by rpeer's Rust codec on
%% its own threads (`rpeer_nif:attach_stdio/1'), instead of in Erlang: this is where
%% stock peer spends half of its standard_io time.
%%
%% Like peer's channel handler, it halts the node when its stdin ends (the origin is
%% gone) and when it dies for any reason (a linked watchdog halts the node).
%% @end
-module(rpeer_agent).

-export([start/0]).

%% Internal: the channel handler's and the watchdog's entry points.
-export([init/0, watch/1]).

-record(agent, {
          %% tags the channel's messages: {rpeer, Tag, Event}
          tag :: reference(),
          channel :: rpeer_nif:channel(),
          %% outstanding calls: monitor of the process running it => call sequence number
          refs = #{} :: #{reference() => non_neg_integer()},
          %% call sequence number => monitor
          calls = #{} :: #{non_neg_integer() => reference()}
         }).

%% @doc The `-user' entry point: starts the channel handler, which registers as `user'.
-spec start() -> pid().
start() ->
    Handler = proc_lib:spawn(?MODULE, init, []),
    %% registered here, not by the handler: user_sup looks for `user' as soon as this
    %%  returns and, when it is not there yet, sleeps 100 ms before it looks again
    true = register(user, Handler),
    _ = proc_lib:spawn(?MODULE, watch, [Handler]),
    Handler.

%% @doc Halts the node when the channel handler dies: the node must not outlive its
%% connection to the origin.
-spec watch(pid()) -> no_return().
watch(Handler) ->
    process_flag(trap_exit, true),
    link(Handler),
    receive
        {'EXIT', Handler, _Reason} -> erlang:halt(1)
    end.

-spec init() -> no_return().
init() ->
    try
        process_flag(trap_exit, true),
        Tag = make_ref(),
        {ok, Channel} = rpeer_nif:attach_stdio(Tag),
        true = group_leader(self(), self()),
        State = #agent{tag = Tag, channel = Channel},
        _ = init:notify_when_started(self()) =:= started andalso to_origin({started, node()}, State),
        loop(State)
    catch
        _:_ -> erlang:halt(1)
    end.

loop(#agent{tag = Tag, channel = Channel, refs = Refs, calls = Calls} = State) ->
    receive
        %% I/O request of a process on this node: served by the origin's group leader
        {io_request, From, ReplyAs, Request} when is_pid(From) ->
            to_origin({io_request, From, ReplyAs, Request}, State),
            loop(State);
        %% a frame from the origin
        {rpeer, Tag, {frame, Frame}} ->
            ok = rpeer_nif:ack(Channel, 1),
            loop(from_origin(binary_to_term(Frame), State));
        %% stdin carries only frames; anything else is noise on the channel
        {rpeer, Tag, {console, _Text}} ->
            ok = rpeer_nif:ack(Channel, 1),
            loop(State);
        %% stdin closed: the origin is gone, stop the node
        {rpeer, Tag, {closed, _Reason}} ->
            erlang:halt(1);
        %% the result of a call
        {reply, Seq, Class, Reply} when is_map_key(Seq, Calls) ->
            {CallerRef, Calls2} = maps:take(Seq, Calls),
            erlang:demonitor(CallerRef, [flush]),
            to_origin({reply, Seq, Class, Reply}, State),
            loop(State#agent{refs = maps:remove(CallerRef, Refs), calls = Calls2});
        %% a message for a process on the origin
        {message, To, Content} ->
            to_origin({message, To, Content}, State),
            loop(State);
        %% the process running a call died without replying (do_call catches everything,
        %%  so it was killed)
        {'DOWN', CallerRef, process, _, Reason} when is_map_key(CallerRef, Refs) ->
            {Seq, Refs2} = maps:take(CallerRef, Refs),
            to_origin({reply, Seq, crash, Reason}, State),
            loop(State#agent{refs = Refs2, calls = maps:remove(Seq, Calls)});
        {init, started} ->
            to_origin({started, node()}, State),
            loop(State);
        _Other ->
            loop(State)
    end.

from_origin({io_reply, From, FromRef, Reply}, State) ->
    From ! {io_reply, FromRef, Reply},
    State;
from_origin({call, Seq, M, F, A}, #agent{refs = Refs, calls = Calls} = State) ->
    CallerRef = do_call(Seq, M, F, A),
    State#agent{refs = Refs#{CallerRef => Seq}, calls = Calls#{Seq => CallerRef}};
from_origin({cast, M, F, A}, State) ->
    %% a separate process, so that it cannot block further RPC
    _ = spawn(fun () -> erlang:apply(M, F, A) end),
    State;
from_origin({message, Dest, Message}, State) ->
    Dest ! Message,
    State.

do_call(Seq, M, F, A) ->
    Proxy = self(),
    {_, CallerRef} =
        spawn_monitor(
          fun () ->
                  try
                      Proxy ! {reply, Seq, ok, erlang:apply(M, F, A)}
                  catch
                      Class:Reason:Stack ->
                          Proxy ! {reply, Seq, Class, {Reason, Stack}}
                  end
          end),
    CallerRef.

to_origin(Term, #agent{channel = Channel}) ->
    ok = rpeer_nif:send(Channel, term_to_binary(Term)).

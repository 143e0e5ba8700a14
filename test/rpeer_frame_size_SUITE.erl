%%% @doc
%%% Frames of any size either go through or fail at once with a reason that names the
%%% size and the limit (see rpeer_frame). With the default limit (what the wire's 32-bit
%%% size field says), 300 MiB travel both ways over standard_io and tcp, and the origin's
%%% memory is back where it was afterwards. With `max_frame' set lower, a frame of
%%% exactly the limit goes through and one byte more fails: a call, cast or send raises
%%% in the caller before anything is sent; a reply fails its call; an I/O request fails
%%% on the peer; a message from the peer is dropped; the peer goes on serving. A peer
%%% running OTP's own peer side over tcp sends what it likes: the controller reads past
%%% the frame, fails the call it answers, and logs anything else.
%%% @end
-module(rpeer_frame_size_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0, init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).

-export([
    call_argument_of_300_mib/0, call_argument_of_300_mib/1,
    call_reply_of_300_mib/0, call_reply_of_300_mib/1,
    frames_over_the_wire_limit_raise/0, frames_over_the_wire_limit_raise/1,
    call_at_the_limit_and_one_byte_more/0, call_at_the_limit_and_one_byte_more/1,
    reply_at_the_limit_and_one_byte_more/0, reply_at_the_limit_and_one_byte_more/1,
    cast_and_send_over_the_limit_raise/0, cast_and_send_over_the_limit_raise/1,
    io_request_over_the_limit_fails_on_the_peer/0, io_request_over_the_limit_fails_on_the_peer/1,
    message_over_the_limit_is_not_delivered/0, message_over_the_limit_is_not_delivered/1,
    stock_peer_side_reply_over_the_limit_fails_the_call/0,
    stock_peer_side_reply_over_the_limit_fails_the_call/1,
    stock_peer_side_message_over_the_limit_is_dropped/0,
    stock_peer_side_message_over_the_limit_is_dropped/1,
    invalid_limit_fails_before_anything_starts/0, invalid_limit_fails_before_anything_starts/1
]).

%% Run on the peer: what they send is made there.
-export([send_to_origin/2, put_chars/1, stored_size/0]).

-define(MIB, (1024 * 1024)).
-define(LARGE, (300 * ?MIB)).
-define(LIMIT, (1 * ?MIB)).
-define(WIRE_MAX, 16#FFFFFFFF).
%% How far the origin's memory may stay above where it was before a 300 MiB frame.
-define(MEMORY_SLACK, (48 * ?MIB)).
-define(LARGE_TIMEOUT, 120000).

suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [{group, default_limit}, {group, lower_limit}, {group, stock_peer_side},
     invalid_limit_fails_before_anything_starts].

groups() ->
    Large = [call_argument_of_300_mib, call_reply_of_300_mib],
    Limited = [call_at_the_limit_and_one_byte_more, reply_at_the_limit_and_one_byte_more,
               cast_and_send_over_the_limit_raise, io_request_over_the_limit_fails_on_the_peer,
               message_over_the_limit_is_not_delivered],
    [{default_limit, [], [{group, standard_io_large}, {group, tcp_large},
                          frames_over_the_wire_limit_raise]},
     {standard_io_large, [], Large},
     {tcp_large, [], Large},
     {lower_limit, [], [{group, standard_io_limited}, {group, tcp_limited}]},
     {standard_io_limited, [], Limited},
     {tcp_limited, [], Limited},
     {stock_peer_side, [], [stock_peer_side_reply_over_the_limit_fails_the_call,
                            stock_peer_side_message_over_the_limit_is_dropped]}].

init_per_group(Group, Config) when Group =:= lower_limit; Group =:= stock_peer_side ->
    ok = application:set_env(rpeer, max_frame, ?LIMIT),
    [{peer_options, #{connection => 0, peer_side => peer}} || Group =:= stock_peer_side] ++ Config;
init_per_group(Group, Config) when Group =:= standard_io_large; Group =:= standard_io_limited ->
    [{peer_options, #{connection => standard_io}} | Config];
init_per_group(Group, Config) when Group =:= tcp_large; Group =:= tcp_limited ->
    [{peer_options, #{connection => 0}} | Config];
init_per_group(_Group, Config) ->
    Config.

end_per_group(Group, _Config) when Group =:= lower_limit; Group =:= stock_peer_side ->
    application:unset_env(rpeer, max_frame);
end_per_group(_Group, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    ok = logger:add_handler(?MODULE, rpeer_test_lib,
                            #{config => #{pid => self()},
                              filter_default => stop,
                              filters => [{rpeer, {fun logger_filters:domain/2,
                                                   {log, sub, [rpeer]}}}]}),
    case proplists:get_value(peer_options, Config) of
        undefined ->
            Config;
        Options ->
            {ok, Peer, _Node} = rpeer:start_link(Options),
            [{peer, Peer} | Config]
    end.

end_per_testcase(_Case, Config) ->
    _ = logger:remove_handler(?MODULE),
    case proplists:get_value(peer, Config) of
        undefined -> ok;
        Peer -> rpeer:stop(Peer)
    end.

%%--------------------------------------------------------------------
%% the default limit

call_argument_of_300_mib() ->
    [{doc, "A 300 MiB argument reaches the peer; the origin's memory comes back"}].

call_argument_of_300_mib(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Before = origin_memory(Peer),
    Large = binary:copy(<<"a">>, ?LARGE),
    ?assertEqual(?LARGE, rpeer:call(Peer, erlang, byte_size, [Large], ?LARGE_TIMEOUT)),
    still_serves(Peer),
    assert_memory_back(Peer, Before).

call_reply_of_300_mib() ->
    [{doc, "A 300 MiB reply reaches the caller whole; the origin's memory comes back"}].

call_reply_of_300_mib(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Before = origin_memory(Peer),
    Reply = rpeer:call(Peer, binary, copy, [<<"r">>, ?LARGE], ?LARGE_TIMEOUT),
    ?assertEqual(?LARGE, byte_size(Reply)),
    ?assertEqual(<<"rrrr">>, binary:part(Reply, ?LARGE - 4, 4)),
    still_serves(Peer),
    assert_memory_back(Peer, Before).

frames_over_the_wire_limit_raise() ->
    [{doc, "A term whose frame the 32-bit size field cannot say fails in the caller, "
      "before the controller sends anything (one 1 GiB binary four times over)"}].

frames_over_the_wire_limit_raise(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(#{connection => standard_io}),
    GiB = binary:copy(<<0>>, 1024 * ?MIB),
    Args = [[GiB, GiB, GiB, GiB]],
    Size = frame_size({cast, erlang, display, Args}),
    ?assert(Size > ?WIRE_MAX),
    ?assertError({frame_too_large, Size, ?WIRE_MAX}, rpeer:cast(Peer, erlang, display, Args)),
    ?assertError({frame_too_large, _, ?WIRE_MAX}, rpeer:send(Peer, user, Args)),
    ?assertError({frame_too_large, _, ?WIRE_MAX}, rpeer:call(Peer, erlang, display, Args)),
    still_serves(Peer),
    rpeer:stop(Peer).

%%--------------------------------------------------------------------
%% a lower limit

call_at_the_limit_and_one_byte_more() ->
    [{doc, "A call whose frame is exactly the limit goes through; one byte more raises "
      "{frame_too_large, Size, Limit} and nothing reaches the peer"}].

call_at_the_limit_and_one_byte_more(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Fits = ?LIMIT - frame_size({call, 0, erlang, byte_size, [<<>>]}),
    ?assertEqual(Fits, rpeer:call(Peer, erlang, byte_size, [binary:copy(<<1>>, Fits)])),
    Over = binary:copy(<<1>>, Fits + 1),
    ?assertError({frame_too_large, ?LIMIT + 1, ?LIMIT}, rpeer:call(Peer, erlang, byte_size, [Over])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    still_serves(Peer).

reply_at_the_limit_and_one_byte_more() ->
    [{doc, "A reply of exactly the limit comes back; one byte more makes the call raise "
      "{frame_too_large, Size, Limit} at once, and the peer goes on"}].

reply_at_the_limit_and_one_byte_more(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Fits = ?LIMIT - frame_size({reply, 0, ok, <<>>}),
    ?assertEqual(Fits, byte_size(rpeer:call(Peer, binary, copy, [<<2>>, Fits]))),
    ?assertError({frame_too_large, ?LIMIT + 1, ?LIMIT},
                 rpeer:call(Peer, binary, copy, [<<2>>, Fits + 1], 60000)),
    still_serves(Peer).

cast_and_send_over_the_limit_raise() ->
    [{doc, "cast/4 and send/3 raise {frame_too_large, Size, Limit} in the caller; at the "
      "limit they go through"}].

cast_and_send_over_the_limit_raise(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Fits = ?LIMIT - frame_size({cast, persistent_term, put, [rpeer_frame_size, <<>>]}),
    Over = binary:copy(<<3>>, Fits + 1),
    ?assertError({frame_too_large, ?LIMIT + 1, ?LIMIT},
                 rpeer:cast(Peer, persistent_term, put, [rpeer_frame_size, Over])),
    %% peer's channel handler is the peer's user, which ignores what it does not know
    SendFits = ?LIMIT - frame_size({message, user, <<>>}),
    ?assertError({frame_too_large, ?LIMIT + 1, ?LIMIT},
                 rpeer:send(Peer, user, binary:copy(<<4>>, SendFits + 1))),
    %% at the limit, both go through
    add_test_path(Peer),
    ok = rpeer:cast(Peer, persistent_term, put, [rpeer_frame_size, binary:copy(<<5>>, Fits)]),
    ok = rpeer:send(Peer, user, binary:copy(<<6>>, SendFits)),
    %% the peer applies each cast in a process of its own: a call sent after it
    %% can run first
    rpeer_test_lib:wait_until(
      fun () ->
              rpeer:call(Peer, ?MODULE, stored_size, []) =:= Fits
      end, 10000),
    still_serves(Peer).

io_request_over_the_limit_fails_on_the_peer() ->
    [{doc, "Output over the limit from the peer (its user's I/O request) fails on the "
      "peer at once instead of waiting; smaller output still arrives"}].

io_request_over_the_limit_fails_on_the_peer(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    add_test_path(Peer),
    ?assertError(_, rpeer:call(Peer, ?MODULE, put_chars, [?LIMIT], 60000)),
    ?assertEqual(ok, rpeer:call(Peer, io, put_chars, [user, <<"small\n">>])),
    still_serves(Peer).

message_over_the_limit_is_not_delivered() ->
    [{doc, "A message from the peer to the origin over the limit is not delivered; the "
      "next one is, and the peer goes on"}].

message_over_the_limit_is_not_delivered(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    register(rpeer_frame_size_receiver, self()),
    add_test_path(Peer),
    ok = rpeer:call(Peer, ?MODULE, send_to_origin, [rpeer_frame_size_receiver, {large, ?LIMIT}]),
    ok = rpeer:call(Peer, ?MODULE, send_to_origin, [rpeer_frame_size_receiver, small]),
    receive
        {large, _} -> ct:fail(large_message_delivered);
        small -> ok
    after 10000 ->
            ct:fail(small_message_lost)
    end,
    still_serves(Peer),
    unregister(rpeer_frame_size_receiver).

%%--------------------------------------------------------------------
%% OTP's own peer side (over tcp), which knows no limit

stock_peer_side_reply_over_the_limit_fails_the_call() ->
    [{doc, "The controller reads past a reply over the limit and fails its call with "
      "{frame_too_large, Size, Limit}; the next call works"}].

stock_peer_side_reply_over_the_limit_fails_the_call(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    Size = ?LIMIT + 1000,
    Expected = frame_size({reply, 0, ok, binary:copy(<<7>>, Size)}),
    ?assertError({frame_too_large, Expected, ?LIMIT},
                 rpeer:call(Peer, binary, copy, [<<7>>, Size], 60000)),
    still_serves(Peer).

stock_peer_side_message_over_the_limit_is_dropped() ->
    [{doc, "Any other frame over the limit is dropped with one warning naming its size "
      "and the limit"}].

stock_peer_side_message_over_the_limit_is_dropped(Config) when is_list(Config) ->
    Peer = ?config(peer, Config),
    add_test_path(Peer),
    ok = rpeer:call(Peer, ?MODULE, send_to_origin, [rpeer_frame_size_nobody, {large, ?LIMIT}]),
    Size = frame_size({message, rpeer_frame_size_nobody, {large, binary:copy(<<0>>, ?LIMIT)}}),
    receive
        {logged, #{level := warning, msg := {_, [Size, {frame_too_large, ?LIMIT}]}}} -> ok
    after 10000 ->
            ct:fail(no_warning)
    end,
    still_serves(Peer).

%%--------------------------------------------------------------------

invalid_limit_fails_before_anything_starts() ->
    [{doc, "A max_frame that is no size fails start_link/1, cast/4 and send/3 with "
      "{max_frame, Value}, and no OS process is started"}].

invalid_limit_fails_before_anything_starts(Config) when is_list(Config) ->
    %% (warm nodes, when a pass runs with rpeer's pool on, come and go meanwhile)
    ok = rpeer_pool:flush(),
    Children = children(),
    try
        [begin
             ok = application:set_env(rpeer, max_frame, Bad),
             ?assertError({max_frame, Bad}, rpeer:start_link(#{connection => standard_io})),
             ?assertError({max_frame, Bad}, rpeer:cast(self(), m, f, [])),
             ?assertError({max_frame, Bad}, rpeer:send(self(), user, hello))
         end || Bad <- [-1, ?WIRE_MAX + 1, "1024", infinity]]
    after
        application:unset_env(rpeer, max_frame)
    end,
    ok = rpeer_pool:flush(),
    ?assertEqual(Children, children()).

%%--------------------------------------------------------------------
%% on the peer

%% A message to a process registered on the origin, through peer's channel handler (the
%%  peer's user), which forwards {message, To, Msg}; {large, Size} is made here.
send_to_origin(To, {large, Size}) when is_integer(Size) ->
    send_to_origin(To, {large, binary:copy(<<0>>, Size)});
send_to_origin(To, Message) ->
    user ! {message, To, Message},
    ok.

put_chars(Size) ->
    io:put_chars(user, binary:copy(<<"x">>, Size)).

stored_size() ->
    byte_size(persistent_term:get(rpeer_frame_size, <<>>)).

%%--------------------------------------------------------------------

add_test_path(Peer) ->
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]).

frame_size(Term) ->
    iolist_size(erlang:term_to_iovec(Term)).

still_serves(Peer) ->
    ?assertEqual(pong, rpeer:call(Peer, erlang, list_to_atom, ["pong"])).

%% The origin's memory: the VM's, and the process's resident set (what the NIF holds).
origin_memory(Peer) ->
    collect(Peer),
    {erlang:memory(total), resident_bytes()}.

assert_memory_back(Peer, {VmBefore, RssBefore}) ->
    rpeer_test_lib:wait_until(
      fun () ->
              {Vm, Rss} = origin_memory(Peer),
              ct:log("memory: vm ~b -> ~b, resident ~b -> ~b", [VmBefore, Vm, RssBefore, Rss]),
              Vm < VmBefore + ?MEMORY_SLACK andalso Rss < RssBefore + ?MEMORY_SLACK
      end, 10000).

collect(Peer) ->
    erlang:garbage_collect(),
    erlang:garbage_collect(Peer).

resident_bytes() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [_, Rest] = binary:split(Status, <<"VmRSS:">>),
    [Kb | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(Kb) * 1024.

%% The OS pids of this VM's children.
children() ->
    lists:sort(string:lexemes(os:cmd("pgrep -P " ++ os:getpid()), "\n")).

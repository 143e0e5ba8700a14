%%% @doc
%%% Frames from the peer that the controller cannot act on: a message to a name that is
%%% not registered, a term that is no frame of the protocol, a reply to no outstanding
%%% call, a payload that is not a term. Each is dropped with one logger warning (domain
%%% [rpeer]) that names its kind and size but not its content; the controller and the
%%% peer go on. Stock peer's controller crashes on the first (badarg), taking the peer
%%% down with it. The peer writes the frames itself: nibble-encoded on its stdout
%%% (standard_io), or on its own gen_tcp socket (tcp).
%%% @end
-module(rpeer_frames_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0, init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).

-export([
    message_to_unregistered_name_is_dropped/0, message_to_unregistered_name_is_dropped/1,
    unknown_frame_is_dropped/0, unknown_frame_is_dropped/1,
    reply_to_unknown_call_is_dropped/0, reply_to_unknown_call_is_dropped/1,
    payload_not_a_term_is_dropped/0, payload_not_a_term_is_dropped/1
]).

%% Run on the peer.
-export([write_frame/2]).

%% In every frame's content: must never reach the log.
-define(SECRET, <<"content that must not be logged">>).

suite() ->
    [{timetrap, {minutes, 2}}].

all() ->
    [{group, standard_io}, {group, tcp}].

groups() ->
    Cases = [message_to_unregistered_name_is_dropped, unknown_frame_is_dropped,
             reply_to_unknown_call_is_dropped, payload_not_a_term_is_dropped],
    [{standard_io, [], Cases}, {tcp, [], Cases}].

init_per_group(standard_io, Config) ->
    [{connection, standard_io} | Config];
init_per_group(tcp, Config) ->
    [{connection, 0} | Config].

end_per_group(_Group, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    ok = logger:add_handler(?MODULE, rpeer_test_lib,
                            #{config => #{pid => self()},
                              filter_default => stop,
                              filters => [{rpeer, {fun logger_filters:domain/2,
                                                   {log, sub, [rpeer]}}}]}),
    {ok, Peer, _Node} = rpeer:start_link(#{connection => ?config(connection, Config)}),
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]),
    [{peer, Peer} | Config].

end_per_testcase(_Case, Config) ->
    _ = logger:remove_handler(?MODULE),
    rpeer:stop(?config(peer, Config)).

%%--------------------------------------------------------------------

message_to_unregistered_name_is_dropped() ->
    [{doc, "{message, Name, Msg} from the peer to a name not registered here"}].

message_to_unregistered_name_is_dropped(Config) when is_list(Config) ->
    %% peer's channel handler forwards what it receives as such to the origin
    Frame = {message, rpeer_frames_nobody_here, ?SECRET},
    ok = rpeer:send(?config(peer, Config), user, Frame),
    ok = rpeer:cast(?config(peer, Config), erlang, send, [user, Frame]),
    [expect_dropped({message_to_unregistered_name, rpeer_frames_nobody_here}, Frame)
     || _ <- [1, 2]],
    still_serves(Config).

unknown_frame_is_dropped() ->
    [{doc, "A term that is no frame of peer's protocol"}].

unknown_frame_is_dropped(Config) when is_list(Config) ->
    Frame = {surprise, ?SECRET, 3},
    peer_writes(Config, term_to_binary(Frame)),
    expect_dropped({unknown_frame, surprise, 3}, Frame),
    still_serves(Config).

reply_to_unknown_call_is_dropped() ->
    [{doc, "{reply, Seq, Class, Result} for a Seq that no call is waiting for"}].

reply_to_unknown_call_is_dropped(Config) when is_list(Config) ->
    Frame = {reply, 123456789, ok, ?SECRET},
    peer_writes(Config, term_to_binary(Frame)),
    expect_dropped(reply_to_unknown_call, Frame),
    still_serves(Config).

payload_not_a_term_is_dropped() ->
    [{doc, "A frame whose payload is not the external term format"}].

payload_not_a_term_is_dropped(Config) when is_list(Config) ->
    Payload = <<"not a term: ", ?SECRET/binary>>,
    peer_writes(Config, Payload),
    expect_dropped(not_a_term, Payload),
    still_serves(Config).

%%--------------------------------------------------------------------

%% The peer writes Payload as a frame of its channel.
peer_writes(Config, Payload) ->
    ok = rpeer:call(?config(peer, Config), ?MODULE, write_frame,
                    [?config(connection, Config), Payload]).

%% On the peer: a frame on stdout, nibble-encoded with its size and CRC, or on the tcp
%%  connection, after its 4-byte size.
write_frame(standard_io, Payload) ->
    Framed = <<(byte_size(Payload)):32, Payload/binary, (erlang:crc32(Payload)):32>>,
    file:write_file("/dev/stdout", << <<3:2, Hi:4, 3:2, 3:2, Lo:4, 3:2>> || <<Hi:4, Lo:4>> <= Framed >>);
write_frame(0, Payload) ->
    [Socket] = [P || P <- erlang:ports(), erlang:port_info(P, name) =:= {name, "tcp_inet"}],
    gen_tcp:send(Socket, Payload).

%% One warning of the controller's, naming Kind and the frame's size, not its content.
expect_dropped(Kind, Frame) ->
    Size = byte_size(case is_binary(Frame) of true -> Frame; false -> term_to_binary(Frame) end),
    receive
        {logged, #{level := warning, msg := {Format, Args}, meta := Meta}} ->
            Text = unicode:characters_to_binary(io_lib:format(Format, Args)),
            ct:log("~ts", [Text]),
            ?assertMatch(#{domain := [rpeer], rpeer_controller := _}, Meta),
            ?assertNotEqual(nomatch, binary:match(Text, integer_to_binary(Size))),
            ?assertNotEqual(nomatch, binary:match(Text, unicode:characters_to_binary(
                                                          io_lib:format("~0p", [Kind])))),
            ?assertEqual(nomatch, binary:match(Text, ?SECRET))
    after 5000 ->
            ct:fail({no_warning_for, Kind})
    end.

still_serves(Config) ->
    Peer = ?config(peer, Config),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(3, rpeer:call(Peer, erlang, length, [[a, b, c]])),
    receive {logged, Event} -> ct:fail({unexpected_log, Event})
    after 100 -> ok
    end.

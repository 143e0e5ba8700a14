%% @doc The frames of the alternative connection, as terms: how large one may be, and
%% how one becomes a term again.
%%
%% A frame's payload is one term in the external term format. The wire says its size in
%% 32 bits (both the tcp header and the standard_io frame), so no frame exceeds
%% 4294967295 bytes; the application environment key `max_frame' of `rpeer' may set a
%% lower limit, which holds in both directions:
%% <ul>
%% <li>call/4,5, cast/4 and send/3 raise `error({frame_too_large, Size, Limit})' before
%%     anything is sent;</li>
%% <li>rpeer's peer side does not send a reply over the limit: the call raises the same
%%     error; it answers an I/O request over the limit with `{error, {frame_too_large,
%%     Size, Limit}}', and drops any other frame with a warning on the peer;</li>
%% <li>a frame over the limit that reaches the controller anyway (a peer running OTP's
%%     own peer side, over tcp) is read past and dropped: a reply fails its call as above,
%%     anything else is logged.</li>
%% </ul>
%% The limit is read when a peer starts (for what the peer sends) and at each cast/4
%% and send/3 (for what the caller sends): set it before starting peers.
%% @end
-module(rpeer_frame).

-export([max_size/0, check/2, fits/1, to_term/1, reply_seq/1, too_large/2]).

-export_type([limit/0]).

-include("rpeer_frame.hrl").

%% to_term/1: frames from this size on (the NIF's resource binaries) give a binary ending
%%  their tuple as a sub-binary; its BINARY_EXT is looked for in this many bytes, so the
%%  rest of the frame that the sub-binary keeps alive is at most that.
-define(SHARED_BINARY_FRAME, 65536).
-define(SHARED_BINARY_PREFIX, 1024).

%% External term format tags (erts' external.h), as they appear in a frame.
-define(VERSION, 131).
-define(SMALL_TUPLE, 104).
-define(BINARY, 109).
-define(NIL, 106).
-define(SMALL_INTEGER, 97).
-define(INTEGER, 98).
-define(SMALL_BIG, 110).

-type limit() :: 0..?WIRE_MAX.
%% A frame size limit in bytes: at most what the wire's 32-bit size field can say.

%% @doc The frame size limit: the `rpeer' application's `max_frame' (bytes), or the
%% wire's 4294967295 when unset. A value that is not an integer in 0..4294967295
%% raises `error({max_frame, Value})'.
-spec max_size() -> limit().
max_size() ->
    case application:get_env(rpeer, max_frame) of
        undefined ->
            ?WIRE_MAX;
        {ok, Limit} when is_integer(Limit), Limit >= 0, Limit =< ?WIRE_MAX ->
            Limit;
        {ok, Other} ->
            erlang:error({max_frame, Other})
    end.

%% @doc Encodes a frame, with its size, unless it is over `Limit': then its size alone.
-spec check(term(), limit()) -> {ok, [binary()], pos_integer()} | {too_large, pos_integer()}.
check(Term, Limit) ->
    Iovec = erlang:term_to_iovec(Term),
    case iolist_size(Iovec) of
        Size when Size > Limit -> {too_large, Size};
        Size -> {ok, Iovec, Size}
    end.

%% @doc Raises `error({frame_too_large, Size, Limit})' in the caller when `Term' does not
%% fit in a frame under the current limit. Counting an upper bound first (no encoding)
%% keeps the common case cheap.
-spec fits(term()) -> ok.
fits(Term) ->
    Limit = max_size(),
    case erlang:external_size(Term) =< Limit of
        true ->
            ok;
        false ->
            case check(Term, Limit) of
                {ok, _, _} -> ok;
                {too_large, Size} -> erlang:error(too_large(Size, Limit))
            end
    end.

%% @doc The reason that names a frame over the limit.
-spec too_large(pos_integer(), limit()) -> {frame_too_large, pos_integer(), limit()}.
too_large(Size, Limit) ->
    {frame_too_large, Size, Limit}.

%% @doc The sequence number of a reply frame `{reply, Seq, Class, Result}' from the
%% frame's first bytes (at least 20 of them, or all of it), or `error' when they are not
%% a reply's: a reply too large to send or to receive can fail its call.
-spec reply_seq(binary()) -> {ok, non_neg_integer()} | error.
reply_seq(<<?VERSION, ?SMALL_TUPLE, 4, Rest/binary>>) ->
    case after_reply_atom(Rest) of
        <<?SMALL_INTEGER, Seq, _/binary>> -> {ok, Seq};
        <<?INTEGER, Seq:32/signed, _/binary>> when Seq >= 0 -> {ok, Seq};
        <<?SMALL_BIG, Bytes, 0, Digits:Bytes/binary, _/binary>> -> {ok, binary:decode_unsigned(Digits, little)};
        _ -> error
    end;
reply_seq(_Head) ->
    error.

%% The bytes after the atom `reply', in any of the four encodings an atom may have.
after_reply_atom(<<119, 5, "reply", Rest/binary>>) -> Rest;        % SMALL_ATOM_UTF8_EXT
after_reply_atom(<<118, 5:16, "reply", Rest/binary>>) -> Rest;     % ATOM_UTF8_EXT
after_reply_atom(<<115, 5, "reply", Rest/binary>>) -> Rest;        % SMALL_ATOM_EXT
after_reply_atom(<<100, 5:16, "reply", Rest/binary>>) -> Rest;     % ATOM_EXT
after_reply_atom(_) -> <<>>.

%% @doc binary_to_term/1 of a frame, except that a large binary ending the frame's tuple
%% (a reply `{reply, Seq, ok, Bin}' or `{reply, Seq, ok, {ok, Bin}}', a message
%% `{message, To, Bin}') is a sub-binary of the frame instead of a copy: a 100 MiB reply
%% is not copied into fresh memory once more.
%%
%% How: a position P in the frame's first bytes is where that binary starts when a
%% BINARY_EXT there runs exactly to the frame's end, and the bytes before P followed by
%% `[]' decode as a whole term in which `[]' is the last element of tuples down from
%% the top. That term, with the binary put where `[]' is, is the frame's term. In any
%% other case this is binary_to_term/1.
-spec to_term(binary()) -> term().
to_term(<<?VERSION, ?SMALL_TUPLE, Arity, _/binary>> = Frame)
  when Arity > 0, byte_size(Frame) >= ?SHARED_BINARY_FRAME ->
    case ending_binary(Frame, 3, min(byte_size(Frame) - 5, ?SHARED_BINARY_PREFIX)) of
        {ok, Start, Size} ->
            <<Before:Start/binary, _/binary>> = Frame,
            WithHole = <<Before/binary, ?NIL>>,
            try binary_to_term(WithHole, [used]) of
                {Term, Used} when Used =:= byte_size(WithHole) ->
                    case fill_hole(Term, binary:part(Frame, Start + 5, Size)) of
                        {ok, Filled} -> Filled;
                        error -> binary_to_term(Frame)
                    end;
                _ ->
                    binary_to_term(Frame)
            catch
                error:badarg ->
                    binary_to_term(Frame)
            end;
        error ->
            binary_to_term(Frame)
    end;
to_term(Frame) ->
    binary_to_term(Frame).

%% Puts Binary in place of the `[]' the encoding ends with: following the last element of
%%  each tuple down from the top. Anything else on that way (a list's tail, a map's value)
%%  gives up, and the caller decodes the whole frame.
fill_hole(Tuple, Binary) when tuple_size(Tuple) > 0 ->
    Last = tuple_size(Tuple),
    case fill_hole(element(Last, Tuple), Binary) of
        {ok, Filled} -> {ok, setelement(Last, Tuple, Filled)};
        error -> error
    end;
fill_hole([], Binary) ->
    {ok, Binary};
fill_hole(_Term, _Binary) ->
    error.

%% The first BINARY_EXT at Start..Last whose bytes end the frame: {ok, Start, Size}.
ending_binary(_Frame, Start, Last) when Start > Last ->
    error;
ending_binary(Frame, Start, Last) ->
    case Frame of
        <<_:Start/binary, ?BINARY, Size:32, Rest/binary>> when byte_size(Rest) =:= Size ->
            {ok, Start, Size};
        _ ->
            ending_binary(Frame, Start + 1, Last)
    end.

#!/usr/bin/env escript
%% Generates otp_vectors.txt for tests/codec_vectors.rs with OTP's own encoder.
%% Run from this folder with OTP 25: escript gen_otp_vectors.escript > otp_vectors.txt
%% encode_port_data/1 is copied verbatim from OTP 25 stdlib-4.2 src/peer.erl (not exported).
%% Output: one vector per line, "name payload_hex encoded_hex" ("-" for an empty hex).
-mode(compile).

encode_port_data(Bytes) ->
    Size = byte_size(Bytes),
    Crc = erlang:crc32(Bytes),
    Total = <<Size:32, Bytes/binary, Crc:32>>,
    <<<<3:2, Upper:4, 3:2, 3:2, Lower:4, 3:2>> || <<Upper:4, Lower:4>> <= Total>>.

hex(<<>>) -> "-";
hex(Bin) -> [io_lib:format("~2.16.0b", [B]) || <<B>> <= Bin].

main(_) ->
    Vectors = [
        {empty, <<>>},
        {one_byte, <<42>>},
        {byte_255, <<255>>},
        {bytes_0_to_254, list_to_binary(lists:seq(0, 254))},
        {bytes_0_to_255, list_to_binary(lists:seq(0, 255))},
        {call_node, term_to_binary({call, 0, erlang, node, []})},
        {io_request, term_to_binary({io_request, self(), make_ref(), {put_chars, unicode, <<"héllo\n"/utf8>>}})},
        {reply, term_to_binary({reply, 7, ok, [1.5, "str", <<1, 2, 3>>, #{a => b}]})},
        {pattern_1000, << <<((X * 7 + X div 3) rem 256)>> || X <- lists:seq(1, 1000) >>},
        {utf8_text, <<"é © ÿ Ã 日本 🙂"/utf8>>}
    ],
    [io:format("~s ~s ~s~n", [Name, hex(Payload), hex(encode_port_data(Payload))])
     || {Name, Payload} <- Vectors],
    ok.

%%% @doc
%%% What the peer prints, and why a peer failed: rpeer's improvements over stock peer.
%%%
%%% Stock peer takes every byte in 192-255 on the peer's stdout for frame data, so a peer
%%% printing UTF-8 or binary output crashes its controller; its stderr goes to the
%%% origin VM's stderr; a boot failure says only `{exit_status, 1}' and a duplicate name
%%% in dist mode shows up as the 15 s boot timeout. These cases check that rpeer keeps
%%% every byte, marks stderr, and explains failures - most of them fail on stock peer.
%%% @end
-module(rpeer_console_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0, init_per_group/2, end_per_group/2]).

-export([
    every_byte_value_reaches_the_group_leader/0, every_byte_value_reaches_the_group_leader/1,
    utf8_text_arrives_intact/0, utf8_text_arrives_intact/1,
    erlang_display_of_non_ascii/0, erlang_display_of_non_ascii/1,
    nibble_looking_text_does_not_break_rpc/0, nibble_looking_text_does_not_break_rpc/1,
    text_interleaved_with_calls/0, text_interleaved_with_calls/1,
    stray_nibble_bytes_before_replies/0, stray_nibble_bytes_before_replies/1,
    stderr_is_forwarded_and_marked/0, stderr_is_forwarded_and_marked/1,
    last_output_of_a_running_peer/0, last_output_of_a_running_peer/1,
    boot_failure_keeps_peer_exception/0, boot_failure_keeps_peer_exception/1,
    boot_failure_output_is_available/0, boot_failure_output_is_available/1,
    duplicate_name_fails_before_boot_timeout/0, duplicate_name_fails_before_boot_timeout/1,
    missing_exec_names_the_path/0, missing_exec_names_the_path/1,
    non_executable_exec_names_the_path/0, non_executable_exec_names_the_path/1
]).

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [{group, standard_io}, {group, tcp}, {group, dist}, {group, exec}].

groups() ->
    Output = [every_byte_value_reaches_the_group_leader, utf8_text_arrives_intact,
              erlang_display_of_non_ascii, stderr_is_forwarded_and_marked,
              last_output_of_a_running_peer],
    [{standard_io, [parallel], Output ++ [nibble_looking_text_does_not_break_rpc,
                                          text_interleaved_with_calls,
                                          stray_nibble_bytes_before_replies,
                                          boot_failure_keeps_peer_exception,
                                          boot_failure_output_is_available,
                                          duplicate_name_fails_before_boot_timeout]},
     {tcp, [parallel], Output ++ [boot_failure_output_is_available,
                                  duplicate_name_fails_before_boot_timeout]},
     {dist, [parallel], [boot_failure_output_is_available,
                         duplicate_name_fails_before_boot_timeout]},
     {exec, [parallel], [missing_exec_names_the_path, non_executable_exec_names_the_path]}].

init_per_group(Group, Config) ->
    rpeer_test_lib:group_mode(Group, Config).

end_per_group(_Group, _Config) ->
    ok.

%%--------------------------------------------------------------------
%% Helpers

%% Options for the group's connection; dist mode peers need a name.
options(Config, Extra) ->
    Base = case proplists:get_value(connection, Config) of
               undefined -> #{name => rpeer:random_name(?MODULE)};
               Conn -> #{connection => Conn}
           end,
    maps:merge(Base, Extra).

%% Writes raw bytes to the peer's own stdout or stderr file descriptor, bypassing its
%% Erlang I/O system (as a NIF, a port program or a crash banner would).
os_write(Peer, Device, Bytes) ->
    ok = rpeer:call(Peer, file, write_file, [Device, Bytes]).

%% Everything captured from the group leader so far, as one UTF-8 binary.
captured() ->
    unicode:characters_to_binary(ct:capture_get()).

%% Waits until the captured output contains Expected; returns all of it.
wait_captured(Expected) ->
    wait_captured(Expected, <<>>, 100).

wait_captured(Expected, Seen, 0) ->
    ct:fail({not_captured, Expected, Seen});
wait_captured(Expected, Seen0, Tries) ->
    Seen = <<Seen0/binary, (captured())/binary>>,
    case binary:match(Seen, Expected) of
        nomatch ->
            ct:sleep(50),
            wait_captured(Expected, Seen, Tries - 1);
        _ ->
            Seen
    end.

%% The text rpeer forwards for arbitrary bytes: UTF-8 sequences unchanged, every other
%% byte as the Latin-1 character of that value.
as_forwarded(Bytes) ->
    case unicode:characters_to_binary(Bytes, utf8) of
        Valid when is_binary(Valid) -> Valid;
        _ -> unicode:characters_to_binary(Bytes, latin1)
    end.

%%--------------------------------------------------------------------
%% Console text

every_byte_value_reaches_the_group_leader() ->
    [{doc, "The peer writes every byte value 0-255 to its stdout (an OS-level write): all of "
      "it reaches the group leader in order, bytes that are not UTF-8 as Latin-1 "
      "characters, and RPC keeps working. Stock peer's controller crashes on it."}].

every_byte_value_reaches_the_group_leader(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    AllBytes = list_to_binary(lists:seq(0, 255)),
    ct:capture_start(),
    os_write(Peer, "/dev/stdout", [<<"begin:">>, AllBytes, <<":end\n">>]),
    Expected = <<"begin:", (unicode:characters_to_binary(AllBytes, latin1))/binary, ":end\n">>,
    _ = wait_captured(Expected),
    ct:capture_stop(),
    ?assertEqual(true, rpeer:call(Peer, erlang, garbage_collect, [])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    rpeer:stop(Peer).

utf8_text_arrives_intact() ->
    [{doc, "UTF-8 text written to the peer's stdout arrives unchanged, also when it is "
      "written in pieces that split its multi-byte sequences"}].

utf8_text_arrives_intact(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    Text = unicode:characters_to_binary("héllo wörld, ünïcödé ✓ 𝄞 ÿ\n"),
    ct:capture_start(),
    %% one byte per write, so sequences are split across writes and likely reads
    _ = [os_write(Peer, "/dev/stdout", <<Byte>>) || <<Byte>> <= Text],
    _ = wait_captured(Text),
    ct:capture_stop(),
    rpeer:stop(Peer).

erlang_display_of_non_ascii() ->
    [{doc, "erlang:display/1 of non-ASCII text on the peer (written straight to its stdout "
      "by the emulator) arrives, and the controller keeps running"}].

erlang_display_of_non_ascii(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    ct:capture_start(),
    true = rpeer:call(Peer, erlang, display, ["é marker"]),
    true = rpeer:call(Peer, erlang, display, ["µ ÿ"]),
    Seen = wait_captured(<<"marker">>),
    ct:capture_stop(),
    ?assertNotEqual(nomatch, binary:match(Seen, <<"é"/utf8>>)),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ?assertEqual(3, rpeer:call(Peer, erlang, length, [[a, b, c]])),
    rpeer:stop(Peer).

nibble_looking_text_does_not_break_rpc() ->
    [{doc, "Long runs of bytes that look like frame data (11xxxx11), including a forged "
      "frame header and a corrupt frame, are delivered as text; every RPC still answers"}].

nibble_looking_text_does_not_break_rpc(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    Nibbles = << <<(16#C3 bor (N bsl 2))>> || N <- lists:seq(0, 15) >>,
    %% a frame of 3 bytes whose CRC is wrong: must not be taken for a frame
    Corrupt = encode_nibbles(<<3:32, "abc", 0:32>>),
    %% a header declaring a huge frame, then nothing of it
    Huge = encode_nibbles(<<16#7fffffff:32>>),
    Garbage = iolist_to_binary([binary:copy(Nibbles, 1000), Corrupt, Huge, $\n]),
    ct:capture_start(),
    _ = [begin
             os_write(Peer, "/dev/stdout", Garbage),
             ?assertEqual(N, rpeer:call(Peer, erlang, abs, [-N]))
         end || N <- lists:seq(1, 20)],
    _ = wait_captured(as_forwarded(Garbage)),
    ct:capture_stop(),
    rpeer:stop(Peer).

encode_nibbles(Bin) ->
    << <<3:2, Hi:4, 3:2, 3:2, Lo:4, 3:2>> || <<Hi:4, Lo:4>> <= Bin >>.

text_interleaved_with_calls() ->
    [{doc, "Text written by one peer process while others answer RPCs: no call is lost and "
      "all text arrives in order"}].

text_interleaved_with_calls(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    Lines = [unicode:characters_to_binary(io_lib:format("line ~b é~n", [N])) || N <- lists:seq(1, 200)],
    true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]),
    ct:capture_start(),
    Writer = rpeer:call(Peer, erlang, spawn,
                        [fun () -> [ok = file:write_file("/dev/stdout", L) || L <- Lines] end]),
    ?assert(is_pid(Writer)),
    Results = [rpeer:call(Peer, erlang, '+', [N, 1]) || N <- lists:seq(1, 300)],
    ?assertEqual(lists:seq(2, 301), Results),
    Seen = wait_captured(lists:last(Lines)),
    ct:capture_stop(),
    ?assertNotEqual(nomatch, binary:match(Seen, iolist_to_binary(Lines))),
    rpeer:stop(Peer).

stray_nibble_bytes_before_replies() ->
    [{doc, "The peer writes raw nibble-looking bytes to its stdout without a newline "
      "(<<16#C3, 16#C7>>, whose shifted frame header declares 16 MiB; a frame with a "
      "wrong CRC; a long run of them) and the call's reply follows them directly: "
      "every call returns at once, the next ones too, and the bytes reach the group "
      "leader as text (issue 28: the decoder waited for the shifted frame and held the "
      "replies behind it)"}].

stray_nibble_bytes_before_replies(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    Corrupt = encode_nibbles(<<3:32, "abc", 0:32>>),
    Strays = [<<16#C3, 16#C7>>, <<16#C3>>, Corrupt, binary:copy(<<16#C3, 16#C7>>, 300),
              <<16#C3, 16#C7, 16#C3>>],
    ct:capture_start(),
    _ = [begin
             %% The write's own reply comes right after the bytes on stdout.
             ?assertEqual(ok, rpeer:call(Peer, file, write_file, ["/dev/stdout", Stray],
                                         2000)),
             [?assertEqual(N, rpeer:call(Peer, erlang, abs, [-N], 2000))
              || N <- lists:seq(1, 5)]
         end || Stray <- Strays],
    os_write(Peer, "/dev/stdout", <<"\n">>),
    _ = wait_captured(as_forwarded(iolist_to_binary([Strays, $\n]))),
    ct:capture_stop(),
    rpeer:stop(Peer).

%%--------------------------------------------------------------------
%% stderr and the output tail

stderr_is_forwarded_and_marked() ->
    [{doc, "What the peer writes to its stderr reaches the group leader, each line marked "
      "[stderr] (also a line written in two pieces)"}].

stderr_is_forwarded_and_marked(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    ct:capture_start(),
    os_write(Peer, "/dev/stderr", <<"first ü\nsecond ">>),
    os_write(Peer, "/dev/stderr", <<"half\n">>),
    Seen = wait_captured(<<"half\n">>),
    ct:capture_stop(),
    ?assertNotEqual(nomatch, binary:match(Seen, <<"[stderr] first ü\n[stderr] second half\n"/utf8>>)),
    rpeer:stop(Peer).

last_output_of_a_running_peer() ->
    [{doc, "rpeer_output:last/1 gives the latest console and stderr output, bounded to 4 KiB"}].

last_output_of_a_running_peer(Config) when is_list(Config) ->
    {ok, Peer, _Node} = rpeer:start_link(options(Config, #{})),
    os_write(Peer, "/dev/stdout", binary:copy(<<"x">>, 10000)),
    %% stdout and stderr are separate pipes, read apart: no order between them
    ok = wait_until(fun () -> rpeer_output:last(Peer) =:= binary:copy(<<"x">>, 4096) end),
    os_write(Peer, "/dev/stderr", <<"the end\n">>),
    ok = wait_until(fun () -> binary:match(rpeer_output:last(Peer), <<"the end">>) =/= nomatch end),
    Last = rpeer_output:last(Peer),
    ?assertEqual(4096, byte_size(Last)),
    ?assertMatch(<<"xxx", _/binary>>, Last),
    ?assertEqual(<<"[stderr] the end\n">>, binary:part(Last, byte_size(Last), -17)),
    rpeer:stop(Peer).

wait_until(Fun) ->
    rpeer_test_lib:wait_until(Fun, 5000).

%%--------------------------------------------------------------------
%% Boot failures

boot_failure_keeps_peer_exception() ->
    [{doc, "A peer that cannot boot still raises peer's {boot_failed, {exit_status, 1}}"}].

boot_failure_keeps_peer_exception(Config) when is_list(Config) ->
    process_flag(trap_exit, true),
    ?assertExit({boot_failed, {exit_status, 1}},
                rpeer:start_link(options(Config, #{name => rpeer:random_name(?FUNCTION_NAME),
                                                   args => ["-no_epmd"]}))).

boot_failure_output_is_available() ->
    [{doc, "When the peer exits before it runs, what it printed explains why: "
      "rpeer_output:last_failed_boot/0 has it (and it is logged)"}].

boot_failure_output_is_available(Config) when is_list(Config) ->
    process_flag(trap_exit, true),
    Options = options(Config, #{args => ["-boot", "/nonexistent/rpeer_no_such_boot"]}),
    ?assertExit({boot_failed, {exit_status, _}}, rpeer:start_link(Options)),
    Output = rpeer_output:last_failed_boot(),
    ct:log("boot output: ~ts", [Output]),
    ?assertNotEqual(nomatch, binary:match(Output, <<"rpeer_no_such_boot">>)).

duplicate_name_fails_before_boot_timeout() ->
    [{doc, "A second peer with a name in use fails as soon as it exits, with "
      "{boot_failed, {exit_status, 1}} and the reason in its output, well within a 10 s "
      "wait_boot (stock peer in dist mode waits for the whole boot timeout)"}].

duplicate_name_fails_before_boot_timeout(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, First, _Node} = rpeer:start_link(options(Config, #{name => Name})),
    process_flag(trap_exit, true),
    ?assertExit({boot_failed, {exit_status, 1}},
                rpeer:start_link(options(Config, #{name => Name, wait_boot => 10000}))),
    ?assertNotEqual(nomatch, binary:match(rpeer_output:last_failed_boot(), <<"in use">>)),
    rpeer:stop(First).

%%--------------------------------------------------------------------
%% exec errors

missing_exec_names_the_path() ->
    [{doc, "A missing exec fails at start with {error, {enoent, Path}}, nothing spawned"}].

missing_exec_names_the_path(Config) when is_list(Config) ->
    Path = "/nonexistent/bin/erl",
    ?assertEqual({error, {enoent, Path}},
                 rpeer:start(#{connection => standard_io, exec => Path})),
    ?assertEqual({error, {enoent, Path}},
                 rpeer:start(#{connection => 0, exec => {Path, ["-x"]}})).

non_executable_exec_names_the_path() ->
    [{doc, "An exec that is not executable fails at start with {error, {eacces, Path}}"}].

non_executable_exec_names_the_path(Config) when is_list(Config) ->
    Path = filename:join(proplists:get_value(priv_dir, Config), "not_executable"),
    ok = file:write_file(Path, <<"#!/bin/sh\n">>),
    ok = file:change_mode(Path, 8#644),
    ?assertEqual({error, {eacces, Path}},
                 rpeer:start(#{connection => standard_io, exec => Path})).

%%% @doc
%%% The tcp control channel admits only its own peer. Stock peer with `connection => 0'
%%% listens on every interface and takes the first connection as the peer, acting on
%%% its frames. rpeer listens on loopback for a local peer and takes a connection only
%%% from a process of the peer's own OS process group; a frame over the limit is read past
%%% and never kept.
%%% @end
-module(rpeer_trust_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0]).

-export([
    local_peer_listens_on_loopback_only/0, local_peer_listens_on_loopback_only/1,
    intruder_before_the_peer_is_ignored/0, intruder_before_the_peer_is_ignored/1,
    oversized_frame_is_read_past/0, oversized_frame_is_read_past/1
]).

suite() ->
    [{timetrap, {minutes, 1}}].

all() ->
    [local_peer_listens_on_loopback_only, intruder_before_the_peer_is_ignored,
     oversized_frame_is_read_past].

%% An exec (a plain path, so the peer counts as local) that records its arguments in
%%  ArgsFile, waits Delay seconds, then becomes erl (same process, same group).
slow_erl(Config, Delay) ->
    Dir = proplists:get_value(priv_dir, Config),
    ArgsFile = filename:join(Dir, "args-" ++ integer_to_list(erlang:unique_integer([positive]))),
    Script = ArgsFile ++ ".sh",
    ok = file:write_file(Script, ["#!/bin/sh\n",
                                  "echo \"$@\" > '", ArgsFile, "'\n",
                                  "sleep ", integer_to_list(Delay), "\n",
                                  "exec '", os:find_executable("erl"), "' \"$@\"\n"]),
    ok = file:change_mode(Script, 8#755),
    {Script, ArgsFile}.

%% Waits for the arguments the script recorded; returns the -origin addresses and port.
origin_of(ArgsFile) ->
    origin_of(ArgsFile, 100).

origin_of(_ArgsFile, 0) ->
    ct:fail(no_args_recorded);
origin_of(ArgsFile, Tries) ->
    case file:read_file(ArgsFile) of
        {ok, Args} ->
            [_, After] = string:split(binary_to_list(Args), "-origin "),
            [Ips, Port | _] = string:lexemes(After, " \n"),
            {string:lexemes(Ips, ","), list_to_integer(Port)};
        {error, enoent} ->
            ct:sleep(50),
            origin_of(ArgsFile, Tries - 1)
    end.

%%--------------------------------------------------------------------

local_peer_listens_on_loopback_only() ->
    [{doc, "connection => 0 for a local peer offers (and listens on) 127.0.0.1 only"}].

local_peer_listens_on_loopback_only(Config) when is_list(Config) ->
    {Exec, ArgsFile} = slow_erl(Config, 0),
    {ok, Peer, _Node} = rpeer:start_link(#{connection => 0, exec => Exec}),
    {Ips, Port} = origin_of(ArgsFile),
    ?assertEqual(["127.0.0.1"], Ips),
    %% nothing listens on the port at a non-loopback address of this host
    NonLoopback = [Addr || {_, Opts} <- element(2, inet:getifaddrs()),
                           {addr, {A, _, _, _} = Addr} <- Opts, A =/= 127],
    [?assertMatch({error, _}, gen_tcp:connect(Addr, Port, [], 1000)) || Addr <- NonLoopback],
    ?assertEqual(running, rpeer:get_state(Peer)),
    rpeer:stop(Peer).

intruder_before_the_peer_is_ignored() ->
    [{doc, "A client that connects to the control port before the peer and sends frames "
      "is closed without any of its frames acted on; the real peer then boots and "
      "answers"}].

intruder_before_the_peer_is_ignored(Config) when is_list(Config) ->
    register(rpeer_trust_target, self()),
    {Exec, ArgsFile} = slow_erl(Config, 1),
    Self = self(),
    Starter = spawn_link(fun () ->
                                 Self ! {started, rpeer:start_link(#{connection => 0, exec => Exec})},
                                 receive stop -> ok end
                         end),
    {["127.0.0.1"], Port} = origin_of(ArgsFile),
    {ok, Intruder} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {packet, 4}, {active, false}]),
    %% what a malicious client would send: a message for a registered process, an
    %%  I/O request, and a fake boot notification
    ok = gen_tcp:send(Intruder, term_to_binary({message, rpeer_trust_target, intruder})),
    _ = gen_tcp:send(Intruder, term_to_binary({started, 'intruder@nowhere'})),
    ?assertEqual({error, closed}, gen_tcp:recv(Intruder, 0, 5000)),
    {ok, Peer, Node} = receive {started, Started} -> Started after 20000 -> ct:fail(no_boot) end,
    ?assertEqual(nonode@nohost, Node),
    ?assertEqual(nonode@nohost, rpeer:call(Peer, erlang, node, [])),
    receive intruder -> ct:fail(intruder_message_delivered) after 200 -> ok end,
    unlink(Starter),
    exit(Starter, kill).

oversized_frame_is_read_past() ->
    [{doc, "A frame whose declared length is over the limit (max_frame) is read past "
      "without being kept, and logged; the frames after it are the peer's as before"}].

oversized_frame_is_read_past(Config) when is_list(Config) ->
    ok = application:set_env(rpeer, max_frame, 1024),
    try
        {ok, Peer, _Node} = rpeer:start_link(#{connection => 0}),
        true = rpeer:call(Peer, code, add_path, [filename:dirname(code:which(?MODULE))]),
        ok = logger:add_handler(?MODULE, rpeer_test_lib, #{config => #{pid => self()}}),
        ok = rpeer:cast(Peer, erlang, apply, [fun send_oversized_frame/0, []]),
        receive
            {logged, #{level := warning, msg := {_, [100000, {frame_too_large, 1024}]}}} -> ok
        after 10000 ->
                ct:fail(no_warning)
        end,
        ?assertEqual(running, rpeer:get_state(Peer)),
        ?assertEqual(pong, rpeer:call(Peer, erlang, list_to_atom, ["pong"])),
        rpeer:stop(Peer)
    after
        _ = logger:remove_handler(?MODULE),
        application:unset_env(rpeer, max_frame)
    end.

%% Runs on the peer: writes a raw frame of 100000 bytes on its control socket.
send_oversized_frame() ->
    [Socket] = [P || P <- erlang:ports(), erlang:port_info(P, name) =:= {name, "tcp_inet"}],
    ok = inet:setopts(Socket, [{packet, raw}]),
    ok = gen_tcp:send(Socket, [<<100000:32>>, binary:copy(<<"x">>, 100000)]),
    ok = inet:setopts(Socket, [{packet, 4}]).

%% @doc A small library written against OTP's peer: a helper node that answers calls.
-module(consumer).

-export([start_helper/0, helper_options/0, os_pid/1, stop_helper/1]).

%% @doc Starts a helper node, not distributed, controlled over its standard I/O.
-spec start_helper() -> {ok, peer:server_ref()}.
start_helper() ->
    {ok, Peer, _NoNode} = peer:start_link(helper_options()),
    {ok, Peer}.

%% @doc The helper node's start options.
-spec helper_options() -> peer:start_options().
helper_options() ->
    #{connection => standard_io}.

%% @doc The OS process id of the helper node.
-spec os_pid(peer:server_ref()) -> string().
os_pid(Peer) ->
    peer:call(Peer, os, getpid, []).

%% @doc Stops the helper node.
-spec stop_helper(peer:server_ref()) -> ok.
stop_helper(Peer) ->
    lists:foreach(fun peer:stop/1, [Peer]).

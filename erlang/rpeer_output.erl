%% @doc The peer's latest output, for finding out why a peer failed or misbehaved.
%%
%% rpeer keeps the last 4 KiB of what the peer's OS process wrote to its stdout (console
%% text that is not a control frame) and stderr (each line marked `[stderr] '), as it
%% was forwarded to the group leader. When a peer fails to boot, that output is also
%% logged with logger (a warning), and `start/1' and `start_link/1' keep it for the
%% calling process, since they raise `{boot_failed, Reason}' exactly as peer does.
-module(rpeer_output).

-export([last/1, last_failed_boot/0]).

%% @doc The latest output (at most 4 KiB) of the peer controlled by `Peer'.
-spec last(Peer :: rpeer:server_ref()) -> binary().
last(Peer) ->
    gen_server:call(Peer, last_output).

%% @doc The latest output of the most recent peer that this process started with
%% `rpeer:start/1' or `rpeer:start_link/1' (waiting for boot) and that failed to boot,
%% or `undefined'.
-spec last_failed_boot() -> binary() | undefined.
last_failed_boot() ->
    get('$rpeer_last_boot_output').

%% @doc
%% rpeer's fast peer side for the standard_io connection: OTP's own `peer' module runs
%% the channel on the peer node, as with stock peer, but its frames travel through
%% rpeer's Rust codec instead of peer's Erlang one (which is where stock peer spends half
%% of its standard_io time).
%%
%% The peer node starts with `-user rpeer_agent -origin 127.0.0.1 0' (rpeer adds its
%% code path). start/0, the `-user' entry point, makes this module the node's default
%% gen_tcp module for one connect (and the inet backend, if the node chose `socket',
%% which would not ask the module) and calls `peer:start()' (with itself as error
%% handler, which spares the boot loading `string', see undefined_function/3). Seeing
%% `-origin Ip Port', peer connects "over tcp" through gen_tcp; this module answers the
%% connect to port 0 with a socket of its own, `{'$inet', rpeer_agent, Ref}', whose
%% frames are the node's stdin and stdout, encoded by `rpeer_nif:attach_stdio/1' on its
%% own threads; then it gives the defaults back. From there on peer's channel handler
%% (`peer:io_server_loop/5') serves calls, I/O and messages exactly as with stock peer,
%% its `peer_supervision' halts the node if the handler dies, and the end of stdin is
%% `tcp_closed', on which peer halts the node.
%%
%% Any other connect that reaches this module while it is the default (nothing else
%% runs that early in the boot) goes to the default module.
%%
%% A tcp peer on this host starts through this module too (`-user rpeer_agent -origin
%% Ips Port', see tcp_user_args/2): peer's connect to an address of `-origin' makes its
%% gen_tcp connection, passive, and answers with a socket of the same kind, whose frames
%% rpeer's thread reads from the connection (`rpeer_nif:attach_tcp/2'), and which sends
%% them through gen_tcp. start/0 also returns only once peer's handler registered `user'
%% (user_sup would otherwise sleep 100 ms before it looks again, half of a tcp peer's
%% boot).
%% @end
-module(rpeer_agent).

-export([start/0, user_args/1, tcp_user_args/3]).

%% Run on a warm node of rpeer's pool that is handed out as a dist peer.
-export([follow_controller/1, follower/2]).

-include("rpeer_peer_side.hrl").
-include("rpeer_frame.hrl").

%% The error handler of start/0's call to peer:start().
-export([undefined_function/3, undefined_lambda/3]).

%% The gen_tcp module interface (inet_db tcp_module) and the module socket's functions.
-export([getaddrs/2, getserv/1, connect/4, send/2, setopts/2]).

%% The address and port in `-origin' that mean this node's standard I/O.
-define(STDIO_ADDRESS, {127, 0, 0, 1}).
-define(STDIO_ADDRESS_STRING, "127.0.0.1").
-define(STDIO_PORT, 0).
-define(STDIO_PORT_STRING, "0").
%% user_sup waits for `user' in steps of 100 ms: start/0 returns once it is there.
-define(USER_WAIT_MS, 10000).
%% gen_tcp's backend, set by inet_db from the kernel parameter inet_backend.
-define(INET_BACKEND, {kernel, inet_backend}).
%% The origin's frame size limit (rpeer_frame), when lower than the wire's.
-define(MAX_FRAME_FLAG, "-rpeer_max_frame").

%% @doc The peer's command line arguments that start it with the agent (the origin adds
%% rpeer's code path), sending frames of at most `MaxFrame' bytes.
-spec user_args(rpeer_frame:limit()) -> [string()].
user_args(MaxFrame) ->
    ["-user", atom_to_list(?MODULE),
     "-origin", ?STDIO_ADDRESS_STRING, ?STDIO_PORT_STRING, ?HANDLER_IS_USER | max_frame_args(MaxFrame)].

%% @doc The peer's command line arguments that start a tcp peer through the agent: peer's
%% own tcp channel to `Ips' (comma-separated) and `Port', without user_sup's 100 ms wait.
-spec tcp_user_args(string(), inet:port_number(), rpeer_frame:limit()) -> [string()].
tcp_user_args(Ips, Port, MaxFrame) when Port =/= ?STDIO_PORT ->
    ["-user", atom_to_list(?MODULE), "-origin", Ips, integer_to_list(Port), ?HANDLER_IS_USER
     | max_frame_args(MaxFrame)].

%% The wire's own limit needs no flag: the command line stays as short as it can.
max_frame_args(?WIRE_MAX) -> [];
max_frame_args(MaxFrame) -> [?MAX_FRAME_FLAG, integer_to_list(MaxFrame)].

%% @doc The `-user' entry point: peer's channel handler, over the node's stdin/stdout or
%% (any other `-origin') over tcp, its frames coded by rpeer either way.
-spec start() -> pid().
start() ->
    persistent_term:put({?MODULE, max_frame}, max_frame_arg()),
    persistent_term:put({?MODULE, default_tcp_module}, inet_db:tcp_module()),
    persistent_term:put({?MODULE, starter}, self()),
    ok = inet_db:set_tcp_module(?MODULE),
    case persistent_term:get(?INET_BACKEND, inet) of
        inet ->
            ok;
        Backend ->
            persistent_term:put({?MODULE, inet_backend}, Backend),
            persistent_term:put(?INET_BACKEND, inet)
    end,
    Handler = peer_start(),
    wait_for_user(Handler),
    Handler.

%% peer:start(), with this module as the error handler (see undefined_function/3).
peer_start() ->
    ErrorHandler = process_flag(error_handler, ?MODULE),
    try
        peer:start()
    after
        process_flag(error_handler, ErrorHandler)
    end.

max_frame_arg() ->
    case init:get_argument(list_to_atom(tl(?MAX_FRAME_FLAG))) of
        {ok, [[Digits]]} -> list_to_integer(Digits);
        _ -> ?WIRE_MAX
    end.

%% user_sup sleeps 100 ms if `user' is not registered when start/0 returns: wait for the
%%  handler's connect (connect/4 says so), after which it registers at once. A tcp
%%  handler whose connects all failed halts the node.
wait_for_user(Handler) ->
    MRef = monitor(process, Handler),
    receive
        {?MODULE, connected} ->
            demonitor(MRef, [flush]),
            wait_registered(Handler);
        {'DOWN', MRef, process, Handler, _} ->
            ok
    after ?USER_WAIT_MS ->
            demonitor(MRef, [flush])
    end.

%% Waits until `user' is registered (right after the connect), or the handler died.
wait_registered(Handler) ->
    case whereis(user) =:= undefined andalso is_process_alive(Handler) of
        true ->
            erlang:yield(),
            wait_registered(Handler);
        false ->
            ok
    end.

%% @doc On a warm node of rpeer's pool that is handed out for a request without
%% `connection' (see rpeer_pool), once it is distributed: connects to the origin and,
%% as OTP's peer side does for a dist peer, halts the node when `Controller' goes (its
%% end, or the distribution connection's). Returns once the watch is on.
-spec follow_controller(pid()) -> ok | {error, noconnection}.
follow_controller(Controller) ->
    case net_kernel:connect_node(node(Controller)) of
        true ->
            Follower = spawn(?MODULE, follower, [Controller, self()]),
            receive {Follower, following} -> ok end;
        _NotConnected ->
            {error, noconnection}
    end.

%% @private
%% follow_controller/1's process: tells Caller once it watches.
-spec follower(pid(), pid()) -> no_return().
follower(Controller, Caller) ->
    Watch = monitor(process, Controller),
    Caller ! {self(), following},
    receive {'DOWN', Watch, process, Controller, _} -> erlang:halt() end.

%% @private
%% The error handler while peer:start() runs. peer's tcp path splits the `-origin'
%%  addresses with string:lexemes/2: loading `string' (and `unicode_util', which its scan
%%  ends in) only for that would cost ~10 ms, a tenth of the boot, and nothing else in the
%%  boot needs them. This one call, with the addresses rpeer put there (ASCII), is
%%  answered with its result; every other undefined function loads as usual.
-spec undefined_function(module(), atom(), list()) -> term().
undefined_function(string, lexemes, [Addresses, ","] = Args) ->
    case is_ascii(Addresses) of
        true -> [Address || Address <- split_commas(Addresses, []), Address =/= []];
        false -> error_handler:undefined_function(string, lexemes, Args)
    end;
undefined_function(Module, Function, Args) ->
    error_handler:undefined_function(Module, Function, Args).

is_ascii([Char | Rest]) when is_integer(Char), Char >= 0, Char < 128 ->
    is_ascii(Rest);
is_ascii(Rest) ->
    Rest =:= [].

split_commas([], Address) ->
    [lists:reverse(Address)];
split_commas([$, | Rest], Address) ->
    [lists:reverse(Address) | split_commas(Rest, [])];
split_commas([Char | Rest], Address) ->
    split_commas(Rest, [Char | Address]).

%% @private
-spec undefined_lambda(module(), fun(), list()) -> term().
undefined_lambda(Module, Fun, Args) ->
    error_handler:undefined_lambda(Module, Fun, Args).

%%--------------------------------------------------------------------
%% gen_tcp module

%% @private
%% The channel's own address and port are answered here: the default module (inet_tcp)
%%  is then not loaded during the boot only for this.
-spec getaddrs(inet:socket_address() | inet:hostname(), term()) -> term().
getaddrs(?STDIO_ADDRESS, _Timer) ->
    {ok, [?STDIO_ADDRESS]};
getaddrs(Address, Timer) ->
    (default_tcp_module()):getaddrs(Address, Timer).

%% @private
-spec getserv(inet:port_number() | atom()) -> term().
getserv(?STDIO_PORT) ->
    {ok, ?STDIO_PORT};
getserv(Port) ->
    (default_tcp_module()):getserv(Port).

%% @private
%% The connect of peer's channel handler (in its own process, which receives the
%%  socket's messages): stdin and stdout become the socket; or, to an address and port of
%%  `-origin', peer's own gen_tcp connection, passive, is read by rpeer's thread (it
%%  still sends: large frames go out faster through gen_tcp than through a writer thread
%%  competing for 2 CPUs). peer tries the addresses in turn: the defaults are given back
%%  once one connected.
-spec connect(inet:ip_address(), inet:port_number(), list(), timeout()) -> term().
connect(?STDIO_ADDRESS, ?STDIO_PORT, _Opts, _Timeout) ->
    Socket = {'$inet', ?MODULE, make_ref()},
    connected(Socket, rpeer_nif:attach_stdio(Socket));
connect(Address, Port, Opts, Timeout) ->
    Default = default_tcp_module(),
    case is_origin(Address, Port) andalso Default:connect(Address, Port, Opts ++ [{active, false}], Timeout) of
        false ->
            Default:connect(Address, Port, Opts, Timeout);
        {ok, Connection} ->
            Socket = {'$inet', ?MODULE, make_ref()},
            {ok, Fd} = inet:getfd(Connection),
            case connected(Socket, rpeer_nif:attach_tcp(Socket, Fd)) of
                {ok, Socket} ->
                    persistent_term:put({?MODULE, connection}, Connection),
                    watch_connection(Connection),
                    {ok, Socket};
                {error, _} = Error ->
                    _ = gen_tcp:close(Connection),
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

%% The reading thread borrows gen_tcp's descriptor (it holds no reference while it
%%  waits): once gen_tcp's socket closed (its owner died, or it was closed), the channel
%%  is closed, which ends the thread.
watch_connection(Connection) ->
    Channel = channel(),
    _ = spawn(fun () ->
                      MRef = monitor(port, Connection),
                      receive {'DOWN', MRef, port, Connection, _} -> rpeer_nif:close(Channel) end
              end),
    ok.

connected(Socket, {ok, Channel}) ->
    ok = inet_db:set_tcp_module(default_tcp_module()),
    case persistent_term:get({?MODULE, inet_backend}, undefined) of
        undefined -> ok;
        Backend -> persistent_term:put(?INET_BACKEND, Backend)
    end,
    persistent_term:put({?MODULE, channel}, Channel),
    persistent_term:get({?MODULE, starter}) ! {?MODULE, connected},
    {ok, Socket};
connected(_Socket, {error, _} = Error) ->
    Error.

%% Whether a connect goes to the origin's control port (`-origin Ips Port').
is_origin(Address, Port) ->
    case init:get_argument(origin) of
        {ok, [[Ips, PortString]]} ->
            integer_to_list(Port) =:= PortString
                andalso lists:member(Address, [Ip || Text <- split_commas(Ips, []),
                                                     {ok, Ip} <- [inet:parse_address(Text)]]);
        _ ->
            false
    end.

%% @private
%% peer's frames to the origin (term_to_binary/1 of its terms). One over the origin's
%%  limit is not sent, see refuse/3.
-spec send({'$inet', ?MODULE, reference()}, iodata()) -> ok | {error, closed}.
send({'$inet', ?MODULE, _} = Socket, Packet) ->
    Size = iolist_size(Packet),
    case persistent_term:get({?MODULE, max_frame}) of
        MaxFrame when Size > MaxFrame ->
            refuse(Socket, iolist_to_binary(Packet), rpeer_frame:too_large(Size, MaxFrame));
        _ ->
            case persistent_term:get({?MODULE, connection}, stdio) of
                stdio -> rpeer_nif:send(channel(), iolist_to_binary(Packet));
                Connection -> gen_tcp:send(Connection, Packet)
            end
    end.

%% A frame over the limit: a reply becomes the error the call raises at the origin; an
%%  I/O request is answered here with the error (io:put_chars/2 of 1 GiB fails instead
%%  of waiting for ever); anything else (a message to the origin) is dropped with a
%%  warning, which reaches the origin as this node's console output. Decoding the frame
%%  takes a process of its own, whose memory goes with it.
refuse(Socket, Frame, Reason) ->
    case rpeer_frame:reply_seq(Frame) of
        {ok, Seq} ->
            send(Socket, term_to_binary({reply, Seq, error, {Reason, []}}));
        error ->
            {Pid, MRef} = spawn_monitor(fun () -> refuse_decoded(binary_to_term(Frame), Reason) end),
            receive {'DOWN', MRef, process, Pid, _} -> ok end
    end.

refuse_decoded({io_request, From, ReplyAs, _Request}, Reason) ->
    From ! {io_reply, ReplyAs, {error, Reason}};
refuse_decoded(Term, Reason) when is_tuple(Term), tuple_size(Term) > 0 ->
    logger:warning("rpeer: a ~0p frame to the origin was not sent: ~0p", [element(1, Term), Reason],
                   #{domain => [rpeer], rpeer_node => node()});
refuse_decoded(_Term, Reason) ->
    logger:warning("rpeer: a frame to the origin was not sent: ~0p", [Reason], #{domain => [rpeer], rpeer_node => node()}).

%% @private
%% peer asks for the next frame after each one it handled (`{active, once}').
-spec setopts({'$inet', ?MODULE, reference()}, list()) -> ok.
setopts({'$inet', ?MODULE, _}, [{active, once}]) ->
    rpeer_nif:ack(channel(), 1).

default_tcp_module() ->
    persistent_term:get({?MODULE, default_tcp_module}).

channel() ->
    persistent_term:get({?MODULE, channel}).

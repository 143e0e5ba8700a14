%% @doc
%% A pool of peers booted ahead of time, so that `rpeer:start_link/1' and
%% `rpeer:start/1' can hand out a node that is already up instead of booting one. Off
%% unless the `rpeer' application runs and its environment key `pool_size' is above 0.
%%
%% == Terms ==
%% Template - a request's start options without `name', `wait_boot' and `peer_down', the
%%  origin's cookie and the frame size limit (`max_frame'): two requests with the same template get the same kind of node.
%%  A template is learned from a cold start: after one, the pool keeps `pool_size'
%%  nodes booted for it.
%% Warm node - a peer booted by the pool for a template, without a name; its controller
%%  is an `rpeer' controller like any other, linked to the pool.
%% Hit - a request that gets a warm node; miss - one that cold-starts (always at once,
%%  never behind a refill).
%% Hand-out - what makes a warm controller the caller's: for a named request the node
%%  becomes distributed with the name asked for (`net_kernel:start/1' on the node, over
%%  its control connection); then the controller takes the caller as its owner (linked
%%  for start_link/1), the caller's group leader and the request's options.
%% Hidden control connection - a dist request's warm node boots as a standard_io peer
%%  through rpeer's agent. Once handed out, its controller behaves as a dist peer's:
%%  calls raise `noconnection', casts and sends are dropped, `nodedown' takes the peer
%%  down, `shutdown' works over the distribution. The connection stays open, unused but
%%  for the node's `user' I/O (which a dist peer relays to the controller's group leader,
%%  too), so that the node halts with its controller, SIGKILL of the origin included; the
%%  agent's follow_controller/1 halts it when the controller goes, as OTP's peer side does.
%%
%% == What is pooled ==
%% Requests with an alternative connection (`standard_io', or tcp on a port chosen by
%% the system: `0' or `{Ip, 0}'), not `detached', and either unnamed or named (with
%% `host' and `longnames' as they like; `host' without `name' is not pooled). Named
%% requests without `connection' (dist peers) from a distributed origin, when rpeer
%% starts the node itself (no `exec', no `post_process_args') with rpeer's agent
%% loadable and no `args' that would detach or name it (see ?NOT_WITH_DIST).
%%
%% == Protocol ==
%% Between rpeer:start_it (the caller), this server and a warm controller:
%% <ol>
%% <li>caller: `take(Options)'. Off (no server, `pool_size' 0, not pooled): `miss'.
%%   Else a call `{take, Key}': the server answers `{ok, Ref, Pid}' and takes Pid out
%%   of its warm nodes (a hit; it monitors the caller, Ref, until step 3), or `miss'.</li>
%% <li>caller, on a hit (hand_out/4): a call over the control connection, which a node
%%   that died while it waited cannot answer: `net_kernel:start/1' for a named request,
%%   else `erlang:node/0'; for a dist request `rpeer_agent:follow_controller/1', and cover
%%   started on the node as a booting dist peer has it (OTP 26 and later); then it calls
%%   the controller with `{handover, Owner, Link, Leader, Options, Node, Pool}'. The
%%   controller answers `ok' only while its peer runs; it unlinks the pool, links the
%%   caller for start_link, and behaves as a cold controller from then on.
%%   Anything else (the node died meanwhile, the name is taken) and the caller stops the
%%   warm controller and cold-starts.</li>
%% <li>caller: casts `{handed, Ref}' to the server, which forgets the caller. A caller
%%   that dies before this (its monitor's `DOWN') has its warm node stopped.</li>
%% <li>caller, on a miss: cold-starts, and when that succeeds casts `{learn, Key,
%%   BootOptions}': the server counts the miss and (re)activates the template.</li>
%% </ol>
%% The server boots warm nodes itself with `wait_boot => {Pool, Tag}', at most
%% `pool_boots' at once, each in an OS scheduling group niced to 19 until it is ready (the
%% kernel's autogroup of the node's session, which rpeer-wait leads; where autogroups
%% are off the boot runs at normal priority). A booted node is ready, and warm, once it
%% ran its args' `-eval', `-s' and `-run' and loaded what a hand-out needs (see
%% prepare/2). A template nobody asked for in
%% `pool_idle_ms' has its warm nodes stopped, until the next request for it. When the
%% server stops (`application:stop(rpeer)'), it stops every warm node first, and a warm
%% node dies with the server anyway: the server is its controller's parent.
%% @end
-module(rpeer_pool).
-behaviour(gen_server).

%% API
-export([start_link/0, info/0, flush/0]).

%% Used by rpeer:start_it/2
-export([take/1, hand_out/4, handed/2, learn/1, template/1, is_on/1]).

%% gen_server
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-export_type([template_info/0]).

%%--------------------------------------------------------------------
%% Types

-type key() :: {map(), Cookie :: atom(), MaxFrame :: rpeer_frame:limit()}.
%% A template: the options that decide what node boots, the origin's cookie, and the
%%  frame size limit (`max_frame', read when a peer starts).

-type template_info() :: #{template := map(), warm := non_neg_integer(),
                           hits := non_neg_integer(), misses := non_neg_integer(),
                           booting := non_neg_integer(), preparing := non_neg_integer()}.
%% What info/0 tells of a template: its options (a request's, without `name',
%%  `wait_boot' and `peer_down'), its warm nodes,
%%  the requests it served (hits) and those that cold-started (misses), its boots in
%%  progress (VMs booting, at most `pool_boots' over all templates), and its booted nodes
%%  being prepared (see prepare/2).

%%--------------------------------------------------------------------
%% Constants

%% Defaults of the application environment keys.
-define(DEFAULT_BOOTS, 1).
-define(DEFAULT_IDLE_MS, 60000).

%% The options a warm node boots without: they name it, or only the controller uses them
%%  (stop/1's policy, what to do when the peer goes down, how to wait for the boot).
-define(NOT_BOOTED, [name, host, longnames, shutdown, peer_down, wait_boot]).

%% Arguments of a dist request that a warm node cannot boot with: they detach it, name it,
%%  take its standard I/O or its user, or load code so that it cannot load rpeer's agent.
-define(NOT_WITH_DIST, ["-detached", "-name", "-sname", "-user", "-origin", "-noinput", "-mode"]).

%% What a warm node loads once booted: the modules net_kernel:start/1 and the first
%%  connection to the origin load.
-define(HAND_OUT_MODULES, [auth, dist_util, erl_epmd, inet_tcp, inet_tcp_dist, raw_file_io_list,
                           re, string, unicode_util, global, global_group]).

%% How long a booted warm node may take to run its args' -eval, -s and -run before it
%%  is warm anyway (one that never returns would hold a boot slot for ever), and how
%%  often it is asked, in milliseconds.
-define(BOOT_ARGS_WAIT, 10000).
-define(BOOT_ARGS_POLL, 5).

%% How long the server waits for its warm nodes to go when it stops.
-define(STOP_WAIT, 10000).

%% The nice value of a warm node's scheduling group while it boots.
-define(BOOT_NICE, 19).

%% How often (every millisecond) the server looks for a booting node's OS pid, to nice it.
-define(NICE_TRIES, 50).

%%--------------------------------------------------------------------
%% API

%% @doc Starts the pool's server, registered as `rpeer_pool' (rpeer_sup does).
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Per template: its options, warm nodes, hits, misses and boots in progress (see
%%  template_info()); `[]' when the pool is not running.
-spec info() -> [template_info()].
info() ->
    case whereis(?MODULE) of
        undefined -> [];
        Pool -> gen_server:call(Pool, info)
    end.

%% @doc Stops every warm and booting node now, and forgets every template (and its
%%  counts): the pool starts learning again. Returns once their OS processes are gone.
%%  Nothing to do when the pool is not running.
-spec flush() -> ok.
flush() ->
    case whereis(?MODULE) of
        undefined -> ok;
        Pool -> gen_server:call(Pool, flush, infinity)
    end.

%% @doc A warm node for these (checked) start options: `{ok, Pool, Controller}', which
%%  the caller must hand out (see the protocol) and then report with handed/2; or
%%  `miss'. Used by rpeer's start functions.
-spec take(rpeer:start_options()) -> {ok, {pid(), reference()}, pid()} | miss.
take(Options) ->
    case pool_size() > 0 andalso template(Options) of
        {ok, Key} ->
            case whereis(?MODULE) of
                undefined -> miss;
                Pool -> take(Pool, Key)
            end;
        _OffOrNotPooled ->
            miss
    end.

take(Pool, Key) ->
    try gen_server:call(Pool, {take, Key}) of
        {ok, Ref, Pid} -> {ok, {Pool, Ref}, Pid};
        miss -> miss
    catch
        exit:_PoolGone -> miss
    end.

%% @doc Makes a warm controller that take/1 gave the caller's, as if it had just booted
%%  for Options (`{ok, Node}'), or stops it (`error': the caller cold-starts). A named
%%  request's node becomes distributed with that name first (an unnamed one answers a
%%  call), so a node that died while it waited is not handed out; a dist request's node
%%  then connects to the origin, follows its controller and gets cover as a booting dist
%%  peer would (see the protocol). Runs in the caller.
-spec hand_out({pid(), reference()}, pid(), rpeer:start_options(), start | start_link) ->
          {ok, node()} | error.
hand_out({Pool, _Ref}, Pid, Options, How) ->
    try
        Node = case Options of
                   #{name := _} -> distribute(Pid, Options);
                   _ -> rpeer:call(Pid, erlang, node, [])
               end,
        ok = case Options of
                 #{connection := _} -> ok;
                 _Dist -> as_dist_peer(Pid, Node, Options)
             end,
        ok = gen_server:call(Pid, {handover, self(), How =:= start_link, group_leader(),
                                   Options, Node, Pool}),
        {ok, Node}
    catch
        _:_ ->
            try gen_server:stop(Pid) catch exit:_AlreadyGone -> ok end,
            error
    end.

as_dist_peer(Pid, Node, Options) ->
    ok = rpeer:call(Pid, rpeer_agent, follow_controller, [Pid]),
    case Options of
        #{shutdown := {Timeout, CoverNode}} when is_integer(Timeout), is_atom(CoverNode) ->
            _ = rpeer_ct:starts_cover_itself() orelse rpeer_ct:cover_on_peer(Node, CoverNode),
            ok;
        _ ->
            ok
    end.

%% net_kernel:start/1 on the node, with the name, host and name mode a cold start would
%%  give it on its command line (rpeer_launch).
distribute(Pid, Options) ->
    Node = list_to_atom(rpeer_launch:node_name(Options)),
    Mode = case rpeer_launch:name_flag(Options) of
               "-name" -> longnames;
               "-sname" -> shortnames
           end,
    {ok, _} = rpeer:call(Pid, net_kernel, start, [[Node, Mode]]),
    rpeer:call(Pid, erlang, node, []).

%% @doc The caller of take/1 is done with the warm node it got: handed out, or stopped.
-spec handed({pid(), reference()}, pid()) -> ok.
handed({Pool, Ref}, _Pid) ->
    gen_server:cast(Pool, {handed, Ref}).

%% @doc A cold start with these options succeeded: the pool keeps warm nodes for their
%%  template from now on (when it runs, `pool_size' is above 0, and they are pooled).
-spec learn(rpeer:start_options()) -> ok.
learn(Options) ->
    case pool_size() > 0 andalso template(Options) of
        {ok, Key} -> gen_server:cast(?MODULE, {learn, Key, boot_options(Options)});
        _OffOrNotPooled -> ok
    end.

%% What a warm node for these options boots with: a dist request's node gets its hidden
%%  control connection.
boot_options(#{connection := _} = Options) ->
    maps:without(?NOT_BOOTED, Options);
boot_options(Options) ->
    (maps:without(?NOT_BOOTED, Options))#{connection => standard_io, peer_side => rpeer}.

%% @doc Whether the pool would serve these start options now: it runs, `pool_size' is
%%  above 0, and they are pooled (see template/1).
-spec is_on(rpeer:start_options()) -> boolean().
is_on(Options) ->
    pool_size() > 0 andalso template(Options) =/= none andalso whereis(?MODULE) =/= undefined.

%% @doc The template of start options, `{ok, Key}', or `none' for options the pool
%%  does not serve (see the module documentation).
-spec template(rpeer:start_options()) -> {ok, key()} | none.
template(#{detached := true}) -> none;
template(#{host := _} = Options) when not is_map_key(name, Options) -> none;
template(#{connection := Connection} = Options) ->
    case system_port(Connection) of
        true -> {ok, key(Options)};
        false -> none
    end;
template(#{name := _} = Options) ->
    case is_alive() andalso warm_dist(Options) of
        true -> {ok, key(Options)};
        false -> none
    end;
template(_NotDistributed) -> none.

key(Options) ->
    {maps:without([name, peer_down, wait_boot], Options), erlang:get_cookie(), rpeer_frame:max_size()}.

%% A dist request is served by a node whose hidden control connection is standard_io
%%  through rpeer's agent: rpeer starts it (no `exec'), the node can load the agent, and
%%  nothing in its command line would change how it boots or is named.
warm_dist(Options) ->
    not is_map_key(post_process_args, Options) andalso rpeer_launch:agent_runs(Options)
        andalso not lists:any(fun (Arg) -> lists:member(Arg, ?NOT_WITH_DIST) end,
                              maps:get(args, Options, [])).

system_port(standard_io) -> true;
system_port(0) -> true;
system_port({_Ip, 0}) -> true;
system_port(_Fixed) -> false.

pool_size() ->
    env(pool_size, 0).

env(Key, Default) ->
    case application:get_env(rpeer, Key) of
        {ok, Value} when is_integer(Value), Value >= 0 -> Value;
        _ -> Default
    end.

%%--------------------------------------------------------------------
%% The server's state

%% A warm node on its way: its boot's tag, its OS pid once known (for its nice value),
%%  and whether its VM boots or it booted and is being prepared (see prepare/2), which
%%  takes none of the `pool_boots' slots.
-record(boot, {key :: key(), tag :: reference(), os_pid :: undefined | non_neg_integer(),
               phase = boot :: boot | prepare}).

-record(template, {
          %% the options its warm nodes boot with
          boot_options :: map(),
          %% warm nodes, oldest first
          warm = [] :: [pid()],
          hits = 0 :: non_neg_integer(),
          misses = 0 :: non_neg_integer(),
          %% whether it is refilled: asked for within the idle time
          active = false :: boolean(),
          %% when it was last asked for (monotonic ms)
          used :: integer()}).

-record(state, {
          templates = #{} :: #{key() => #template{}},
          %% the warm nodes' controllers, by pid: booting or warm
          booting = #{} :: #{pid() => #boot{}},
          warm = #{} :: #{pid() => key()},
          %% callers handing a node out: their monitor, and the controller
          handing = #{} :: #{reference() => pid()}}).

-type state() :: #state{}.

%%--------------------------------------------------------------------
%% gen_server callbacks

%% @private gen_server callback.
-spec init([]) -> {ok, state()}.
init([]) ->
    %% warm controllers are linked: their end comes as an 'EXIT', and ours ends them
    process_flag(trap_exit, true),
    {ok, #state{}}.

%% @private gen_server callback.
-spec handle_call(term(), gen_server:from(), state()) -> {reply, term(), state()}.
handle_call({take, Key}, {Caller, _}, #state{templates = Templates} = State) ->
    case maps:find(Key, Templates) of
        {ok, #template{warm = [Pid | Rest], hits = Hits} = T} ->
            Ref = erlang:monitor(process, Caller),
            Used = touch(Key, T#template{warm = Rest, hits = Hits + 1}),
            Next = State#state{templates = Templates#{Key := Used},
                               warm = maps:remove(Pid, State#state.warm),
                               handing = (State#state.handing)#{Ref => Pid}},
            {reply, {ok, Ref, Pid}, refill(Next)};
        {ok, T} ->
            %% a miss: counted by learn/1 once the cold start succeeded
            Used = touch(Key, T),
            {reply, miss, State#state{templates = Templates#{Key := Used}}};
        error ->
            {reply, miss, State}
    end;
handle_call(flush, _From, #state{booting = Booting, warm = Warm} = State) ->
    ok = stop_all(maps:keys(Booting) ++ maps:keys(Warm)),
    {reply, ok, State#state{templates = #{}, booting = #{}, warm = #{}}};
handle_call(info, _From, #state{templates = Templates, booting = Booting} = State) ->
    Info = [#{template => Requested,
              warm => length(T#template.warm), hits => T#template.hits,
              misses => T#template.misses,
              booting => phase_count(Key, boot, Booting),
              preparing => phase_count(Key, prepare, Booting)}
            || {{Requested, _Cookie, _MaxFrame} = Key, T} <- maps:to_list(Templates)],
    {reply, Info, State}.

%% @private gen_server callback.
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast({handed, Ref}, #state{handing = Handing} = State) ->
    erlang:demonitor(Ref, [flush]),
    {noreply, State#state{handing = maps:remove(Ref, Handing)}};
handle_cast({learn, Key, BootOptions}, #state{templates = Templates} = State) ->
    T = case maps:find(Key, Templates) of
            {ok, Known} -> Known;
            error -> #template{boot_options = BootOptions, used = now_ms()}
        end,
    Learned = touch(Key, T#template{misses = T#template.misses + 1}),
    {noreply, refill(State#state{templates = Templates#{Key => Learned}})}.

%% @private gen_server callback.
-spec handle_info(term(), state()) -> {noreply, state()}.
%% a warm node booted: it loads what a hand-out needs, still at low priority
handle_info({Tag, {started, _Node, Pid}}, #state{booting = Booting} = State)
  when is_map_key(Pid, Booting) ->
    case maps:get(Pid, Booting) of
        #boot{tag = Tag} = Boot ->
            ok = prepare(Pid, Tag),
            {noreply, refill(State#state{booting = Booting#{Pid := Boot#boot{phase = prepare}}})};
        _Other ->
            {noreply, State}
    end;
%% ... and may be handed out from now on, at normal priority
handle_info({prepared, Pid, Tag}, #state{booting = Booting} = State)
  when is_map_key(Pid, Booting) ->
    case maps:get(Pid, Booting) of
        #boot{tag = Tag, key = Key, os_pid = OsPid} ->
            ok = nice(OsPid, 0),
            {noreply, refill(warm(Key, Pid, State#state{booting = maps:remove(Pid, Booting)}))};
        _Other ->
            {noreply, State}
    end;
%% a warm node failed to boot: its controller stops; the template is not refilled until
%%  it is asked for again, so that a node that cannot boot is not booted over and over
handle_info({_Tag, {boot_failed, Reason, Pid}}, #state{booting = Booting} = State)
  when is_map_key(Pid, Booting) ->
    #boot{key = Key} = maps:get(Pid, Booting),
    logger:warning("rpeer_pool: a warm node failed to boot: ~0p", [Reason], #{domain => [rpeer]}),
    {noreply, deactivate(Key, State#state{booting = maps:remove(Pid, Booting)})};
%% a booting node's OS pid, for its nice value
handle_info({nice, Pid, Tries}, #state{booting = Booting} = State) when is_map_key(Pid, Booting) ->
    Boot = maps:get(Pid, Booting),
    case os_pid(Pid) of
        undefined when Tries < ?NICE_TRIES ->
            _ = erlang:send_after(1, self(), {nice, Pid, Tries + 1}),
            {noreply, State};
        OsPid ->
            ok = nice(OsPid, ?BOOT_NICE),
            {noreply, State#state{booting = Booting#{Pid := Boot#boot{os_pid = OsPid}}}}
    end;
%% a warm or booting controller ended (its node died, or it was stopped)
handle_info({'EXIT', Pid, _Reason}, #state{booting = Booting, warm = Warm} = State) ->
    case {maps:find(Pid, Warm), maps:is_key(Pid, Booting)} of
        {{ok, Key}, _} ->
            {noreply, refill(unwarm(Key, Pid, State))};
        {error, true} ->
            {noreply, refill(State#state{booting = maps:remove(Pid, Booting)})};
        {error, false} ->
            {noreply, State}
    end;
%% a caller died while handing a node out: the node is nobody's
handle_info({'DOWN', Ref, process, _Caller, _Why}, #state{handing = Handing} = State)
  when is_map_key(Ref, Handing) ->
    Pid = maps:get(Ref, Handing),
    _ = spawn(fun () -> try gen_server:stop(Pid) catch exit:_AlreadyGone -> ok end end),
    {noreply, State#state{handing = maps:remove(Ref, Handing)}};
%% a template's idle time may be over
handle_info({idle, Key}, #state{templates = Templates} = State) ->
    case maps:find(Key, Templates) of
        {ok, #template{active = true, used = Used}} ->
            Idle = env(pool_idle_ms, ?DEFAULT_IDLE_MS),
            case now_ms() - Used >= Idle of
                true -> {noreply, deactivate(Key, State)};
                false -> _ = erlang:send_after(Used + Idle - now_ms(), self(), {idle, Key}),
                         {noreply, State}
            end;
        _ ->
            {noreply, State}
    end;
handle_info(_Other, State) ->
    {noreply, State}.

%% @private gen_server callback.
%% Every warm and booting node goes (a controller whose parent exits stops its peer as
%%  stop/1 does), and is waited for. A node being handed out is the caller's.
-spec terminate(term(), state()) -> ok.
terminate(_Reason, #state{booting = Booting, warm = Warm}) ->
    stop_all(maps:keys(Booting) ++ maps:keys(Warm)).

%% Stops warm controllers (their parent's exit) and waits for them to be gone.
stop_all(Pids) ->
    Watches = [erlang:monitor(process, Pid) || Pid <- Pids],
    _ = [exit(Pid, shutdown) || Pid <- Pids],
    Deadline = now_ms() + ?STOP_WAIT,
    lists:foreach(fun (Watch) ->
                          receive {'DOWN', Watch, process, _, _} -> ok
                          after max(0, Deadline - now_ms()) -> ok
                          end
                  end, Watches).

%%--------------------------------------------------------------------
%% Internals

%% Boots warm nodes while fewer than `pool_boots' VMs boot and an active template has
%%  fewer than `pool_size' warm or on their way, the emptiest template first.
refill(#state{booting = Booting, templates = Templates} = State) ->
    Size = pool_size(),
    Short = lists:sort([{length(T#template.warm) + booting(Key, Booting), Key}
                        || {Key, #template{active = true} = T} <- maps:to_list(Templates)]),
    case Short of
        [{Have, Key} | _] when Have < Size ->
            VmBoots = length([B || #boot{phase = boot} = B <- maps:values(Booting)]),
            case VmBoots < max(1, env(pool_boots, ?DEFAULT_BOOTS)) of
                true -> refill_more(boot(Key, State));
                false -> State
            end;
        _ ->
            State
    end.

refill_more({ok, State}) -> refill(State);
refill_more({error, State}) -> State.

phase_count(Key, Phase, Booting) ->
    length([B || #boot{key = K, phase = P} = B <- maps:values(Booting), K =:= Key, P =:= Phase]).

booting(Key, Booting) ->
    maps:fold(fun (_Pid, #boot{key = K}, N) when K =:= Key -> N + 1;
                  (_Pid, _Boot, N) -> N
              end, 0, Booting).

%% Starts a warm node's controller, linked to this server (its parent), which hears of
%%  the boot as a wait_boot {Pid, Tag} does.
boot(Key, #state{templates = Templates, booting = Booting} = State) ->
    #template{boot_options = Options} = maps:get(Key, Templates),
    {_, _, MaxFrame} = Key,
    Tag = make_ref(),
    case gen_server:start_link(rpeer, [{self(), Tag}, Options, MaxFrame], []) of
        {ok, Pid} ->
            self() ! {nice, Pid, 0},
            {ok, State#state{booting = Booting#{Pid => #boot{key = Key, tag = Tag}}}};
        {error, Reason} ->
            logger:warning("rpeer_pool: could not start a warm node: ~0p", [Reason],
                           #{domain => [rpeer]}),
            {error, deactivate(Key, State)}
    end.

warm(Key, Pid, #state{templates = Templates, warm = Warm} = State) ->
    case maps:find(Key, Templates) of
        {ok, #template{active = true, warm = Pids} = T} ->
            State#state{templates = Templates#{Key := T#template{warm = Pids ++ [Pid]}},
                        warm = Warm#{Pid => Key}};
        _Idle ->
            exit(Pid, shutdown),
            State
    end.

unwarm(Key, Pid, #state{templates = Templates, warm = Warm} = State) ->
    T = maps:get(Key, Templates),
    State#state{templates = Templates#{Key := T#template{warm = T#template.warm -- [Pid]}},
                warm = maps:remove(Pid, Warm)}.

%% A template was asked for: it is active, and goes idle unless asked for again in time.
touch(Key, #template{active = Active} = T) ->
    _ = Active orelse erlang:send_after(env(pool_idle_ms, ?DEFAULT_IDLE_MS), self(), {idle, Key}),
    T#template{active = true, used = now_ms()}.

%% A template is not refilled until asked for again; its warm and booting nodes stop.
deactivate(Key, #state{templates = Templates, booting = Booting, warm = Warm} = State) ->
    T = maps:get(Key, Templates),
    Gone = T#template.warm ++ [Pid || {Pid, #boot{key = K}} <- maps:to_list(Booting), K =:= Key],
    _ = [exit(Pid, shutdown) || Pid <- Gone],
    State#state{templates = Templates#{Key := T#template{warm = [], active = false}},
                booting = maps:without(Gone, Booting), warm = maps:without(Gone, Warm)}.

%% Readies a booted warm node, in a process of its own: waits until the node ran what
%%  `-eval', `-s' and `-run' in its args say (init's own status is `started' only then;
%%  the boot is reported before they run), so that they never run after a hand-out named
%%  the node, then has it load the modules that becoming distributed and connecting load
%%  (about 40 ms of a hand-out otherwise). The pool hears `{prepared, Pid, Tag}' when it
%%  is done, or the controller's exit.
prepare(Pid, Tag) ->
    Pool = self(),
    Deadline = now_ms() + ?BOOT_ARGS_WAIT,
    _ = spawn(fun () ->
                      _ = try
                              ok = wait_boot_args(Pid, Deadline),
                              rpeer:call(Pid, code, ensure_modules_loaded, [?HAND_OUT_MODULES])
                          catch _:_ -> failed
                          end,
                      Pool ! {prepared, Pid, Tag}
              end),
    ok.

wait_boot_args(Pid, Deadline) ->
    case rpeer:call(Pid, init, get_status, []) of
        {started, _} ->
            ok;
        _Starting ->
            case now_ms() < Deadline of
                true -> timer:sleep(?BOOT_ARGS_POLL), wait_boot_args(Pid, Deadline);
                false -> ok
            end
    end.

os_pid(Controller) ->
    try rpeer:info(Controller) of
        #{os_pid := OsPid} -> OsPid
    catch
        exit:_ -> undefined
    end.

%% Sets the nice value of the scheduling group of a node's session (Linux autogroups;
%%  raising it back to 0 needs no privilege). Nothing where there are none.
nice(undefined, _Nice) ->
    ok;
nice(OsPid, Nice) ->
    _ = file:write_file(["/proc/", integer_to_list(OsPid), "/autogroup"], integer_to_list(Nice)),
    ok.

now_ms() ->
    erlang:monotonic_time(millisecond).

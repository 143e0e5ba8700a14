%%% @doc
%%% Peers on other hosts, for real, on this machine.
%%%
%%% netns: a network namespace joined to the origin by a veth pair stands for another
%%% host (10.213.0.2, named `rpeerns'; the origin is 10.213.0.1 there). Peers start in it
%%% through `exec => {"ip", ["netns", "exec", NS, Erl]}' and are checked in each connection
%%% mode: standard_io through the wrapper, tcp back to the origin's veth address, and
%%% dist with the peer reachable by name. Taking the link down while a peer runs ends in
%%% `{down, tcp_closed}' or `{down, {nodedown, Node}}' within the net tick time, not a hang.
%%%
%%% ssh: an sshd on a loopback port (key-only, its own config and keys, started here)
%%% is the wrapper: `exec => {Ssh, [..., "user@127.0.0.1", Erl]}' over standard_io. The
%%% peer side is OTP's own peer module: nothing of rpeer is installed there.
%%%
%%% Namespaces, veths, per-namespace files and sshd are removed by the suite, also when a
%%% case fails. Where the machine cannot create them (not root, no iproute2, no sshd),
%%% the group is skipped with the reason.
%%% @end
-module(rpeer_remote_SUITE).

-include_lib("stdlib/include/assert.hrl").
-include_lib("common_test/include/ct.hrl").

-export([suite/0, all/0, groups/0,
         init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).

-export([
    standard_io_through_netns/0, standard_io_through_netns/1,
    tcp_across_veth/0, tcp_across_veth/1,
    tcp_offers_loopback_first/0, tcp_offers_loopback_first/1,
    dist_across_veth/0, dist_across_veth/1,
    standard_io_does_not_need_the_link/0, standard_io_does_not_need_the_link/1,
    tcp_link_loss_is_tcp_closed/0, tcp_link_loss_is_tcp_closed/1,
    dist_link_loss_is_nodedown/0, dist_link_loss_is_nodedown/1,
    standard_io_through_ssh/0, standard_io_through_ssh/1,
    missing_remote_erl_is_a_boot_failure/0, missing_remote_erl_is_a_boot_failure/1,
    other_release_standard_io/0, other_release_standard_io/1,
    other_release_tcp/0, other_release_tcp/1,
    other_release_dist/0, other_release_dist/1
]).

-define(NS, "rpeer_ct_ns").
-define(ORIGIN_VETH, "rpct0").
-define(PEER_VETH, "rpct1").
-define(ORIGIN_IP, {10, 213, 0, 1}).
-define(PEER_IP, {10, 213, 0, 2}).
-define(PEER_HOST, "rpeerns").
%% Short, on both sides, so that a dead link is seen in seconds (tcp: see
%%  rpeer_launch:dead_link_timeout/0; dist: the tick).
-define(TICKTIME, 8).
-define(DOWN_WITHIN, 4 * ?TICKTIME * 1000).

suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [{group, netns}, {group, ssh}, {group, other_release}].

groups() ->
    [{netns, [], [standard_io_through_netns, tcp_across_veth, tcp_offers_loopback_first,
                  dist_across_veth, standard_io_does_not_need_the_link,
                  tcp_link_loss_is_tcp_closed, dist_link_loss_is_nodedown]},
     {ssh, [], [standard_io_through_ssh, missing_remote_erl_is_a_boot_failure]},
     {other_release, [], [other_release_standard_io, other_release_tcp, other_release_dist]}].

%%--------------------------------------------------------------------
%% Groups: what the machine must offer, and the origin's settings

init_per_group(netns, Config) ->
    case netns_unavailable() of
        false ->
            remove_namespace(),
            OldTicktime = net_kernel:get_net_ticktime(),
            change_initiated = net_kernel:set_net_ticktime(?TICKTIME, 0),
            OldLookup = inet_db:res_option(lookup),
            ok = inet_db:add_host(?PEER_IP, [?PEER_HOST]),
            ok = inet_db:set_lookup([file | OldLookup -- [file]]),
            [{ip, find_program("ip")}, {old_ticktime, OldTicktime},
             {old_lookup, OldLookup} | Config];
        Why ->
            {skip, Why}
    end;
init_per_group(ssh, Config) ->
    case ssh_unavailable() of
        false -> start_sshd(Config);
        Why -> {skip, Why}
    end;
init_per_group(other_release, Config) ->
    %% bin/test and bin/test-otp name a root filesystem whose OTP release differs from
    %%  this node's (Debian sid's on the host; the host's in sid and trixie).
    Root = os:getenv("RPEER_OTHER_OTP_ROOT", ""),
    Chroot = find_program("chroot"),
    %% (filename:join("", "usr/bin/erl") is "/usr/bin/erl": an unset root is no root)
    case Root =/= "" andalso Chroot =/= false
        andalso filelib:is_regular(filename:join(Root, "usr/bin/erl")) of
        true -> [{other_release_exec, {Chroot, [Root, "/usr/bin/erl"]}} | Config];
        false -> {skip, "RPEER_OTHER_OTP_ROOT names no root filesystem with an erl, or no chroot"}
    end.

end_per_group(netns, Config) ->
    remove_namespace(),
    inet_db:del_host(?PEER_IP),
    ok = inet_db:set_lookup(?config(old_lookup, Config)),
    _ = net_kernel:set_net_ticktime(?config(old_ticktime, Config), 0),
    ok;
end_per_group(ssh, Config) ->
    stop_sshd(Config);
end_per_group(other_release, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    case ?config(ip, Config) of
        undefined -> Config;
        _ -> create_namespace(), Config
    end.

end_per_testcase(_Case, Config) ->
    case ?config(ip, Config) of
        undefined -> ok;
        _ -> remove_namespace()
    end.

%%--------------------------------------------------------------------
%% other_release: peers of another OTP release (exec through chroot), where stock
%%  peer's own peer side of that release runs: the command line rpeer writes (with
%%  -peer_detached) and the controller's protocol (with {starting, Node} from 26 on)
%%  must suit both.

other_release_standard_io() ->
    [{doc, "A standard_io peer of another OTP release: calls, exceptions and output"}].

other_release_standard_io(Config) when is_list(Config) ->
    {ok, Peer, nonode@nohost} = rpeer:start_link(other_release(Config, #{connection => standard_io})),
    assert_other_release(rpeer:call(Peer, erlang, system_info, [otp_release])),
    ?assertError(badarith, rpeer:call(Peer, erlang, '+', [1, a])),
    ok = rpeer:stop(Peer).

other_release_tcp() ->
    [{doc, "A named tcp peer of another OTP release: calls, exceptions, its node"}].

other_release_tcp(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = rpeer:start_link(other_release(Config, #{connection => 0, name => Name})),
    assert_other_release(rpeer:call(Peer, erlang, system_info, [otp_release])),
    ?assertEqual(Node, rpeer:call(Peer, erlang, node, [])),
    ?assertError(badarith, rpeer:call(Peer, erlang, '+', [1, a])),
    ok = rpeer:stop(Peer).

other_release_dist() ->
    [{doc, "A dist peer of another OTP release boots (its peer side calls the controller "
      "as its release does), answers erpc, and stops"}].

other_release_dist(Config) when is_list(Config) ->
    Name = rpeer:random_name(?FUNCTION_NAME),
    {ok, Peer, Node} = rpeer:start_link(other_release(Config, #{name => Name})),
    ?assertEqual(running, rpeer:get_state(Peer)),
    assert_other_release(erpc:call(Node, erlang, system_info, [otp_release])),
    ok = rpeer:stop(Peer),
    ?assertNot(lists:member(Node, nodes(connected))).

%% The root filesystem's home has a cookie of its own.
other_release(Config, Options) ->
    Options#{exec => ?config(other_release_exec, Config),
             args => ["-setcookie", atom_to_list(erlang:get_cookie())]}.

assert_other_release(Release) ->
    ?assertNotEqual(erlang:system_info(otp_release), Release).

%%--------------------------------------------------------------------
%% netns: the three connection modes across the namespace boundary

standard_io_through_netns() ->
    [{doc, "standard_io through `ip netns exec': the peer runs in the other namespace; "
      "RPC, I/O and shutdown travel through the wrapper's pipes"}].

standard_io_through_netns(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => in_namespace(Config), connection => standard_io}),
    ?assert(runs_in_namespace(rpeer:call(Peer, inet, getifaddrs, []))),
    check_rpc_io_and_stop(Peer, over_channel(Peer)).

tcp_across_veth() ->
    [{doc, "tcp with connection => {OriginVethIp, 0}: the peer connects across the veth; "
      "RPC, I/O and shutdown over that connection"}].

tcp_across_veth(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => in_namespace(Config),
                                       connection => {?ORIGIN_IP, 0}}),
    %% the namespace's only way to 10.213.0.1 is the veth
    ?assert(runs_in_namespace(rpeer:call(Peer, inet, getifaddrs, []))),
    {ok, [[Offered, _Port]]} = rpeer:call(Peer, init, get_argument, [origin]),
    ?assertEqual("10.213.0.1", Offered),
    check_rpc_io_and_stop(Peer, over_channel(Peer)).

tcp_offers_loopback_first() ->
    [{doc, "connection => Port through a wrapper: rpeer offers every local IPv4 address, "
      "loopback first (peer's rule); from the namespace, loopback is refused and the "
      "peer connects to the veth address"}].

tcp_offers_loopback_first(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => in_namespace(Config), connection => 0}),
    {ok, [[Offered, _Port]]} = rpeer:call(Peer, init, get_argument, [origin]),
    [First | Rest] = string:lexemes(Offered, ","),
    ?assertMatch({ok, {127, _, _, _}}, inet:parse_address(First)),
    ?assert(lists:member("10.213.0.1", Rest)),
    ?assertNot(lists:any(fun is_loopback/1, lists:dropwhile(fun is_loopback/1, [First | Rest]))),
    ?assert(runs_in_namespace(rpeer:call(Peer, inet, getifaddrs, []))),
    ok = rpeer:stop(Peer).

dist_across_veth() ->
    [{doc, "dist mode: the peer in the namespace is reachable by name (p@rpeerns) over "
      "the veth; RPC over the distribution, I/O, shutdown"}].

dist_across_veth(Config) when is_list(Config) ->
    Name = peer_name(?FUNCTION_NAME),
    {ok, Peer, Node} = rpeer:start_link(dist_options(Config, Name)),
    ?assertEqual(list_to_atom(Name ++ "@" ++ ?PEER_HOST), Node),
    ?assertEqual(pong, net_adm:ping(Node)),
    ?assert(runs_in_namespace(erpc:call(Node, inet, getifaddrs, []))),
    check_rpc_io_and_stop(Peer, fun (M, F, A) -> erpc:call(Node, M, F, A) end),
    ?assertNot(lists:member(Node, nodes())).

%%--------------------------------------------------------------------
%% netns: the link goes away while a peer runs

standard_io_does_not_need_the_link() ->
    [{doc, "standard_io: with the veth down, the control channel (pipes of the wrapper) "
      "still works"}].

standard_io_does_not_need_the_link(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => in_namespace(Config), connection => standard_io}),
    link_down(),
    ?assertEqual(3, rpeer:call(Peer, erlang, '+', [1, 2])),
    ?assertEqual(running, rpeer:get_state(Peer)),
    ok = rpeer:stop(Peer).

tcp_link_loss_is_tcp_closed() ->
    [{doc, "tcp: the veth goes down while the peer runs: calls time out, and within the "
      "net tick time the peer is {down, tcp_closed}; stop/1 then ends its OS process"}].

tcp_link_loss_is_tcp_closed(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => in_namespace(Config), peer_down => continue,
                                       connection => {?ORIGIN_IP, 0}}),
    OsPid = rpeer:call(Peer, os, getpid, []),
    link_down(),
    ?assertExit({timeout, _}, rpeer:call(Peer, erlang, node, [], 1000)),
    {down, tcp_closed} = rpeer_test_lib:wait_for_state(Peer, fun is_down/1, ?DOWN_WITHIN),
    ok = rpeer:stop(Peer),
    rpeer_test_lib:wait_os_pid_gone(OsPid, 5000).

dist_link_loss_is_nodedown() ->
    [{doc, "dist: the veth goes down while the peer runs: within the net tick time the "
      "peer is {down, {nodedown, Node}}; stop/1 then ends its OS process"}].

dist_link_loss_is_nodedown(Config) when is_list(Config) ->
    Name = peer_name(?FUNCTION_NAME),
    {ok, Peer, Node} = rpeer:start_link((dist_options(Config, Name))#{peer_down => continue}),
    OsPid = erpc:call(Node, os, getpid, []),
    link_down(),
    {down, {nodedown, Node}} = rpeer_test_lib:wait_for_state(Peer, fun is_down/1, ?DOWN_WITHIN),
    ok = rpeer:stop(Peer),
    rpeer_test_lib:wait_os_pid_gone(OsPid, 5000).

%%--------------------------------------------------------------------
%% ssh

standard_io_through_ssh() ->
    [{doc, "standard_io through ssh to an sshd on loopback: RPC, I/O and shutdown; the "
      "peer side is OTP's peer, rpeer is not on the peer's code path"}].

standard_io_through_ssh(Config) when is_list(Config) ->
    {ok, Peer, _} = rpeer:start_link(#{exec => through_ssh(Config, os:find_executable("erl")),
                                       connection => standard_io}),
    ?assertEqual(non_existing, rpeer:call(Peer, code, which, [rpeer])),
    %% the peer is a child of sshd, not of this node's spawn
    SshdPid = ?config(sshd_os_pid, Config),
    OsPid = rpeer:call(Peer, os, getpid, []),
    ?assert(lists:member(SshdPid, ancestors(OsPid))),
    check_rpc_io_and_stop(Peer, over_channel(Peer)).

missing_remote_erl_is_a_boot_failure() ->
    [{doc, "a remote erl that does not exist: start/1 raises {boot_failed, "
      "{exit_status, 127}} as peer does, and the remote shell's message is kept"}].

missing_remote_erl_is_a_boot_failure(Config) when is_list(Config) ->
    Options = #{exec => through_ssh(Config, "/nonexistent/erl"), connection => standard_io},
    ?assertExit({boot_failed, {exit_status, 127}}, rpeer:start(Options)),
    Output = rpeer_output:last_failed_boot(),
    ?assertNotEqual(nomatch, string:find(Output, "/nonexistent/erl")).

%%--------------------------------------------------------------------
%% Checks shared by the cases

%% RPC (through Call), I/O reaching this process's group leader, then stop/1 waits for
%%  the peer's OS process.
check_rpc_io_and_stop(Peer, Call) ->
    ?assertEqual(3, Call(erlang, '+', [1, 2])),
    ?assertEqual(<<"payload">>, Call(erlang, iolist_to_binary, [[<<"pay">>, "load"]])),
    OsPid = Call(os, getpid, []),
    ct:capture_start(),
    ok = Call(io, format, ["remote ~s~n", ["output"]]),
    ct:capture_stop(),
    ?assertNotEqual(nomatch, string:find(rpeer_test_lib:captured_text(), "remote output")),
    ok = rpeer:stop(Peer),
    rpeer_test_lib:wait_os_pid_gone(OsPid, 5000).

over_channel(Peer) ->
    fun (M, F, A) -> rpeer:call(Peer, M, F, A) end.

runs_in_namespace({ok, Interfaces}) ->
    Addresses = lists:append([proplists:get_all_values(addr, Opts) || {_, Opts} <- Interfaces]),
    lists:member(?PEER_IP, Addresses) andalso not lists:member(?ORIGIN_IP, Addresses).

is_down({down, _}) -> true;
is_down(_) -> false.

is_loopback(Address) ->
    case inet:parse_address(Address) of
        {ok, {127, _, _, _}} -> true;
        {ok, {0, 0, 0, 0, 0, 0, 0, 1}} -> true;
        _ -> false
    end.

peer_name(Case) ->
    lists:concat([Case, "-", os:getpid()]).

in_namespace(Config) ->
    {?config(ip, Config), ["netns", "exec", ?NS, os:find_executable("erl")]}.

dist_options(Config, Name) ->
    #{exec => in_namespace(Config), name => Name, host => ?PEER_HOST,
      args => ["-kernel", "net_ticktime", integer_to_list(?TICKTIME)]}.

%% OS process ids of the ancestors of OsPid, from /proc.
ancestors(OsPid) ->
    case rpeer_test_lib:os_pid_stat(OsPid) of
        {ok, [_State, <<"0">> | _]} -> [];
        {ok, [_State, Parent | _]} -> [binary_to_list(Parent) | ancestors(binary_to_list(Parent))];
        {error, _} -> []
    end.

%%--------------------------------------------------------------------
%% The namespace

netns_unavailable() ->
    case {os:type(), find_program("ip")} of
        {{unix, linux}, Ip} when is_list(Ip) ->
            %% creating and deleting a namespace tells whether we may (root, a kernel
            %%  with network namespaces, a sandbox that allows them)
            Probe = "rpeer_ct_probe",
            case run(Ip, ["netns", "add", Probe]) of
                {0, _} ->
                    _ = run(Ip, ["netns", "del", Probe]),
                    false;
                {_, Output} ->
                    lists:flatten(io_lib:format("cannot create a network namespace: ~ts",
                                                [string:trim(Output)]))
            end;
        {{unix, linux}, false} ->
            "no `ip' program (Debian: iproute2)";
        {OsType, _} ->
            lists:flatten(io_lib:format("network namespaces are Linux only, not ~p", [OsType]))
    end.

create_namespace() ->
    remove_namespace(),
    Ip = find_program("ip"),
    InNs = fun (Args) -> must(Ip, ["netns", "exec", ?NS, Ip | Args]) end,
    must(Ip, ["netns", "add", ?NS]),
    must(Ip, ["link", "add", ?ORIGIN_VETH, "type", "veth", "peer", "name", ?PEER_VETH]),
    must(Ip, ["link", "set", ?PEER_VETH, "netns", ?NS]),
    must(Ip, ["addr", "add", inet:ntoa(?ORIGIN_IP) ++ "/24", "dev", ?ORIGIN_VETH]),
    must(Ip, ["link", "set", ?ORIGIN_VETH, "up"]),
    InNs(["addr", "add", inet:ntoa(?PEER_IP) ++ "/24", "dev", ?PEER_VETH]),
    InNs(["link", "set", ?PEER_VETH, "up"]),
    InNs(["link", "set", "lo", "up"]),
    %% `ip netns exec' puts /etc/netns/NS/hosts in place of /etc/hosts: there, this
    %%  node's host name is the origin's veth address (dist: the peer connects back by
    %%  name).
    [_, OriginHost] = string:lexemes(atom_to_list(node()), "@"),
    ok = filelib:ensure_dir(hosts_file()),
    ok = file:write_file(hosts_file(),
                         io_lib:format("127.0.0.1 localhost~n~s ~s~n~s ~s~n",
                                       [inet:ntoa(?ORIGIN_IP), OriginHost,
                                        inet:ntoa(?PEER_IP), ?PEER_HOST])).

%% Everything the cases may have left: processes in the namespace (epmd started by a
%%  dist peer, a peer left running), the namespace, the veth, the hosts file.
remove_namespace() ->
    Ip = find_program("ip"),
    case run(Ip, ["netns", "pids", ?NS]) of
        {0, Pids} ->
            [_ = run("/bin/kill", ["-KILL", Pid]) || Pid <- string:lexemes(Pids, "\n ")];
        _ ->
            ok
    end,
    _ = run(Ip, ["netns", "del", ?NS]),
    _ = run(Ip, ["link", "del", ?ORIGIN_VETH]),
    _ = file:delete(hosts_file()),
    _ = file:del_dir(filename:dirname(hosts_file())),
    ok.

hosts_file() ->
    filename:join(["/etc/netns", ?NS, "hosts"]).

link_down() ->
    must(find_program("ip"), ["link", "set", ?ORIGIN_VETH, "down"]).

%%--------------------------------------------------------------------
%% sshd

ssh_unavailable() ->
    Needed = [{"sshd", "openssh-server"}, {"ssh", "openssh-client"},
              {"ssh-keygen", "openssh-client"}],
    case [Package || {Program, Package} <- Needed, find_program(Program) =:= false] of
        [] -> false;
        Missing -> "no ssh programs (Debian: " ++ lists:join(", ", lists:usort(Missing)) ++ ")"
    end.

%% sshd on a free loopback port with its own host key, config and authorized key; only
%%  the key made here logs in.
start_sshd(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "sshd"),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Keygen = find_program("ssh-keygen"),
    HostKey = filename:join(Dir, "host_key"),
    ClientKey = filename:join(Dir, "client_key"),
    [must(Keygen, ["-q", "-t", "ed25519", "-N", "", "-f", Key]) || Key <- [HostKey, ClientKey]],
    {ok, Public} = file:read_file(ClientKey ++ ".pub"),
    Authorized = filename:join(Dir, "authorized_keys"),
    ok = file:write_file(Authorized, Public),
    Port = free_port(),
    SshdConfig = filename:join(Dir, "sshd_config"),
    PidFile = filename:join(Dir, "sshd.pid"),
    ok = file:write_file(
           SshdConfig,
           ["Port ", integer_to_list(Port), "\n"
            "ListenAddress 127.0.0.1\n"
            "HostKey ", HostKey, "\n"
            "PidFile ", PidFile, "\n"
            "AuthorizedKeysFile ", Authorized, "\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"]),
    %% sshd wants its privilege separation directory (Debian makes it at boot)
    _ = file:make_dir("/run/sshd"),
    %% sshd puts itself in the background, then listens, then writes its pid file
    Log = filename:join(Dir, "sshd.log"),
    Started = case run(find_program("sshd"), ["-f", SshdConfig, "-E", Log]) of
                  {0, _} ->
                      try rpeer_test_lib:wait_until(
                            fun () -> filelib:file_size(PidFile) > 0 end, 10000)
                      catch error:wait_until_timeout -> no_pid_file
                      end;
                  {Status, Output} ->
                      {exit_status, Status, Output}
              end,
    case Started of
        ok ->
            {ok, Pid} = file:read_file(PidFile),
            [{ssh_port, Port}, {ssh_key, ClientKey},
             {sshd_os_pid, string:trim(binary_to_list(Pid))} | Config];
        Failed ->
            {skip, lists:flatten(io_lib:format("sshd did not start: ~tp~n~ts",
                                               [Failed, read_log(Log)]))}
    end.

read_log(File) ->
    case file:read_file(File) of
        {ok, Text} -> Text;
        {error, _} -> <<>>
    end.

%% sshd and what is left of its sessions (a remote peer still running).
stop_sshd(Config) ->
    SshdPid = ?config(sshd_os_pid, Config),
    Sessions = [Pid || Pid <- all_os_pids(), lists:member(SshdPid, ancestors(Pid))],
    [_ = run("/bin/kill", ["-KILL", Pid]) || Pid <- [SshdPid | Sessions]],
    [rpeer_test_lib:wait_os_pid_gone(Pid, 5000) || Pid <- [SshdPid | Sessions]],
    ok.

all_os_pids() ->
    {ok, Names} = file:list_dir("/proc"),
    [Name || Name <- Names, lists:all(fun (C) -> C >= $0 andalso C =< $9 end, Name)].

through_ssh(Config, RemoteErl) ->
    {find_program("ssh"),
     ["-p", integer_to_list(?config(ssh_port, Config)), "-i", ?config(ssh_key, Config),
      "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
      "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
      user() ++ "@127.0.0.1", RemoteErl]}.

user() ->
    string:trim(element(2, run("/usr/bin/id", ["-un"]))).

free_port() ->
    {ok, Listen} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(Listen),
    ok = gen_tcp:close(Listen),
    Port.

%%--------------------------------------------------------------------
%% Running commands

%% Where the program is: PATH, then the sbin directories a non-login PATH may lack.
find_program(Name) ->
    case os:find_executable(Name) of
        false ->
            Candidates = [filename:join(Dir, Name) || Dir <- ["/usr/sbin", "/sbin"]],
            case [C || C <- Candidates, filelib:is_regular(C)] of
                [Path | _] -> Path;
                [] -> false
            end;
        Path ->
            Path
    end.

%% {ExitStatus, Output} of Program Args (stdout and stderr).
run(Program, Args) ->
    Port = open_port({spawn_executable, Program},
                     [{args, Args}, exit_status, stderr_to_stdout, binary, hide]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, Data}} -> collect(Port, [Acc, Data]);
        {Port, {exit_status, Status}} -> {Status, unicode:characters_to_list(Acc)}
    end.

must(Program, Args) ->
    case run(Program, Args) of
        {0, Output} -> Output;
        {Status, Output} -> ct:fail({command_failed, Program, Args, Status, Output})
    end.

%% What rpeer puts on a peer's command line for OTP's peer side (peer:start/0).

%% With `-origin', peer:start/0 of OTP 26 and later makes its channel handler (tcp) or
%% its relay to the controller's group leader (dist) the node's `user' only when it sees
%% this flag, which stock peer passes together with `-detached'. Without it, that peer
%% side starts a terminal of its own through user_sup (whose output goes to stdout, not
%% to the origin), and with `-user rpeer_agent' user_sup starts the agent a second time,
%% which halts the node. rpeer wants the handler as `user' in every mode, detached or
%% not, so it always passes the flag. Releases before 26 always make the handler `user'
%% and ignore the flag, as init ignores any flag nobody asks for: the same command line
%% is right for a peer of any release, which matters when `exec' runs another one.
-define(HANDLER_IS_USER, "-peer_detached").

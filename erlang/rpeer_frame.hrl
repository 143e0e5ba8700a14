%% The largest frame payload the wire's 32-bit size field can say (rpeer_frame's default
%% limit; rpeer_agent's when the origin passes none).
-define(WIRE_MAX, 16#FFFFFFFF).

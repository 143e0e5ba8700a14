%% @doc A chart of a `bench/run' results table (issue 31): one bar per row that has a
%% verdict, the row's speedup on a log scale, written as SVG.
%%
%% == Terms ==
%% <dl>
%%   <dt>speedup</dt><dd>how many times better rpeer did than stock peer in a row: stock
%%     time / rpeer time where lower is better, rpeer rate / stock rate where higher is;
%%     over 1 rpeer is better, under 1 worse, whatever the row measures.</dd>
%%   <dt>verdict</dt><dd>the table's last column: "rpeer Nx better", "rpeer Nx WORSE"
%%     or "about equal" (within 5 %). The bar takes its colour from it, so the chart
%%     and the table never disagree.</dd>
%% </dl>
%%
%% It reads the markdown that rpeer_bench writes, not rpeer_bench's rows, so that the
%% chart of any results file can be made again without running the benchmark:
%% `bench/chart bench/RESULTS.md' writes `bench/RESULTS.svg'. `bench/run' calls write/1
%% on the file it has just written.
-module(rpeer_chart).

-export([main/1, write/1, write/2, parse/1, svg/2]).

-export_type([table/0, row/0]).

%% What parse/1 finds in a results file.
-type table() :: #{source := string(),   % the results file's name
                   about := string(),    % date, OTP release, command, revision
                   rows := [row()]}.
-type row() :: {bar, bar()}
             | {failed, Label :: string(), Mode :: string(), Verdict :: string()}
             | {no_ratio, Label :: string()}     % counts of events: no ratio to chart
             | {no_verdict, Label :: string()}.  % shown in the table, not judged
-type bar() :: #{label := string(),    % the measure, shortened (see short/1)
                 measure := string(),  % the measure as the table has it
                 mode := string(),
                 speedup := float(),
                 kind := better | worse | equal}.

%% The header of the table rpeer_bench writes (rpeer_bench:table/1).
-define(TABLE_HEAD, "| measure | mode | stock peer | rpeer | rpeer/stock | better | verdict |").

%% Layout, in pixels (the SVG's user units; rsvg-convert renders one per pixel).
-define(WIDTH, 1000).
%% right edge of the measure labels; the mode column starts MODE_GAP after it
-define(LABEL_X, 370).
-define(MODE_GAP, 8).
%% the plot area: from the lowest decade to the highest
-define(PLOT_X0, 540).
-define(PLOT_X1, 925).
%% first row's top; each row's height and its bar's
-define(ROWS_Y, 128).
-define(ROW_H, 18).
-define(BAR_H, 12).
-define(FOOT_LINE_H, 15).
%% labels longer than this many characters are cut (the whole measure is the bar's title)
-define(LABEL_MAX, 52).

%% Colours: blue and orange stay apart for the colour-blind too.
-define(BETTER, "#2b78b5").
-define(WORSE, "#e07b00").
-define(EQUAL, "#a6a6a6").
-define(STRIPE, "#f3f3f3").
-define(GRID, "#d9d9d9").
-define(INK, "#222222").
-define(MUTED, "#5c5c5c").
-define(FONT, "DejaVu Sans, Verdana, Arial, sans-serif").

%%--------------------------------------------------------------------
%% API

%% @doc `bench/chart FILE.md...' writes FILE.svg beside each; `bench/chart FILE.md OUT.svg'
%% writes OUT.svg. Halts the VM: 0 when every chart was written, 1 otherwise.
-spec main([string()]) -> no_return().
main(Args) ->
    try
        Written = case Args of
                      [Md, Svg] ->
                          case filename:extension(Svg) of
                              ".svg" -> [write(Md, Svg)];
                              _ -> [write(A) || A <- Args]
                          end;
                      [_ | _] -> [write(A) || A <- Args];
                      [] -> error(usage)
                  end,
        [io:format("~s~n", [W]) || W <- Written],
        erlang:halt(0)
    catch
        error:usage ->
            io:format(standard_error, "usage: bench/chart RESULTS.md... | bench/chart RESULTS.md OUT.svg~n", []),
            erlang:halt(2);
        error:{chart, File, Why} ->
            io:format(standard_error, "bench/chart: ~ts: ~ts~n", [File, Why]),
            erlang:halt(1);
        C:R:St ->
            io:format(standard_error, "bench/chart crashed: ~p:~p~n~p~n", [C, R, St]),
            erlang:halt(1)
    end.

%% @doc Writes the chart of results file `Md' beside it (`.md' replaced by `.svg');
%% returns that file's name.
-spec write(file:filename()) -> file:filename().
write(Md) ->
    write(Md, filename:rootname(Md, ".md") ++ ".svg").

%% @doc Writes the chart of results file `Md' to `Svg'; returns `Svg'.
-spec write(file:filename(), file:filename()) -> file:filename().
write(Md, Svg) ->
    Text = case file:read_file(Md) of
               {ok, Bin} -> Bin;
               {error, Reason} -> error({chart, Md, file:format_error(Reason)})
           end,
    Table = case parse(Text) of
                {ok, T} -> T#{source := filename:basename(Md)};
                {error, Why} -> error({chart, Md, Why})
            end,
    case file:write_file(Svg, svg(Table, filename:basename(Svg))) of
        ok -> Svg;
        {error, Reason2} -> error({chart, Svg, file:format_error(Reason2)})
    end.

%% @doc The header facts and the rows of the first results table in a results file.
-spec parse(binary()) -> {ok, table()} | {error, string()}.
parse(Bin) ->
    case unicode:characters_to_list(Bin) of
        Text when is_list(Text) ->
            Lines = string:split(Text, "\n", all),
            case lists:dropwhile(fun(L) -> string:trim(L) =/= ?TABLE_HEAD end, Lines) of
                [_Head, _Rule | Rest] ->
                    Body = lists:takewhile(fun(L) -> lists:prefix("|", L) end, Rest),
                    {ok, #{source => "", about => about(Lines),
                           rows => [table_row(cells(L)) || L <- Body]}};
                _ ->
                    {error, "no results table (a line " ?TABLE_HEAD ")"}
            end;
        _ ->
            {error, "not UTF-8 text"}
    end.

%% @doc The SVG document of a parsed table; `Name' is the SVG's own file name, shown in
%% nothing but the document's title.
-spec svg(table(), string()) -> binary().
svg(#{source := Source, about := About, rows := Rows}, Name) ->
    Bars = [B || {bar, B} <- Rows],
    Speedups = [S || #{speedup := S} <- Bars],
    %% whole decades, at least 0.1x to 10x, so that 1x never sits at an edge
    Lo = min(-1, floor(math:log10(lists:min([1.0 | Speedups])))),
    Hi = max(1, ceil(math:log10(lists:max([1.0 | Speedups])))),
    X = fun(S) -> ?PLOT_X0 + (math:log10(S) - Lo) / (Hi - Lo) * (?PLOT_X1 - ?PLOT_X0) end,
    RowsEnd = ?ROWS_Y + ?ROW_H * length(Bars),
    Foot = footnotes(Rows),
    Height = RowsEnd + 38 + ?FOOT_LINE_H * length(Foot) + 6,
    Doc = [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"~b\" height=\"~b\" "
            "viewBox=\"0 0 ~b ~b\" font-family=\"~s\">\n", [?WIDTH, Height, ?WIDTH, Height, ?FONT]),
        ["<title>", esc(Name), ": rpeer vs stock peer, speedup per row of ", esc(Source), "</title>\n"],
        fmt("<rect width=\"~b\" height=\"~b\" fill=\"#ffffff\"/>\n", [?WIDTH, Height]),
        heading(Source, About),
        legend(),
        stripes(length(Bars)),
        grid(Lo, Hi, X, RowsEnd),
        [bar_row(I, B, X) || {I, B} <- lists:enumerate(0, Bars)],
        %% the reference line goes over the bars
        fmt("<line x1=\"~.1f\" y1=\"~b\" x2=\"~.1f\" y2=\"~b\" stroke=\"~s\" stroke-width=\"1.5\"/>\n",
            [X(1.0), ?ROWS_Y - 4, X(1.0), RowsEnd + 4, ?INK]),
        [text(16, RowsEnd + 38 + ?FOOT_LINE_H * I, start, 11, Colour, T)
         || {I, {Colour, T}} <- lists:enumerate(0, Foot)],
        "</svg>\n"],
    unicode:characters_to_binary(Doc).

%%--------------------------------------------------------------------
%% reading the table

about(Lines) ->
    Field = fun(Prefix) ->
                    case [string:prefix(L, Prefix) || L <- Lines, lists:prefix(Prefix, L)] of
                        [V | _] -> V;
                        [] -> ""
                    end
            end,
    Date = string:slice(Field("- date: "), 0, 10),
    Otp = hd(string:split(Field("- OTP "), " ") ++ [""]),
    Cmd = case string:split(Field("- command: "), "`", all) of
              [_, C | _] -> string:trim(C);
              _ -> ""
          end,
    Rev = hd(string:split(Field("- rpeer source: "), ";") ++ [""]),
    lists:join(", ", [S || S <- ["OTP " ++ Otp || Otp =/= ""] ++ [Date, Cmd]
                                ++ ["rpeer " ++ Rev || Rev =/= ""], S =/= ""]).

%% A table line's cells, trimmed; a `\|' inside a cell (rpeer_bench escapes the `|' of
%% failure reasons) does not split it.
cells(Line) ->
    Parts = re:split(Line, "(?<!\\\\)\\|", [unicode, {return, list}]),
    [string:trim(P) || P <- lists:sublist(Parts, 2, length(Parts) - 2)].

table_row([Measure, Mode, _Stock, _Rpeer, Ratio, Better, Verdict]) ->
    Label = short(Measure),
    case {Better, Ratio, verdict(Verdict)} of
        {_, _, failed} -> {failed, Label, Mode, Verdict};
        {"-", _, _} -> {no_verdict, Label};
        {_, "-", _} -> {no_ratio, Label};
        {_, _, none} -> {no_verdict, Label};
        {_, _, {Kind, Factor}} ->
            Speedup = case {Kind, Factor, Better} of
                          {better, F, _} -> F;
                          {worse, F, _} -> 1 / F;
                          {equal, _, "lower"} -> 1 / number(Ratio);
                          {equal, _, _} -> number(Ratio)
                      end,
            {bar, #{label => Label, measure => Measure, mode => Mode, kind => Kind,
                    speedup => float(Speedup)}}
    end;
table_row(Cells) ->
    {no_verdict, string:join(Cells, " | ")}.

%% The verdict's kind and factor: rpeer_bench's "rpeer 22.3x better" holds the speedup
%% with more digits than the ratio column (0.04 there).
verdict(V) ->
    case re:run(V, "^rpeer ([0-9.]+)x (better|WORSE)$", [{capture, all_but_first, list}]) of
        {match, [N, "better"]} -> {better, number(N)};
        {match, [N, "WORSE"]} -> {worse, number(N)};
        nomatch when V =:= "about equal" -> {equal, 1.0};
        nomatch ->
            case string:find(string:lowercase(V), "failed") of
                nomatch -> none;
                _ -> failed
            end
    end.

number(S) ->
    case string:to_float(S) of
        {F, []} -> F;
        _ ->
            case string:to_integer(S) of
                {I, []} -> float(I);
                _ -> error({not_a_number, S})
            end
    end.

%% A measure short enough for the label column. The rules follow rpeer_bench's measure
%% texts; a measure they do not know is shown as it is, cut at ?LABEL_MAX characters.
short(Measure) ->
    Rules = [%% sample counts: the table has them
             {"\\s*\\((median of \\d+|\\d+ calls over \\d+ peers)\\)$", ""},
             {", call\\(.*\\)$", ""},
             {"^console lines reaching the group leader, (.*) x \\d+$", "console lines, \\1"},
             {", until (the peer's|their) OS processes are gone$", ", until gone"},
             {"^(\\d+ peers started at once), wall time until all running$",
              "\\1, until all running"},
             {"^codec alone, (.*) frame: ", "codec \\1: "},
             {"\\(stock: encode_port_data; rpeer: encode_frame, fresh buffer\\)$",
              "(fresh buffer)"},
             {"\\(rpeer: FrameEncoder, (256 KiB parts), as the writer thread\\)$", "(\\1)"},
             {"\\s*\\(stock: decode_port_data \\+ frame match\\)$", ""}],
    S = lists:foldl(fun({Re, To}, Acc) ->
                            re:replace(Acc, Re, To, [unicode, {return, list}])
                    end, Measure, Rules),
    case string:length(S) > ?LABEL_MAX of
        true -> string:slice(S, 0, ?LABEL_MAX - 1) ++ "…";
        false -> S
    end.

%%--------------------------------------------------------------------
%% drawing

heading(Source, About) ->
    [text(16, 28, start, 17, ?INK, "rpeer vs stock peer: speedup per row of " ++ Source,
          "font-weight=\"bold\""),
     text(16, 49, start, 12, ?INK,
          "speedup = stock time / rpeer time, or rpeer rate / stock rate (log scale): "
          "over 1x rpeer is better, under 1x worse"),
     text(16, 67, start, 11, ?MUTED, About)].

legend() ->
    Items = [{?BETTER, "rpeer better"}, {?WORSE, "rpeer worse"},
             {?EQUAL, "about equal (within 5 %, as the table's verdict)"}],
    {Svg, _} = lists:mapfoldl(
                 fun({Colour, T}, X) ->
                         {[fmt("<rect x=\"~b\" y=\"80\" width=\"14\" height=\"11\" fill=\"~s\"/>\n",
                               [X, Colour]),
                           text(X + 19, 90, start, 11, ?INK, T)],
                          X + 40 + 7 * string:length(T)}
                 end, 16, Items),
    Svg.

stripes(N) ->
    [fmt("<rect x=\"10\" y=\"~b\" width=\"~b\" height=\"~b\" fill=\"~s\"/>\n",
         [?ROWS_Y + ?ROW_H * I, ?WIDTH - 20, ?ROW_H, ?STRIPE])
     || I <- lists:seq(1, N - 1, 2)].

%% One line per decade, labelled above and below the rows, and which way is better.
grid(Lo, Hi, X, RowsEnd) ->
    One = X(1.0),
    [[[fmt("<line x1=\"~.1f\" y1=\"~b\" x2=\"~.1f\" y2=\"~b\" stroke=\"~s\"/>\n",
           [X(math:pow(10, D)), ?ROWS_Y - 4, X(math:pow(10, D)), RowsEnd + 4, ?GRID]),
       text(X(math:pow(10, D)), ?ROWS_Y - 8, middle, 11, ?MUTED, decade(D)),
       text(X(math:pow(10, D)), RowsEnd + 16, middle, 11, ?MUTED, decade(D))]
      || D <- lists:seq(Lo, Hi)],
     text(One - 8, 108, 'end', 11, ?WORSE, "← rpeer worse"),
     text(One + 8, 108, start, 11, ?BETTER, "rpeer better →")].

decade(D) when D >= 0 -> integer_to_list(round(math:pow(10, D))) ++ "x";
decade(D) -> "0." ++ lists:duplicate(-D - 1, $0) ++ "1x".

bar_row(I, #{label := Label, measure := Measure, mode := Mode, speedup := S, kind := Kind}, X) ->
    Top = ?ROWS_Y + ?ROW_H * I,
    Base = Top + 13,
    {X0, X1} = {min(X(1.0), X(S)), max(X(1.0), X(S))},
    Colour = case Kind of better -> ?BETTER; worse -> ?WORSE; equal -> ?EQUAL end,
    Value = case Kind of
                worse -> num(1 / S) ++ "x worse";
                _ -> num(S) ++ "x"
            end,
    [text(?LABEL_X, Base, 'end', 12, ?INK, Label),
     text(?LABEL_X + ?MODE_GAP, Base, start, 11, ?MUTED, Mode),
     fmt("<rect class=\"bar ~s\" x=\"~.1f\" y=\"~b\" width=\"~.1f\" height=\"~b\" fill=\"~s\">",
         [Kind, X0, Top + (?ROW_H - ?BAR_H) div 2, max(X1 - X0, 1.0), ?BAR_H, Colour]),
     ["<title>", esc(Measure), " (", esc(Mode), "): ", esc(Value), "</title></rect>\n"],
     %% right of the bar, or of the 1x line for a bar going left: the space there is free
     text(X1 + 5, Base, start, 11, ?INK, Value)].

footnotes(Rows) ->
    NoRatio = length([R || {no_ratio, _} = R <- Rows]),
    NoVerdict = length([R || {no_verdict, _} = R <- Rows]),
    Left = [[rows(NoRatio), " without a ratio (counts of events)"] || NoRatio > 0]
        ++ [[rows(NoVerdict), " the table does not judge (see its notes)"] || NoVerdict > 0],
    [{?MUTED, ["Not charted: ", lists:join(", ", Left), "."]} || Left =/= []]
        ++ [{?WORSE, io_lib:format("FAILED, not charted: ~ts (~ts): ~ts", [L, M, V])}
            || {failed, L, M, V} <- Rows].

rows(1) -> "1 row";
rows(N) -> integer_to_list(N) ++ " rows".

text(X, Y, Anchor, Size, Colour, T) ->
    text(X, Y, Anchor, Size, Colour, T, "").

text(X, Y, Anchor, Size, Colour, T, Extra) ->
    [fmt("<text x=\"~.1f\" y=\"~.1f\" font-size=\"~b\" fill=\"~s\"", [float(X), float(Y), Size, Colour]),
     [[" text-anchor=\"", atom_to_list(Anchor), "\""] || Anchor =/= start],
     [[" ", Extra] || Extra =/= ""], ">", esc(T), "</text>\n"].

%% as rpeer_bench's num/1: three significant figures or so
num(X) when X >= 100 -> integer_to_list(round(X));
num(X) when X >= 10 -> fmt("~.1f", [X]);
num(X) -> fmt("~.2f", [X]).

fmt(F, A) -> io_lib:format(F, A).

esc(T) ->
    lists:map(fun($&) -> "&amp;"; ($<) -> "&lt;"; ($>) -> "&gt;"; ($") -> "&quot;"; (C) -> C end,
              lists:flatten(unicode:characters_to_list(T))).

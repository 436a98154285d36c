"""ferry.cli.gotemplate against podman 4.3.1: every expectation here is what podman printed
for the command line in its test id or comment (containers s1, running, label a=b, command
`sleep 1000`; s2 exited). Error texts are podman's after "Error: " (inspect's also after its
"inspecting object: printing inspect output: "); the Go type in "can't evaluate field X in
type T" is podman's only where the data is top-level inspect output (interface {})."""

from __future__ import annotations

import pytest

from ferry.cli.gotemplate import GoMap, TemplateError, header, is_json, normalize, parse, render_rows, tabwrite

S1 = {  # the parts of `podman inspect s1` the tests use; Config has a lower-case key as podman's does
    "Name": "s1",
    "Config": {"Cmd": ["sleep", "1000"], "Labels": {"a": "b"}, "Env": ["PATH=/bin", "TERM=xterm", "container=podman",
                                                                      "HOME=/root", "HOSTNAME=957fe95bbe54"],
               "Healthcheck": None, "sdNotifyMode": "container",
               "Annotations": {"io.container.manager": "libpod", "io.podman.annotations.init": "FALSE"}},
    "HostConfig": {"RestartPolicy": {"Name": "", "MaximumRetryCount": 0}, "Devices": []},
    "NetworkSettings": {"Networks": {"podman": {"Gateway": "10.88.0.1"}}},
}
PS = [{"ID": "957fe95bbe54", "Names": "s1", "Image": "localhost/busybox:latest", "Labels": GoMap(a="b"),
       "Command": "sleep 1000"},
      {"ID": "e32731be0483", "Names": "s2", "Image": "localhost/busybox:latest", "Labels": GoMap(),
       "Command": "true"}]
PS_HEADERS = {"ID": "container id", "CreatedHuman": "created", "PodName": "podname", "Pod": "pod id",
              "RunningFor": "running for"}  # a few of podman's ps overrides


def inspect(fmt):  # podman inspect s1 --format FMT
    return render_rows(fmt, [S1], noheading=True, name="inspect")


def inspect_error(fmt):
    with pytest.raises(TemplateError) as caught:
        inspect(fmt)
    return str(caught.value)


def ps(fmt, **kw):  # podman ps -a --format FMT
    return render_rows(fmt, PS, PS_HEADERS, name="ps", **kw)


@pytest.mark.parametrize("fmt, out", [
    ("{{.Name}}", "s1\n"),
    # nested fields, a map's missing key, index on a map (missing: the zero value)
    ('{{.Config.Labels}} {{.Config.Labels.a}} {{.Config.Labels.zz}} {{index .Config.Labels "a"}}|'
     '{{index .Config.Labels "zz"}}|', "map[a:b] b <no value> b||\n"),
    ("{{.HostConfig.RestartPolicy}}|{{.Config.Healthcheck}}|{{.HostConfig.Devices}}", "{ 0}|<nil>|[]\n"),
    ('{{index .Config.Cmd 1}} {{.NetworkSettings.Networks.podman.Gateway}}', "1000 10.88.0.1\n"),
    # range over a slice and a map (sorted keys), with variables
    ("{{range .Config.Cmd}}[{{.}}]{{end}} {{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}} "
     "{{range $i, $e := .Config.Cmd}}{{$i}}:{{$e}} {{end}}", "[sleep][1000] a=b; 0:sleep 1:1000 \n"),
    ("{{range .Config.Labels}}{{.}}{{end}}{{range $k, $v := .Config.Cmd}}{{$k}}{{end}}", "b01\n"),
    ("{{range $k, $v := .Config.Annotations}}{{$k}} {{end}}", "io.container.manager io.podman.annotations.init \n"),
    ("{{range $i, $e := .Config.Cmd}}{{if eq $i 1}}{{break}}{{end}}{{$e}}{{end}} "
     '{{range .Config.Cmd}}{{if eq . "sleep"}}{{continue}}{{end}}{{.}}{{end}}', "sleep 1000\n"),
    # trim markers, comments, variables, with/else
    ("a  {{- /* c */ -}}  b {{- 1 }} {{2 -}} c {{$x := .Name}}{{$x}}{{$x = \"z\"}}{{$x}} "
     "{{with .Config.Labels}}W{{.a}}{{else}}E{{end}} {{with .Config.Env}}{{len .}}{{end}}", "ab1 2c s1z Wb 5\n"),
    ("{{$a := 1}}{{if true}}{{$a = 2}}{{$b := 3}}{{$a}}{{$b}}{{end}}{{$a}}", "232\n"),
    ("{{(index .Config.Cmd 0)}} {{(.Config).Labels.a}} {{with $y := .Name}}{{$y}}{{end}}", "sleep b s1\n"),
    # if / else if, logic and comparisons (and/or return an operand and stop early)
    ('{{if eq .Name "s2"}}A{{else if eq .Name "s1" "s3"}}B{{else}}C{{end}} {{and 1 0 2}} {{or 0 "" "x"}} '
     '{{not 1}} {{lt 1 2}} {{ge "b" "a"}} {{ne 1 2}}', "B 0 x false true true true\n"),
    ("{{or 1 .Nope}} {{and 0 .Nope}}", "1 0\n"),
    ("{{lt 1.5 2.5}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1 2}}", "true true true false\n"),
    # literals and how Go prints numbers
    ("{{print 1000000.0 1234567.0 0.00001 0.0001 1.5 3.0 1e3 123456789.0 1e21 100000000000000000000.0}}",
     "1e+06 1.234567e+06 1e-05 0.0001 1.5 3 1000 1.23456789e+08 1e+21 1e+20\n"),
    ("{{0x1F}} {{0o17}} {{017}} {{0b101}} {{1_000}} {{'a'}} {{-5}} {{+5}} {{.5}} {{1e2}}", "31 15 15 5 1000 97 -5 5 0.5 100\n"),
    ('{{`raw\\n`}} {{"esc\\t\\x41\\u00e9\\101"}}', "raw\n esc\tAéA\n"),  # a typed \n is a newline by then
    ("{{true}} {{false}} {{1.5}} {{\"s\"}}", "true false 1.5 s\n"),
    ('{{println 1 2 "a" "b" 3}}|{{print 1 2 "a" "b" 3 "c"}}|{{print "a" 1 nil}}', "1 2 a b 3\n|1 2ab3c|a1 <nil>\n"),
    # printf
    ('{{printf "%-8s|%5d|%05.1f|%q|%x|%t|%%|%v|%+d|% d" .Name 42 3.14159 .Name 255 true .Config.Cmd 5 7}}',
     's1      |   42|003.1|"s1"|ff|true|%|[sleep 1000]|+5| 7\n'),
    ('{{printf "%d %s" "x" 5}}|{{printf "%d"}}|{{printf "%d" 1 2}}|{{printf "%s" .Config.Cmd}}|'
     '{{printf "%q" .Config.Cmd}}|{{printf "%v" .Config.Labels}}|{{printf "%x %X" "hi" 255}}|'
     '{{printf "%8.3f|%-8.2f|%e|%g" 3.14159 2.5 1234.5678 0.000012}}',
     '%!d(string=x) %!s(int=5)|%!d(MISSING)|1%!(EXTRA int=2)|[sleep 1000]|["sleep" "1000"]|map[a:b]|6869 FF|'
     '   3.142|2.50    |1.234568e+03|1.2e-05\n'),
    ('{{printf "%5t|%-5v|%05d|%+.2f|%x|%o|%b|%c|%U" true 1 -42 3.0 -255 8 5 65 65}}',
     " true|1    |-0042|+3.00|-ff|10|101|A|U+0041\n"),
    ('{{printf "%05s|%-05d|%05.1f|%+05d|%#x|%08.3f|%-8q|%.2s|%5.1s|%.3d|%6.2v|%5v|%q|%c|%d" "ab" 3 -2.5 7 255 '
     '-3.14159 "x" "abc" "abc" 5 3.14159 .Config.Cmd 65 65 .Config.Labels}}',
     '000ab|3    |-02.5|+0007|0xff|-003.142|"x"     |ab|    a|005|   3.1|[sleep  1000]|\'A\'|A|'
     'map[%!d(string=a):%!d(string=b)]\n'),
    ('{{printf "%v %v %.3g %g %e %G %v" 1e100 -0.0 1234.5678 100000.0 0.0 1e-7 12345678.0}}|'
     '{{printf "%6.2f%%" 12.345}}|{{printf "%"}}|{{printf "%z" 1}}|{{printf "%5s" true}}',
     "1e+100 -0 1.23e+03 100000 0.000000e+00 1E-07 1.2345678e+07| 12.35%|%!(NOVERB)|%!z(int=1)|%!s(bool= true)\n"),
    ('{{printf "%v %v %v" nil true 2.50}}|{{printf "%T %T %T" 1.5 .Config.Cmd .Config.Labels}}|'
     '{{printf "%+v" .HostConfig.RestartPolicy}}|{{printf "%v|%s" .Config.Labels.zz .Config.Labels.zz}}',
     "<nil> true 2.5|float64 []string map[string]string|{Name: MaximumRetryCount:0}|<nil>|%!s(<nil>)\n"),
    ('{{.Name | printf "%s-%s" "a"}} {{.Config.Cmd | len}} {{.Name | len | printf "%03d"}}', "a-s1 2 002\n"),
    # json: compact, no HTML escaping, Go's floats and string escapes; structs keep their field order
    ('{{json .Config.Labels}} {{json .Config.Cmd}} {{json .Name}} {{json "<a&b>"}} {{json .HostConfig.RestartPolicy}}',
     '{"a":"b"} ["sleep","1000"] "s1" "<a&b>" {"Name":"","MaximumRetryCount":0}\n'),
    ('{{json 1.5}} {{json 1e21}} {{json 0.0000001}} {{json 3.0}} {{json nil}} {{json "é\\u2028\\t\\x01\\b"}} {{json true}}',
     '1.5 1e+21 1e-7 3 null "é\\u2028\\t\\u0001\\u0008" true\n'),
    # podman's functions, and Go's
    ('{{join .Config.Cmd ","}} {{split "a,b,c" ","}} {{title "hello world-x"}} {{truncate "abcdef" 3}} '
     '[{{pad "ab" 2 3}}] [{{pad "" 2 3}}] {{upper "aB"}} {{lower "aB"}} {{truncate "ab" 2}}|{{truncate "ab" 3}}',
     "sleep,1000 [a b c] Hello World-X abc [  ab   ] [] AB ab ab|ab\n"),
    ('{{slice .Name 1}} {{slice .Config.Cmd 0 1}} {{html "<a&\\"b>"}} {{js "a\\"b<c>\'"}} {{urlquery "a b&c"}}',
     "1 [sleep] &lt;a&amp;&#34;b&gt; a\\\"b\\u003Cc\\u003E\\' a+b%26c\n"),
    ('{{html 1 "<" nil}} {{js "\\n\\t" "é"}} {{urlquery "é/~-_.x"}} {{print}} {{println}}',
     "1&lt;&lt;no value&gt; \\u000A\\u0009é %C3%A9%2F~-_.x  \n"),
    ('{{len .Config.Labels}} {{len .Config.Cmd}} {{len "é"}}', "1 2 2\n"),
    # a parse error of the normalized text: podman parses the format as given (no newline added)
    ('{{.Config.Labels.a}}{{"\\n"}}{{.Name}}', "b\ns1"),
    # a format with its own {{range .}} runs once on the whole list; podman wraps it in no other
    ("{{range .}}{{.Name}},{{end}}", "s1,\n"),
    # {{else}} and {{break}} are legal at the top: podman wraps the format in {{range .}}
    ("{{else}}", ""), ("{{break}}", ""),
], ids=lambda v: v if isinstance(v, str) and "{{" in v else "")
def test_inspect_format_renders_as_podman(fmt, out):
    assert inspect(fmt) == out


@pytest.mark.parametrize("fmt, message", [
    ("{{.Nope}}", 'template: inspect:1:13: executing "inspect" at <.Nope>: can\'t evaluate field Nope in type interface {}'),
    ("é{{ .Nope }}", 'template: inspect:1:16: executing "inspect" at <.Nope>: can\'t evaluate field Nope in type interface {}'),
    ("ab\ncd {{.Nope}}", 'template: inspect:2:5: executing "inspect" at <.Nope>: can\'t evaluate field Nope in type interface {}'),
    ('{{printf "%s %s %s %s" .Name .Name .Name .Nope}}',
     'template: inspect:1:52: executing "inspect" at <.Nope>: can\'t evaluate field Nope in type interface {}'),
    ("{{.Name.x}}", 'template: inspect:1:18: executing "inspect" at <.Name.x>: can\'t evaluate field x in type string'),
    ("{{.Config.Labels.a.b}}",
     'template: inspect:1:20: executing "inspect" at <.Config.Labels.a.b>: can\'t evaluate field b in type string'),
    ("{{.Config.Cmd.x}}", 'template: inspect:1:20: executing "inspect" at <.Config.Cmd.x>: can\'t evaluate field x in type []string'),
    ("{{ (.Config).Nope }}", 'template: inspect:1:15: executing "inspect" at <.Config>: can\'t evaluate field Nope in type interface {}'),
    ("{{ $x := .Config }}{{ $x.Nope }}",
     'template: inspect:1:35: executing "inspect" at <$x.Nope>: can\'t evaluate field Nope in type interface {}'),
    ("{{$.Name}}", 'template: inspect:1:14: executing "inspect" at <$.Name>: can\'t evaluate field Name in type []interface {}'),
    ("{{index .Config.Cmd 5}}",
     'template: inspect:1:13: executing "inspect" at <index .Config.Cmd 5>: error calling index: index out of range: 5'),
    ('{{index .Config.Labels "a" "b"}}', 'template: inspect:1:13: executing "inspect" at <index .Config.Labels "a" "b">: '
     "error calling index: cannot index slice/array with type string"),
    ("{{ slice .Name 1 5 }}",
     'template: inspect:1:14: executing "inspect" at <slice .Name 1 5>: error calling slice: index out of range: 5'),
    ("{{nil}}", 'template: inspect:1:13: executing "inspect" at <nil>: nil is not a command'),
    ("{{len .Name}} {{len 3}}", 'template: inspect:1:27: executing "inspect" at <len 3>: error calling len: len of type int'),
    ("{{eq 1 1.0}}", 'template: inspect:1:13: executing "inspect" at <eq 1 1.0>: error calling eq: incompatible types for comparison'),
    ("{{eq .Config.Labels 1}}",
     'template: inspect:1:13: executing "inspect" at <eq .Config.Labels 1>: error calling eq: incompatible types for comparison'),
    ("{{eq .Config.Cmd .Config.Cmd}}", 'template: inspect:1:13: executing "inspect" at <eq .Config.Cmd .Config.Cmd>: '
     "error calling eq: non-comparable type [sleep 1000]: []string"),
    ("{{lt true false}}", 'template: inspect:1:13: executing "inspect" at <lt true false>: error calling lt: invalid type for comparison'),
    ("{{ .Name 1 }}", 'template: inspect:1:14: executing "inspect" at <.Name>: Name has arguments but cannot be invoked as function'),
    ('{{ "x" 1 }}', 'template: inspect:1:14: executing "inspect" at <"x">: can\'t give argument to non-function "x"'),
    ("{{ upper 1 }}", 'template: inspect:1:20: executing "inspect" at <1>: expected string; found 1'),
    ('{{ join .Name "," }}', 'template: inspect:1:19: executing "inspect" at <.Name>: wrong type for value; expected []string; got string'),
    ("{{ upper }}", 'template: inspect:1:14: executing "inspect" at <upper>: wrong number of args for upper: want 1 got 0'),
    ('{{ truncate "abc" "x" }}', 'template: inspect:1:29: executing "inspect" at <"x">: expected integer; found "x"'),
    ("{{ range 3 }}x{{end}}", 'template: inspect:1:20: executing "inspect" at <3>: range can\'t iterate over 3'),
    ("{{ range .Name }}x{{end}}", 'template: inspect:1:20: executing "inspect" at <.Name>: range can\'t iterate over s1'),
    # parse errors: only a line number
    ("{{nosuch .Name}}", 'template: inspect:1: function "nosuch" not defined'),
    ("{{.Name}} {{end}}", "template: inspect:1: unexpected {{end}}"),
    ("{{range .Config.Cmd}}x", "template: inspect:1: unexpected EOF"),
    ("{{.Name", "template: inspect:1: bad character U+007B '{'"),
    ('{{"abc}}', "template: inspect:1: unterminated quoted string"),
    ("{{$x}}", 'template: inspect:1: undefined variable "$x"'),
    ("{{}}", "template: inspect:1: missing value for command"),
    ("{{(.Name}}", "template: inspect:1: unclosed left paren"),
    ("{{.Name)}}", 'template: inspect:1: unexpected ")" in command'),
    ("{{/* abc }}", "template: inspect:1: unclosed comment"),
    ("{{.Name | 3}}", "template: inspect:1: non executable command in pipeline stage 2"),
    ("{{3 | printf}}{{if 1}}x{{end}", "template: inspect:1: bad character U+007D '}'"),
    ("{{replace \"a\" \"a\" \"b\" 1}}", 'template: inspect:1: function "replace" not defined'),  # not in podman 4.3
    ("{{if 1}}{{else with 2}}{{end}}", "template: inspect:1: unexpected <with> in else"),
    ("{{with .Config.Labels.zz}}yes{{else if .Name}}{{.Name}}{{end}}", "template: inspect:1: unexpected <if> in input"),
    ('{{define "x"}}{{end}}', "template: inspect:1: unexpected <define> in command"),
    ("{{0xZZ}}", 'template: inspect:1: bad number syntax: "0xZ"'),
    ("{{.Name:}}", "template: inspect:1: expected :="),
    ("{{ 1e500 }}", 'template: inspect:1: illegal number syntax: "1e500"'),
    ("{{ 99999999999999999999 }}", 'template: inspect:1: integer overflow: "99999999999999999999"'),
    ("line1\nline2 {{if}}", "template: inspect:2: missing value for if"),
], ids=lambda v: v if isinstance(v, str) and "{{" in v else "")
def test_inspect_format_errors_as_podman(fmt, message):
    assert inspect_error(fmt) == message


def test_output_before_an_error_is_kept():
    # podman inspect s1 --format 'ab\ncd {{.Nope}}' prints "ab\ncd " before the error
    with pytest.raises(TemplateError) as caught:
        inspect("ab\ncd {{.Nope}}")
    assert caught.value.output == "ab\ncd "


# ---------------------------------------------------------------- tables
@pytest.mark.parametrize("fmt, out", [
    ("table {{.ID}}\\t{{.Names}}\\t{{.Labels}}",
     "CONTAINER ID  NAMES       LABELS\n957fe95bbe54  s1          map[a:b]\ne32731be0483  s2          map[]\n"),
    # spaces become tabs, even inside quoted strings
    ("table {{.ID}} {{.Names}} {{.Image}} {{.Command}}",
     "CONTAINER ID  NAMES       IMAGE                     COMMAND\n"
     "957fe95bbe54  s1          localhost/busybox:latest  sleep 1000\n"
     "e32731be0483  s2          localhost/busybox:latest  true\n"),
    ('table {{printf "%s %s" .ID .Names}}|{{ .Names }}',
     "CONTAINER ID  NAMES|NAMES\n957fe95bbe54  s1|s1\ne32731be0483  s2|s2\n"),
    ("table {{.ID}}\\n{{.Names}}", "CONTAINER ID\nNAMES\n957fe95bbe54\ns1\ne32731be0483\ns2\n"),
    ("table {{.Names}}\\t\\t{{.ID}}",
     "NAMES                   CONTAINER ID\ns1                      957fe95bbe54\ns2                      e32731be0483\n"),
    ("table {{.ID}}\\t{{if .Labels}}L{{else}}N{{end}}", "CONTAINER ID  L\n957fe95bbe54  L\ne32731be0483  N\n"),
    ("table {{.ID}} {{json .Labels}} {{upper .Names}} {{.Names | printf \"%s-x\"}} {{len .Names}}",
     'CONTAINER ID  "LABELS"    NAMES       NAMES-x     5\n957fe95bbe54  {"a":"b"}   S1          s1-x        2\n'
     "e32731be0483  {}          S2          s2-x        2\n"),
    # not tables: only a "table " prefix counts
    ("table\\t{{.ID}}\\t{{.Names}}", "table\t957fe95bbe54\ts1\ntable\te32731be0483\ts2\n"),
    ("table", "table\ntable\n"),
    ("  table {{.ID}}", "  table 957fe95bbe54\n  table e32731be0483\n"),
    ("{{.ID}}\\t{{.Names}}\\n", "957fe95bbe54\ts1\ne32731be0483\ts2\n"),
    ("{{range .}}{{.Names}},{{end}}", "s1,s2,\n"),
    # the normalized text does not parse, so podman uses the format as given, "table " and all
    ('table {{.ID}} {{.Names}} {{"a\\nb"}}',
     "table CONTAINER ID NAMES a\nbtable 957fe95bbe54 s1 a\nbtable e32731be0483 s2 a\nb"),
    ('table {{.ID}}\\t{{.Names}}{{"\\n"}}', "table CONTAINER ID\\tNAMES\ntable 957fe95bbe54\\ts1\ntable e32731be0483\\ts2\n"),
], ids=lambda v: v if isinstance(v, str) and "{{" in v else "")
def test_ps_tables_as_podman(fmt, out):
    assert ps(fmt) == out


def test_noheading():  # podman ps -a --noheading --format 'table {{.Names}}\t{{.ID}}'
    assert ps("table {{.Names}}\\t{{.ID}}", noheading=True) == "s1          957fe95bbe54\ns2          e32731be0483\n"


def test_a_table_with_no_rows_has_its_header():  # podman ps --filter name=none --format 'table {{.ID}} ...'
    assert render_rows("table {{.ID}} {{.Pod}} {{.PodName}} {{.RunningFor}} {{.CreatedAt}}", [], PS_HEADERS) == \
        "CONTAINER ID  POD ID      PODNAME     RUNNING FOR  CREATED AT\n"


def test_header_errors_like_podman():
    # podman ps -a --format 'table {{.Labels.a}} {{json .Labels}}': the header row's values are strings
    with pytest.raises(TemplateError) as caught:
        ps("table {{.Labels.a}} {{json .Labels}}")
    assert str(caught.value) == 'template: ps:1:20: executing "ps" at <.Labels.a>: can\'t evaluate field a in type string'
    # podman ps -a --format 'table {{.ID}} {{.Label "a"}}' prints "CONTAINER ID" first
    with pytest.raises(TemplateError) as caught:
        ps('table {{.ID}} {{.Label "a"}}')
    assert str(caught.value) == 'template: ps:1:21: executing "ps" at <.Label>: Label is not a method but has arguments'
    assert caught.value.output == "CONTAINER ID"


def test_images_table_with_overrides():
    # podman images --format 'table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedAt}}\t{{.ReadOnly}}':
    # images overrides ID and ReadOnly; CreatedAt is a method podman's header struct lacks
    rows = [{"Repository": "localhost/busybox", "Tag": "latest", "ID": "21a96a016a8a",
             "CreatedAt": "2026-01-01 00:00:00 +0000 UTC", "ReadOnly": False}]
    out = render_rows("table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedAt}}\\t{{.ReadOnly}}", rows,
                      {"ID": "IMAGE ID", "ReadOnly": "R/O", "CreatedAt": None}, name="images")
    assert out == ("REPOSITORY         TAG         IMAGE ID      <no value>                     R/O\n"
                   "localhost/busybox  latest      21a96a016a8a  2026-01-01 00:00:00 +0000 UTC  false\n")


def test_volume_table_widens_for_long_names():  # podman volume ls --format 'table {{.Name}} {{.Driver}}'
    rows = [{"Name": "23931b703197b9d8cd776401952a53e1987bc36882da1a1bc8e00c0e2e048817", "Driver": "local"},
            {"Name": "v1", "Driver": "local"}]
    assert render_rows("table {{.Name}} {{.Driver}}", rows, {"Name": "VOLUME NAME"}, name="ls") == (
        "VOLUME NAME                                                       DRIVER\n"
        "23931b703197b9d8cd776401952a53e1987bc36882da1a1bc8e00c0e2e048817  local\n"
        "v1                                                                local\n")


def test_inspect_table_is_aligned_without_header():  # podman inspect s1 --format 'table {{.Name}} {{.Id}}'
    assert render_rows("table {{.Name}} {{.Id}}", [{"Name": "s1", "Id": "957fe95bbe54ff"}], noheading=True,
                       name="inspect") == "s1          957fe95bbe54ff\n"


@pytest.mark.parametrize("field, expected", [
    ("ID", "ID"), ("Names", "NAMES"), ("CreatedAt", "CREATED AT"), ("ImageID", "IMAGE ID"), ("PodName", "POD NAME"),
    ("SimpleXMLParser", "SIMPLE XML PARSER"), ("GL11Version", "GL 11 VERSION"), ("FieldA", "FIELD A"),
    ("Fieldb", "FIELDB"), ("vimRPCPlugin", "VIM RPC PLUGIN"),
])
def test_header_splits_camel_case(field, expected):  # containers/common pkg/report camelcase + Headers()
    assert header(field) == expected


def test_header_overrides_are_upper_cased():
    assert header("ID", {"ID": "container id"}) == "CONTAINER ID"
    assert header("PodName", {"PodName": "podname"}) == "PODNAME"


@pytest.mark.parametrize("text, expected", [
    ("a\tb\n", "a           b\n"),  # minwidth 12
    ("abcdefghijkl\tb\nx\ty\n", "abcdefghijkl  b\nx             y\n"),  # widest + padding 2
    ("a\tb\tc\nd\n e\tf\n", "a           b           c\nd\n e          f\n"),  # a line without the column ends it
    ("a\t\n", "a           \n"),  # a tab-ended cell is padded even when last on its line
    ("CONTAINER ID\t", "CONTAINER ID"),  # ...but not an unfinished line's: podman's output before an error
    ("é\tx\n", "é           x\n"),  # widths count characters
])
def test_tabwrite(text, expected):
    assert tabwrite(text) == expected


@pytest.mark.parametrize("fmt, expected", [  # containers/common's TestNormalizeFormat, and more
    ("{{.ID}}\t{{.ID}}", ("{{.ID}}\t{{.ID}}\n", False)),
    ("{{.ID}}\\t{{.ID}}", ("{{.ID}}\t{{.ID}}\n", False)),
    ("{{.ID}} {{.ID}}", ("{{.ID}} {{.ID}}\n", False)),
    ("table {{.ID}}\\t{{.ID}}", ("{{.ID}}\t{{.ID}}\n", True)),
    ("table {{.ID}} {{.ID}}", ("{{.ID}}\t{{.ID}}\n", True)),
    ("{{.ID}}\\n", ("{{.ID}}\n", False)),
    ("table\t{{.ID}}", ("table\t{{.ID}}\n", False)),
    ('table {{ printf "%s table x" .ID }}', ('{{\tprintf\t"%s\tx"\t.ID\t}}\n', True)),
])
def test_normalize(fmt, expected):
    assert normalize(fmt) == expected


def test_is_json():  # report.IsJSON: podman ps --format json / '{{json .}}' / '{{ json }}' print JSON
    assert [is_json(f) for f in ("json", " {{json .}} ", "{{ json }}", "{{json .ID}}", "table json")] == \
        [True, True, True, False, False]


# ---------------------------------------------------------------- the plain API
def test_parse_and_execute_without_podman_wrapping():
    template = parse("{{.A.B}} {{range .L}}<{{.}}>{{end}}", name="t")
    assert template.execute({"A": {"B": 1}, "L": [1, 2]}) == "1 <1><2>"
    with pytest.raises(TemplateError, match=r'^template: t:1:4: executing "t" at <.A.C>: can\'t evaluate field C'):
        template = parse("{{.A.C}}", name="t").execute({"A": {"B": 1}})


def test_syntax_error_raises_at_parse():
    with pytest.raises(TemplateError, match=r"^template: ps:1: unexpected EOF$"):
        parse("{{if 1}}x", name="ps")
    assert isinstance(TemplateError("x"), ValueError)


def test_struct_or_map():
    # a dict of identifiers, one Capitalised, is a struct: a missing field is an error...
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type interface {}"):
        parse("{{.Nope}}").execute({"Name": "x", "sdNotifyMode": "y"})
    # ...other dicts, and GoMap, are maps: a missing key is <no value>
    assert parse("{{.Nope}} {{.x}}").execute({"x": "1"}) == "<no value> 1"
    assert parse("{{.Nope}} {{.}}").execute(GoMap(Maintainer="me")) == "<no value> map[Maintainer:me]"
    assert parse("{{.}}").execute({"B": 1, "A": [1, 2]}) == "{1 [1 2]}"  # a struct prints its values in order
    assert parse("{{json .}}").execute({"B": 1, "A": None}) == '{"B":1,"A":null}'
    assert parse("{{json .}}").execute(GoMap(B=1, A=2)) == '{"A":2,"B":1}'  # a map's keys are sorted


def test_nil_values():
    assert parse("{{.A}} {{.A.B}} {{print .A}} {{.M.x}}|{{index .M \"x\"}}|").execute(
        {"A": None, "M": GoMap()}) == "<nil> <no value> <nil> <no value>||"
    assert parse("{{range .A}}x{{else}}none{{end}} {{if .A}}y{{else}}n{{end}}").execute({"A": None}) == "none n"

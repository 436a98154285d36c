"""Go's text/template, as podman 4.3.1 renders --format (containers/common v0.50 pkg/report).

Data is plain Python: a dict is a Go struct or map (see _is_map, GoMap), a list or tuple a
slice, None nil. Output, messages and their positions (Go counts bytes) follow Go 1.19 as
podman 4.3.1 shows them; tests/unit/test_gotemplate.py pins what was checked.
"""

from __future__ import annotations

import re

# Patterns are compiled on first use (re caches them): `ferry ps` imports this module.
_NUMBER = r"[+-]?(?:0[xX][\dA-Fa-f_.]*(?:[pP][+-]?[\d_]*)?|0[oObB][\d_]*|[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?[\d_]*)?)i?"
_STRING = r'"(?:[^"\\\n]|\\[^\n])*"|`[^`]*`|\'(?:[^\'\\\n]|\\[^\n])*\''
_VERB = r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)?"
_HAS_RANGE = r"\{\{[\t\n\f\r ]*range[\t\n\f\r ]*\.[\t\n\f\r ]*\}\}.*\{\{[\t\n\f\r ]*end[\t\n\f\r ]*-?[\t\n\f\r ]*\}\}"


class TemplateError(ValueError):
    """A parse or execution error, worded as podman prints it after 'Error: '.
    `output` is what was rendered before an execution error: podman prints that too."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


class GoMap(dict):
    """A dict that is a Go map, whatever its keys look like."""


class _NoValue:  # Go's invalid reflect.Value: a missing map key, a field of nil
    def __repr__(self):
        return "<no value>"


NO_VALUE, _MISSING = _NoValue(), object()


def _is_map(d: dict) -> bool:
    """Keys that are identifiers, one Capitalised, make a struct (missing fields are errors);
    anything else (labels, annotations, network names) a map."""
    if isinstance(d, GoMap) or not all(isinstance(k, str) and k.isidentifier() for k in d):
        return True
    return not any(k[0].isupper() for k in d)


# ---------------------------------------------------------------- lexer
_SPACE = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}


def _char_u(ch: str) -> str:  # Go's %#U
    return f"U+{ord(ch):04X}" + f" '{ch}'" * ch.isprintable()


def _lex(text: str) -> list[tuple[str, str, int]]:
    """Tokens (kind, text, offset); a lexing error ends the list as ("error", message, offset)."""
    toks, pos, n = [], 0, len(text)

    def closing(i):  # length of the "}}" or " -}}" at i, else 0
        return 2 if text.startswith("}}", i) else 4 * (text[i:i + 1] in _SPACE and text.startswith("-}}", i + 1))

    def after_trim(i):
        while i < n and text[i] in _SPACE:
            i += 1
        return i

    def ends_word(i):
        return i >= n or text[i] in _SPACE + ".,|:()" or text.startswith("}}", i)

    while (x := text.find("{{", pos)) >= 0:
        trim = text[x + 2:x + 3] == "-" and text[x + 3:x + 4] in _SPACE and x + 3 < n
        if seg := text[pos:x].rstrip(_SPACE) if trim else text[pos:x]:
            toks.append(("text", seg, pos))
        pos = x + 2 + 2 * trim
        if text.startswith("/*", pos):  # a comment must touch its delimiters
            end = text.find("*/", pos + 2)
            if end < 0:
                return toks + [("error", "unclosed comment", pos)]
            if not (d := closing(end + 2)):
                return toks + [("error", "comment ends before closing delimiter", end)]
            pos = end + 2 + d if d == 2 else after_trim(end + 2 + d)
            continue
        toks.append(("{{", "{{", x))
        depth = 0
        while not (d := closing(pos)):
            if pos >= n:
                return toks + [("error", "unclosed action", pos)]
            ch, start = text[pos], pos
            if ch in _SPACE:
                pos = after_trim(pos)
                pos -= text.startswith("-}}", pos)  # leave " -}}" whole
                if pos > start:
                    toks.append(("space", text[start:pos], start))
                continue
            if text.startswith(":=", pos):
                kind, pos = "declare", pos + 2
            elif ch in "=|(),":
                kind, pos = {"=": "assign", "|": "pipe", ",": "char"}.get(ch, ch), pos + 1
                depth += {"(": 1, ")": -1}.get(ch, 0)
            elif ch in "\"'`":
                if not (m := re.compile(_STRING).match(text, pos)):
                    what = {'"': "quoted string", "'": "character constant", "`": "raw quoted string"}[ch]
                    return toks + [("error", f"unterminated {what}", pos)]
                kind, pos = "charconst" if ch == "'" else "str", m.end()
            elif ch == "." and not text[pos + 1:pos + 2].isdigit() or ch == "$" or ch.isalpha() or ch == "_":
                i = re.compile(r"\w*").match(text, pos + (ch in ".$")).end()
                if not ends_word(i):
                    return toks + [("error", f"bad character {_char_u(text[i])}", i)]
                word, pos = text[start:i], i
                kind = ("var" if ch == "$" else "dot" if word == "." else "field" if ch == "." else
                        "kw" if word in _KEYWORDS else "nil" if word == "nil" else
                        "bool" if word in ("true", "false") else "ident")
            elif ch in "+-." or ch.isdigit():
                pos = re.compile(_NUMBER).match(text, pos).end()
                if pos < n and (text[pos].isalnum() or text[pos] == "_"):
                    return toks + [("error", f"bad number syntax: {_quote(text[start:pos + 1])}", start)]
                kind = "number"
            elif ch == ":":
                return toks + [("error", "expected :=", pos)]
            elif ch.isascii() and ch.isprintable():
                kind, pos = "char", pos + 1
            else:
                return toks + [("error", f"unrecognized character in action: {_char_u(ch)}", pos)]
            toks.append((kind, text[start:pos], start))
            if depth < 0:
                return toks + [("error", "unexpected right paren U+0029 ')'", pos)]
        if depth:
            return toks + [("error", "unclosed left paren", pos)]
        toks.append(("}}", "}}", pos))
        pos = pos + d if d == 2 else after_trim(pos + d)
    if pos < n:
        toks.append(("text", text[pos:], pos))
    return toks + [("eof", "", n)]


# ---------------------------------------------------------------- parser
class _Node:
    """kind is one of field ($x.A.B is a field node whose names[0] is "$x"), chain ((pipe).A),
    dot, nil, lit, func, cmd, pipe, action, if, with, range, break, continue."""

    def __init__(self, kind, pos, **attrs):
        self.kind, self.pos = kind, pos
        self.__dict__.update(attrs)

    def __str__(self):  # Go's node.String(), the <context> of execution errors
        k = self.kind
        if k == "field":
            return "".join(n if n[0] == "$" else "." + n for n in self.names)
        if k == "chain":
            head = f"({self.node})" if self.node.kind == "pipe" else str(self.node)
            return head + "".join("." + f for f in self.names)
        if k == "cmd":
            return " ".join(f"({a})" if a.kind == "pipe" else str(a) for a in self.args)
        if k == "pipe":
            return (", ".join(self.decls) + " := ") * bool(self.decls) + " | ".join(map(str, self.cmds))
        return {"dot": ".", "nil": "nil"}.get(k) or self.text


_OPERAND_START = {"bool", "charconst", "dot", "field", "ident", "number", "nil", "var", "str", "("}


class _Parser:
    def __init__(self, text: str, name: str):
        self.text, self.name, self.toks, self.i, self.seen = text, name, _lex(text), 0, 0
        self.vars, self.range_depth = ["$"], 0

    def fail(self, msg):
        line = self.text.count("\n", 0, self.toks[self.seen][2]) + 1
        raise TemplateError(f"template: {self.name}:{line}: {msg}")

    def peek(self):
        self.seen = max(self.seen, self.i)
        return self.toks[self.i]

    def next(self):
        if (tok := self.peek())[0] == "error":
            self.fail(tok[1])
        self.i += tok[0] != "eof"
        return tok

    def peek_non_space(self):  # consumes the spaces, as Go's does
        while self.peek()[0] == "space":
            self.i += 1
        return self.peek()

    def next_non_space(self):
        self.peek_non_space()
        return self.next()

    def unexpected(self, tok, context):
        kind, val, _ = tok
        shown = ("EOF" if kind == "eof" else f"<{val}>" if kind == "kw" else
                 _quote(val[:10]) + "..." if len(val) > 10 else _quote(val))
        self.fail(f"unexpected {shown} in {context}")

    def expect(self, kind, context):
        if (tok := self.next_non_space())[0] != kind:
            self.unexpected(tok, context)

    def parse(self) -> list:
        nodes, end = self.item_list()
        if end:
            self.fail(f"unexpected {{{{{end}}}}}")
        return nodes

    def item_list(self):
        """Nodes up to {{end}} or {{else}} (returned as "end"/"else") or the end of the text (None)."""
        nodes = []
        while (tok := self.next())[0] != "eof":
            if tok[0] == "text":
                nodes.append(tok[1])
                continue
            if tok[0] != "{{":  # the "if" of an {{else if}} after a with or range
                self.unexpected(tok, "input")
            if (node := self.action()) in ("end", "else"):
                return nodes, node
            nodes.append(node)
        return nodes, None

    def action(self):
        pos, kw = (tok := self.peek_non_space())[2], tok[1] if tok[0] == "kw" else None
        if kw not in ("end", "else", "if", "with", "range", "break", "continue"):
            return _Node("action", pos, pipe=self.pipeline("command", "}}"))
        self.next()
        if kw in ("if", "with", "range"):
            return self.control(kw, pos)
        if kw == "else" and self.peek_non_space()[:2] == ("kw", "if"):
            return kw  # the "if" is left for control(): {{else if}}
        self.expect("}}", {"end": "end", "else": "else"}.get(kw, f"{{{{{kw}}}}}"))
        if kw in ("break", "continue") and not self.range_depth:
            self.fail(f"{{{{{kw}}}}} outside {{{{range}}}}")
        return kw if kw in ("end", "else") else _Node(kw, pos)

    def control(self, kind, pos):
        mark = len(self.vars)
        self.range_depth += kind == "range"
        pipe = self.pipeline(kind, "}}")
        body, end = self.item_list()
        else_body = None
        if end == "else" and kind == "if" and self.peek_non_space()[:2] == ("kw", "if"):
            self.next()  # {{else if}}: a nested if that shares our {{end}}
            else_body, end = [self.control("if", self.toks[self.i - 1][2])], "end"
        elif end == "else":
            else_body, end = self.item_list()
            if end == "else":
                self.fail("expected end; found {{else}}")
        if end is None:
            self.fail("unexpected EOF")
        self.range_depth -= kind == "range"
        del self.vars[mark:]
        return _Node(kind, pos, pipe=pipe, body=body, else_body=else_body)

    def pipeline(self, context, end):
        pipe = _Node("pipe", self.peek_non_space()[2], decls=[], is_assign=False, cmds=[])
        while (var := self.peek_non_space())[0] == "var":  # declarations: $x :=, $x =, $i, $e :=
            save = self.i
            self.next()
            after = self.peek_non_space()[:2]
            if after[0] not in ("declare", "assign") and after != ("char", ","):
                self.i = save  # "$x" is an operand
                break
            self.next()
            pipe.is_assign = after[0] == "assign"
            pipe.decls.append(var[1])
            self.vars.append(var[1])
            if after[0] != "char":
                break
            if context != "range" or len(pipe.decls) > 1:
                self.fail(f"too many declarations in {context}")
            if self.peek_non_space()[0] not in ("var", "}}", ")"):
                self.fail("range can only initialize variables")
        while (tok := self.next_non_space())[0] != end:
            if tok[0] not in _OPERAND_START:
                self.unexpected(tok, context)
            self.i -= 1
            pipe.cmds.append(self.command())
        if not pipe.cmds:
            self.fail(f"missing value for {context}")
        for stage, cmd in enumerate(pipe.cmds[1:], 2):
            if cmd.args[0].kind in ("lit", "dot", "nil"):
                self.fail(f"non executable command in pipeline stage {stage}")
        return pipe

    def command(self):
        cmd = _Node("cmd", self.peek_non_space()[2], args=[])
        while True:
            self.peek_non_space()
            if operand := self.operand():
                cmd.args.append(operand)
            if (tok := self.next())[0] == "space":
                continue
            if tok[0] in ("}}", ")"):
                self.i -= 1
            elif tok[0] != "pipe":
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.fail("empty command")
        return cmd

    def operand(self):
        node = self.term()
        if node is None or self.peek()[0] != "field":
            return node
        pos, names = self.peek()[2], []  # Go places a chain at its second part
        while self.peek()[0] == "field":
            names.append(self.next()[1][1:])
        if node.kind == "field":
            return _Node("field", pos, names=node.names + names)
        if node.kind in ("lit", "nil", "dot"):
            self.fail(f"unexpected . after term {_quote(str(node))}")
        return _Node("chain", pos, node=node, names=names)

    def term(self):
        kind, val, pos = self.next_non_space()
        if kind == "ident" and val not in _FUNCS:
            self.fail(f"function {_quote(val)} not defined")
        if kind == "var" and val not in self.vars:
            self.fail(f"undefined variable {_quote(val)}")
        if kind in ("ident", "dot", "nil"):
            return _Node({"ident": "func"}.get(kind, kind), pos, text=val)
        if kind in ("var", "field"):
            return _Node("field", pos, names=[val.lstrip(".")])
        if kind == "(":
            return self.pipeline("parenthesized pipeline", ")")
        if kind == "bool":
            return _Node("lit", pos, value=val == "true", text=val)
        if kind == "str":
            return _Node("lit", pos, value=val[1:-1] if val[0] == "`" else self.unquote(val), text=val)
        if kind in ("number", "charconst"):
            return _Node("lit", pos, value=self.number(val), text=val)
        self.i -= 1
        return None

    def number(self, text):
        if text[0] == "'":
            if len(char := self.unquote(text)) != 1:
                self.fail(f"malformed character constant: {text}")
            return ord(char)
        plain = text.replace("_", "")
        try:
            number = int(plain, 8 if re.fullmatch(r"[+-]?0[0-7]+", plain) else 0)
        except ValueError:
            number = None
        if number is not None:
            if not -1 << 63 <= number < 1 << 64:  # Go's int64 or uint64
                self.fail(f"integer overflow: {_quote(text)}")
            return number
        try:  # a float constant is a float64 to Go only when written with . e or p
            if abs(number := float.fromhex(plain) if "x" in plain.lower() else float(plain)) != float("inf"):
                return number
        except ValueError:
            pass
        self.fail(f"illegal number syntax: {_quote(text)}")

    def unquote(self, quoted):  # strconv.Unquote; \x and octal escapes give bytes
        out, body, i = bytearray(), quoted[1:-1], 0
        named = dict(zip("abfnrtv\\" + quoted[0], "\a\b\f\n\r\t\v\\" + quoted[0]))
        while i < len(body):
            if body[i] != "\\":
                out += body[i].encode()
                i += 1
                continue
            esc = body[i + 1]  # the lexer saw to it that one follows
            if esc in named:
                out += named[esc].encode()
                i += 2
                continue
            size, base = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(esc, (3, 8))
            start = i + 1 + (base == 16)
            try:
                if esc not in "xuU01234567" or len(digits := body[start:start + size]) != size:
                    raise ValueError
                code = int(digits, base)
                out += chr(code).encode() if esc in "uU" else bytes([code])
            except ValueError:
                self.fail("invalid syntax")
            i = start + size
        return out.decode(errors="replace")


# ---------------------------------------------------------------- values
def _go_type(v) -> str:
    """The Go type podman would show for a value (%T, messages); structs are interface {}."""
    if v is None or v is NO_VALUE:
        return "<nil>"
    for py, go in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string")):
        if isinstance(v, py):
            return go
    if isinstance(v, (list, tuple)):
        return "[]string" if v and all(isinstance(e, str) for e in v) else "[]interface {}"
    if isinstance(v, dict) and _is_map(v):
        return "map[string]" + ("string" if all(isinstance(e, str) for e in v.values()) else "interface {}")
    return "interface {}"


def _truth(v) -> bool:
    if v is None or v is NO_VALUE:
        return False
    return bool(v) if isinstance(v, (bool, int, float, str, list, tuple, dict)) else True


def _sorted_keys(d):
    return sorted(d, key=lambda k: (type(k).__name__, k))


def _shortest(f: float, mode: str) -> str:
    """strconv.FormatFloat(f, mode, -1, 64): the fewest digits that read back as f."""
    if f != f or f in (float("inf"), float("-inf")):
        return "NaN" if f != f else "+Inf" if f > 0 else "-Inf"
    mant, _, exp = repr(abs(f)).partition("e")
    whole, _, frac = mant.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + int(exp or 0) - len(whole + frac) + len(digits)  # digits are 0.DIGITS x 10**point
    digits, sign = digits.rstrip("0") or "0", "-" * (str(f)[0] == "-")
    point = point if digits != "0" else 1
    if mode == "g":  # Go's shortest %g and %v use %e below 1e-4 and from 1e6 up
        mode = "f" if -4 <= point - 1 < 6 else "e"
    if mode == "e":
        return f"{sign}{digits[0]}{'.' * (len(digits) > 1)}{digits[1:]}e{'-' if point < 1 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    return sign + (digits.ljust(point, "0") if point >= len(digits) else f"{digits[:point]}.{digits[point:]}")


def _quote(s: str) -> str:  # strconv.Quote
    def escape(ch):
        if ch in '"\\':
            return "\\" + ch
        if ch in "\a\b\f\n\r\t\v":
            return "\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)]
        if ch.isprintable():
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return '"' + "".join(map(escape, s)) + '"'


def _fmt(v, verb="v", flags="", width=None, prec=None, names=False) -> str:
    """fmt's formatting of one value with one verb; slices and maps go element by element.
    names: %+v, which shows struct field names (and no + signs)."""
    if verb == "v" and "+" in flags:
        flags, names = flags.replace("+", ""), True
    if verb != "T" and isinstance(v, (list, tuple, dict)):
        def each(e):
            return _fmt(e, verb, flags, width, prec, names)
        if not isinstance(v, dict):
            return "[" + " ".join(map(each, v)) + "]"
        if _is_map(v):
            return "map[" + " ".join(f"{each(k)}:{each(v[k])}" for k in _sorted_keys(v)) + "]"
        return "{" + " ".join(f"{k}:" * names + each(e) for k, e in v.items()) + "}"
    body, numeric, signs = None, isinstance(v, (int, float)) and not isinstance(v, bool), flags.replace("0", "")
    if verb == "T":
        body = _go_type(v)
    elif v is NO_VALUE:  # html, js and urlquery print Go's invalid value so
        body = "<no value>"
    elif v is None:
        body = "<nil>" if verb == "v" else f"%!{verb}(<nil>)"
    elif isinstance(v, bool):
        body = ("true" if v else "false") if verb in "vt" else None
    elif isinstance(v, int) and verb in "cqU":
        numeric = False
        body = chr(v) if verb == "c" else f"U+{v:04X}" if verb == "U" else \
            "'" + _quote(chr(v))[1:-1].replace("'", "\\'") + "'"
    elif isinstance(v, int) and verb in "vdxXob":
        digits = format(abs(v), "d" if verb == "v" else verb).zfill(prec or 0)
        prefix = {"x": "0x", "X": "0X", "o": "0", "b": "0b"}.get(verb, "") * ("#" in flags)
        body = ("-" if v < 0 else "+" if "+" in signs else " " if " " in signs else "") + prefix + digits
    elif isinstance(v, float) and verb in "vgGeEfF":
        if prec is None and verb in "vgG":
            body = _shortest(v, "g")
        else:
            body = format(v, f".{6 if prec is None else prec}{'g' if verb == 'v' else verb.lower()}")
            body = body.replace("inf", "Inf").replace("nan", "NaN")
        body = body.upper() if verb in "GE" else body
        body = ("+" if "+" in signs else " ") * (body[0] not in "+-" and bool({"+", " "} & set(signs))) + body
    elif isinstance(v, str) and verb in "svqxX":
        body = v[:prec] if verb in "sv" else _quote(v) if verb == "q" else v.encode().hex()
        body = body.upper() if verb == "X" else body
    elif not isinstance(v, (int, float, str)) and verb in "sv":
        body = str(v)
    if body is None:  # Go's report of a verb that does not fit: %!d(string=x)
        return f"%!{verb}({_go_type(v)}={_fmt(v, 'v', flags, width, prec)})"
    pad = (width or 0) - len(body)
    if pad <= 0:
        return body
    if "-" in flags:
        return body + " " * pad
    if "0" in flags and not (isinstance(v, int) and prec is not None):  # Go zero-pads strings too
        sign = body[0] if numeric and body[0] in "+- " else ""
        return sign + "0" * pad + body[len(sign):]
    return " " * pad + body


def _sprintf(format: str, *args) -> str:
    out, used, pos = [], 0, 0
    while (i := format.find("%", pos)) >= 0:
        out.append(format[pos:i])
        m = re.compile(_VERB, re.S).match(format, i)
        flags, width, prec, verb = m.groups()
        pos = m.end()
        if verb in (None, "%"):
            out.append("%!(NOVERB)" if verb is None else "%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_fmt(args[used], verb, flags, width and int(width), None if prec is None else int(prec or 0)))
            used += 1
    out.append(format[pos:])
    if extra := args[used:]:
        out.append("%!(EXTRA " + ", ".join("<nil>" if a is None else f"{_go_type(a)}={_fmt(a)}" for a in extra) + ")")
    return "".join(out)


def _sprint(*args) -> str:  # fmt.Sprint: a space between operands when neither is a string
    return "".join(" " * (i > 0 and not isinstance(a, str) and not isinstance(args[i - 1], str)) + _fmt(a)
                   for i, a in enumerate(args))


def _json(v) -> str:
    """encoding/json with SetEscapeHTML(false), as podman's json function encodes."""
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("json: unsupported value")
        if v and not 1e-6 <= abs(v) < 1e21:
            return re.sub(r"e-0(\d)\Z", r"e-\1", _shortest(v, "e"))
        return _shortest(v, "f")
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(_json, v)) + "]"
    if isinstance(v, dict):
        keys = _sorted_keys(v) if _is_map(v) else list(v)
        return "{" + ",".join(_json(str(k)) + ":" + _json(v[k]) for k in keys) + "}"
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    escaped = re.sub('[\x00-\x1f"\\\\\u2028\u2029]', lambda m: short.get(m[0]) or f"\\u{ord(m[0]):04x}", str(v))
    return '"' + escaped + '"'


# ---------------------------------------------------------------- functions
class _CallError(Exception):
    pass


_BASIC = {"bool", "int", "float64", "string"}


def _eq(a, *others):
    if not others:
        raise _CallError("missing argument for comparison")
    for b in others:
        kind_a, kind_b = (t if t in _BASIC else None for t in (_go_type(a), _go_type(b)))
        if kind_a != kind_b:
            if a is not None and b is not None:
                raise _CallError("incompatible types for comparison")
        elif kind_a or a is None or b is None or isinstance(b, dict) and not _is_map(b):
            if a == b:  # basic values, nil, structs
                return True
        else:
            raise _CallError(f"non-comparable type {_fmt(b, 's')}: {_go_type(b)}")
    return False


def _lt(a, b):
    ta, tb = _go_type(a), _go_type(b)
    if ta not in _BASIC or tb not in _BASIC:
        raise _CallError("invalid type for comparison")
    if ta != tb:
        raise _CallError("incompatible types for comparison")
    if ta == "bool":
        raise _CallError("invalid type for comparison")
    return a < b


def _index(item, *keys):
    for key in keys:
        if item is None or item is NO_VALUE:
            raise _CallError("index of untyped nil")
        if isinstance(item, dict):
            if isinstance(item, _HeaderMap) or key in item:
                item = item.get(key)
            elif item and all(isinstance(k, str) for k in item) and not isinstance(key, str):
                raise _CallError(f"value has type {_go_type(key)}; should be string")
            elif not item:  # a missing key gives the zero of the map's element type: labels are strings
                item = ""
            else:  # ...or guess it from the values
                kinds = {type(e) for e in item.values()}
                item = kinds.pop()() if len(kinds) == 1 and kinds <= {str, int, float, bool} else None
        elif isinstance(item, (list, tuple, str)):
            if _go_type(key) != "int":
                raise _CallError(f"cannot index slice/array with type {_go_type(key)}")
            seq = item.encode() if isinstance(item, str) else item  # Go indexes a string's bytes
            if not 0 <= key < len(seq):
                raise _CallError(f"index out of range: {key}")
            item = seq[key]
        else:
            raise _CallError(f"can't index item of type {_go_type(item)}")
    return item


def _slice(item, *idx):
    if item is None or item is NO_VALUE:
        raise _CallError("slice of untyped nil")
    if len(idx) > 3:
        raise _CallError(f"too many slice indexes: {len(idx)}")
    if not isinstance(item, (list, tuple, str)):
        raise _CallError(f"can't slice item of type {_go_type(item)}")
    if isinstance(item, str) and len(idx) == 3:
        raise _CallError("cannot 3-index slice a string")
    seq, bounds = item.encode() if isinstance(item, str) else item, list(idx[:2])
    for i in bounds:
        if _go_type(i) != "int":
            raise _CallError(f"cannot index slice/array with type {_go_type(i)}")
        if not 0 <= i <= len(seq):
            raise _CallError(f"index out of range: {i}")
    start, stop = (bounds + [len(seq)])[:2] if bounds else (0, len(seq))
    if start > stop:
        raise _CallError(f"invalid slice index: {start} > {stop}")
    return seq[start:stop].decode(errors="replace") if isinstance(item, str) else list(seq[start:stop])


def _len(v):
    if v is None or v is NO_VALUE:
        raise _CallError("len of nil pointer")
    if not isinstance(v, (str, list, tuple, dict)):
        raise _CallError(f"len of type {_go_type(v)}")
    return len(v.encode() if isinstance(v, str) else v)


def _escaper(table, other=lambda ch: ch):
    """html, js, urlquery: escape one string argument, or the printed arguments (nil as <no value>)."""
    def escape(*args):
        if len(args) == 1 and isinstance(args[0], str):
            text = args[0]
        else:
            text = _sprint(*(NO_VALUE if a is None else a for a in args))
        return "".join(table.get(ch) or other(ch) for ch in text)
    return escape


def _title(s):  # strings.Title: upper-case a letter that follows a separator
    return "".join(ch.upper() if (not (prev.isalnum() or prev == "_") if prev.isascii() else prev.isspace()) else ch
                   for prev, ch in zip(" " + s, s))


def _json_or_empty(v):
    try:
        return _json(v)
    except ValueError:
        return ""  # podman ignores the encoder's error


# name: (function, parameter types: a any, s string, i int, L []string; a final * repeats the last)
_FUNCS = {
    "and": (None, "aa*"), "or": (None, "aa*"), "not": (lambda a: not _truth(a), "a"),
    "len": (_len, "a"), "index": (_index, "aa*"), "slice": (_slice, "aa*"),
    "print": (_sprint, "a*"), "println": (lambda *a: " ".join(map(_fmt, a)) + "\n", "a*"), "printf": (_sprintf, "sa*"),
    "html": (_escaper({"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}), "a*"),
    "js": (_escaper({"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
                     "=": "\\u003D"}, lambda c: f"\\u{ord(c):04X}" if c < " " or not c.isprintable() else c), "a*"),
    "urlquery": (_escaper({" ": "+"}, lambda c: c if c.isascii() and (c.isalnum() or c in "-_.~") else
                          "".join(f"%{b:02X}" for b in c.encode())), "a*"),
    "eq": (_eq, "aa*"), "ne": (lambda a, b: not _eq(a, b), "aa"), "lt": (_lt, "aa"),
    "le": (lambda a, b: _lt(a, b) or _eq(a, b), "aa"), "gt": (lambda a, b: not (_lt(a, b) or _eq(a, b)), "aa"),
    "ge": (lambda a, b: not _lt(a, b), "aa"),
    # containers/common v0.50.1 pkg/report's DefaultFuncs
    "join": (lambda items, sep: sep.join(items), "Ls"), "json": (_json_or_empty, "a"),
    "lower": (str.lower, "s"), "upper": (str.upper, "s"), "title": (_title, "s"),
    "split": (lambda s, sep: s.split(sep) if sep else list(s), "ss"),
    "truncate": (lambda s, n: s if len(s.encode()) < n else s.encode()[:n].decode(errors="replace"), "si"),
    "pad": (lambda s, before, after: s and " " * before + s + " " * after, "sii"),
}
_TYPE_NAMES = {"s": "string", "i": "int", "L": "[]string"}


# ---------------------------------------------------------------- execution
class _LoopExit(Exception):  # {{break}} (is_break) or {{continue}}
    def __init__(self, is_break):
        self.is_break = is_break


class _Exec:
    def __init__(self, template: Template, data):
        self.t, self.vars, self.out, self.node = template, [["$", data]], [], None

    def error(self, msg):
        before = self.t.text[:self.node.pos]
        where = f"{self.t.name}:{before.count(chr(10)) + 1}:{len(before[before.rfind(chr(10)) + 1:].encode())}"
        raise TemplateError(f'template: {where}: executing "{self.t.name}" at <{self.node}>: {msg}', "".join(self.out))

    def walk(self, dot, nodes):
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif node.kind == "action":
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decls:
                    self.out.append("<no value>" if value is NO_VALUE else _fmt(value))
            elif node.kind in ("break", "continue"):
                raise _LoopExit(node.kind == "break")
            else:
                mark = len(self.vars)
                value = self.pipeline(dot, node.pipe)
                if node.kind == "range":
                    self.range(dot, node, value)
                elif _truth(value):
                    self.walk(value if node.kind == "with" else dot, node.body)
                elif node.else_body:
                    self.walk(dot, node.else_body)
                del self.vars[mark:]

    def range(self, dot, node, value):
        if isinstance(value, dict) and _is_map(value):
            items = [(k, value[k]) for k in _sorted_keys(value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif value is None or value is NO_VALUE:
            items = []
        else:
            self.error(f"range can't iterate over {_fmt(value)}")
        mark = len(self.vars)
        for key, elem in items:
            if node.pipe.decls:  # one variable gets the element; two get key and element
                self.vars[-1][1] = elem
                if len(node.pipe.decls) > 1:
                    self.vars[-2][1] = key
            try:
                self.walk(elem, node.body)
            except _LoopExit as loop:
                if loop.is_break:
                    break
            finally:
                del self.vars[mark:]
        if not items and node.else_body:
            self.walk(dot, node.else_body)

    def pipeline(self, dot, pipe):
        self.node, value = pipe, _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decls:
            if not pipe.is_assign:
                self.vars.append([name, value])
            elif not (found := [v for v in self.vars if v[0] == name]):
                self.error(f"undefined variable: {name}")
            else:
                found[-1][1] = value
        return value

    def command(self, dot, cmd, final):
        first = cmd.args[0]
        bare_variable = first.kind == "field" and len(first.names) == 1 and first.names[0][0] == "$"
        if first.kind == "func":
            return self.call(dot, first, cmd, final)
        if first.kind in ("field", "chain") and not bare_variable:
            return self.chain(dot, first, len(cmd.args) > 1 or final is not _MISSING)
        if first.kind != "pipe":
            self.node = first
        if len(cmd.args) > 1 or final is not _MISSING:
            self.error(f"can't give argument to non-function {first}")
        if first.kind == "nil":
            self.error("nil is not a command")
        if first.kind == "pipe":
            return self.pipeline(dot, first)
        if first.kind == "field":  # a bare $variable
            return self.variable(first.names[0])
        return dot if first.kind == "dot" else first.value

    def chain(self, dot, node, has_args):
        """.A.B, $x.A.B or (pipeline).A.B; only a last field could take arguments (Go methods)."""
        self.node, names = node, node.names
        if node.kind == "chain":
            if node.node.kind == "nil":
                self.error(f"indirection through explicit nil in {node}")
            receiver = self.arg(dot, node.node)
        elif names[0][0] == "$":
            receiver, names = self.variable(names[0]), names[1:]
        else:
            receiver = dot
        for i, name in enumerate(names):
            receiver = self.field(receiver, name, has_args and i == len(names) - 1)
        return receiver

    def variable(self, name):
        return next(v[1] for v in reversed(self.vars) if v[0] == name)

    def field(self, receiver, name, has_args):
        if receiver is None or receiver is NO_VALUE:
            return NO_VALUE  # (Go: nil pointer evaluating...) JSON-shaped data has nulls for structs
        if isinstance(receiver, dict) and _is_map(receiver):
            if has_args:
                self.error(f"{name} is not a method but has arguments")
            return receiver.get(name, NO_VALUE)
        if isinstance(receiver, dict) and name in receiver:
            if has_args:
                self.error(f"{name} has arguments but cannot be invoked as function")
            return receiver[name]
        self.error(f"can't evaluate field {name} in type {_go_type(receiver)}")

    def call(self, dot, func, cmd, final):
        self.node, name = func, func.text
        function, sig = _FUNCS[name]
        args, types = cmd.args[1:], sig.rstrip("*")
        given = len(args) + (final is not _MISSING)
        if sig.endswith("*") and given < len(types) - 1:
            self.error(f"wrong number of args for {name}: want at least {len(types) - 1} got {len(args)}")
        if not sig.endswith("*") and given != len(types):
            self.error(f"wrong number of args for {name}: want {len(types)} got {given}")
        types = [types[min(i, len(types) - 1)] for i in range(given)]
        if function is None:  # and, or: stop at the first argument that decides
            for node in args:
                if _truth(value := self.arg(dot, node)) == (name == "or"):
                    return value
            return self.checked(final, "a") if final is not _MISSING else value
        values = [self.arg(dot, node, typ) for node, typ in zip(args, types)]
        if final is not _MISSING:  # a pipeline's value is the last argument
            values.append(self.checked(final, types[-1]))
        try:
            return function(*values)
        except _CallError as e:
            self.node = cmd
            self.error(f"error calling {name}: {e}")

    def arg(self, dot, node, typ="a"):
        """A function's argument, checked against the Go parameter type."""
        self.node = node
        if node.kind in ("field", "chain"):
            return self.checked(self.chain(dot, node, False), typ)
        if node.kind in ("pipe", "func", "dot"):
            value = self.pipeline(dot, node) if node.kind == "pipe" else dot if node.kind == "dot" else \
                self.call(dot, node, _Node("cmd", node.pos, args=[node]), _MISSING)
            return self.checked(value, typ)
        if node.kind == "nil":
            if typ != "a":
                self.error(f"cannot assign nil to {_TYPE_NAMES[typ]}")
            return None
        value = node.value
        if typ == "s" and not isinstance(value, str):
            self.error(f"expected string; found {node}")
        if typ == "i" and (_go_type(value) != "int" and not (isinstance(value, float) and value.is_integer())):
            self.error(f"expected integer; found {node}")
        if typ == "L":
            self.error(f"can't handle {node} for arg of type []string")
        return int(value) if typ == "i" else value

    def checked(self, value, typ):
        if typ == "a":
            return None if value is NO_VALUE else value
        if value is None or value is NO_VALUE:
            self.error(f"invalid value; expected {_TYPE_NAMES[typ]}")
        if _go_type(value) != _TYPE_NAMES[typ] and not (typ == "L" and value == []):
            self.error(f"wrong type for value; expected {_TYPE_NAMES[typ]}; got {_go_type(value)}")
        return value


class Template:
    """A parsed template; execute(data) renders it with data as dot and $."""

    def __init__(self, text: str, name: str):
        self.text, self.name = text, name
        self.nodes = _Parser(text, name).parse()

    def execute(self, data) -> str:
        state = _Exec(self, data)
        state.walk(data, self.nodes)
        return "".join(state.out)


def parse(text: str, name: str = "format") -> Template:
    return Template(text, name)


# ---------------------------------------------------------------- podman's report package
def is_json(format: str) -> bool:
    """report.IsJSON: podman prints JSON instead for "json", "{{json .}}" or "{{ json }}"."""
    return bool(re.match(r"\s*(json|\{\{\s*json\s*(\.)?\s*\}\})\s*\Z", format))


def normalize(format: str) -> tuple[str, bool]:
    """report.NormalizeFormat: (template text, is_table). Only a "table " prefix makes a table,
    and then every "table " and space in the format becomes a tab (quoted ones too). Typed \\t
    and \\n become tab and newline; the text ends with a newline."""
    is_table = format.startswith("table ")
    subs = {"table ": "", " ": "\t", "\\t": "\t", "\\n": "\n"}
    text = re.sub(r"table |\\t| |\\n" if is_table else r"\\t|\\n", lambda m: subs[m[0]], format)
    return (text if text.endswith("\n") else text + "\n"), is_table


def header(field: str, overrides: dict | None = None):
    """A table column's header: the command's override upper-cased (None: <no value>), else the
    field name's CamelCase words upper-cased: CreatedAt CREATED AT, ImageID IMAGE ID, ID ID."""
    if overrides and field in overrides:
        return NO_VALUE if overrides[field] is None else overrides[field].upper()
    runs, last = [], None
    for ch in field:  # split where the kind of character changes...
        kind = 1 if ch.islower() else 2 if ch.isupper() else 3 if ch.isdecimal() else 4
        if kind == last:
            runs[-1].append(ch)
        else:
            runs.append([ch])
        last = kind
    for i in range(len(runs) - 1):  # ...and give a capital to the lower-case run after it: "IDName"
        if runs[i][0].isupper() and runs[i + 1][0].islower():
            runs[i + 1].insert(0, runs[i].pop())
    return " ".join("".join(r) for r in runs if r).upper()


class _HeaderMap(GoMap):
    """The row a table's header line is rendered from: any field name maps to its header."""

    def __init__(self, fields, overrides):
        super().__init__((f, header(f, overrides)) for f in fields)
        self.overrides = overrides

    def get(self, key, default=None):
        return header(key, self.overrides) if isinstance(key, str) else default


def tabwrite(text: str, minwidth: int = 12, padding: int = 2) -> str:
    """Go's text/tabwriter as podman sets it up (minwidth 12, tabwidth 2, padding 2, padchar ' ',
    no flags): each tab-ended cell is padded to its column's widest cell + 2, at least 12; a
    column is a run of adjacent lines that have a cell there, and a line's last cell is in none."""
    lines = [ln.split("\t") for ln in text.split("\n")]
    if lines[-1][-1] == "":  # at Flush an empty unfinished cell is no cell
        lines[-1].pop()
    widths = [[] for _ in lines]

    def layout(lo, hi, col):
        i = lo
        while i < hi:
            if len(lines[i]) - 1 <= col:
                i += 1
                continue
            j, width = i, minwidth
            while j < hi and len(lines[j]) - 1 > col:
                width, j = max(width, len(lines[j][col]) + padding), j + 1
            for k in range(i, j):
                widths[k].append(width)
            layout(i, j, col + 1)
            i = j

    layout(0, len(lines), 0)
    return "\n".join("".join(c.ljust(w) for c, w in zip(cells, ws)) + (cells[-1] if cells else "")
                     for cells, ws in zip(lines, widths))


def render_rows(format: str, rows: list, headers: dict[str, str | None] | None = None, *,
                noheading: bool = False, name: str = "format") -> str:
    """A listing command's output for --format, as podman's report.Formatter (OriginUser) makes it.

    The template runs once on the list of rows, inside {{range .}} unless it has its own range.
    A "table " format gets a header line (unless noheading), rendered from a map of field name to
    header(field, headers), and its columns aligned by tabwrite(). If the normalized text does not
    parse, podman parses the format as given (so '{{"\\n"}}' works) and reports that one's error.
    name is podman's command name in messages: ps, images, ls (volume ls, network ls), inspect."""
    text, is_table = normalize(format)

    def wrapped(t):
        return "{{range .}}" + t + "{{end -}}" if is_table or not re.search(_HAS_RANGE, t, re.S) else t

    try:
        template = parse(wrapped(text), name)
    except TemplateError:
        template = parse(wrapped(format), name)
    out = []
    try:
        if is_table and not noheading:
            fields = sorted({k for row in rows if isinstance(row, dict) for k in row})
            out.append(template.execute([_HeaderMap(fields, headers)]))
        out.append(template.execute(list(rows)))
    except TemplateError as e:
        e.output = tabwrite("".join(out) + e.output) if is_table else "".join(out) + e.output
        raise
    return tabwrite("".join(out)) if is_table else "".join(out)

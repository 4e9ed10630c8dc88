"""The `.hal` text format: print a Graph, parse one back, load and save files.

    # a comment runs to the end of the line
    graph mlp {
      input %x: f32[B, 768]
      const %w: bf16[768, 3072] = random(dist="normal", scale=0.02, seed=1)
      const %b: f32[3] = inline(values=[1.0, 2.0, 3.0])
      %h: f32[B, 3072] = matmul(%x, %w)
      %m: f32[4], %i: i32[4] = some_multi_output(%h, axis=1)
      %y: f32[B] = cast(%h2, dtype=f32)
      output %y, %i
    }

Grammar (whitespace and newlines are insignificant; statements delimit
themselves):

    file      := 'graph' (IDENT | STRING) '{' stmt* '}'
    stmt      := 'input' VALUE ':' type
               | 'const' VALUE ':' type '=' IDENT '(' [param (',' param)*] ')'
               | result (',' result)* '=' IDENT '(' [arg (',' arg)*] ')'
               | 'output' VALUE (',' VALUE)*
    result    := VALUE [':' type]          (a missing type is inferred)
    type      := DTYPE '[' [dim (',' dim)*] ']'       f32[], bf16[B, 768]
    dim       := INT | IDENT | STRING                   symbolic dims are names
    arg       := VALUE | param                          operands come first
    param     := (IDENT | STRING) '=' attr
    attr      := INT | FLOAT | 'true' | 'false' | 'none' | STRING | DTYPE
               | '[' [attr (',' attr)*] ']'             (a tuple)

VALUE is '%' followed by letters, digits, '_' and '.' (not starting with '.').
Floats print with `repr`, so they round-trip exactly; `inf`, `-inf`, `nan`
and `-0.0` are spelled so. Strings use double quotes with the escapes
\\\\ \\" \\n \\t \\r \\xHH \\uHHHH \\UHHHHHHHH. Names that are not identifiers
(graph names, symbolic dims, attribute keys) print as strings.

The parser is hand-written with line/column tracking; every problem raises
`hal.errors.ParseError` with the file, line and column, what was found and what
was expected. Each node is checked as it is parsed (arity, attribute kinds,
shape rule, declared types), so errors point at the token at fault; the
finished graph is then verified and each node's `loc` is "file:line".
"""

from __future__ import annotations

import difflib
import math
import os
from typing import Any

from hal.dtypes import DTYPES, DType
from hal.errors import HalError, ParseError
from hal.ir.graph import Constant, Graph, Initializer, Node, Value
from hal.ir.text_lexer import Lexer, Token, is_ident, quote
from hal.ir.types import TensorType

_KEYWORDS = ("graph", "input", "const", "output")
_MAX_DEPTH = 64  # nesting of attribute tuples


# ---------------------------------------------------------------- printing

def _name(s: str) -> str:
    return s if is_ident(s) else quote(s)


def _format_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return float.__repr__(v)  # NumPy 2 scalars repr as np.float64(...)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_format_attr(x) for x in v) + "]"
    if hasattr(v, "item") and callable(v.item):  # NumPy scalars
        return _format_attr(v.item())
    raise HalError(f"cannot print attribute value {v!r} of type {type(v).__name__}",
                   hint="attribute values are ints, floats, bools, strings, dtypes, none "
                        "or tuples of these")


def format_type(t: TensorType) -> str:
    """`f32[B, 768]`; non-identifier symbolic dims are quoted."""
    dims = ", ".join(str(int(d)) if isinstance(d, int) else _name(str(d)) for d in t.shape)
    return f"{t.dtype.name}[{dims}]"


def _params(items) -> str:
    return ", ".join(f"{_name(k)}={_format_attr(v)}" for k, v in items)


def print_graph(graph: Graph) -> str:
    """The `.hal` text of `graph`: inputs, constants, nodes, outputs; each result typed."""
    lines = [f"graph {_name(graph.name)} {{"]
    for v in graph.inputs:
        lines.append(f"  input %{v.name}: {format_type(v.type)}")
    for c in graph.constants:
        params = _params(sorted(c.init.params, key=lambda kv: kv[0]))
        lines.append(f"  const %{c.value.name}: {format_type(c.value.type)} = "
                     f"{_name(c.init.kind)}({params})")
    for n in graph.nodes:
        outs = ", ".join(f"%{o.name}: {format_type(o.type)}" for o in n.outputs)
        args = [f"%{v.name}" for v in n.inputs]
        if n.attrs:
            args.append(_params(n.attrs.items()))
        lines.append(f"  {outs} = {n.op}({', '.join(args)})")
    if graph.outputs:
        lines.append("  output " + ", ".join(f"%{v.name}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write `graph` to `path` as `.hal` text."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(print_graph(graph))


# ------------------------------------------------------------------ parser

def _suggest(word: str, choices) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]}?" if close else None


class _Parser:
    def __init__(self, text: str, file: str):
        self.file = file
        self.toks = Lexer(text, file).tokens()
        self.pos = 0
        self.values: dict[str, tuple[Value, int, int]] = {}  # name -> value, line, col

    # -- token helpers -------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.pos]

    def next(self) -> Token:
        t = self.toks[self.pos]
        if t.kind != "eof":
            self.pos += 1
        return t

    def error(self, msg: str, tok: Token | None = None, *, expected: str | None = None,
              found: str | None = None, hint: str | None = None) -> ParseError:
        tok = tok or self.tok
        return ParseError(msg, file=self.file, line=tok.line, column=tok.col,
                          expected=expected, found=found if found is not None else tok.describe(),
                          hint=hint)

    def is_punct(self, p: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == p

    def expect_punct(self, p: str, what: str | None = None) -> Token:
        if not self.is_punct(p):
            raise self.error(f"expected '{p}'" + (f" {what}" if what else ""), expected=f"'{p}'")
        return self.next()

    def name_token(self, what: str) -> tuple[str, Token]:
        t = self.tok
        if t.kind in ("ident", "string"):
            self.next()
            return (t.value if t.kind == "string" else t.text), t
        raise self.error(f"expected {what}", expected=what)

    # -- grammar -------------------------------------------------------
    def parse(self) -> Graph:
        t = self.tok
        if not (t.kind == "ident" and t.text == "graph"):
            raise self.error("a .hal file starts with 'graph NAME {'", expected="'graph'")
        self.next()
        name, _ = self.name_token("a graph name")
        graph = Graph(name)
        self.expect_punct("{", "to open the graph body")
        node_lines: dict[int, Token] = {}
        while not self.is_punct("}"):
            t = self.tok
            if t.kind == "eof":
                raise self.error("missing '}' at the end of the graph", expected="'}'")
            if t.kind == "ident" and t.text == "input":
                self.next()
                v, _ = self.define(self.parse_result(required=True))
                graph.inputs.append(v)
            elif t.kind == "ident" and t.text == "const":
                self.next()
                graph.constants.append(self.parse_const())
            elif t.kind == "ident" and t.text == "output":
                self.next()
                graph.outputs.append(self.use())
                while self.is_punct(","):
                    self.next()
                    graph.outputs.append(self.use())
            elif t.kind == "value":
                node = self.parse_node()
                node_lines[id(node)] = t
                graph.nodes.append(node)
            else:
                hint = _suggest(t.text, _KEYWORDS) if t.kind == "ident" else None
                raise self.error("expected a statement",
                                 expected="'input', 'const', 'output', '%name = op(...)' or '}'",
                                 hint=hint)
        close = self.next()
        if self.tok.kind != "eof":
            raise self.error("unexpected text after the graph's closing '}'",
                             expected="end of file")
        if not graph.outputs:
            raise self.error(f"graph {graph.name} has no outputs", close,
                             expected="an 'output %name' line before '}'")
        self.verify(graph, node_lines)
        return graph

    def verify(self, graph: Graph, node_lines: dict[int, Token]) -> None:
        """Backstop: the node-by-node checks should already have caught everything."""
        try:
            graph.verify()
        except HalError as e:
            tok = self.toks[0]
            for n in graph.nodes:
                if n.loc and f"at {n.loc})" in e.message:
                    tok = node_lines.get(id(n), tok)
                    break
            raise ParseError(e.message, file=self.file, line=tok.line, column=tok.col,
                             hint=e.hint) from None

    def define(self, item: tuple[Token, TensorType | None, Token | None]) -> tuple[Value, Token]:
        tok, typ, _ = item
        if tok.text in self.values:
            _, line, col = self.values[tok.text]
            raise self.error(f"value %{tok.text} is defined twice (first at line {line}, "
                             f"column {col})", tok, expected="a new name",
                             hint="rename one of the definitions")
        assert typ is not None
        v = Value(tok.text, typ)
        self.values[tok.text] = (v, tok.line, tok.col)
        return v, tok

    def use(self) -> Value:
        t = self.tok
        if t.kind != "value":
            raise self.error("expected a value", expected="'%name'")
        self.next()
        if t.text not in self.values:
            raise self.error(f"undefined value %{t.text}", t, expected="a value defined above",
                             hint=_suggest(t.text, self.values))
        return self.values[t.text][0]

    def parse_result(self, required: bool) -> tuple[Token, TensorType | None, Token | None]:
        t = self.tok
        if t.kind != "value":
            raise self.error("expected a value name", expected="'%name'")
        self.next()
        if not self.is_punct(":"):
            if required:
                raise self.error(f"%{t.text} needs a type", expected="':' and a type like f32[4]")
            return t, None, None
        self.next()
        ttok = self.tok
        return t, self.parse_type(), ttok

    def parse_type(self) -> TensorType:
        t = self.tok
        if t.kind != "ident" or t.text not in DTYPES:
            hint = _suggest(t.text, DTYPES) if t.kind == "ident" else None
            raise self.error(f"unknown dtype {t.describe()}" if t.kind == "ident"
                             else "expected a dtype", expected="a dtype (" + ", ".join(DTYPES) + ")",
                             hint=hint)
        self.next()
        self.expect_punct("[", "to start the shape")
        dims: list[int | str] = []
        while not self.is_punct("]"):
            if dims:
                self.expect_punct(",", "between dimensions")
                if self.is_punct("]"):
                    break
            d = self.tok
            if d.kind == "int":
                dims.append(d.value)
            elif d.kind in ("ident", "string"):
                dims.append(d.value if d.kind == "string" else d.text)
            elif d.kind == "punct" and d.text == "-" and self.toks[self.pos + 1].kind == "int":
                raise self.error("negative dimension", d, expected="a size >= 0")
            else:
                raise self.error("expected a dimension", expected="an integer or a symbolic name")
            self.next()
        self.next()
        return TensorType(DTYPES[t.text], tuple(dims))

    def parse_params(self, what: str) -> list[tuple[str, Any, Token]]:
        """`k=v, ...` up to and including ')'; `(` already consumed."""
        out: list[tuple[str, Any, Token]] = []
        while not self.is_punct(")"):
            if out:
                self.expect_punct(",", f"between {what}")
                if self.is_punct(")"):
                    break
            key, ktok = self.name_token(f"a {what[:-1]} name")
            if any(k == key for k, _, _ in out):
                raise self.error(f"{what[:-1]} '{key}' is given twice", ktok)
            self.expect_punct("=", f"after '{key}'")
            out.append((key, self.parse_attr(0), ktok))
        self.next()
        return out

    def parse_attr(self, depth: int) -> Any:
        t = self.tok
        if t.kind in ("int", "float", "string"):
            self.next()
            return t.value
        if t.kind == "punct" and t.text == "-":
            self.next()
            n = self.tok
            if n.kind in ("int", "float"):
                self.next()
                return -n.value
            if n.kind == "ident" and n.text in ("inf", "nan"):
                self.next()
                return -math.inf if n.text == "inf" else math.nan
            raise self.error("expected a number after '-'", expected="a number")
        if t.kind == "ident":
            const = {"true": True, "false": False, "none": None, "inf": math.inf,
                     "nan": math.nan}
            if t.text in const:
                self.next()
                return const[t.text]
            if t.text in DTYPES:
                self.next()
                return DTYPES[t.text]
            raise self.error(f"unknown name '{t.text}' in an attribute value",
                             expected="a number, string, dtype, true, false, none or [...]",
                             hint=_suggest(t.text, list(DTYPES) + ["true", "false", "none"])
                             or "quote strings")
        if t.kind == "punct" and t.text == "[":
            if depth >= _MAX_DEPTH:
                raise self.error("attribute nested too deeply", expected=f"at most {_MAX_DEPTH} "
                                 "levels of [...]")
            self.next()
            items: list[Any] = []
            while not self.is_punct("]"):
                if items:
                    self.expect_punct(",", "between list items")
                    if self.is_punct("]"):
                        break
                items.append(self.parse_attr(depth + 1))
            self.next()
            return tuple(items)
        raise self.error("expected an attribute value",
                         expected="a number, string, dtype, true, false, none or [...]")

    def parse_const(self) -> Constant:
        item = self.parse_result(required=True)
        self.expect_punct("=", "before the initializer")
        kind, ktok = self.name_token("an initializer kind")
        self.expect_punct("(", f"after '{kind}'")
        params = self.parse_params("parameters")
        from hal.ir.initializers import INITIALIZERS

        spec = INITIALIZERS.get(kind)
        if spec is None:
            raise self.error(f"unknown initializer kind '{kind}'", ktok,
                             expected="one of " + ", ".join(INITIALIZERS),
                             hint=_suggest(kind, INITIALIZERS))
        allowed = spec.required + spec.optional
        for key, _, ptok in params:
            if key not in allowed:
                raise self.error(f"{kind}: unknown parameter '{key}'", ptok,
                                 expected="one of " + ", ".join(allowed),
                                 hint=_suggest(key, allowed))
        for key in spec.required:
            if key not in [k for k, _, _ in params]:
                raise self.error(f"{kind}: missing parameter '{key}'", ktok, found=None,
                                 hint=spec.doc or None)
        init = Initializer(kind, tuple(sorted((k, v) for k, v, _ in params)))
        v, _ = self.define(item)
        return Constant(v, init)

    def parse_node(self) -> Node:
        from hal.ops import get_op

        results = [self.parse_result(required=False)]
        while self.is_punct(","):
            self.next()
            results.append(self.parse_result(required=False))
        self.expect_punct("=", "between the results and the op")
        optok = self.tok
        if optok.kind != "ident":
            raise self.error("expected an op name", expected="an op name")
        self.next()
        try:
            opdef = get_op(optok.text)
        except HalError as e:
            raise self.error(f"unknown op '{optok.text}'", optok, expected="an op name",
                             hint=e.hint) from None
        self.expect_punct("(", f"after '{optok.text}'")
        inputs: list[Value] = []
        operands_only = False
        while self.tok.kind == "value":
            inputs.append(self.use())
            if not self.is_punct(","):
                operands_only = True
                break
            self.next()
        params: list[tuple[str, Any, Token]] = []
        if operands_only:
            self.expect_punct(")", "to close the operand list")
        else:
            params = self.parse_params("attributes")
        try:
            opdef.check_arity(len(inputs))
        except HalError as e:
            raise self.error(f"wrong number of operands: {e.message}", optok,
                             found=f"{len(inputs)} operand(s)",
                             expected=", ".join(opdef.inputs) or "no operands") from None
        raw = {}
        for key, val, ktok in params:
            _check_attr_kind(self, opdef, key, val, ktok)
            raw[key] = val
        try:
            attrs = opdef.check_attrs(raw)
            types = opdef.infer([v.type for v in inputs], attrs)
        except HalError as e:
            raise self.error(e.message, optok, found=None, hint=e.hint) from None
        except Exception as e:  # a bug in the op's rule: say so, keep the cause chained
            raise self.error(f"internal error in the shape rule of op '{optok.text}': "
                             f"{type(e).__name__}: {e}", optok, found=None,
                             hint="this is a bug in hal; please report it with this line") from e
        if len(types) != len(results):
            raise self.error(f"{optok.text} produces {len(types)} result(s), "
                             f"{len(results)} declared", results[0][0], found=None,
                             expected=f"{len(types)} result name(s)")
        outs = []
        for (rtok, declared, ttok), inferred in zip(results, types, strict=True):
            if declared is not None and declared != inferred:
                raise self.error(f"type mismatch: %{rtok.text} is declared {declared} but "
                                 f"{optok.text} gives {inferred}", ttok,
                                 expected=str(inferred), found=str(declared),
                                 hint=f"declare %{rtok.text}: {format_type(inferred)}")
            outs.append(self.define((rtok, inferred, ttok))[0])
        return Node(optok.text, inputs, outs, attrs, loc=f"{self.file}:{results[0][0].line}")


_KIND_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dtype": lambda v: isinstance(v, (DType, str)),
    "ints": lambda v: all(isinstance(x, int) and not isinstance(x, bool)
                          for x in (v if isinstance(v, tuple) else (v,))),
    "floats": lambda v: all(isinstance(x, (int, float)) and not isinstance(x, bool)
                            for x in (v if isinstance(v, tuple) else (v,))),
}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "dtype": "a dtype", "ints": "a list of integers",
               "floats": "a list of numbers"}


def _check_attr_kind(p: _Parser, opdef, key: str, val: Any, ktok: Token) -> None:
    spec = next((a for a in opdef.attrs if a.name == key), None)
    if spec is None or spec.kind not in _KIND_CHECKS:
        return  # unknown keys are reported by check_attrs; "any" takes anything
    if val is None and spec.default is None:
        return
    if not _KIND_CHECKS[spec.kind](val):
        raise p.error(f"{opdef.name}: attribute '{key}' must be {_KIND_WORDS[spec.kind]}", ktok,
                      expected=_KIND_WORDS[spec.kind], found=_format_attr(val)[:40])


def parse_graph(text: str, file: str = "<string>") -> Graph:
    """Parse `.hal` text into a verified Graph; any problem raises ParseError."""
    return _Parser(text, file).parse()


def load_graph(path: str | os.PathLike) -> Graph:
    """Read a `.hal` file; relative npz paths in it resolve against its folder."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read the file: {e}", file=path, line=0, column=0) from None
    graph = parse_graph(text, file=path)
    graph.base_dir = os.path.dirname(os.path.abspath(path))
    return graph

"""Malformed .hal text: parse_graph returns a Graph or raises ParseError, never anything else;
and the common mistakes give messages that point at the right line and column."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.errors import ParseError
from hal.ir import Graph
from hal.ir.text import parse_graph

BASE = """\
# a small model
graph mlp {
  input %x: f32[B, 8]
  input %k: i32[4]
  const %w: f32[8, 8] = random(dist="normal", scale=0.02, seed=1)
  const %b: f32[4] = inline(values=[1.0, -2, 3.5, nan])
  const %e: f32[8] = iota(start=0, step=0.5)
  %h: f32[B, 8] = exp(%x)
  %c: bf16[B, 8] = cast(%h, dtype=bf16)
  %s: f32[B, 8] = add(%h, %h)
  %p: bool[4] = lt(%k, %k)
  %q: i32[4] = select(%p, %k, %k)
  output %c, %s, %q
}
"""

# other op families (each registered by its own module); the fuzzer reaches their shape rules
MORE = """\
graph more {
  input %x: f32[4, 8]
  input %i: i32[3]
  %t: f32[8, 4] = transpose(%x, perm=[1, 0])
  %r: f32[32] = reshape(%x, shape=[32])
  %m: f32[4, 4] = matmul(%x, %t)
  %d: f32[4] = reduce_sum(%x, axes=[1], keepdims=false)
  %a: i32[4] = argmax(%x, axis=1)
  %g: f32[3, 8] = gather(%x, %i, axis=0)
  %c: f32[8, 8] = concat(%x, %x, axis=0)
  %sl: f32[2, 8] = slice(%x, starts=[0], stops=[2], steps=[1], axes=[0])
  %cs: f32[4, 8] = cumsum(%x, axis=1)
  %io: i32[5] = iota(shape=[5], dimension=0, dtype=i32)
  %f: f32[2, 2] = full(shape=[2, 2], value=1.5, dtype=f32)
  %bt: f32[2, 4, 8] = broadcast_to(%x, shape=[2, 4, 8])
  output %t, %r, %m, %d, %a, %g, %c, %sl, %cs, %io, %f, %bt
}
"""

TOKENS = ["%", "%x", "%h", "%zz", "[", "]", "(", ")", "{", "}", ",", ":", "=", "-", '"', "\\",
          "#", "\n", " ", "1e5", "-1", "0", "99999999999999999999", "1.5", "nan", "inf", "true",
          "none", "input", "const", "output", "graph", "f32", "bf16", "i32", "B", "dtype=",
          "values=[", "axis=", "perm=[", "shape=[", "\\u12", "\\U0011ffff", "é", "\x00",
          "[" * 80, "add", "exp", "cast", "reduce_sum", "matmul", "transpose", "concat",
          "slice", "gather", "iota", "full", "select", ".", "%.a", "1.", ".5", "1e", "e5"]


def _tokens(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        if ch.isalnum() or ch in "_%.":
            cur += ch
        else:
            if cur:
                out.append(cur)
            out.append(ch)
            cur = ""
    return out + ([cur] if cur else [])


@st.composite
def mutated(draw):
    text = draw(st.sampled_from([BASE, MORE]))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 7))
        n = len(text)
        i = draw(st.integers(0, n))
        if kind == 0:  # delete characters
            text = text[:i] + text[i + draw(st.integers(1, 5)):]
        elif kind == 1:  # insert characters
            text = text[:i] + draw(st.text(max_size=4)) + text[i:]
        elif kind == 2:  # insert a token
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == 3:  # truncate
            text = text[:i]
        elif kind == 4 or kind == 5:  # swap / duplicate / drop lines
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if kind == 4:
                lines[a], lines[b] = lines[b], lines[a]
            else:
                lines.insert(a, lines[b]) if draw(st.booleans()) else lines.pop(a)
            text = "\n".join(lines)
        else:  # replace a token with another token
            toks = _tokens(text) or [""]
            j = draw(st.integers(0, len(toks) - 1))
            toks[j] = draw(st.sampled_from(TOKENS + toks)) if kind == 6 else ""
            text = "".join(toks)
    return text


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_text_parses_or_raises_parse_error(text):
    try:
        g = parse_graph(text, "fuzz.hal")
    except ParseError as e:
        assert e.file == "fuzz.hal" and e.line >= 1 and e.column >= 1
        assert str(e).startswith(f"fuzz.hal:{e.line}:{e.column}: ")
        return
    assert isinstance(g, Graph)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_parse_error(text):
    with pytest.raises(ParseError):
        parse_graph(text)


def test_base_texts_parse():
    assert len(parse_graph(BASE).nodes) == 5
    assert len(parse_graph(MORE).outputs) == 12


def _err(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_graph(text, "model.hal")
    return info.value


def _edit(line_no: int, old: str, new: str) -> str:
    lines = BASE.split("\n")
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    return "\n".join(lines)


def test_unknown_op():
    e = _err(_edit(8, "exp(", "exq("))
    assert (e.line, e.column) == (8, 19)
    assert str(e).startswith("model.hal:8:19: unknown op 'exq'; expected an op name; found 'exq'")
    assert "did you mean" in str(e) and "exp" in str(e)


def test_unknown_op_softmax_typo():
    e = _err("graph g {\n  input %x: f32[4]\n  %y: f32[4] = sofmax(%x)\n  output %y\n}\n")
    assert (e.line, e.column) == (3, 16) and "unknown op 'sofmax'" in str(e)


def test_bad_dtype():
    e = _err(_edit(3, "f32", "f31"))
    assert (e.line, e.column) == (3, 13)
    assert "unknown dtype 'f31'" in str(e) and "did you mean f32?" in str(e)
    e = _err(_edit(9, "dtype=bf16", "dtype=bf61"))
    assert (e.line, e.column) == (9, 35) and "'bf61'" in str(e)


def test_undefined_value():
    e = _err(_edit(10, "add(%h, %h)", "add(%h, %hh)"))
    assert (e.line, e.column) == (10, 27)
    assert "undefined value %hh" in str(e) and "did you mean h?" in str(e)


def test_duplicate_name():
    e = _err(_edit(10, "%s:", "%h:"))
    assert (e.line, e.column) == (10, 3)
    assert "value %h is defined twice (first at line 8, column 3)" in str(e)


def test_wrong_arity():
    e = _err(_edit(10, "add(%h, %h)", "add(%h)"))
    assert (e.line, e.column) == (10, 19)
    assert "wrong number of operands" in str(e) and "got 1" in str(e)


def test_type_mismatch():
    e = _err(_edit(10, "%s: f32[B, 8]", "%s: f32[B, 9]"))
    assert (e.line, e.column) == (10, 7)
    assert "type mismatch: %s is declared f32[B, 9] but add gives f32[B, 8]" in str(e)
    e = _err(_edit(10, "add(%h, %h)", "add(%h, %x2)").replace(
        "  input %k", "  input %x2: f16[B, 8]\n  input %k"))
    assert e.line == 11 and "operand 1 is f16" in str(e)


def test_missing_closing_brace():
    e = _err(BASE.rstrip().rstrip("}"))
    assert (e.line, e.column) == (14, 1) and "missing '}'" in str(e)


@pytest.mark.parametrize("text,line,col,fragment", [
    ("", 1, 1, "starts with 'graph NAME {'"),
    ("graph g {\n  input %x: f32[4]\n}\n", 3, 1, "has no outputs"),
    ("graph g {\n  input %x: f32[-1]\n  output %x\n}", 2, 17, "negative dimension"),
    ('graph g {\n  input %x: f32[4]\n  %y = cast(%x, dtype=3)\n  output %y\n}', 3, 17,
     "attribute 'dtype' must be a dtype"),
    ('graph g {\n  input %x: f32[4]\n  %y = cast(%x, dtyp=f16)\n  output %y\n}', 3, 8,
     "unknown attribute 'dtyp'"),
    ('graph g {\n  const %c: f32[4] = rand(seed=1)\n  output %c\n}', 2, 22,
     "unknown initializer kind 'rand'"),
    ('graph g {\n  const %c: f32[4] = fill(valu=1)\n  output %c\n}', 2, 27,
     "unknown parameter 'valu'"),
    ('graph g {\n  input %x: f32[4]\n  output %x\n}\nextra', 5, 1, "after the graph"),
    ('graph g {\n  input %x: f32[4] "abc\n  output %x\n}', 2, 20, "unterminated string"),
    ('graph g {\n  input %x: f32[4]\n  %y = _bad(%x)\n  output %x\n}', 3, 8, "unknown op"),
    ('graph g {\n  inptu %x: f32[4]\n  output %x\n}', 2, 3, "did you mean input?"),
])
def test_specific_errors(text, line, col, fragment):
    e = _err(text)
    assert (e.line, e.column) == (line, col), str(e)
    assert fragment in str(e)

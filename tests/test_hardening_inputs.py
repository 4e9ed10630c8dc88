"""Inputs, constants, files and emitted names that hal used to accept silently (issue 16).

Reproductions: wrong-size `--inputs` arrays were reported in kernel terms; lossy casts
(i64 2^32+5 -> 5, 3.7 -> 3) and `fill(value=1000)` in an i8 constant passed silently;
a garbage .npz, a .npy or an unwritable --save ended in `internal error:`; a graph named
`../x` wrote its source outside --emit-dir.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hal.cli.main import main

GRAPH = """graph g {
  input %x: f32[B, 4]
  input %i: i32[B]
  %y: f32[B, 4] = exp(%x)
  output %y, %i
}
"""


def _run(tmp_path: Path, *extra: str, graph: str = GRAPH):
    f = tmp_path / "g.hal"
    f.write_text(graph)
    return CliRunner().invoke(main, ["run", str(f), "--backend", "reference", *extra])


def _npz(tmp_path: Path, **arrays) -> str:
    p = tmp_path / "in.npz"
    np.savez(p, **arrays)
    return str(p)


def _ok(r) -> None:
    assert "internal error" not in r.output and "Traceback" not in r.output


def test_wrong_shape_input_names_the_input_and_the_declared_type(tmp_path):
    p = _npz(tmp_path, x=np.ones((2, 5), np.float32), i=np.ones(2, np.int32))
    r = _run(tmp_path, "--inputs", p)
    assert r.exit_code == 1 and "input %x is f32[2, 5], graph g declares f32[B, 4]" in r.output
    _ok(r)


def test_symbolic_dims_must_agree_between_inputs(tmp_path):
    p = _npz(tmp_path, x=np.ones((2, 4), np.float32), i=np.ones(3, np.int32))
    r = _run(tmp_path, "--inputs", p)
    assert r.exit_code == 1 and "dimension B is 2 in %x" in r.output
    _ok(r)


@pytest.mark.parametrize("bad,shown", [(np.array([2**32 + 5, 1], np.int64), "4294967301 -> 5"),
                                       (np.array([3.7, 1.0]), "3.7 -> 3")])
def test_lossy_input_cast_is_an_error_unless_allowed(tmp_path, bad, shown):
    p = _npz(tmp_path, x=np.ones((2, 4), np.float32), i=bad)
    r = _run(tmp_path, "--inputs", p)
    assert r.exit_code == 1 and "input %i" in r.output and "lossy" in r.output
    assert shown in r.output and "--allow-lossy-inputs" in r.output
    _ok(r)
    r = _run(tmp_path, "--inputs", p, "--allow-lossy-inputs")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and shown in r.output


def test_exact_casts_are_accepted(tmp_path):
    p = _npz(tmp_path, x=np.ones((2, 4), np.float64), i=np.array([7, -3], np.int64))
    r = _run(tmp_path, "--inputs", p)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("kind", ["garbage", "npy", "truncated", "missing"])
def test_unreadable_inputs_are_one_clear_error(tmp_path, kind):
    p = tmp_path / "in.npz"
    if kind == "garbage":
        p.write_bytes(b"\x00garbage" * 100)
    elif kind == "npy":
        np.save(tmp_path / "in.npy", np.ones(4))
        (tmp_path / "in.npy").rename(p)
    elif kind == "truncated":
        np.savez(p, x=np.ones((2, 4), np.float32), i=np.ones(2, np.int32))
        p.write_bytes(p.read_bytes()[:200])
    r = _run(tmp_path, "--inputs", str(p))
    assert r.exit_code == 1 and r.output.startswith(f"error: {p}:"), r.output
    _ok(r)


def test_unwritable_save_fails_before_running(tmp_path):
    r = _run(tmp_path, "--dim", "B=2", "--save", str(tmp_path / "no" / "such" / "out.npz"))
    assert r.exit_code == 1 and "does not exist" in r.output and "graph g on" not in r.output
    _ok(r)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    r = _run(tmp_path, "--dim", "B=2", "--save", str(a_file / "out.npz"))
    assert r.exit_code == 1
    _ok(r)


@pytest.mark.parametrize("init,words", [('fill(value=1000)', "out of range for i8"),
                                        ('fill(value=2.5)', "not a whole number"),
                                        ('inline(values=[1, 2, 300])', "out of range")])
def test_out_of_range_integer_constant_is_an_error(tmp_path, init, words):
    graph = ("graph c {\n  input %x: i8[3]\n"
             f"  const %k: i8[3] = {init}\n"
             "  %y: i8[3] = add(%x, %k)\n  output %y\n}\n")
    r = _run(tmp_path, graph=graph)
    assert r.exit_code == 1 and "%k" in r.output and words in r.output, r.output
    _ok(r)


@pytest.mark.parametrize("name", ['"../escape"', '"/tmp/abs_escape"'])
def test_emit_dir_keeps_a_hostile_graph_name_inside(tmp_path, name, monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")
    f = tmp_path / "g.hal"
    f.write_text(f"graph {name} {{\n  input %x: f32[8]\n  %y: f32[8] = exp(%x)\n"
                 "  output %y\n}\n")
    out = tmp_path / "emit"
    CliRunner().invoke(main, ["compile", str(f), "--backend", "cuda", "--device", "h100-sxm",
                              "--emit-dir", str(out)])
    written = [p for p in tmp_path.rglob("*.cu")]
    assert written and all(out in p.parents for p in written), written
    assert not Path("/tmp/abs_escape.cu").exists()

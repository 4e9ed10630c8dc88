"""Graphs whose tensors do not fit in the device's memory (issue 16).

Reproduction: "tensors larger than dram_bytes" were accepted silently: a graph with a
4 MiB input on a spec with `dram_bytes: 1 MiB` was planned, compiled and run without a
word, and so was a plan whose tensors live at once exceed it although each one fits.
Now every plan is checked (fusion.memory) and the error names the tensor, its size, the
spec's dram_bytes and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hal.cli.main import main
from hal.devices.loader import SPEC_DIR, load_spec
from hal.errors import DeviceMemoryError
from hal.fusion import plan, trivial_groups
from hal.fusion.memory import memory_peak
from hal.ir.text import parse_graph

BIG_INPUT = """graph big {
  input %x: f32[1024, 1024]
  %y: f32[1024, 1024] = tanh(%x)
  output %y
}
"""


def _small_spec(tmp_path: Path, dram: str = "1 MiB") -> Path:
    text, n = re.subn(r"(?m)^dram_bytes:.*$", f"dram_bytes: {dram}",
                      (SPEC_DIR / "h100-sxm.yaml").read_text())
    assert n == 1
    p = tmp_path / "small-dram.yaml"
    p.write_text(text)
    return p


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.hal"
    p.write_text(text)
    return p


@pytest.mark.parametrize("args", [
    ["fuse"], ["fuse", "--no-fuse"], ["run", "--backend", "cpu_sim"],
    ["run", "--backend", "cpu_sim", "--no-fuse"], ["compile", "--backend", "cuda"],
])
def test_a_tensor_larger_than_dram_bytes_is_refused(tmp_path, args):
    spec = _small_spec(tmp_path)
    r = CliRunner().invoke(main, [*args[:1], str(_file(tmp_path, BIG_INPUT)), *args[1:],
                                  "--device", str(spec)], prog_name="hal")
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "error: input tensor %x (f32[1024, 1024])" in out
    assert "4.00 MiB (4194304 bytes)" in out and "dram_bytes (1.00 MiB (1048576 bytes)" in out
    assert str(spec) in out and "hint: use smaller shapes" in out
    assert "internal error" not in out and "Traceback" not in out


def _outputs_graph(n_out: int) -> str:
    lines = ["graph many {", "  input %x: f32[256, 256]"]
    prev = "x"
    for i in range(n_out):
        lines.append(f"  %m{i}: f32[256, 256] = matmul(%{prev}, %x)")
        prev = f"m{i}"
    return "\n".join([*lines, "  output " + ", ".join(f"%m{i}" for i in range(n_out)), "}"])


def test_tensors_live_together_over_dram_bytes_are_refused(tmp_path):
    # each tensor is 256 KiB; x and five outputs (all live to the end) need 1.5 MiB
    spec = load_spec(_small_spec(tmp_path))
    g = parse_graph(_outputs_graph(5))
    with pytest.raises(DeviceMemoryError) as e:
        plan(g, spec, measure="off")
    msg = " ".join(str(e.value).split())
    assert "graph many needs 1.50 MiB (1572864 bytes) of device memory at its peak" in msg
    assert "%m0 (output, f32[256, 256], 256.00 KiB (262144 bytes))" in msg
    assert "and 2 more" in msg
    assert "dram_bytes (1.00 MiB" in msg and "use smaller shapes" in msg


def test_intermediates_are_freed_after_their_last_reader(tmp_path):
    # a chain of five matmuls with only the last output kept: at most x, the operand and
    # the result are live (768 KiB), which fits in 1 MiB although the six tensors do not
    spec = load_spec(_small_spec(tmp_path))
    text = _outputs_graph(5).replace("output %m0, %m1, %m2, %m3, %m4", "output %m4")
    g = parse_graph(text)
    peak = memory_peak(g, trivial_groups(g))
    assert peak.nbytes == 3 * 256 * 1024
    assert sorted(t.role for t in peak.live) == ["input", "intermediate", "intermediate"]
    p = plan(g, spec, measure="off")
    assert p.kernel_count() >= 1


def test_a_view_adds_no_bytes():
    g = parse_graph("""graph v {
  input %x: f32[64, 64]
  %r: f32[4096] = reshape(%x, shape=[4096])
  %t: f32[4096] = tanh(%r)
  output %t
}
""")
    peak = memory_peak(g, trivial_groups(g))
    assert peak.nbytes == 2 * 4096 * 4   # x (viewed as r) and t, never r on its own
    assert {t.name for t in peak.live} == {"x", "t"}


def test_shipped_examples_fit_their_specs():
    for name in ("h100-sxm", "mi300x", "scratch-npu"):
        g = parse_graph((SPEC_DIR.parent.parent.parent / "examples" / "mlp.hal").read_text())
        assert plan(g, load_spec(name), measure="off").groups

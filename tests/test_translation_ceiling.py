"""benchmarks/translation_ceiling.py's kernel classes: what it counts as one kernel.

The issue-19 conclusion (a structural translation cache saves at most ~6% of the
conformance suite) rests on `kernel_text`: the same kernel at another size or with other
value names must fall into one "all abstracted" class (else the ceiling is understated),
and different ops or dtypes must not (else it is overstated)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.lowering import lower_group

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "translation_ceiling.py"
H100 = load_spec("h100-sxm")


def _script():
    spec = importlib.util.spec_from_file_location("translation_ceiling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _kernel(op: str, dtype, shape: tuple[int, ...], names: tuple[str, str, str]):
    g = GraphBuilder("g")
    x, y = g.input(names[0], dtype, shape), g.input(names[1], dtype, shape)
    g.output(g.op(op, x, y, name=names[2]))
    graph = g.build()
    (k,) = lower_group(make_group(graph, graph.nodes, "k0"), H100)
    return k


def test_kernel_classes_abstract_sizes_and_names_but_not_ops_or_dtypes() -> None:
    text = _script().kernel_text
    small = _kernel("add", f32, (7, 31), ("x", "y", "z"))
    renamed = _kernel("add", f32, (7, 31), ("a", "b", "c"))
    large = _kernel("add", f32, (33, 257), ("x", "y", "z"))
    named_small, bare_small = text(small)
    named_renamed, bare_renamed = text(renamed)
    named_large, bare_large = text(large)
    assert small.params[0].name != renamed.params[0].name
    assert named_small == named_renamed          # names are numbered
    assert named_small != named_large            # sizes are kept under the named key
    assert bare_small == bare_large == bare_renamed   # ... and abstracted under the bare one
    assert text(_kernel("mul", f32, (7, 31), ("x", "y", "z")))[1] != bare_small
    assert text(_kernel("add", bf16, (7, 31), ("x", "y", "z")))[1] != bare_small

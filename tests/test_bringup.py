"""`hal bringup`: import, plan, run and parity for module:function, .pt2, .hal and JAX
models; an unsupported op makes it exit 1 with the op listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hal.cli.main import main
from hal.frontends.bringup import accumulation_length, compare, tolerance

torch = pytest.importorskip("torch")

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def _bringup(*args):
    return CliRunner().invoke(main, ["bringup", *map(str, args)])


def test_module_function_on_cpu_sim_exits_zero_with_parity():
    r = _bringup(f"{MODELS / 'gpt2_style.py'}:make", "--backend", "cpu_sim", "--device",
                 "mi300x")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "parity: OK" in out and "unsupported ops: none" in out
    assert "aten.native_layer_norm.default x5" in out
    assert "kernels" in out and "modelled time" in out and "modelled DRAM" in out


def test_json_report_bf16_llama():
    r = _bringup(f"{MODELS / 'llama_style.py'}:make", "--backend", "reference", "--dtype",
                 "bf16", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["ok"] and rep["dtype"] == "bf16" and rep["frontend"] == "torch"
    assert rep["fusion"]["totals"]["kernels"] > 0
    assert rep["fusion"]["totals"]["modelled_dram_bytes"] > 0
    p = rep["parity"][0]
    assert p["dtype"] == "bf16" and p["max_abs"] <= p["atol"] + p["rtol"] * 10
    assert rep["hal_ops"]["matmul"] >= 14


def test_jax_decoder_and_pt2_and_hal(tmp_path):
    r = _bringup(f"{MODELS / 'jax_decoder.py'}:make", "--backend", "reference", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["frontend"] == "jax"

    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("hal_bu_gpt2", MODELS / "gpt2_style.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    model, ex = mod.make()
    pt2 = tmp_path / "gpt2.pt2"
    torch.export.save(torch.export.export(model, ex), pt2)
    r = _bringup(pt2, "--backend", "reference")
    assert r.exit_code == 0, r.output
    assert "parity: OK" in r.output

    from hal.frontends.torch_export import import_pt2

    hal_file = import_pt2(pt2).save(tmp_path / "gpt2.hal")
    r = _bringup(hal_file, "--backend", "reference", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["frontend"] == "hal"


def test_unsupported_op_fails_with_the_op_listed(tmp_path):
    bad = tmp_path / "bad_model.py"
    bad.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.fft.rfft(x).abs() + torch.special.i0(x)[..., :5]\n"
        "def make():\n"
        "    return M(), (torch.randn(2, 8),)\n")
    r = _bringup(f"{bad}:make", "--backend", "reference")
    assert r.exit_code == 1
    assert "aten._fft_r2c" in r.output and "aten.i0" in r.output
    assert "bad_model.py:4" in r.output and "parity: FAIL" in r.output


def test_bad_model_spec_is_a_clear_error():
    r = _bringup("no_colon_here", "--backend", "reference")
    assert r.exit_code == 1 and "MODULE:FUNCTION" in r.output


def test_tolerance_scales_with_dtype_and_accumulation():
    from hal.dtypes import bf16, f32
    from hal.ir.builder import GraphBuilder

    def graph(dt, k):
        b = GraphBuilder("t")
        x, w = b.input("x", dt, (4, k)), b.input("w", dt, (k, 8))
        b.output(b.op("matmul", x, w))
        return b.build()

    g = graph(f32, 64)
    assert accumulation_length(g, g.outputs[0]) == 64
    e = np.ones((4, 8))
    r32, a32 = tolerance(g, 0, e)
    assert r32 == pytest.approx(8 * 2.0**-24 * 8) and a32 == pytest.approx(r32)
    r16, _ = tolerance(graph(bf16, 64), 0, e)
    assert r16 == pytest.approx(8 * 2.0**-8 * 8)
    assert compare(e * (1 + r32 / 2), e, r32, a32)["ok"]
    assert not compare(e * (1 + 3 * r32), e, r32, 0.0)["ok"]

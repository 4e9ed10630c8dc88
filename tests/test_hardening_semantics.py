"""sdpa_masked on a fully masked row: decided, documented and pinned (issue 16).

hal defines the row as NaN (softmax over no keys is 0/0; the op's doc says so and how to
get a defined row: a large finite negative instead of -inf). torch >= 2.5 returns 0 there;
the test holds hal's reference and the fused simulator kernel to the documented meaning,
and the finite-mask recipe to torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from hal.devices.loader import load_spec
from hal.ir.builder import GraphBuilder
from hal.ops import get_op
from hal.reference import evaluate


def _graph():
    b = GraphBuilder("masked")
    q = b.input("q", "f32", (1, 2, 4, 8))
    k = b.input("k", "f32", (1, 2, 6, 8))
    v = b.input("v", "f32", (1, 2, 6, 8))
    m = b.input("m", "f32", (4, 6))
    b.output(b.op("sdpa_masked", q, k, v, m))
    return b.build()


def _inputs(fill: float):
    rng = np.random.default_rng(0)
    mask = np.zeros((4, 6), np.float32)
    mask[1, :] = fill          # row 1 sees no key
    mask[2, 3:] = fill         # row 2 sees three
    return {"q": rng.standard_normal((1, 2, 4, 8)).astype(np.float32),
            "k": rng.standard_normal((1, 2, 6, 8)).astype(np.float32),
            "v": rng.standard_normal((1, 2, 6, 8)).astype(np.float32), "m": mask}


def test_the_op_documents_fully_masked_rows():
    assert "fully masked row" in get_op("sdpa_masked").doc


@pytest.mark.parametrize("backend", ["reference", "cpu_sim"])
def test_fully_masked_row_is_nan_and_the_others_are_finite(backend, monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")
    g, x = _graph(), _inputs(-np.inf)
    if backend == "reference":
        (y,) = evaluate(g, x).values()
    else:
        from hal.backends.cpu_sim.backend import CpuSimBackend

        (y,) = CpuSimBackend().run_graph(g, x, load_spec("h100-sxm"),
                                         compare_reference=False).outputs.values()
    y = np.asarray(y, np.float64)
    assert np.isnan(y[:, :, 1]).all()
    assert np.isfinite(np.delete(y, 1, axis=2)).all()


def test_finite_mask_rows_that_see_a_key_match_torch():
    torch = pytest.importorskip("torch")
    g = _graph()
    x = _inputs(float(np.finfo(np.float32).min))
    (y,) = evaluate(g, x).values()
    want = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(x[n]) for n in ("q", "k", "v")), attn_mask=torch.from_numpy(x["m"]))
    keep = [0, 2, 3]  # the rows that see a key agree with torch
    np.testing.assert_allclose(np.asarray(y, np.float64)[:, :, keep],
                               want.numpy()[:, :, keep], rtol=1e-4, atol=1e-5)

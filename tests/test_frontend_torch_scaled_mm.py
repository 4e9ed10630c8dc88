"""Issue 17, session 5: fp8 scaled matmuls (`torch._scaled_mm`, `aten._scaled_mm_v2`)
and fp8 tensors through the torch frontend (hal/frontends/torch_ops.py): the fp8
matmul accumulates in f32, tensor-wise or row-wise scales and a bias apply to the f32
product, then one rounding to the 16/32-bit out_dtype. Against eager torch (CPU
emulation of the same definition) on hal's reference and on cpu_sim; an fp8 result
(torch overflows to inf/NaN, hal's fp8 casts saturate) is a typed UnsupportedError."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hal.errors import UnsupportedError  # noqa: E402
from hal.frontends.torch_export import import_exported_program  # noqa: E402
from tests.test_frontend_torch_families import Fn  # noqa: E402

g = torch.Generator().manual_seed(8)
E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
A = (torch.randn(15, 16, generator=g) * 4).to(E4)
B = (torch.randn(32, 16, generator=g) * 4).to(E4).t()          # column-major, as torch wants
B5 = (torch.randn(32, 16, generator=g) * 4).to(E5).t()
ONE = torch.tensor(0.75)
ROW_A = torch.rand(15, 1, generator=g) + 0.5
ROW_B = torch.rand(1, 32, generator=g) + 0.5
BIAS = torch.randn(32, generator=g).to(torch.bfloat16)


def _run(fn, *args, backend="reference"):
    m = Fn(fn)
    want = m(*args)
    im = import_exported_program(torch.export.export(m, args), "case")
    got = im.run([a.float().numpy() if a.dtype in (E4, E5, torch.bfloat16) else a.numpy()
                  for a in args], backend=backend,
                 **({"compare_reference": False} if backend == "cpu_sim" else {}))
    rtol = 2e-6 if want.dtype == torch.float32 else 2.0 ** -8      # one rounding of the result
    np.testing.assert_allclose(np.asarray(got[0], np.float32), want.float().numpy(), rtol=rtol,
                               atol=1e-6)
    return im


@pytest.mark.parametrize("out", [torch.bfloat16, torch.float32])
def test_scaled_mm_tensorwise(out):
    _run(lambda a, b, sa, sb: torch._scaled_mm(a, b, sa, sb, out_dtype=out), A, B, ONE, ONE * 2)


def test_scaled_mm_rowwise_bias_mixed_formats():
    """Row-wise scales with a bias, and an e4m3 x e5m2 product."""
    _run(lambda a, b, b5, sa, sb, bias: (
        torch._scaled_mm(a, b, sa, sb, bias=bias, out_dtype=torch.bfloat16)
        + torch._scaled_mm(a, b5, sa, sb, out_dtype=torch.bfloat16)),
         A, B, B5, ROW_A, ROW_B, BIAS)


def test_scaled_mm_cpu_sim_is_fp8_matmul():
    im = _run(lambda a, b, sa, sb: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16),
              A, B, ROW_A, ROW_B, backend="cpu_sim")
    mm = [n for n in im.graph.nodes if n.op == "matmul"]
    assert len(mm) == 1 and str(mm[0].inputs[0].dtype) == "f8e4m3fn"


def test_scaled_mm_fp8_result_is_unsupported():
    m = Fn(lambda a, b, sa, sb: torch._scaled_mm(a, b, sa, sb))     # out_dtype: e4m3
    with pytest.raises(UnsupportedError, match="saturates"):
        import_exported_program(torch.export.export(m, (A, B, ONE, ONE)), "case")

"""Issue 17, session 5: `grid_sampler_3d` (F.grid_sample on 5-D inputs;
hal/frontends/torch_ops_grid.py) against eager torch: trilinear and nearest, zeros /
border / reflection padding, align_corners on and off, with grid points outside
[-1, 1] so every padding rule is exercised; one case on cpu_sim for h100-sxm."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tests.test_frontend_torch_families import check  # noqa: E402

g = torch.Generator().manual_seed(3)
A = torch.randn(2, 3, 4, 5, 6, generator=g)
GRID = torch.rand(2, 3, 2, 4, 3, generator=g) * 2.8 - 1.4      # some points outside


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_3d(mode, padding, align):
    im = check(lambda a, gr: F.grid_sample(a, gr, mode=mode, padding_mode=padding,
                                           align_corners=align), A, GRID, rtol=1e-5, atol=1e-6)
    assert "take_along_axis" in [n.op for n in im.graph.nodes]


def test_grid_sample_3d_cpu_sim():
    check(lambda a, gr: F.grid_sample(a, gr, padding_mode="zeros", align_corners=False),
          A, GRID, backend="cpu_sim", rtol=1e-5, atol=1e-6)

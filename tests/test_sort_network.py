"""The bitonic sort network (hal.frontends.sort_network) for long rows: torch.sort's
values and stable indices exactly, with NaN, infinities and ties, both directions, on
the reference and on cpu_sim; no intermediate exceeds the rows (the
rank sort's are n x n) and its stages grow as log^2 n."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hal.frontends.sort_network import NETWORK_MIN  # noqa: E402
from hal.frontends.torch_export import import_exported_program  # noqa: E402


class Sort(torch.nn.Module):
    def __init__(self, descending):
        super().__init__()
        self.descending = descending

    def forward(self, x):
        return torch.sort(x, dim=-1, descending=self.descending, stable=True)


def _rows(n, dtype):
    g = torch.Generator().manual_seed(n)
    if dtype == torch.int64:
        return torch.randint(-5, 5, (3, n), generator=g)
    x = torch.randn(3, n, generator=g)
    x[0, 5] = float("nan")
    x[1, :40] = 1.0                      # ties keep their order
    x[2, 7], x[2, 9], x[2, 11] = float("inf"), float("nan"), float("-inf")
    return x


def _check(n, dtype, descending, backend="reference"):
    x = _rows(n, dtype)
    m = Sort(descending).eval()
    ev, ei = m(x)
    im = import_exported_program(torch.export.export(m, (x,)), "sort")
    gv, gi = im.run([x.numpy()], backend=backend)
    np.testing.assert_array_equal(gi, ei.numpy())
    np.testing.assert_array_equal(gv, ev.numpy())   # NaN == NaN for assert_array_equal
    return im


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("n,dtype", [(NETWORK_MIN, torch.float32), (300, torch.float32),
                                     (200, torch.int64)])
def test_network_sort_matches_torch(n, dtype, descending):
    _check(n, dtype, descending)


def test_network_sort_on_cpu_sim():
    _check(256, torch.float32, True, backend="cpu_sim")


def test_network_work_is_n_log2_n():
    """No intermediate is larger than the padded rows (the rank sort's are [.., n, n]),
    and the stages grow as log^2 n."""
    small = _check(256, torch.float32, False).graph
    large = _check(4096, torch.float32, False).graph
    biggest = max(v.type.numel for n in large.nodes for v in n.outputs)
    assert biggest <= 3 * 4096
    assert len(large.nodes) < 3 * len(small.nodes)   # 36 -> 78 stages

"""Issue 17, session 5: converters that group elements by value or segment
(hal/frontends/torch_ops_group.py) against eager torch: mode (ties in frequency go to
the smallest value; the index is the last occurrence, as torch's CPU kernel gives for
short rows)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.test_frontend_torch_families import check  # noqa: E402

g = torch.Generator().manual_seed(7)
# rows with a unique mode, ties in frequency, all-distinct values, repeated negatives
TIES = torch.tensor([[3., 1., 3., 2., 1., 5., 1., 3.],
                     [4., 4., 2., 2., 9., 9., 0., 7.],
                     [5., 6., 7., 8., 1., 2., 3., 4.],
                     [-1., -1., -1., 2., 2., 2., 2., -1.]])


@pytest.mark.parametrize("dim,keepdim", [(-1, False), (0, False), (1, True)])
def test_mode_ties(dim, keepdim):
    check(lambda x: torch.mode(x, dim, keepdim), TIES)


def test_mode_ints_bool_and_3d():
    xi = torch.randint(0, 4, (3, 5, 6), generator=g)
    check(lambda a, b: (torch.mode(a, 1), torch.mode(a), torch.mode(b, 0)), xi, xi > 1)


def test_mode_cpu_sim_long_rows():
    """Rows past the sort network's threshold (bitonic path): values only; torch's
    index for long rows depends on its unstable std::sort."""
    x = torch.randint(0, 20, (3, 300), generator=g).float()
    check(lambda v: torch.mode(v, 1)[0], x, backend="cpu_sim")
    check(lambda v: torch.mode(v, 1), torch.randn(2, 7, generator=g), backend="cpu_sim")


# -- segment_reduce ------------------------------------------------------------------

SEG_DATA = torch.tensor([[1.5, -2.0], [3.0, 0.5], [float("nan"), 4.0], [-1.0, -6.0],
                         [2.0, 2.5], [0.25, 8.0], [5.0, -0.5]])
LENGTHS = torch.tensor([2, 0, 3, 1, 1])        # an empty segment; one with a NaN


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "prod"])
@pytest.mark.parametrize("initial", [None, 1.5])
def test_segment_reduce_lengths(reduce, initial):
    check(lambda d, ln: torch.segment_reduce(d, reduce, lengths=ln, axis=0, initial=initial),
          SEG_DATA, LENGTHS)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_segment_reduce_offsets_and_batched_lengths(reduce):
    """offsets (the first one past 0: the rows before it belong to no segment) and 2-D
    lengths, one row of segments per leading index (axis 1)."""
    off = torch.tensor([1, 3, 3, 6])
    d2 = torch.randn(3, 6, 4, generator=g)
    ln2 = torch.tensor([[1, 2, 3], [0, 6, 0], [2, 2, 2]])
    check(lambda d, o, e, l2: (torch.segment_reduce(d, reduce, offsets=o, axis=0),
                               torch.segment_reduce(e, reduce, lengths=l2, axis=1)),
          SEG_DATA, off, d2, ln2)


def test_segment_reduce_cpu_sim():
    check(lambda d, ln: (torch.segment_reduce(d, "mean", lengths=ln, axis=0),
                         torch.segment_reduce(d, "max", lengths=ln, axis=0, initial=0.0)),
          SEG_DATA, LENGTHS, backend="cpu_sim")


# -- histogram -----------------------------------------------------------------------

HX = torch.tensor([[0.5, 1.0, 2.25, -3.0], [4.0, 1.0, 7.5, 0.0], [2.0, 2.0, -1.0, 6.0]])
HW = torch.rand(3, 4, generator=g)


@pytest.mark.parametrize("density", [False, True])
def test_histogram_bin_count(density):
    """min/max edges (the max in the closed last bin), a range that leaves elements out,
    weights, a constant input (edges widened by 0.5) and values on interior edges."""
    check(lambda x, w: (torch.histogram(x, 5, density=density),
                        torch.histogram(x, 4, range=(0.0, 4.0), weight=w, density=density),
                        torch.histogram(x[1:2, 1:2], 3, density=density),
                        torch.histogram(x, 7, range=(-3.0, 4.0), density=density)), HX, HW)


@pytest.mark.parametrize("density", [False, True])
def test_histogram_edges_tensor(density):
    edges = torch.tensor([-2.0, 0.0, 0.5, 2.0, 2.25, 6.0])
    check(lambda x, e, w: (torch.histogram(x, e, density=density),
                           torch.histogram(x, e, weight=w, density=density)), HX, edges, HW)


def test_histogram_cpu_sim():
    x = torch.randn(200, generator=g)
    check(lambda v: torch.histogram(v, 10, density=True), x, backend="cpu_sim", rtol=1e-5)

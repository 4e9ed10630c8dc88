"""Issue 17, second OpInfo round: the converters added for the sweep's remaining
unsupported classes, each against eager torch on hal's reference (float64 evaluation of
the primitive graph) and a few on cpu_sim for h100-sxm:

- transposed convolution 1-D/2-D/3-D (stride, padding, output_padding, dilation, groups);
- bitwise shifts, including amounts outside [0, bits) and negative values;
- gcd / lcm (Euclid unrolled to the dtype's worst case), frexp, pdist, masked_scatter;
- Chebyshev polynomials T/U/V/W and shifted, with a tensor degree;
- large scatters through the sorted-index path (hal.frontends.scatter_network)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tests.test_frontend_torch_families import check  # noqa: E402

g = torch.Generator().manual_seed(1717)

CASES = {
    "conv_transpose": (lambda x, w2, w1, w3: (
        F.conv_transpose2d(x, w2, stride=2, padding=1, output_padding=1),
        F.conv_transpose2d(x, w2[:, :1].repeat(1, 2, 1, 1), stride=(1, 2), padding=(2, 0),
                           dilation=2, groups=2),
        F.conv_transpose1d(x.flatten(2), w1, stride=3, padding=4),
        F.conv_transpose3d(x[:1, :2, :3, :3].unsqueeze(0), w3, stride=(2, 1, 1), padding=1)),
        torch.randn(2, 4, 5, 5, generator=g), torch.randn(4, 3, 3, 3, generator=g),
        torch.randn(4, 2, 5, generator=g), torch.randn(1, 2, 2, 2, 2, generator=g)),
    "shifts_int64": (lambda a, b: (a << b, a >> b, torch.bitwise_left_shift(a, 3),
                                   torch.bitwise_right_shift(a, 63)),
                     torch.tensor([5, -5, 7, -8, 1 << 40, -(1 << 50), 9, -9, 3]),
                     torch.tensor([0, 1, 3, 62, 63, 64, -1, 100, 2])),
    "shifts_int32_uint8": (lambda a, b, u: (a << b, a >> b, u >> 3, u << 5),
                           torch.tensor([5, -5, 7, -2**31, 2**31 - 1], dtype=torch.int32),
                           torch.tensor([31, 32, 1, 1, 30], dtype=torch.int32),
                           torch.tensor([0, 7, 200, 255], dtype=torch.uint8)),
    "gcd_lcm": (lambda a, b, c, d: (torch.gcd(a, b), torch.lcm(a, b), torch.gcd(c, d)),
                torch.tensor([0, 4, -6, 0, 832040, 7 * 2**40, -12]),
                torch.tensor([0, 6, 4, 5, 514229, 3 * 2**35, -18]),
                torch.tensor([-128, 100, 0], dtype=torch.int8),
                torch.tensor([64, -75, 3], dtype=torch.int8)),
    "frexp": (lambda x: torch.frexp(x),
              torch.tensor([0.0, -0.0, 1.5, -3.0, math.inf, -math.inf, math.nan, 1e-40, 8.0,
                            0.999999, 1.0000001, 3e38, 2.0**-126, 0.5, -1.0])),
    "pdist": (lambda x: (F.pdist(x), F.pdist(x, 1), F.pdist(x, math.inf), F.pdist(x, 0.5),
                         F.pdist(x[:1])),
              torch.randn(5, 3, generator=g)),
    "masked_scatter": (lambda x, m, s: (x.masked_scatter(m, s), x.masked_scatter(m[0], s)),
                       torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) > 0.5,
                       torch.randn(20, generator=g)),
    # every branch: n < 0, |x| = 1, the recurrence, the trigonometric form (|x| < 1, n
    # large), the hyperbolic form (|x| > 1, n past the unrolled recurrence), fractional n
    "chebyshev": (lambda x, n: tuple(
        f(x, n) for f in (torch.special.chebyshev_polynomial_t, torch.special.chebyshev_polynomial_u,
                          torch.special.chebyshev_polynomial_v, torch.special.chebyshev_polynomial_w,
                          torch.special.shifted_chebyshev_polynomial_t,
                          torch.special.shifted_chebyshev_polynomial_w)),
                  torch.tensor([0.3, -0.7, 1.0, -1.0, 1.05, -1.1, 0.5, 0.95, -0.2, 0.0, 0.51]),
                  torch.tensor([-2.0, 3.0, 5.0, 4.0, 20.0, 19.0, 12.0, 9.7, 25.0, 7.0, 1.0])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference(name):
    fn, *args = CASES[name]
    check(fn, *args, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_transpose", "shifts_int64", "frexp"])
def test_cpu_sim(name):
    fn, *args = CASES[name]
    check(fn, *args, backend="cpu_sim", rtol=1e-4, atol=1e-4)


def test_transposed_conv_is_one_matmul():
    """A transposed convolution is the forward implicit GEMM on the dilated input."""
    im = check(lambda x, w: F.conv_transpose2d(x, w, stride=2), torch.randn(1, 4, 3, 3),
               torch.randn(4, 2, 3, 3))
    ops = [n.op for n in im.graph.nodes]
    assert ops.count("matmul") == 1 and "pad" in ops


# -- scatter through the sorted-index network (hal.frontends.scatter_network) -----------

def _scatters(x, i, s, b):
    return (torch.scatter(x, 1, i, s), torch.scatter_add(x, 1, i, s),
            torch.scatter_reduce(x, 1, i, s, "amax", include_self=False),
            torch.scatter_reduce(x, 1, i, s, "amin"),
            torch.scatter_reduce(x, 1, i, s, "mean"),
            torch.scatter_reduce(x, 1, i, s, "mean", include_self=False),
            torch.scatter_reduce(x, 1, i, s.sign() + 2, "prod"),
            x.index_add(1, i[0], s, alpha=2), torch.scatter_add(b, 1, i, b[:, :i.shape[1]]),
            torch.scatter_reduce(b, 1, i, b[:, :i.shape[1]] * 3, "mean"))


SCATTER_ARGS = (torch.randn(2, 40, generator=g), torch.randint(0, 40, (2, 37), generator=g),
                torch.randn(2, 37, generator=g), torch.randint(-9, 9, (2, 40), generator=g))


@pytest.mark.parametrize("sorted_path", [False, True])
def test_scatter_sorted_equals_one_hot(sorted_path, monkeypatch):
    """The same scatters through both paths (the sorted one forced by lowering its
    threshold) match eager torch, with repeated indices in every run length."""
    from hal.frontends import scatter_network

    if sorted_path:
        monkeypatch.setattr(scatter_network, "SORTED_MIN_WORK", 0)
        monkeypatch.setattr(scatter_network, "SORTED_MIN_M", 1)
    im = check(_scatters, *SCATTER_ARGS, rtol=1e-5, atol=1e-5)
    ops = [n.op for n in im.graph.nodes]
    # the one-hot path reduces over the [.., m, n] candidates; the sorted one never does
    assert ("reduce_max" in ops or "reduce_sum" in ops) != sorted_path


def test_large_scatter_is_not_quadratic():
    """A 4096-into-8192 scatter_add: the sorted path (no m x n intermediate) on cpu_sim."""
    n, m = 8192, 4096
    x = torch.randn(1, n, generator=g)
    i = torch.randint(0, n, (1, m), generator=g)
    s = torch.randn(1, m, generator=g)
    im = check(lambda x, i, s: (torch.scatter_add(x, 1, i, s), torch.scatter(x, 1, i, s)),
               x, i, s, backend="cpu_sim", rtol=1e-5, atol=1e-5)
    biggest = max(math.prod(n.outputs[0].shape) for n in im.graph.nodes)
    assert biggest < n * 4    # one-hot would build 4096 x 8192 = 33.5M candidates

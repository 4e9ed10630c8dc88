"""Issue 17, session 5: the Cephes special functions torch computes by rational or
Chebyshev approximations per range (hal/frontends/torch_ops_cephes.py: Bessel J0, J1,
Y0, Y1, modified I0, I1, K0, K1, scaled K0, K1, spherical j0, ndtri), against eager
torch on every range and at the edge values (0, the range boundaries, negative inputs,
NaN, +-inf):

- float64 on hal's reference: the same coefficients and cases as torch, so the two agree
  to a few ulp (a wrong coefficient or a misplaced branch shows up at 1e-12);
- float32 on cpu_sim for h100-sxm: the kernel path, with float32 rounding."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tests.test_frontend_torch_families import check  # noqa: E402

nan, inf = math.nan, math.inf
J1_X = [-inf, -30.0, -5.0, -4.99, -0.3, 0.0, 1e-6, 0.7, 3.8317059702075125, 4.99, 5.0, 5.01,
        7.5, 13.2, 40.0, 1e4, inf, nan]
K0_X = [-1.0, 0.0, 1e-6, 0.01, 0.5, 1.99, 2.0, 2.01, 3.0, 8.0, 40.0, 700.0, inf, nan]
NDTRI_Y = [-0.1, 0.0, 1e-300, 1e-30, 1e-14, 6e-13, 1e-6, 0.01, 0.1353352832366127, 0.1353352832366128,
           0.2, 0.5, 0.7, 0.8646647167633873, 0.8646647167633874, 0.95, 0.999, 1 - 1e-12, 1.0,
           1.5, nan]

Y_X = [-1.0, 0.0, 1e-6, 0.3, 0.9, 2.5, 4.99, 5.0, 5.01, 9.0, 60.0, 1e4,
       inf, nan]
I_X = [-50.0, -8.01, -8.0, -3.0, -0.1, 0.0, 1e-4, 1.5, 7.99, 8.0, 8.01, 30.0, 85.0, nan]
SPH_X = [-inf, -7.0, -0.5, -0.49, -1e-3, 0.0, 0.2, 0.4999, 0.5, 3.0, 100.0, inf, nan]
S = torch.special

CASES = {
    "bessel_j0": (S.bessel_j0, J1_X + [1e-5, 9e-6, 2.404825557695773]),
    "bessel_j1": (S.bessel_j1, J1_X),
    "bessel_y0": (S.bessel_y0, Y_X),
    "bessel_y1": (S.bessel_y1, Y_X),
    "modified_bessel_i0": (S.modified_bessel_i0, I_X),
    "modified_bessel_i1": (S.modified_bessel_i1, I_X),
    "modified_bessel_k0": (S.modified_bessel_k0, K0_X),
    "modified_bessel_k1": (S.modified_bessel_k1, K0_X),
    "scaled_modified_bessel_k0": (S.scaled_modified_bessel_k0, K0_X),
    "scaled_modified_bessel_k1": (S.scaled_modified_bessel_k1, K0_X),
    "spherical_bessel_j0": (S.spherical_bessel_j0, SPH_X),
    "ndtri": (S.ndtri, NDTRI_Y),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_reference(name):
    fn, xs = CASES[name]
    x = torch.tensor(xs, dtype=torch.float64)
    check(lambda v: fn(v), x, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_cpu_sim(name):
    fn, xs = CASES[name]
    x = torch.tensor([v for v in xs if abs(v) < 1e37 or not math.isfinite(v)] +
                     [0.25 * k for k in range(1, 40)], dtype=torch.float32)
    x = x if name != "ndtri" else torch.cat([x, torch.rand(64, generator=torch.Generator()
                                                           .manual_seed(5))])
    check(lambda v: fn(v), x, backend="cpu_sim", rtol=2e-5, atol=2e-6)


def test_random_inputs_match_torch():
    """Many random points over each function's whole range, float64 reference."""
    g = torch.Generator().manual_seed(17)
    x = torch.cat([torch.randn(300, generator=g, dtype=torch.float64) * 10,
                   torch.rand(300, generator=g, dtype=torch.float64) * 4])
    check(lambda v: (S.bessel_j0(v), S.bessel_j1(v), S.bessel_y0(v.abs()), S.bessel_y1(v.abs()),
                     S.modified_bessel_i0(v), S.modified_bessel_i1(v),
                     S.modified_bessel_k0(v.abs()), S.modified_bessel_k1(v.abs()),
                     S.scaled_modified_bessel_k0(v.abs()), S.scaled_modified_bessel_k1(v.abs()),
                     S.spherical_bessel_j0(v), S.ndtri(torch.sigmoid(v))),
          x, rtol=1e-11, atol=1e-300)

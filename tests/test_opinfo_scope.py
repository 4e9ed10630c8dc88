"""The reasoned UNSUPPORTED table of the torch-opinfo suite (hal.conformance.opinfo_scope):
the unsupported samples of the 2026-12-02 every-5th sweep map to their classes, an
unknown op is 'unreasoned', and the rate leaves out only the declared classes."""

from __future__ import annotations

import re

import pytest

from hal.conformance.opinfo import SampleResult
from hal.conformance.opinfo_scope import OUT_OF_SCOPE, SCOPE, classify, scope_summary

# (missing ops, message) of unsupported samples seen in the sweep -> class
SEEN = [
    (("aten._fft_r2c.default", "aten.view_as_real.default"), "", "fft"),
    (("aten._fft_c2r.default",), "", "fft"),
    (("aten.view_as_complex.default",), "", "complex"),
    (("aten.view_as_real.default",), "", "complex"),
    (("aten._linalg_svd.default",), "", "linalg"),
    (("aten.cholesky.default",), "", "linalg"),
    (("aten._linalg_solve_ex.default",), "", "linalg"),
    (("aten.linalg_pinv.atol_rtol_tensor",), "", "linalg"),
    (("aten._linalg_slogdet.default",), "", "linalg"),
    ((), "exported program input token has kind TOKEN: the program has side-effecting ops",
     "linalg"),
    (("aten.normal_functional.default",), "", "random"),
    (("aten.bernoulli.p",), "", "random"),
    (("aten.fractional_max_pool2d.default", "aten.rand.default"), "", "random"),
    ((), "aten.native_dropout.default at opinfo.py:155 (root: Sample): dropout in training mode",
     "random"),
    (("layout:sparse",), "sparse tensor layouts are out of hal's scope", "sparse"),
    (("aten.special_airy_ai.default",), "", "missing"),
    (("aten.special_legendre_polynomial_p.default",), "", "missing"),
    (("aten.special_hermite_polynomial_h.default",), "", "missing"),
    (("aten.special_i1e.default",), "", "missing"),
    (("aten._histogramdd_bin_edges.default", "aten._histogramdd_from_bin_cts.default"), "",
     "missing"),
    ((), "aten._scaled_mm.default at opinfo.py:155 (root: Sample): scaled matmul with an "
         "f8e4m3fn result: torch's float -> fp8 conversion overflows to inf/NaN, hal's fp8 "
         "cast saturates", "missing"),
]


@pytest.mark.parametrize("missing,message,cls", SEEN)
def test_seen_unsupported_have_a_reason(missing, message, cls):
    got, why = classify(missing, message)
    assert got == cls and why


def test_unknown_op_is_unreasoned():
    assert classify(("aten.no_such_op.default",), "1 unsupported op(s)")[0] == "unreasoned"


def test_patterns_compile_and_classes_are_known():
    for row in SCOPE:
        re.compile(row.pattern)
        assert row.cls in OUT_OF_SCOPE + ("random", "sparse", "missing") and row.reason


def test_rate_leaves_out_only_declared_classes():
    rs = [SampleResult("a", 0, "pass"), SampleResult("b", 0, "pass"),
          SampleResult("c", 0, "unsupported", missing=("aten._fft_r2c.default",)),
          SampleResult("d", 0, "unsupported", missing=("aten.bernoulli.p",)),
          SampleResult("e", 0, "export_fail")]
    s = scope_summary(rs)
    assert (s.exportable, s.passing, s.declared_out, s.in_scope) == (4, 2, 1, 3)
    assert s.by_class == {"fft": ["c"], "random": ["d"]}
    assert s.to_dict()["rate_in_scope"] == round(2 / 3, 4)

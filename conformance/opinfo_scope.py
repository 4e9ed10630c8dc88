"""Why an OpInfo sample is unsupported: the reasoned UNSUPPORTED table of the torch-opinfo suite.

Every `unsupported` sample is matched, by the ATen ops it names (`missing`) or its
message, against `SCOPE`: one row per op family with a class and a reason. The classes:

- ``fft``, ``complex``, ``linalg``: declared out of scope (issue 17 allows these three):
  hal's IR is real-valued, and matrix factorizations need pivoting and data-dependent
  iteration that a graph of elementwise, reduction and contraction ops does not express;
- ``random``: the op draws random numbers (dropout in training mode, normal, bernoulli,
  fractional pooling): eager torch and hal draw different values, so there is nothing
  to compare. Counted against the rate, listed on their own;
- ``sparse``: sparse layouts (hal is dense only);
- ``missing``: in scope, no converter yet; the reason says what it would take.

A sample matching no row is ``unreasoned``: the suite's summary lists it, and the tests
require the CI slice to have none. `scope_summary` gives the issue's rate: fully passing
OpInfos over exportable ones, with and without the declared out-of-scope classes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

OUT_OF_SCOPE = ("fft", "complex", "linalg")

_LINALG = ("a matrix factorization or solve (pivoting, data-dependent iteration): not "
           "expressible as hal's elementwise/reduction/contraction ops")


@dataclass(frozen=True)
class ScopeRow:
    """Unsupported samples whose missing op or message matches `pattern` get this reason."""

    pattern: str
    cls: str
    reason: str


SCOPE: tuple[ScopeRow, ...] = (
    ScopeRow(r"_fft_|fft_", "fft", "FFTs produce or consume complex values; hal has no complex "
             "dtype"),
    ScopeRow(r"view_as_real|view_as_complex|complex|conj", "complex",
             "complex tensors: hal's dtypes are real"),
    ScopeRow(r"linalg|cholesky|_lu_|lu_unpack|lu_solve|triangular_solve|geqrf|ormqr|"
             r"householder|lstsq|_linalg|symeig|eig|svd|qr|ldl|pinv|slogdet|logdet|"
             r"\bdet\b|inverse|matrix_exp", "linalg", _LINALG),
    ScopeRow(r"with_effects|kind TOKEN", "linalg",
             "a side-effect token (torch's linalg input checks raise from inside the "
             "program); the factorization behind it is out of scope"),
    ScopeRow(r"native_dropout|dropout in training|bernoulli|normal_functional|aten\.rand|"
             r"randn|randint|multinomial|exponential|uniform|poisson|fractional_max_pool|"
             r"rrelu_with_noise", "random",
             "draws random numbers: eager torch and hal sample different values, nothing to "
             "compare"),
    ScopeRow(r"layout:sparse|sparse", "sparse", "sparse layouts: hal is dense only"),
    ScopeRow(r"special_(bessel|modified_bessel|scaled_modified_bessel|spherical_bessel|airy)",
             "missing", "Airy Ai (the Bessel functions are converted, torch_ops_cephes): "
             "Cephes approximations per range, the same machinery, not written yet"),
    ScopeRow(r"special_(hermite|laguerre|legendre)", "missing",
             "orthogonal polynomial with a tensor degree n and no closed form: torch runs the "
             "recurrence n times, a loop whose trip count is data; hal's graphs have no "
             "data-dependent loops (Chebyshev T/U/V/W have closed forms and are converted)"),
    ScopeRow(r"erfinv|special_log_ndtr|special_erfcx|special_i0e|special_i1|"
             r"\bi0\b|igamma|zeta|special_entr", "missing",
             "special function without a converter yet (rational approximation needed)"),
    ScopeRow(r"histogramdd|histc|bincount", "missing",
             "histogramdd (torch's private per-dimension edge ops), histc and bincount (output "
             "length is data): not written; 1-D histogram is converted"),
    ScopeRow(r"grid_sampler", "missing", "grid_sample on 5-D inputs converts trilinear and "
             "nearest; other modes are not written"),
    ScopeRow(r"_scaled_mm", "missing", "fp8 scaled matmul with an fp8 result (torch's float "
             "-> fp8 conversion overflows to inf/NaN where hal's fp8 casts saturate) or a "
             "block-scaled (MX/NVFP4) recipe; tensor-/row-wise scales to 16/32-bit results "
             "are converted"),
    ScopeRow(r"_linear_cross_entropy", "missing", "the chunked linear + cross-entropy op "
             "exported for training (gradients precomputed in the forward) or with label "
             "smoothing (torch's own op rejects it); the inference loss is converted"),
    ScopeRow(r"max_unpool|_embedding_bag|nonzero|unique|masked_select|index_put with a "
             r"boolean|data-dependent", "missing",
             "the output shape depends on the data (torch.export keeps it symbolic); hal's "
             "shapes are static"),
)


def classify(missing: Iterable[str], message: str) -> tuple[str, str]:
    """(class, reason) for an unsupported sample: the first SCOPE row its missing ops or
    message match, else ("unreasoned", message)."""
    texts = list(missing) + [message]
    for row in SCOPE:
        rx = re.compile(row.pattern)
        if any(rx.search(t) for t in texts):
            return row.cls, row.reason
    return "unreasoned", message


@dataclass(frozen=True)
class ScopeSummary:
    """The issue's rate and the unsupported OpInfos by class."""

    exportable: int
    passing: int
    by_class: dict[str, list[str]]        # class -> OpInfo names (unsupported ones)
    reasons: dict[str, str]               # OpInfo -> "class: reason (ops)"

    @property
    def declared_out(self) -> int:
        return sum(len(self.by_class.get(c, ())) for c in OUT_OF_SCOPE)

    @property
    def in_scope(self) -> int:
        return self.exportable - self.declared_out

    def to_dict(self) -> dict[str, Any]:
        return {"exportable": self.exportable, "passing": self.passing,
                "declared_out_of_scope": self.declared_out, "in_scope": self.in_scope,
                "rate_in_scope": round(self.passing / self.in_scope, 4) if self.in_scope else 0,
                "unsupported_by_class": {k: sorted(v) for k, v in sorted(self.by_class.items())},
                "reasons": dict(sorted(self.reasons.items()))}


def scope_summary(results: Iterable[Any]) -> ScopeSummary:
    """Over SampleResults: OpInfo verdicts as in hal.conformance.opinfo, and each
    unsupported OpInfo's class (its first unsupported sample's)."""
    from hal.conformance.opinfo import opinfo_verdict

    by_op: dict[str, list[Any]] = {}
    for r in results:
        by_op.setdefault(r.opinfo, []).append(r)
    exportable = passing = 0
    by_class: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for name, rs in by_op.items():
        v = opinfo_verdict(rs)
        if v == "export_fail":
            continue
        exportable += 1
        passing += v == "pass"
        if v != "unsupported":
            continue
        r = next(r for r in rs if r.verdict == "unsupported")
        cls, why = classify(r.missing, r.message)
        by_class.setdefault(cls, []).append(name)
        ops = ", ".join(r.missing) or r.message[:80]
        reasons[name] = f"{cls}: {why} ({ops})"
    return ScopeSummary(exportable, passing, by_class, reasons)


def format_scope(s: ScopeSummary) -> str:
    counts = Counter({k: len(v) for k, v in s.by_class.items()})
    rate = 100 * s.passing / s.in_scope if s.in_scope else 0.0
    lines = [f"in scope: {s.in_scope} exportable OpInfos less {s.declared_out} declared out of "
             f"scope ({', '.join(OUT_OF_SCOPE)}); fully passing {s.passing} = {rate:.1f}%",
             "unsupported by class: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    for cls in sorted(s.by_class):
        lines.append(f"  {cls}: " + ", ".join(sorted(s.by_class[cls])))
    return "\n".join(lines)


__all__ = ["SCOPE", "OUT_OF_SCOPE", "ScopeRow", "ScopeSummary", "classify", "scope_summary",
           "format_scope"]

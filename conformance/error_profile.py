"""Bounds that bite: the differential error profile and the bound/clean-error table (issue 21).

The error model's bound is the hard limit: it holds for ANY correct order of
operations, so on most cases it sits orders of magnitude above the error a
correct kernel really makes, and a broken kernel can hide under it. cpu_sim is
the living definition of each kernel (same plan, same tiles, same order of
sums), so a backend running the same plan should make errors of the same size:

* `profile(comparison)`: p50 / p99 / max of |device - reference| in ulps of the
  output dtype at the reference value (hal.conformance.compare);
* `regression(backend, cpu_sim)`: the backend is more than FACTOR x cpu_sim's
  p99 (or max) plus SLACK_ULPS worse: a precision regression. The runner
  records it on every case a non-simulator backend runs and fails the case
  under `--strict` (the project's CI runs strict);
* `family_table(results)`: per case family (`fused/softmax`, ...), how much of
  the bound clean cases use (`used` = max over elements of error / allowed
  error, hal.conformance.compare.Comparison.used): the ratio bound / clean
  error is 1 / used, so loose families are visible.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FACTOR = 4.0        # a backend may be this many times worse than cpu_sim at p99 / max ...
SLACK_ULPS = 2.0    # ... plus this many ulps (a different but correct rounding of a few ops)


@dataclass(frozen=True)
class Profile:
    p50: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p99": self.p99, "max": self.max}


def profile(c) -> Profile:
    """The ulp profile of a compare.Comparison (or its dict)."""
    get = c.get if isinstance(c, Mapping) else lambda k: getattr(c, k)
    return Profile(float(get("ulp_p50")), float(get("ulp_p99")), float(get("ulp_max")))


def regression(backend: Profile, sim: Profile, factor: float = FACTOR,
               slack: float = SLACK_ULPS) -> str | None:
    """Why `backend`'s errors are a precision regression against cpu_sim's, or None."""
    for what in ("p99", "max"):
        b, s = getattr(backend, what), getattr(sim, what)
        if not math.isfinite(b) and math.isfinite(s):
            return f"{what} error not finite where cpu_sim's is {s:.3g} ulp"
        if b > factor * s + slack:
            return (f"{what} error {b:.3g} ulp > {factor:g} x cpu_sim's {s:.3g} ulp + "
                    f"{slack:g}")
    return None


def compare_profiles(backend_comps: Mapping[str, Any], sim_comps: Mapping[str, Any],
                     factor: float = FACTOR, slack: float = SLACK_ULPS) -> dict[str, dict]:
    """Per output: both profiles and the regression (None when within the factor)."""
    out = {}
    for k, c in backend_comps.items():
        if k not in sim_comps:
            continue
        pb, ps = profile(c), profile(sim_comps[k])
        out[k] = {"backend": pb.to_dict(), "cpu_sim": ps.to_dict(),
                  "regression": regression(pb, ps, factor, slack)}
    return out


# --------------------------------------------------------------------------- family table

def family(case_id: str) -> str:
    """`fused/softmax/f32/33x257` -> `fused/softmax`; `canary/...` keeps its defect."""
    parts = case_id.split("/")
    return "/".join(parts[:2])


@dataclass(frozen=True)
class FamilyRow:
    family: str
    cases: int           # passing cases with a non-zero bound
    exact: int           # of them: zero measured error
    median_ratio: float  # median over cases of bound / clean error (1 / used)
    min_ratio: float     # the tightest case
    max_ratio: float     # the loosest case with a non-zero error
    tightest: str        # its id

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def family_table(results: Iterable[Mapping[str, Any]]) -> list[FamilyRow]:
    """The bound / clean-error ratio per family over passing cases (module docstring)."""
    by: dict[str, list[tuple[float, str]]] = {}
    exact: dict[str, int] = {}
    for r in results:
        if r.get("verdict") != "pass" or not r.get("bound") or r["id"].startswith("canary/"):
            continue
        f = family(r["id"])
        used = float(r.get("used", 0.0))
        if used <= 0.0:
            exact[f] = exact.get(f, 0) + 1
            by.setdefault(f, [])
            continue
        by.setdefault(f, []).append((1.0 / used, r["id"]))
    rows = []
    for f, vals in sorted(by.items()):
        ratios = sorted(v for v, _ in vals)
        tight = min(vals)[1] if vals else ""
        rows.append(FamilyRow(f, len(vals) + exact.get(f, 0), exact.get(f, 0),
                              statistics.median(ratios) if ratios else math.inf,
                              ratios[0] if ratios else math.inf,
                              ratios[-1] if ratios else math.inf, tight))
    return rows


def family_markdown(rows: Iterable[FamilyRow]) -> str:
    lines = ["| family | cases | exact | bound / clean error: median | tightest | loosest | "
             "tightest case |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.family} | {r.cases} | {r.exact} | {_fmt(r.median_ratio)} | "
                     f"{_fmt(r.min_ratio)} | {_fmt(r.max_ratio)} | {r.tightest} |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3g}"

"""Per-backend expectations and applicability, in the IREE style.

UNSUPPORTED: permanent (the backend will never run these), each with a reason;
the cases are skipped. EXPECTED_FAILURES: temporary (a known bug with a
tracking reason); such a case must fail: an unexpected pass fails the run, so
the list shrinks as bugs are fixed. Keys are fnmatch patterns on case ids, or
on `device:case id` for an expectation that holds on one device only.

Applicability: a case's dtype tags need backend capabilities
(`DTYPE_CAPABILITY`) and dtypes the device spec supports; a case that is not
applicable is skipped with the reason (e.g. scratch-npu has no f64 or fp8).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from hal.backend import Backend, Capability
from hal.devices.spec import DeviceSpec

from .cases import Case

DTYPE_CAPABILITY: dict[str, Capability] = {
    "f16": Capability.FP16, "bf16": Capability.BF16, "f8e4m3fn": Capability.FP8,
    "f8e5m2": Capability.FP8, "f64": Capability.F64, "i64": Capability.INT,
    "i32": Capability.INT, "i16": Capability.INT, "i8": Capability.INT, "u8": Capability.INT,
}

UNSUPPORTED: dict[str, dict[str, str]] = {
    "cpu_sim": {},
    "cuda": {},
    "rocm": {},
}

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "cpu_sim": {},
    "cuda": {},
    "rocm": {},
}


def register_expectations(backend: str, *, unsupported: Mapping[str, str] | None = None,
                          expected_failures: Mapping[str, str] | None = None) -> None:
    """Add a backend's lists (the extension point for out-of-tree backends)."""
    UNSUPPORTED.setdefault(backend, {}).update(unsupported or {})
    EXPECTED_FAILURES.setdefault(backend, {}).update(expected_failures or {})


def _match(table: Mapping[str, str], case_id: str, device: str) -> str | None:
    for pattern, reason in table.items():
        if fnmatch.fnmatchcase(case_id, pattern) or \
                fnmatch.fnmatchcase(f"{device}:{case_id}", pattern):
            return reason
    return None


def unsupported_reason(backend: str, case_id: str, device: str = "") -> str | None:
    return _match(UNSUPPORTED.get(backend, {}), case_id, device)


def expected_failure(backend: str, case_id: str, device: str = "") -> str | None:
    return _match(EXPECTED_FAILURES.get(backend, {}), case_id, device)


def not_applicable(case: Case, backend: Backend, spec: DeviceSpec) -> str | None:
    """Why `backend` on `spec` is not asked to run `case` (None: it is)."""
    for d in case.dtypes:
        cap = DTYPE_CAPABILITY.get(d)
        if cap is not None and cap not in backend.capabilities:
            return f"backend {backend.name} lacks capability {cap.value} (dtype {d})"
        if not spec.supports(d):
            return f"device {spec.name} does not support dtype {d}"
    return None


def classify(backend: str, case_id: str, raw: str, device: str = "") -> tuple[str, str]:
    """(final verdict, reason) from a raw pass/fail/error and the expectations."""
    why = expected_failure(backend, case_id, device)
    if why is None:
        return raw, ""
    if raw == "pass":
        return "xpass", f"unexpected pass (listed as expected failure: {why})"
    return "xfail", why

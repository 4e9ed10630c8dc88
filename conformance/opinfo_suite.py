"""PyTorch's OpInfo samples as a conformance suite: `hal conformance --suite torch-opinfo`.

`run_opinfo_suite(...)` runs the selected OpInfos (hal.conformance.opinfo: each sample
exported, imported, run on the backend for the spec, judged against eager torch) with a
CPU-time limit per sample, and `report_row` turns each sample's verdict into a row of
the conformance report (hal.conformance.report: JSON, .jsonl sidecar, JUnit XML):

    opinfo verdict   report verdict
    pass             pass
    unsupported      skip   (the reason names the ATen op or dtype hal lacks, and its
                             class and reason from hal.conformance.opinfo_scope)
    export_fail      skip   (torch.export or eager torch cannot run the sample)
    mismatch         fail
    crash, rejected, error
    timeout

so a run fails exactly when a sample crashes, is rejected with a typed error, runs out
of time or is outside the parity bound. `benchmarks/opinfo_sweep.py` is the same runner
with the OpInfo-level summary (before/after counts) for the results file.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hal.conformance import opinfo

STATUS = {"pass": "pass", "unsupported": "skip", "export_fail": "skip", "mismatch": "fail",
          "crash": "error", "rejected": "error", "timeout": "error"}


@contextlib.contextmanager
def sample_time_limit(seconds: float) -> Iterator[None]:
    """Raise opinfo.SampleTimeout in this thread once the process has used `seconds` of
    CPU time (ITIMER_PROF / SIGPROF, main thread only; elsewhere, or with seconds <= 0,
    no limit). CPU time, not wall-clock: on a shared machine a sample's verdict must not
    depend on what else is running."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise opinfo.SampleTimeout()

    previous = signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def run_opinfo(op: Any, max_samples: int, backend: str, spec: Any,
               timeout: float) -> list[opinfo.SampleResult]:
    """The first `max_samples` samples of one OpInfo, each within `timeout` seconds; a
    sample past the limit is a timeout and ends the OpInfo (its later samples are larger)."""
    name = opinfo.opinfo_name(op)
    mine: list[opinfo.SampleResult] = []
    try:
        for i, s in enumerate(opinfo.samples(op, max_samples)):
            with sample_time_limit(timeout):
                mine.append(opinfo.run_sample(op, i, s, backend, spec))
    except opinfo.SampleTimeout:
        mine.append(opinfo.SampleResult(name, len(mine), "timeout",
                                        f"ran past the per-sample limit of {timeout:g} CPU s"))
    except Exception as e:  # noqa: BLE001 - torch's sample generator failed
        mine.append(opinfo.SampleResult(name, len(mine), "export_fail",
                                        f"sample_inputs: {type(e).__name__}: {e}"[:400]))
    if not mine:
        mine.append(opinfo.SampleResult(name, 0, "export_fail", "no samples"))
    return mine


def run_opinfo_suite(ops: Iterable[Any], backend: str, spec: Any, *, max_samples: int = 3,
                     timeout: float = 60.0,
                     on_opinfo: Callable[[str, list], None] | None = None
                     ) -> list[opinfo.SampleResult]:
    """Every sample of `ops` (see run_opinfo); `on_opinfo(name, results)` after each."""
    from hal.devices.loader import load_spec

    if isinstance(spec, str):
        spec = load_spec(spec)
    out: list[opinfo.SampleResult] = []
    for op in ops:
        mine = run_opinfo(op, max_samples, backend, spec, timeout)
        out.extend(mine)
        if on_opinfo is not None:
            on_opinfo(opinfo.opinfo_name(op), mine)
    return out


def report_row(r: opinfo.SampleResult, backend: str, device: str) -> dict[str, Any]:
    """One conformance-report row for sample `r` (see the module docstring's table)."""
    reason = r.verdict + (f": {r.message}" if r.message else "")
    if r.verdict == "unsupported":
        from hal.conformance.opinfo_scope import classify

        cls, why = classify(r.missing, r.message)
        reason = f"unsupported [{cls}: {why}]: {r.message}"
    return {"id": r.case_id, "verdict": STATUS[r.verdict], "opinfo_verdict": r.verdict,
            "reason": reason[:500], "missing": list(r.missing), "seconds": round(r.seconds, 3),
            "repro": f"hal conformance --suite torch-opinfo -k '{r.opinfo}' "
                     f"--backend {backend} --device {device}"}

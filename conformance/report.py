"""Conformance reports: JSON (incremental and atomic), JUnit XML and a human summary.

`ReportWriter` appends each result to `<report>.jsonl` as it arrives (one
flushed line per case) and rewrites `<report>` every `every` cases (at most once per
`min_interval` seconds, and spaced so rewrites take ~5% of the run at most:
REWRITE_SPACING) and at the end, through a temporary file and os.replace, so a report
already written survives a crash or an interrupt of a later case. The JSON report is
{"meta": {...}, "summary": {...}, "results": [...]}: meta and summary indented, one
result a line (json's C encoder: indenting the whole suite's results took the pure-Python
encoder ~0.2 s per rewrite, ~3 s over a run's rewrites; a line is also what the .jsonl
holds, so a rewrite during the run reuses the sidecar's lines: ~0.014 s). `finalize`
holds a second Ctrl-C off until the report is written; `load_report` reads an earlier run back for
`hal conformance --resume`.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FAILING = ("fail", "error", "xpass")
VERDICTS = ("pass", "fail", "error", "xfail", "xpass", "skip")


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def shielded_from_interrupt() -> Iterator[None]:
    """Hold SIGINT off while a report is finalized (a second Ctrl-C must not leave the
    report older than the results already received); delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: pending.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if pending and callable(old):
        old(signal.SIGINT, None)


def load_report(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, results) of an earlier run: its JSON report united with its .jsonl sidecar,
    which holds every case as it arrived (a killed run's JSON may be older). Later records
    of an id win. Raises HalError naming the file when neither can be read."""
    from hal.errors import HalError

    path = Path(path)
    meta: dict[str, Any] = {}
    by_id: dict[str, dict[str, Any]] = {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ValueError("not a hal conformance report (no 'results' list)")
        meta = dict(doc.get("meta") or {})
        for r in doc["results"]:
            if isinstance(r, dict) and isinstance(r.get("id"), str) and "verdict" in r:
                by_id[r["id"]] = r
    except FileNotFoundError:
        raise HalError(f"{path}: no such report", hint="pass the --report file of the run "
                       "to resume") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise HalError(f"{path}: unreadable report ({e})",
                       hint="resume from an intact report (the .jsonl sidecar beside it "
                            "also works if you rename it)") from None
    sidecar = path.with_name(path.name + "l") if path.suffix == ".json" \
        else Path(str(path) + ".jsonl")
    if sidecar.exists():
        for line in sidecar.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if isinstance(r, dict) and isinstance(r.get("id"), str) and "verdict" in r:
                by_id[r["id"]] = r
    return meta, list(by_id.values())


def summarize(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    results = list(results)
    counts = Counter(r["verdict"] for r in results)
    by_kind: dict[str, Counter] = {}
    for r in results:
        by_kind.setdefault(r["id"].split("/")[0], Counter())[r["verdict"]] += 1
    return {"total": len(results), **{v: counts.get(v, 0) for v in VERDICTS},
            "ok": not any(counts.get(v, 0) for v in FAILING),
            # cases the backend ran on kernels other than the device's (runner: "substituted")
            "substituted": sum(1 for r in results if r.get("substituted")),
            "by_family": {k: dict(v) for k, v in sorted(by_kind.items())}}


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def document_text(meta: Mapping[str, Any], summary: Mapping[str, Any],
                  result_lines: Iterable[str]) -> str:
    """The JSON report's text: meta and summary indented, then one result (already
    encoded, one line) a line."""
    head = json.dumps({"meta": meta, "summary": summary}, indent=1).removesuffix("\n}")
    body = ",\n".join(result_lines)
    return f'{head},\n "results": [\n{body}\n ]\n}}\n'


# A rewrite of the whole JSON grows with the run; the next one waits at least this many
# times as long as the last one took, so rewrites cost at most ~1/REWRITE_SPACING of the
# run (the .jsonl sidecar has every case anyway).
REWRITE_SPACING = 20.0


class ReportWriter:
    """Collects results; writes the .jsonl sidecar per case and the JSON atomically."""

    def __init__(self, json_path: str | os.PathLike | None = None,
                 junit_path: str | os.PathLike | None = None,
                 meta: Mapping[str, Any] | None = None, every: int = 50,
                 min_interval: float = 5.0,
                 previous: Iterable[Mapping[str, Any]] = ()):
        self.json_path = Path(json_path) if json_path else None
        self.junit_path = Path(junit_path) if junit_path else None
        self.meta = dict(meta or {})
        self.every = every
        self.min_interval = min_interval  # seconds between rewrites (the .jsonl has every case)
        self._last_write = time.monotonic()
        self._write_cost = 0.0   # seconds the last rewrite took
        self.results: list[dict[str, Any]] = []
        self._lines: list[str] = []   # each result as the sidecar wrote it (one JSON line)
        self._sidecar = None
        if self.json_path:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self._sidecar = open(self.sidecar_path, "w", encoding="utf-8")  # noqa: SIM115
        for r in previous:  # a resumed run keeps what the earlier one received
            self.add(r)

    @property
    def sidecar_path(self) -> Path:
        assert self.json_path is not None
        return self.json_path.with_name(self.json_path.name + "l") \
            if self.json_path.suffix == ".json" else Path(str(self.json_path) + ".jsonl")

    def add(self, result: Mapping[str, Any]) -> None:
        r = _json_safe(dict(result))
        line = json.dumps(r) if self._sidecar is not None else None
        # results, lines and sidecar change together: a Ctrl-C between them left a report
        # whose summary counted a result its list and sidecar lacked (CI caught 37 vs 36)
        with shielded_from_interrupt():
            self.results.append(r)
            if line is not None:
                self._lines.append(line)
                self._sidecar.write(line + "\n")
                self._sidecar.flush()
            if len(self.results) % self.every == 0 and time.monotonic() - self._last_write \
                    >= max(self.min_interval, REWRITE_SPACING * self._write_cost):
                self.write_json(final=False)

    def document(self, final: bool) -> dict[str, Any]:
        return {"meta": {**self.meta, "complete": final}, "summary": summarize(self.results),
                "results": self.results}

    def write_json(self, final: bool) -> None:
        """Rewrite the JSON report. A rewrite during the run reuses the lines the sidecar
        got; the final one encodes the results again, since a caller may have added to
        them since (the CLI's shrunk reproducers)."""
        if self.json_path:
            t0 = time.monotonic()
            lines = self._lines if not final else [json.dumps(r) for r in self.results]
            atomic_write(self.json_path, document_text(
                {**self.meta, "complete": final}, summarize(self.results), lines))
            self._last_write = time.monotonic()
            self._write_cost = self._last_write - t0

    def finalize(self, complete: bool = True) -> dict[str, Any]:
        with shielded_from_interrupt():
            self.write_json(final=complete)
            if self.junit_path:
                atomic_write(self.junit_path, junit_xml(self.results, self.meta))
            if self._sidecar is not None:
                self._sidecar.close()
                self._sidecar = None
        return summarize(self.results)


def junit_xml(results: Iterable[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """JUnit XML: one <testcase> per case, classname = family, failures with the numbers."""
    results = list(results)
    s = summarize(results)
    suite = ET.Element("testsuite", name=f"hal-conformance-{meta.get('backend', '')}-"
                                         f"{meta.get('device', '')}",
                       tests=str(s["total"]), failures=str(s["fail"] + s["xpass"]),
                       errors=str(s["error"]), skipped=str(s["skip"] + s["xfail"]),
                       time=f"{sum(float(r.get('seconds', 0)) for r in results):.3f}")
    for r in results:
        tc = ET.SubElement(suite, "testcase", classname=r["id"].split("/")[0], name=r["id"],
                           time=f"{float(r.get('seconds', 0)):.4f}")
        v = r["verdict"]
        text = (f"max_abs={r.get('max_abs')} max_rel={r.get('max_rel')} bound={r.get('bound')} "
                f"ulp={r.get('ulp')}\n{r.get('detail', '')}\nreproduce: {r.get('repro', '')}")
        if v in ("fail", "xpass"):
            ET.SubElement(tc, "failure", message=r.get("reason", v)[:500]).text = text
        elif v == "error":
            ET.SubElement(tc, "error", message=r.get("reason", "error")[:500]).text = text
        elif v in ("skip", "xfail"):
            ET.SubElement(tc, "skipped", message=f"{v}: {r.get('reason', '')}"[:500])
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def summary_table(summary: Mapping[str, Any], results: list[Mapping[str, Any]],
                  title: str, limit: int = 25):
    """A rich renderable: verdicts per family, then the failures with their numbers."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title=title)
    t.add_column("family")
    for v in VERDICTS:
        t.add_column(v, justify="right")
    for fam, c in summary["by_family"].items():
        t.add_row(fam, *(str(c.get(v, 0)) for v in VERDICTS))
    t.add_row("total", *(str(summary[v]) for v in VERDICTS))
    if summary.get("substituted"):
        t.caption = (f"{summary['substituted']} of these ran substitute kernels for the "
                     "device's (each result's 'substituted' says which and why)")
    parts: list[Any] = [t]
    bad = [r for r in results if r["verdict"] in FAILING]
    if bad:
        f = Table(title=f"failures ({len(bad)}; first {min(limit, len(bad))})")
        for col in ("case", "verdict", "max abs", "bound", "ulp max", "reason", "reproduce"):
            f.add_column(col)
        for r in bad[:limit]:
            f.add_row(r["id"], r["verdict"], f"{r.get('max_abs', '')}"[:10],
                      f"{r.get('bound', '')}"[:10], f"{(r.get('ulp') or {}).get('max', '')}"[:8],
                      str(r.get("reason", ""))[:70], r.get("repro", ""))
        parts.append(f)
    return Group(*parts)

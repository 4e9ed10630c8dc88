"""Branch coverage of hal's lowering reached by conformance runs (issue 21).

`measuring()` starts coverage.py (branch mode) over `hal/lowering`, `fusion/` and
cpu_sim's code generator and yields a `CoverageRun`; after the block,
`run.report()` gives per-area figures: branches, branches reached, percent, the
missing branches per file. Lines that only plant self-test faults (the
`options.fault(...)` hooks) are excluded: a clean run must not reach them. The
lowering's registry and its planning memos (hal/lowering/memo.py: cache hits, misses,
bounds) are infrastructure, not lowering decisions, and are left out of the figure.

Used by `hal conformance --coverage` (a hardware team's run prints the figure for
its own spec; the run is in-process, one worker) and by
benchmarks/conformance_coverage.py (the suite's figure, the minimal covering
case set CI re-measures).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("hal/lowering", "fusion", "backends/cpu_sim")  # directories; AREAS pick files
AREAS = {
    "lowering": ("hal/lowering",),
    "fusion": ("fusion",),
    "cpu_sim_codegen": ("backends/cpu_sim/codegen.py", "backends/cpu_sim/facts.py",
                        "backends/cpu_sim/stmt_context.py", "backends/cpu_sim/async_emit.py"),
}
OMIT = ("*/hal/lowering/faults.py", "*/hal/lowering/registry.py", "*/hal/lowering/memo.py",
        "*/cpu_sim/faults.py")
EXCLUDE = (r"faults\.active\(", r"\.fault\(", r"faults\.truncate", r"# self-test hook",
           r"\(self-test hook\)", r"faults\.faulty_", r"pragma: no cover")


def area_of(path: str) -> str | None:
    rel = os.path.relpath(path, ROOT)
    for name, prefixes in AREAS.items():
        if any(rel == p or rel.startswith(p + "/") for p in prefixes):
            return name
    return None


@dataclass
class CoverageRun:
    cov: object
    data_file: str
    areas: dict = field(default_factory=dict)
    universe: dict = field(default_factory=dict)   # lowering file -> set of branch arcs

    def report(self) -> dict:
        """{area: {branches, covered, percent, files: {file: {branches, covered, missing}}}}"""
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            self.cov.json_report(outfile=f.name, show_contexts=False)
            rep = json.loads(Path(f.name).read_text())
        areas: dict[str, dict] = {a: {"branches": 0, "covered": 0, "files": {}} for a in AREAS}
        for path, fd in rep["files"].items():
            a = area_of(path)
            if a is None:
                continue
            s = fd["summary"]
            areas[a]["branches"] += s["num_branches"]
            areas[a]["covered"] += s["covered_branches"]
            areas[a]["files"][os.path.relpath(path, ROOT)] = {
                "branches": s["num_branches"], "covered": s["covered_branches"],
                "missing": [list(x) for x in fd.get("missing_branches", [])]}
            if a == "lowering":
                self.universe[path] = {tuple(x) for x in fd.get("executed_branches", [])} | \
                    {tuple(x) for x in fd.get("missing_branches", [])}
        for v in areas.values():
            v["percent"] = round(100.0 * v["covered"] / max(1, v["branches"]), 2)
        self.areas = areas
        return areas

    def per_context_arcs(self) -> dict[str, set]:
        """The lowering branch arcs each coverage context (case) reached: one query of the
        data file (coverage's per-context API re-filters every context per file, which took
        hours for a whole suite's 3,671 contexts)."""
        import sqlite3

        if not self.universe:
            self.report()
        self.cov.save()
        by_file = {os.path.abspath(p): (p, b) for p, b in self.universe.items()}
        first: dict[str, Callable[[int], int]] = {}
        per: dict[str, set] = {}
        con = sqlite3.connect(self.data_file)
        try:
            rows = con.execute("select file.path, context.context, arc.fromno, arc.tono from arc "
                               "join file on file.id = arc.file_id "
                               "join context on context.id = arc.context_id")
            for path, ctx, a, b in rows:
                hit = by_file.get(os.path.abspath(path))
                if not ctx or hit is None:
                    continue
                if path not in first:
                    first[path] = _first_lines(path)
                # the data holds traced lines; a condition over several lines is reported
                # (and counted) from its first line, as coverage's own analysis does
                a, b = first[path](a), first[path](b)
                if (a, b) in hit[1]:
                    per.setdefault(ctx, set()).add((hit[0], a, b))
        finally:
            con.close()
        return per

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.data_file)


def _first_lines(path: str) -> Callable[[int], int]:
    """Traced line -> the first line of its statement (negative: an exit from it)."""
    from coverage.parser import PythonParser

    parser = PythonParser(filename=path)
    parser.parse_source()
    return lambda n: parser.first_line(n) if n > 0 else -parser.first_line(-n)


def _coverage(data_file: str):
    import coverage

    cov = coverage.Coverage(data_file=data_file, branch=True,
                            source=[str(ROOT / d) for d in SOURCES], omit=list(OMIT))
    for pat in EXCLUDE:
        cov.exclude(pat)
    return cov


def load_run(data_file: str) -> CoverageRun:
    """A finished measurement's data file, read back (to re-analyse it without re-running)."""
    cov = _coverage(data_file)
    cov.load()
    return CoverageRun(cov, data_file)


@contextlib.contextmanager
def measuring() -> Iterator[CoverageRun]:
    """Measure branch coverage of the AREAS for the duration of the block (this process)."""
    fd, data_file = tempfile.mkstemp(prefix="halcov", suffix=".db")
    os.close(fd)
    cov = _coverage(data_file)
    run = CoverageRun(cov, data_file)
    cov.start()
    try:
        yield run
    finally:
        cov.stop()
        cov.save()


def summary_line(areas: dict) -> str:
    low = areas["lowering"]
    return (f"lowering branch coverage reached by this run: {low['percent']:.1f}% "
            f"({low['covered']}/{low['branches']} branches of hal/lowering)")

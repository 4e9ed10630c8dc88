"""Fused memory-bound kernels against the measured copy bandwidth, torch eager and torch.compile.

The issue's target, checked side by side in ONE run on one device:

    fused memory-bound kernels (an elementwise chain, softmax, layer_norm, rms_norm; rows
    of 4k to 32k columns; bf16 and f32) reach >= 80% of the measured device-to-device
    copy bandwidth, and are at least as fast as torch eager and torch.compile.

Each case is built with hal.bench.cases.make_case and timed with hal.bench.runner.run_case
(the same code as `hal bench`): hal on --backend, the baselines (default torch and
torch-compile) on the same device, and the copy reference (hal.bench.copy_bandwidth: a
torch `dst.copy_(src)` moving the same total bytes, measured once per size). Achieved
GB/s = compulsory bytes (inputs read once, output written once) / median time.

Shapes: ROWS x COLS with COLS in 4096, 8192, 16384, 32768 and ROWS = --elements / COLS
(default 2^24 elements: 32 MiB per bf16 tensor, 64 MiB per f32 tensor; the 4 ops x 4
column counts x 2 dtypes make 32 cases). Cases run extremes first (4096 and 32768
columns) so a run cut short by --time-budget still spans the range; past 75% of the
budget torch-compile is skipped (labelled) and a case that would not fit is skipped.

On a simulated backend (--backend cpu_sim) every hal figure and the copy reference are
MODELLED from the device spec and labelled so; baselines then run on the host CPU and
nothing is a verdict ("n/a (modelled)"). --quick uses tiny shapes for that smoke run.

Writes OUT/membound.md (header: date, command, machine; table; copy references),
OUT/membound.json and OUT/membound.csv, rewritten after every case so a killed run leaves
what it had. Progress goes to stderr. Exit code 0 when the run completed (verdicts are in
the table), 1 with --strict unless every case PASSes, 2 on bad arguments.

    python benchmarks/bench_membound.py --backend cuda --device h100-sxm --out out/membound
    python benchmarks/bench_membound.py --backend cpu_sim --quick --out /tmp/membound
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hal.backend import Capability
from hal.bench import provenance as prov
from hal.bench.baselines import BaselineResult, get_baseline
from hal.bench.cases import BenchCase, make_case
from hal.bench.copy_bandwidth import CopyReference, CopyReferences, cuda_device_name
from hal.bench.report import write_csv
from hal.bench.runner import BenchResult, copy_mode, run_case, summarize_times, touched_bytes
from hal.errors import HalError

# name -> (make_case spelling, what it computes)
OPS: dict[str, tuple[str, str]] = {
    "silu_residual": ("silu+residual", "elementwise chain x*sigmoid(x) + y"),
    "softmax": ("softmax", "softmax over the last axis"),
    "layer_norm": ("layer_norm", "layer_norm over the last axis, weight and bias"),
    "rms_norm": ("rms_norm", "rms_norm over the last axis, weight"),
    "add_gelu": ("elementwise+gelu", "residual add then exact gelu"),
}
DEFAULT_OPS = ("silu_residual", "softmax", "layer_norm", "rms_norm")
FULL_COLS = (4096, 32768, 8192, 16384)       # extremes first
QUICK_COLS = (256, 512)
QUICK_ROWS = 4
DEFAULT_ELEMENTS = 1 << 24
MIN_PCT_OF_COPY = 80.0
COMPILE_BUDGET_FRACTION = 0.75

MD_COLUMNS = ("case", "shape", "dtype", "hal time", "GB/s", "copy GB/s", "% of copy BW",
              "torch eager", "torch.compile", "speedup vs eager", "speedup vs compile",
              "verdict")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="cuda", help="hal backend: cuda, rocm, cpu_sim "
                    "(default: cuda)")
    ap.add_argument("--device", default=None, help="device spec (default: the backend's own)")
    ap.add_argument("--out", required=True, help="directory for membound.md/.json/.csv")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny shapes ({QUICK_ROWS} x {', '.join(map(str, QUICK_COLS))}) for "
                         "a smoke run, e.g. on cpu_sim without a GPU")
    ap.add_argument("--ops", default=",".join(DEFAULT_OPS),
                    help=f"comma-separated, from {', '.join(OPS)} (default: %(default)s)")
    ap.add_argument("--cols", default=None, help="comma-separated row lengths (default: "
                    + ",".join(map(str, FULL_COLS)) + ")")
    ap.add_argument("--dtypes", default="bf16,f32", help="default: %(default)s")
    ap.add_argument("--elements", type=int, default=DEFAULT_ELEMENTS,
                    help="elements per [ROWS, COLS] tensor; ROWS = elements / COLS "
                         "(default: %(default)s)")
    ap.add_argument("--rows", type=int, default=None, help="fixed ROWS (overrides --elements)")
    ap.add_argument("--baselines", default="torch,torch-compile",
                    help="comma-separated hal.bench baselines (default: %(default)s); "
                         "'' for none")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-flush-l2", dest="flush_l2", action="store_false",
                    help="do not touch 2 x L2 between timed runs (hal, baselines and copy)")
    ap.add_argument("--min-pct", type=float, default=MIN_PCT_OF_COPY,
                    help="%% of copy bandwidth a case must reach (default: %(default)s)")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for the whole run (0: none); past 75%% torch-compile is "
                         "skipped, and a case that would not fit is skipped, both labelled")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 unless every case PASSes")
    args = ap.parse_args(argv)
    args.ops = _csv_list(args.ops)
    bad = [o for o in args.ops if o not in OPS]
    if bad or not args.ops:
        ap.error(f"unknown op(s) {bad}; choose from {', '.join(OPS)}")
    args.dtypes = _csv_list(args.dtypes)
    args.baselines = _csv_list(args.baselines)
    try:
        args.cols = [int(c) for c in _csv_list(args.cols)] if args.cols else \
            list(QUICK_COLS if args.quick else FULL_COLS)
    except ValueError:
        ap.error(f"--cols {args.cols!r}: comma-separated integers")
    if args.rows is None and args.quick:
        args.rows = QUICK_ROWS
    for b in args.baselines:
        try:
            get_baseline(b)
        except HalError as e:
            ap.error(e.message)
    return args


# --------------------------------------------------------------------------- one row


@dataclass
class Row:
    """One case's outcome: hal's result (or the error) with baselines and copy reference."""

    op: str
    shape: str
    dtype: str
    case: str
    compulsory_bytes: int = 0
    result: BenchResult | None = None
    error: str = ""
    baselines: list[BaselineResult] = field(default_factory=list)
    copy: CopyReference | None = None
    skipped: str = ""               # the whole case, why
    skipped_baselines: list[str] = field(default_factory=list)   # for the time budget
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # -- figures ---------------------------------------------------------------------
    @property
    def modelled(self) -> bool:
        return bool(self.result and self.result.modelled)

    @property
    def hal_s(self) -> float | None:
        return self.result.median_s if self.result and self.result.median_s else None

    @property
    def gbps(self) -> float | None:
        return self.compulsory_bytes / self.hal_s / 1e9 if self.hal_s else None

    @property
    def copy_gbps(self) -> float | None:
        return self.copy.GBps if self.copy and self.copy.available else None

    @property
    def pct_of_copy(self) -> float | None:
        g, c = self.gbps, self.copy_gbps
        return 100.0 * g / c if g and c else None

    def baseline(self, name: str) -> BaselineResult | None:
        return next((b for b in self.baselines if b.name == name), None)

    def baseline_s(self, name: str) -> float | None:
        b = self.baseline(name)
        return summarize_times(b.times_s)["median_s"] if b and b.available else None

    def baseline_pct(self, name: str) -> float | None:
        """A baseline's GB/s as a percentage of the copy reference (same device only)."""
        b, t, c = self.baseline(name), self.baseline_s(name), self.copy_gbps
        if not (b and t and c) or b.where == "host CPU" or self.copy.modelled:
            return None
        return 100.0 * self.compulsory_bytes / t / 1e9 / c

    def speedup(self, name: str) -> float | None:
        """baseline time / hal time (> 1: hal faster); None when not comparable (a host-CPU
        baseline against a modelled device time)."""
        base, hal = self.baseline_s(name), self.hal_s
        b = self.baseline(name)
        if b is not None and b.where == "host CPU" and (self.modelled or not self.result
                                                         or "host" not in self.result.method):
            return None
        return base / hal if base and hal else None

    def checks(self, min_pct: float, wanted: list[str]) -> dict[str, bool | None]:
        """Each criterion: True met, False missed, None not measured."""
        pct = self.pct_of_copy
        out: dict[str, bool | None] = {"bandwidth": None if pct is None else pct >= min_pct}
        for name in wanted:
            s = self.speedup(name)
            out[f"vs_{name}"] = None if s is None else s >= 1.0
        return out

    def verdict(self, min_pct: float, wanted: list[str]) -> str:
        if self.skipped:
            return f"SKIPPED ({self.skipped})"
        if self.error:
            return "ERROR"
        if self.modelled:
            return "n/a (modelled)"
        c = self.checks(min_pct, wanted)
        missed = [k for k, v in c.items() if v is False]
        unknown = [k for k, v in c.items() if v is None]
        if missed:
            why = []
            for k in missed:
                if k == "bandwidth":
                    why.append(f"{self.pct_of_copy:.0f}% < {min_pct:.0f}% of copy BW")
                else:
                    why.append(f"slower than {k[3:]}")
            return "FAIL (" + "; ".join(why) + ")"
        if unknown:
            return "INCOMPLETE (" + ", ".join(k.removeprefix("vs_") + " not measured"
                                              for k in unknown) + ")"
        return "PASS"

    def to_dict(self, min_pct: float, wanted: list[str]) -> dict[str, Any]:
        return {"op": self.op, "shape": self.shape, "dtype": self.dtype, "case": self.case,
                "compulsory_bytes": self.compulsory_bytes, "modelled": self.modelled,
                "method": self.result.method if self.result else None,
                "hal_median_s": self.hal_s, "hal_GBps": self.gbps,
                "copy_GBps": self.copy_gbps, "pct_of_copy_bw": self.pct_of_copy,
                **{f"{n}_median_s": self.baseline_s(n) for n in wanted},
                **{f"{n}_pct_of_copy_bw": self.baseline_pct(n) for n in wanted},
                **{f"speedup_vs_{n}": self.speedup(n) for n in wanted},
                "checks": self.checks(min_pct, wanted),
                "verdict": self.verdict(min_pct, wanted), "error": self.error or None,
                "skipped": self.skipped or None,
                "skipped_baselines": list(self.skipped_baselines), "seconds": round(self.seconds, 2),
                "copy_reference": self.copy.to_dict() if self.copy else None,
                "baselines": [b.to_dict() for b in self.baselines],
                "hal": self.result.to_dict(with_provenance=False) if self.result else None,
                "notes": list(dict.fromkeys(self.notes))}


# --------------------------------------------------------------------------- running


def plan_cases(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """(op, rows, cols, dtype) in run order: columns outermost, extremes first."""
    out = []
    for cols in args.cols:
        rows = args.rows or max(1, args.elements // cols)
        for dt in args.dtypes:
            for op in args.ops:
                out.append((op, rows, cols, dt))
    return out


def _backend_target(backend: str) -> tuple[Any, str]:
    """(backend instance or None, baseline target "gpu"/"host") without requiring it runs."""
    from hal.backends_registry import get_backend

    try:
        impl = get_backend(backend)
    except HalError:
        return None, "gpu" if backend in ("cuda", "rocm") else "host"
    return impl, "gpu" if Capability.REAL_HARDWARE in impl.capabilities else "host"


def run_row(op: str, case: BenchCase, args: argparse.Namespace, spec: Any,
            baselines: list[str], copies: CopyReferences) -> Row:
    """run_case for one case; when hal fails, the baselines and copy reference still run."""
    rows, cols = case.shapes[0]
    row = Row(op, f"{rows}x{cols}", case.dtype, case.name)
    row.compulsory_bytes, _ = touched_bytes(case.graph)
    try:
        r = run_case(case, args.backend, spec, repeat=args.repeat, warmup=args.warmup,
                     flush_l2=args.flush_l2, baselines=baselines, seed=args.seed,
                     copy_reference=True, copy_cache=copies)
    except Exception as e:  # noqa: BLE001 - hal on new hardware may fail in any way
        msg = (e.message if isinstance(e, HalError) else str(e)).strip()
        row.error = f"{type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}"
        impl, target = _backend_target(args.backend)
        flush = 2 * spec.l2_bytes if args.flush_l2 else 0
        row.baselines = [get_baseline(b).run(case, target, args.repeat, args.warmup, flush,
                                             args.seed) for b in baselines]
        mode = copy_mode(impl, "measured", args.backend) if impl is not None else \
            ("measured" if target == "gpu" else "not available: backend did not load")
        row.copy = copies.get(row.compulsory_bytes, spec, mode)
        return row
    row.result, row.baselines, row.copy = r, list(r.baselines), r.copy_reference
    row.notes += r.notes
    return row


# --------------------------------------------------------------------------- report


def _t(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-2 else f"{s * 1e3:.2f} ms"


def _gb(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.3g}")


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _base_cell(row: Row, name: str) -> str:
    b = row.baseline(name)
    if b is None:
        return "skipped (time)" if name in row.skipped_baselines else "-"
    if not b.available:
        return "unavailable"
    t = _t(row.baseline_s(name))
    return t + (" (host CPU)" if b.where == "host CPU" else "")



def markdown(rows: list[Row], header: dict[str, Any], args: argparse.Namespace,
             wanted: list[str], copies_seen: list[CopyReference]) -> str:
    lines = ["# Fused memory-bound kernels vs copy bandwidth, torch eager and torch.compile", ""]
    for k in ("date", "command", "machine", "backend", "device spec", "method",
              "copy reference", "baselines", "criteria", "hal version", "git commit", "torch"):
        if header.get(k) not in (None, ""):
            lines.append(f"- **{k}**: {header[k]}")
    if header.get("modelled"):
        lines += ["", "> **MODELLED**: hal times and the copy reference come from the device "
                      "spec (cpu_sim), not from hardware; baselines ran on the host CPU. "
                      "No verdict is drawn."]
    lines += ["", "| " + " | ".join(MD_COLUMNS) + " |",
              "|" + "|".join("---" for _ in MD_COLUMNS) + "|"]
    order = {o: i for i, o in enumerate(OPS)}
    for r in sorted(rows, key=lambda r: (order[r.op], r.dtype, int(r.shape.split("x")[1]))):
        mark = " (modelled)" if r.modelled else ""
        copy = "-" if r.copy_gbps is None else _gb(r.copy_gbps) + \
            (" (modelled)" if r.copy and r.copy.modelled else "")
        cells = [r.op, r.shape, r.dtype,
                 ("error" if r.error else _t(r.hal_s) + mark) if not r.skipped else "skipped",
                 _gb(r.gbps), copy,
                 "-" if r.pct_of_copy is None else f"{r.pct_of_copy:.0f}%",
                 _base_cell(r, "torch") if "torch" in wanted else "-",
                 _base_cell(r, "torch-compile") if "torch-compile" in wanted else "-",
                 _x(r.speedup("torch")), _x(r.speedup("torch-compile")),
                 r.verdict(args.min_pct, wanted)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    counts: dict[str, int] = {}
    for r in rows:
        v = r.verdict(args.min_pct, wanted).split(" ")[0]
        counts[v] = counts.get(v, 0) + 1
    lines += ["", "Speedup = baseline time / hal time (> 1: hal faster). GB/s = compulsory bytes "
              "(inputs read once, outputs written once) / median time. % of copy BW compares "
              "with a device-to-device copy moving the same total bytes.",
              "", "**summary**: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    errors = [r for r in rows if r.error]
    if errors:
        lines += ["", "## errors", ""] + [f"- {r.case}: {r.error}" for r in errors]
    unavailable = {(b.name, b.reason) for r in rows for b in r.baselines if not b.available}
    if unavailable:
        lines += ["", "## unavailable baselines", ""] + [f"- {n}: {why}"
                                                        for n, why in sorted(unavailable)]
    if copies_seen:
        lines += ["", "## copy references (one per distinct size)", "",
                  "| bytes per copy (src = dst) | bytes moved | GB/s | method | where |",
                  "|---|---|---|---|---|"]
        for c in sorted(copies_seen, key=lambda c: c.bytes_per_copy):
            gb = _gb(c.GBps) if c.available else c.reason
            lines.append(f"| {c.bytes_per_copy} | {c.bytes_moved} | {gb} | {c.method} | "
                         f"{c.where} |")
    notes = list(dict.fromkeys(n for r in rows for n in r.notes))
    if notes:
        lines += ["", "## notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[Row], header: dict[str, Any], provenance: dict,
                  args: argparse.Namespace, wanted: list[str], done: bool) -> None:
    copies_seen = list({id(r.copy): r.copy for r in rows if r.copy is not None}.values())
    out.mkdir(parents=True, exist_ok=True)
    (out / "membound.md").write_text(markdown(rows, header, args, wanted, copies_seen))
    doc = {"schema": "hal.bench.membound/1", "complete": done, "header": header,
           "criteria": {"min_pct_of_copy_bw": args.min_pct,
                        "at_least_as_fast_as": wanted},
           "provenance": provenance,
           "copy_references": [c.to_dict() for c in copies_seen],
           "rows": [r.to_dict(args.min_pct, wanted) for r in rows]}
    (out / "membound.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    results = [r.result for r in rows if r.result is not None]
    if results:
        write_csv(out / "membound.csv", results, provenance)


def make_header(args: argparse.Namespace, spec: Any, provenance: dict, argv: list[str],
                modelled: bool) -> dict[str, Any]:
    gpu = cuda_device_name()
    machine = f"{gpu} (torch.cuda.get_device_name)" if gpu else \
        f"no GPU visible to torch; host {provenance.get('cpu', '?')}"
    copy = ("modelled: the device spec's DRAM bandwidth "
            f"({spec.dram_bandwidth / 1e9:.0f} GB/s), not measured" if modelled else
            "measured: torch dst.copy_(src) of compulsory bytes / 2 (read + write counted), "
            "torch.cuda.Event, median, once per distinct size")
    return {"date": provenance.get("date"),
            "command": " ".join(shlex.quote(a) for a in ["python", *argv]),
            "machine": machine, "hostname": provenance.get("hostname"),
            "backend": args.backend, "device spec": spec.name,
            "method": "MODELLED from the spec (cpu_sim)" if modelled else
                      "measured (device events), median of "
                      f"{args.repeat} after {args.warmup} warmup"
                      + (", 2 x L2 flushed between runs" if args.flush_l2 else ""),
            "modelled": modelled, "copy reference": copy,
            "baselines": ", ".join(args.baselines) or "none",
            "criteria": f">= {args.min_pct:.0f}% of copy BW and at least as fast as "
                        + (", ".join(args.baselines) or "(no baselines)"),
            "hal version": provenance.get("hal_version"),
            "git commit": provenance.get("git_commit"),
            "torch": provenance.get("torch_version")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    args = parse_args(argv[1:])
    from hal.cli.common import resolve_device

    impl, _ = _backend_target(args.backend)
    spec = resolve_device(args.device, impl.default_device if impl else "h100-sxm")
    modelled = impl is not None and Capability.SIMULATED in impl.capabilities
    if any(b.startswith("torch") for b in args.baselines):
        try:
            import torch  # noqa: F401 - loaded now so provenance records its version
        except ImportError:
            pass
    provenance = prov.collect(spec, args.backend, argv)
    header = make_header(args, spec, provenance, argv, modelled)
    out = Path(args.out)
    flush = 2 * spec.l2_bytes if args.flush_l2 else 0
    copies = CopyReferences(repeat=max(args.repeat, 20), warmup=max(args.warmup, 3),
                            flush_bytes=flush)
    plan = plan_cases(args)
    log(f"membound: {len(plan)} cases on {args.backend} ({spec.name}), baselines "
        f"{', '.join(args.baselines) or 'none'}, machine: {header['machine']}"
        + (f", time budget {args.time_budget:.0f} s" if args.time_budget else ""))
    rows: list[Row] = []
    start = time.monotonic()
    for i, (op, nrows, cols, dt) in enumerate(plan, 1):
        elapsed = time.monotonic() - start
        shape = f"{nrows}x{cols}"
        name = f"{op} {shape} {dt}"
        per_case = (elapsed / len(rows)) if rows else 0.0
        if args.time_budget and rows and elapsed + per_case > args.time_budget:
            rows.append(Row(op, shape, dt, name, skipped="time budget"))
            log(f"[{i}/{len(plan)}] {name}: skipped (time budget, {elapsed:.0f} s used)")
            continue
        baselines = list(args.baselines)
        row_skips: list[str] = []
        if args.time_budget and elapsed > COMPILE_BUDGET_FRACTION * args.time_budget \
                and "torch-compile" in baselines:
            baselines.remove("torch-compile")
            row_skips.append("torch-compile")
        log(f"[{i}/{len(plan)}] {name}: running ({elapsed:.0f} s elapsed)")
        t0 = time.monotonic()
        try:
            case = make_case(OPS[op][0], [shape], dt, name=name)
            case.cache_inputs = True
            row = run_row(op, case, args, spec, baselines, copies)
            case.release_inputs()
        except Exception as e:  # noqa: BLE001 - building the case failed: record, go on
            row = Row(op, shape, dt, name, error=f"{type(e).__name__}: {e}"[:300])
        row.seconds = time.monotonic() - t0
        if row_skips:
            row.skipped_baselines = row_skips
            row.notes.append("torch-compile skipped for some cases: past "
                             f"{COMPILE_BUDGET_FRACTION:.0%} of the time budget")
        rows.append(row)
        pct = "-" if row.pct_of_copy is None else f"{row.pct_of_copy:.0f}%"
        log(f"[{i}/{len(plan)}] {name}: hal {_t(row.hal_s)}"
            + (" (modelled)" if row.modelled else "")
            + (f" ERROR {row.error}" if row.error else "")
            + f", {pct} of copy BW, "
            + ", ".join(f"{b} {_t(row.baseline_s(b))}" for b in baselines)
            + f" -> {row.verdict(args.min_pct, args.baselines)} ({row.seconds:.1f} s)")
        write_outputs(out, rows, header, provenance, args, args.baselines, done=False)
    write_outputs(out, rows, header, provenance, args, args.baselines, done=True)
    print((out / "membound.md").read_text(), flush=True)
    verdicts = [r.verdict(args.min_pct, args.baselines) for r in rows]
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.split(" ")[0]] = counts.get(v.split(" ")[0], 0) + 1
    log(f"membound: wrote {out / 'membound.md'}, {out / 'membound.json'} in "
        f"{time.monotonic() - start:.0f} s; " + ", ".join(f"{k} {n}" for k, n in
                                                        sorted(counts.items()))
        + f" of {len(verdicts)} cases")
    if args.strict and not all(v == "PASS" for v in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the cpu_sim conformance suite, and check that two runs agree case by case.

Run (one report per device, timed with /usr/bin/time -v, load average before and after):

    python benchmarks/bench_conformance_speed.py run OUT_DIR [--devices h100-sxm,mi300x]

runs `HAL_MEASURE=off hal conformance --backend cpu_sim --device D --strict --workers 2
--report OUT_DIR/D.json` and writes OUT_DIR/D.time.json (wall, user, sys, peak RSS, load).

Compare (speed and identity):

    python benchmarks/bench_conformance_speed.py compare BEFORE_DIR AFTER_DIR

prints, per device, the wall and CPU time of both runs and the per-case CPU sums
(`cpu_seconds` of every case, which excludes start-up and worker scheduling) in total and
per family, with the before/after ratios; then checks that every case record is identical
apart from its timing fields (`seconds`, `cpu_seconds`): verdict, check, max_abs, max_rel,
bound, ulps and every per-output error record (fused, unfused, direct). It exits 1 when a
case differs or is missing. The machine may be shared: prefer the per-case CPU sums.

Side by side (the robust way on a shared VM whose speed drifts by 30% within minutes):

    python benchmarks/bench_conformance_speed.py side OUT_DIR --before-hal OLD_VENV/bin/hal
        [--before-no-strict] [--devices ...]

runs, per device, the before and the after suite at the same time, each as one process
(`--workers 1`, BLAS on one thread as in the suite's workers), so both see the same
machine; whichever ends first is restarted as a filler (its report discarded) until the
other ends, so the other never runs alone, and the filler is stopped before the next
device's pair starts. The reports land in OUT_DIR/before and OUT_DIR/after for `compare`
(with `--common` against an older checkout). The steal time of the run (/proc/stat) is
printed beside it.

Against an older checkout whose suite had fewer cases and leaner records (the issue's
starting point), run it with `run OUT_DIR --no-strict --hal OLD_VENV/bin/hal` (no --strict
flag then) and compare with `compare OLD NEW --common`: the per-case time sums are then taken
over the case ids both runs have (`seconds`, the older reports have no `cpu_seconds`), the
cases only one run has are counted, and only verdicts must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TIMING_FIELDS = ("seconds", "cpu_seconds")
DEVICES = ("h100-sxm", "mi300x")


def _load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(out: Path, devices: tuple[str, ...], hal: str, pythonpath: str | None = None,
        strict: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HAL_MEASURE="off")
    if pythonpath:   # another checkout's package tree (see --pythonpath)
        env["PYTHONPATH"] = pythonpath
    for dev in devices:
        report = out / f"{dev}.json"
        for stale in (report, out / f"{dev}.json.jsonl", out / f"{dev}.jsonl"):
            stale.unlink(missing_ok=True)
        load0, t0 = _load_avg(), time.perf_counter()
        cmd = [hal, "conformance", "--backend", "cpu_sim", "--device", dev,
               *(["--strict"] if strict else []), "--workers", "2", "--report", str(report)]
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True,
                           text=True, cwd=out)
        wall = time.perf_counter() - t0
        tv = dict(re.findall(r"^\s*([^:\n]+?): (\S+)$", r.stderr, re.M))
        rec = {"device": dev, "rc": r.returncode, "wall_s": round(wall, 2),
               "user_s": float(tv.get("User time (seconds)", "nan")),
               "sys_s": float(tv.get("System time (seconds)", "nan")),
               "peak_rss_kib": int(tv.get("Maximum resident set size (kbytes)", "0")),
               "load_before": load0, "load_after": _load_avg()}
        (out / f"{dev}.time.json").write_text(json.dumps(rec, indent=1))
        (out / f"{dev}.log").write_text(r.stdout[-4000:])
        print(json.dumps(rec), flush=True)


def _steal_ticks() -> int:
    try:
        return int(Path("/proc/stat").read_text().split()[8])
    except (OSError, IndexError, ValueError):
        return 0


def side(out: Path, devices: tuple[str, ...], hal_before: str, hal_after: str,
         strict_before: bool = True) -> None:
    """Each device's before and after suites at once, one process each (module doc).
    BLAS on one thread in both, as in the suite's worker processes: a second BLAS thread
    per process would oversubscribe the cores and inflate the per-case wall times."""
    env = dict(os.environ, HAL_MEASURE="off", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    for d in ("before", "after", "filler"):
        (out / d).mkdir(parents=True, exist_ok=True)

    def cmd(hal: str, dev: str, report: Path, strict: bool) -> list[str]:
        return ["/usr/bin/time", "-v", hal, "conformance", "--backend", "cpu_sim", "--device",
                dev, *(["--strict"] if strict else []), "--workers", "1", "--report",
                str(report)]

    for dev in devices:
        sides = {"before": (hal_before, strict_before), "after": (hal_after, True)}
        procs, t0, steal0 = {}, {}, _steal_ticks()
        for tag, (hal, strict) in sides.items():
            report = out / tag / f"{dev}.json"
            for stale in (report, report.with_name(report.name + ".jsonl")):
                stale.unlink(missing_ok=True)
            t0[tag] = time.perf_counter()
            procs[tag] = subprocess.Popen(cmd(hal, dev, report, strict), env=env, cwd=out / tag,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
        fillers: list[subprocess.Popen] = []
        pending = dict(procs)
        while pending:
            time.sleep(0.2)
            for tag, p in list(pending.items()):
                if p.poll() is None:
                    continue
                stdout, stderr = p.communicate()
                wall = time.perf_counter() - t0[tag]
                del pending[tag]
                tv = dict(re.findall(r"^\s*([^:\n]+?): (\S+)$", stderr, re.M))
                rec = {"device": dev, "rc": p.returncode, "wall_s": round(wall, 2),
                       "user_s": float(tv.get("User time (seconds)", "nan")),
                       "sys_s": float(tv.get("System time (seconds)", "nan")),
                       "peak_rss_kib": int(tv.get("Maximum resident set size (kbytes)", "0")),
                       "load_before": "side by side", "load_after": _load_avg()}
                (out / tag / f"{dev}.time.json").write_text(json.dumps(rec, indent=1))
                (out / tag / f"{dev}.log").write_text(stdout[-4000:])
                print(tag, json.dumps(rec), flush=True)
                if pending:   # keep the other one company: the same suite again, discarded
                    hal, strict = sides[tag]
                    # hal itself, not under /usr/bin/time: terminating time would leave
                    # its hal running into the next pair
                    fillers.append(subprocess.Popen(
                        cmd(hal, dev, out / "filler" / f"{dev}.{tag}.json", strict)[2:],
                        env=env, cwd=out / "filler", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL))
        for f in fillers:
            f.terminate()
            f.wait()
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        print(f"{dev}: steal {(_steal_ticks() - steal0) / ticks:.1f} CPU s during the pair",
              flush=True)


def _cases(path: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(path.read_text())["results"]}


def _family(case_id: str) -> str:
    return case_id.split("/", 1)[0]


def cpu_by_family(cases: dict[str, dict], field: str = "cpu_seconds",
                  ids: set[str] | None = None) -> dict[str, float]:
    fam: dict[str, float] = defaultdict(float)
    for cid, c in cases.items():
        if ids is None or cid in ids:
            fam[_family(cid)] += c.get(field, 0.0)
    return dict(fam)


def verdict_changes(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    return [f"{cid}: verdict {a[cid]['verdict']} -> {b[cid]['verdict']}"
            for cid in sorted(a.keys() & b.keys()) if a[cid]["verdict"] != b[cid]["verdict"]]


def differences(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    out = [f"{cid}: only in the first run" for cid in sorted(a.keys() - b.keys())]
    out += [f"{cid}: only in the second run" for cid in sorted(b.keys() - a.keys())]
    for cid in sorted(a.keys() & b.keys()):
        x = {k: v for k, v in a[cid].items() if k not in TIMING_FIELDS}
        y = {k: v for k, v in b[cid].items() if k not in TIMING_FIELDS}
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
            out.append(f"{cid}: differs in {', '.join(keys)}")
    return out


def compare(before: Path, after: Path, devices: tuple[str, ...], common: bool = False) -> int:
    bad = 0
    for dev in devices:
        pa, pb = before / f"{dev}.json", after / f"{dev}.json"
        if not (pa.exists() and pb.exists()):
            print(f"{dev}: missing report ({pa} or {pb})")
            bad += 1
            continue
        a, b = _cases(pa), _cases(pb)
        print(f"== {dev}: {len(a)} vs {len(b)} cases")
        for tag, d in (("before", before), ("after", after)):
            t = d / f"{dev}.time.json"
            if t.exists():
                r = json.loads(t.read_text())
                print(f"  {tag:6}: wall {r['wall_s']:.1f} s, CPU {r['user_s'] + r['sys_s']:.1f} s"
                      f" (user {r['user_s']:.1f} + sys {r['sys_s']:.1f}), peak RSS "
                      f"{r['peak_rss_kib'] / 2**20:.2f} GiB, load {r['load_before']} -> "
                      f"{r['load_after']}")
        if common:
            ids = a.keys() & b.keys()
            field = "cpu_seconds" if all("cpu_seconds" in x[i] for x in (a, b) for i in ids) \
                else "seconds"
            print(f"  {len(ids)} cases in both runs, {len(a) - len(ids)} only before, "
                  f"{len(b) - len(ids)} only after (per-case `{field}` over the common ones;"
                  f" all of the after run: {sum(c.get(field, 0.0) for c in b.values()):.1f} s)")
            fa, fb = cpu_by_family(a, field, ids), cpu_by_family(b, field, ids)
        else:
            fa, fb = cpu_by_family(a), cpu_by_family(b)
        ta, tb = sum(fa.values()), sum(fb.values())
        print(f"  per-case CPU sum: {ta:.1f} s -> {tb:.1f} s ({ta / tb if tb else 0:.2f}x)")
        for fam in sorted(fa, key=lambda f: -fa[f]):
            x, y = fa[fam], fb.get(fam, 0.0)
            print(f"    {fam:12} {x:7.1f} -> {y:7.1f} s ({x / y if y else 0:.2f}x)")
        diffs = verdict_changes(a, b) if common else differences(a, b)
        for line in diffs[:40]:
            print("  DIFF " + line)
        verdicts = defaultdict(int)
        for c in b.values():
            verdicts[c["verdict"]] += 1
        what, of = (("same verdict", a.keys() & b.keys()) if common
                    else ("identical records (timing aside)", a.keys() | b.keys()))
        print(f"  {what}: {len(a.keys() & b.keys()) - len(diffs)}/{len(of)};"
              f" verdicts after: {dict(verdicts)}")
        bad += bool(diffs)
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--devices", default=",".join(DEVICES))
    r.add_argument("--hal", default=str(Path(sys.executable).with_name("hal")))
    r.add_argument("--pythonpath", help="run another checkout: a directory holding a `hal` "
                   "package tree (hal/ with ops, fusion, conformance and backends linked "
                   "in, as the installed package maps them); runs from OUT_DIR so the "
                   "current directory's checkout is not imported")
    r.add_argument("--no-strict", dest="strict", action="store_false",
                   help="omit --strict (checkouts from before it existed)")
    sb = sub.add_parser("side")
    sb.add_argument("out", type=Path)
    sb.add_argument("--devices", default=",".join(DEVICES))
    sb.add_argument("--before-hal", required=True, help="the older checkout's hal")
    sb.add_argument("--hal", default=str(Path(sys.executable).with_name("hal")),
                    help="the newer checkout's hal (default: this Python's)")
    sb.add_argument("--before-no-strict", dest="strict_before", action="store_false",
                    help="omit --strict for the older checkout (from before it existed)")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--devices", default=",".join(DEVICES))
    c.add_argument("--common", action="store_true",
                   help="a suite that grew: time the common case ids, compare verdicts only")
    args = ap.parse_args()
    devices = tuple(args.devices.split(","))
    if args.cmd == "run":
        run(args.out.resolve(), devices, args.hal, args.pythonpath, args.strict)
        return 0
    if args.cmd == "side":
        side(args.out.resolve(), devices, args.before_hal, args.hal, args.strict_before)
        return 0
    return compare(args.before, args.after, devices, args.common)


if __name__ == "__main__":
    sys.exit(main())

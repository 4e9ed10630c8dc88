"""Snapshot `hal fuse` output for every examples/*.hal on several devices, and compare two.

A planning speed-up (memoised plans, faster tile searches) must not change any plan. This
script records the exact bytes `hal fuse FILE --device D --explain` and `... --json` print
for each example and device into DIR, one file per run; `--compare A B` reports every file
that differs (and exits 1 when any does):

    python benchmarks/plan_snapshot.py /tmp/plans_before          # on the old code
    python benchmarks/plan_snapshot.py /tmp/plans_after           # on the new code
    python benchmarks/plan_snapshot.py --compare /tmp/plans_before /tmp/plans_after

Runs `HAL_MEASURE=off` (register measurement asks a compiler and is cached on disk, so it
could differ between the two runs for reasons unrelated to the planner).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("h100-sxm", "a100-sxm", "mi300x")
MODES = {"explain": ["--explain"], "json": ["--json"]}


def snapshot(out: Path, hal: str, devices: tuple[str, ...]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HAL_MEASURE="off")
    runs = 0
    for example in sorted((ROOT / "examples").glob("*.hal")):
        for dev in devices:
            for mode, flags in MODES.items():
                t0 = time.perf_counter()
                r = subprocess.run([hal, "fuse", str(example), "--device", dev, *flags],
                                   capture_output=True, env=env, cwd=ROOT)
                name = f"{example.stem}.{dev}.{mode}"
                (out / f"{name}.out").write_bytes(r.stdout + b"\n--stderr--\n" + r.stderr
                                                  + f"\n--rc {r.returncode}--\n".encode())
                print(f"{name}: rc {r.returncode}, {time.perf_counter() - t0:.1f} s", flush=True)
                runs += 1
    return runs


def compare(a: Path, b: Path) -> int:
    names = sorted({p.name for p in a.glob("*.out")} | {p.name for p in b.glob("*.out")})
    bad = [n for n in names if not (a / n).exists() or not (b / n).exists()
           or (a / n).read_bytes() != (b / n).read_bytes()]
    for n in bad:
        print(f"DIFFERS: {n}")
    print(f"{len(names) - len(bad)}/{len(names)} identical")
    return 1 if bad or not names else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--compare", action="store_true", help="compare two snapshot dirs")
    ap.add_argument("--hal", default=str(Path(sys.executable).with_name("hal")))
    ap.add_argument("--devices", default=",".join(DEVICES))
    args = ap.parse_args()
    if args.compare:
        if len(args.dirs) != 2:
            ap.error("--compare takes two directories")
        return compare(*args.dirs)
    snapshot(args.dirs[0], args.hal, tuple(args.devices.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweep PyTorch's OpInfo database through torch.export -> hal -> a backend (issue 17).

    python benchmarks/opinfo_sweep.py --device h100-sxm --max-samples 3 \
        [--pattern NAME[,NAME]] [--every K --offset I] [--json out.json] [--timeout 60]

The same runner as `hal conformance --suite torch-opinfo` (hal.conformance.opinfo_suite),
with the OpInfo-level summary for the results file. Prints pass / unsupported / rejected / mismatch / crash / export-failure counts
per OpInfo (worst sample), the missing converters by OpInfos blocked, and every
crash, mismatch and rejection with its message. `--every 3` runs a third of the
OpInfos (a sample of the whole; the full set takes tens of minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu_sim")
    ap.add_argument("--device", default="h100-sxm")
    ap.add_argument("--max-samples", type=int, default=3)
    ap.add_argument("--pattern", default=None, help="substrings of OpInfo names, comma-separated")
    ap.add_argument("--every", type=int, default=1, help="run every K-th OpInfo")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="CPU seconds per sample")
    ap.add_argument("--json", default=None, help="write every sample's verdict here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every OpInfo's verdict")
    ap.add_argument("--summarize", nargs="+", default=None, metavar="JSONL",
                    help="run nothing: summarize earlier runs' .jsonl files over the OpInfos "
                         "selected by --pattern/--every/--offset")
    a = ap.parse_args(argv)

    os.environ.setdefault("HAL_MEASURE", "off")
    warnings.filterwarnings("ignore")
    from hal.conformance import opinfo

    ops = opinfo.select_opinfos(a.pattern, a.every, a.offset)
    if a.summarize:
        return _summarize(opinfo, ops, a.summarize)
    t0 = time.time()
    count = [0]

    def progress(name, results):
        count[0] += 1
        v = opinfo.opinfo_verdict(results)
        if a.verbose or v in ("crash", "mismatch", "rejected", "timeout"):
            msg = next((r.message for r in results if r.verdict == v), "")
            print(f"[{count[0]}/{len(ops)} {time.time() - t0:6.0f}s] {name}: {v} {msg[:200]}",
                  flush=True)

    results = []
    stream = open(a.json + "l", "w") if a.json else None  # noqa: SIM115 - one line per OpInfo
    for op in ops:
        # the alarm bounds each sample; re-armed per OpInfo, per sample via the hook below
        mine = _run_one(opinfo, op, a, progress)
        results.extend(mine)
        if stream is not None:
            stream.write("".join(json.dumps(r.to_dict()) + "\n" for r in mine))
            stream.flush()
    s = opinfo.summarize(results)
    print(f"\n{opinfo.format_summary(s)}")
    print(_scope(results))
    print(f"\n{len(results)} samples, {time.time() - t0:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": s.to_dict(), "args": vars(a),
                       "samples": [r.to_dict() for r in results]}, f, indent=1)
    return 0


def _summarize(opinfo, ops, paths) -> int:
    wanted = {opinfo.opinfo_name(o) for o in ops}
    results = []
    for p in paths:
        with open(p) as f:
            for line in f:
                d = json.loads(line)
                if d["opinfo"] in wanted:
                    results.append(opinfo.SampleResult(d["opinfo"], d["sample"], d["verdict"],
                                                       d["message"], tuple(d["missing"]),
                                                       d["seconds"]))
    s = opinfo.summarize(results)
    print(f"{len(wanted)} OpInfos selected, {s.total} found in {', '.join(paths)}")
    print(opinfo.format_summary(s))
    print(_scope(results))
    for r in opinfo.failing(results, ("crash", "mismatch", "rejected", "timeout")):
        print(f"  {r.case_id}: {r.verdict} {r.message[:160]}")
    return 0


def _scope(results) -> str:
    from hal.conformance.opinfo_scope import format_scope, scope_summary

    return format_scope(scope_summary(results))


def _run_one(opinfo, op, a, progress):
    from hal.conformance.opinfo_suite import run_opinfo

    mine = run_opinfo(op, a.max_samples, a.backend, a.device, a.timeout)
    progress(opinfo.opinfo_name(op), mine)
    return mine


if __name__ == "__main__":
    sys.exit(main())

"""How much of the conformance suite a smarter cpu_sim translation cache could save.

cpu_sim translates each kernel structure it has not seen into Python (simulator.compiled,
keyed on the whole structure, constants included). This runs the selected cases in one
process as the suite does (`--workers 1`: each launch in this process, the suite's
garbage-collection thresholds) and counts, over
the translations that really happened:

* `translations`: cache misses, each a full translate + compile();
* `names canonical`: distinct kernels once buffer, shared and local names are numbered
  in order of declaration and variable names in order of appearance (what a
  name-independent cache would translate);
* `all abstracted`: distinct once, in addition, every number (shapes, strides, trip
  counts, float constants) and every variable name is replaced by a placeholder: the
  fewest translations any cache keyed on structure could do, even one that passed every
  constant at run time;

and the CPU seconds of the translations against those of the first kernel of each class
(the ceiling of each cache's saving). Run (from the repository root, `hal` installed):

    python benchmarks/translation_ceiling.py --device h100-sxm [--ids-from REPORT.json] [-k PATTERN]

`--ids-from` takes the case ids of an older report (e.g. the 7470d8e suite's, for the
cases both suites have); `-k` selects by substring. Prints one table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d*)?(e[-+]?\d+)?f?(?![\w.])")
VARIABLE = re.compile(r"\b[a-z]\w*_\d+\b")   # lowering's Var names: hint + counter


def kernel_text(k) -> tuple[str, str]:
    """(names canonical, all abstracted) texts of a kernel's structure. Names canonical:
    buffers numbered in declaration order and variables (lowering's hint_counter names,
    whose hints are the graph's value names) in order of appearance; all abstracted:
    numbers too."""
    from hal.kernel.printer import format_stmt

    body = "\n".join(line for s in k.body for line in format_stmt(s))
    order: dict[str, str] = {}
    for n in [p.name for p in k.params] + [b.name for b in k.shared] + [b.name for b in k.locals]:
        order.setdefault(n, f"@B{len(order)}")
    if order:   # whole names only, never a field (`blockIdx.x` beside a buffer `x`)
        alt = "|".join(re.escape(n) for n in sorted(order, key=len, reverse=True))
        body = re.sub(r"(?<![\w.])(" + alt + r")(?!\w)", lambda m: order[m.group(1)], body)
    head = repr(([(type(p).__name__, p.dtype.name, len(getattr(p, "shape", ())))
                  for p in k.params], [b.dtype.name for b in k.shared],
                 [b.dtype.name for b in k.locals], k.warp_size, k.index_dtype.name))

    def numbered(text: str) -> str:
        ids: dict[str, str] = {}
        return VARIABLE.sub(lambda m: ids.setdefault(m.group(0), f"v{len(ids)}"), text)

    named = numbered(head + repr((tuple(k.grid), k.block, tuple(k.cluster))) + body)
    return named, numbered(NUMBER.sub("N", head + body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="h100-sxm")
    ap.add_argument("--ids-from", help="run the case ids of this report (skips left out)")
    ap.add_argument("-k", dest="pattern", default=None, help="case id substring")
    a = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as the suite's workers
    import hal.backends.cpu_sim.simulator as sim
    from hal.conformance.cases import select
    from hal.conformance.runner import SuiteConfig, _worker, one_sim_process, plan_cases
    from hal.gc_budget import collecting_less

    cfg = SuiteConfig(backend="cpu_sim", device=a.device, strict=True, workers=1,
                      pattern=a.pattern)
    run, _skipped = plan_cases(cfg, select(a.pattern))
    ids = [c.id for c in run]
    if a.ids_from:
        try:
            wanted = {r["id"] for r in json.loads(Path(a.ids_from).read_text())["results"]
                      if r.get("verdict") != "skip"}
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--ids-from {a.ids_from}: not a readable conformance report ({e})")
        ids = [i for i in ids if i in wanted]
    if not ids:
        ap.error(f"no case to run on {a.device} (-k {a.pattern!r}, --ids-from {a.ids_from})")
    seconds: dict[str, dict[str, float]] = {"named": defaultdict(float), "bare": defaultdict(float)}
    count: dict[str, Counter] = {"named": Counter(), "bare": Counter()}
    misses, analysis = [0], [0.0]
    original = sim.compiled

    def counting(kernel, options=None):
        t = time.process_time()
        key = (sim._structure_key(kernel), repr(sorted(options.faults) if options else []))
        miss = key not in sim._CACHE
        analysis[0] += time.process_time() - t   # compiled() computes the key again
        t = time.process_time()
        out = original(kernel, options)
        if miss:
            t1 = time.process_time()
            misses[0] += 1
            for kind, text in zip(("named", "bare"), kernel_text(kernel), strict=True):
                count[kind][text] += 1
                seconds[kind][text] += t1 - t
            analysis[0] += time.process_time() - t1   # this script's own work, not the cases'
        return out

    sim.compiled = counting
    t0 = time.process_time()
    with one_sim_process(), collecting_less():   # as run_suite runs cases in one process
        _worker(ids, cfg)
    total = time.process_time() - t0 - analysis[0]
    spent = sum(seconds["named"].values())
    print(f"{len(ids)} cases on cpu_sim/{a.device}: {total:.1f} CPU s, of which "
          f"{spent:.1f} s ({spent / total:.0%}) in {misses[0]} translations")
    print("| cache keyed on | translations | translation CPU s | saving, of the cases' CPU |")
    print("|---|---|---|---|")
    print(f"| the whole structure (today) | {misses[0]} | {spent:.2f} | - |")
    for kind, label in (("named", "structure, names canonical"),
                        ("bare", "structure, every number and name abstracted")):
        first = sum(seconds[kind][t] / count[kind][t] for t in count[kind])
        print(f"| {label} | {len(count[kind])} | {first:.2f} | "
              f"{(spent - first) / total:.1%} |")


if __name__ == "__main__":
    main()

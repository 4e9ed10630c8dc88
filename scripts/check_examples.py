"""`hal compile --check` over every shipped example x every shipped GPU spec (a CI step).

Runs the real command (in-process, click's runner) for every pair and prints one line per
pair: verdict, wall time, kernels compiled and kernels whose records came from the
per-kernel records cache (hal.render.check.compile_records); exits 1 if any pair fails.
Specs of a vendor no GPU compiler targets (host-cpu, scratch-npu) are listed as n/a.

What keeps it fast (every pair is still planned, lowered, rendered and checked in full):
* a kernel's compiler records are cached by its own text, the arch and the compiler's
  identity, so each distinct kernel is compiled once per compiler and arch: the plan's
  register measurement and `--check` share it, and so do specs that plan the same kernel
  (h100-sxm and h200 are both sm_90a; every NVIDIA spec is also checked on sm_80 and
  sm_90a);
* the pairs of one example and one vendor run one after the other in one worker (their
  kernels overlap most), and `--jobs` workers (default: the CPU count, at most 4) take
  these chains largest first.
Usage: python scripts/check_examples.py [--examples a.hal,b.hal] [--specs h100-sxm,...]
       [--jobs N]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# rough relative cost of an example (kernels x their size); orders the chains only
_WEIGHT = {"llama_block_d4096_s2048": 9, "llama_block_d4096_s128": 8,
           "gpt_block_d768_s2048": 5, "gpt_block_d768_s128": 3, "tiny_gpt": 3, "mlp": 1}


def _arg(argv: list[str], name: str) -> list[str] | None:
    return argv[argv.index(name) + 1].split(",") if name in argv else None


def _cpu_s() -> float:
    """CPU seconds of this process and the compilers it ran (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_chain(chain: tuple[str, str, tuple[str, ...]]) -> list[dict]:
    """`hal compile EXAMPLE --backend B --device S --check` for each spec S of the chain."""
    from click.testing import CliRunner

    from hal.cli.main import main as hal
    from hal.render.check import RECORD_COUNTS

    example, backend, specs = chain
    out = []
    for spec in specs:
        before = dict(RECORD_COUNTS)
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        r = CliRunner().invoke(hal, ["compile", str(ROOT / example), "--backend", backend,
                                     "--device", spec, "--check"], prog_name="hal")
        out.append({"spec": spec, "example": example, "exit": r.exit_code,
                    "seconds": time.perf_counter() - t0, "cpu": _cpu_s() - cpu0,
                    "compiled": RECORD_COUNTS["compiled"] - before["compiled"],
                    "cached": RECORD_COUNTS["cached"] - before["cached"],
                    "output": r.output if r.exit_code else ""})
    return out


def chains(examples: list[str], specs) -> tuple[list[tuple[str, str, tuple[str, ...]]],
                                                list[str]]:
    """(chains of pairs sharing an example and a vendor, largest first; n/a lines)."""
    from hal.cli.compile_cmd import BACKENDS_OF_VENDOR

    by_vendor: dict[str, list[str]] = {}
    na = []
    for spec in specs:
        if spec.vendor in BACKENDS_OF_VENDOR:
            by_vendor.setdefault(spec.vendor, []).append(spec.name)
        else:
            na.append(f"n/a   {spec.name:12s} vendor {spec.vendor}: no GPU compiler targets it")
    out = [(ex, BACKENDS_OF_VENDOR[v], tuple(names)) for ex in examples
           for v, names in by_vendor.items()]
    out.sort(key=lambda c: -_WEIGHT.get(Path(c[0]).stem, 5) * len(c[2]))
    return out, na


def main(argv: list[str]) -> int:
    from hal.devices.loader import list_specs

    examples = _arg(argv, "--examples") or sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.hal"))
    wanted = _arg(argv, "--specs")
    jobs = int((_arg(argv, "--jobs") or [min(4, os.cpu_count() or 1)])[0])
    specs = [s for s in list_specs() if wanted is None or s.name in wanted]
    todo, na = chains(examples, specs)
    for line in na:
        print(line)
    t_all = time.perf_counter()
    results: list[dict] = []

    def report(recs: list[dict]) -> None:
        for r in recs:
            results.append(r)
            print(f"{'ok' if r['exit'] == 0 else 'FAIL':5s} {r['spec']:12s} {r['example']:36s} "
                  f"{r['seconds']:6.1f} s  cpu {r['cpu']:6.1f} s  compiled {r['compiled']:3d}  "
                  f"cached {r['cached']:3d}",
                  flush=True)
            if r["exit"]:
                print("      " + r["output"].strip().replace("\n", "\n      ")[-3000:])

    if jobs <= 1 or len(todo) <= 1:
        for c in todo:
            report(run_chain(c))
    else:
        with mp.get_context("fork").Pool(jobs) as pool:
            for recs in pool.imap_unordered(run_chain, todo):
                report(recs)
    failed = sum(1 for r in results if r["exit"] != 0)
    cpu = sum(r["cpu"] for r in results)
    print(f"{failed} failing pair(s) of {len(results)}; {sum(r['compiled'] for r in results)} "
          f"kernel compiles, {sum(r['cached'] for r in results)} from the records cache; "
          f"{time.perf_counter() - t_all:.0f} s wall, {cpu:.0f} s CPU in the pairs "
          f"({cpu / max(1, jobs):.0f} s per worker)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

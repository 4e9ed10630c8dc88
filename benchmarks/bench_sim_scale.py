"""Benchmark cpu_sim at model scale (issue 19): wall time, CPU time, peak RSS, simulated fraction.

Each case runs the real command in a subprocess under `/usr/bin/time -v` (peak RSS
of the largest single process, reference evaluation included), samples the summed PSS
of the whole process tree every 0.2 s (a sampled run's children run side by side: their
memory adds up, shared pages counted once), and records the load average
before and after, because the shared 2-core machine this was written on is busy
with other work: compare CPU seconds and ratios run side by side, not wall time
alone. Targets (issue 19): gpt_block_d768_s2048 exact on h100-sxm <= 30 s wall and
<= 2 GiB; a Llama-3-8B-shaped layer at sequence 2048 <= 120 s exact or <= 30 s
sampled and <= 4 GiB; a 32-layer model of that shape at sequence 128 with --sample
<= 10 min (its graph is generated into a temporary folder); `hal --help` <= 0.5 s.

Run:  python benchmarks/bench_sim_scale.py [--case NAME ...] [--hal PATH] [--timeout S]
Prints one markdown table row per case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"

CASES: dict[str, list[str]] = {
    "help": ["--help"],
    "version": ["--version"],
    "gpt_block_d768_s128 exact": ["run", str(EX / "gpt_block_d768_s128.hal"), "--backend",
                                  "cpu_sim", "--device", "h100-sxm", "--json"],
    "gpt_block_d768_s2048 exact": ["run", str(EX / "gpt_block_d768_s2048.hal"), "--backend",
                                   "cpu_sim", "--device", "h100-sxm", "--json"],
    "gpt_block_d768_s2048 sampled 5%": ["run", str(EX / "gpt_block_d768_s2048.hal"),
                                        "--backend", "cpu_sim", "--device", "h100-sxm",
                                        "--sample", "0.05", "--json"],
    "llama_block_d4096_s128 exact": ["run", str(EX / "llama_block_d4096_s128.hal"),
                                     "--backend", "cpu_sim", "--device", "h100-sxm", "--json"],
    "llama_block_d4096_s2048 sampled 2%": ["run", str(EX / "llama_block_d4096_s2048.hal"),
                                           "--backend", "cpu_sim", "--device", "h100-sxm",
                                           "--sample", "0.02", "--json"],
    "llama_32l_d4096_s128 sampled 2%": ["run", "{llama_32l}", "--backend", "cpu_sim",
                                         "--device", "h100-sxm", "--sample", "0.02", "--json"],
    # one layer of that model (the same generator): the unit the 32-layer time scales by
    "llama_1l_d4096_s128 sampled 2%": ["run", "{llama_1l}", "--backend", "cpu_sim",
                                        "--device", "h100-sxm", "--sample", "0.02", "--json"],
}
# Graphs too large to ship in examples/ (compile_all and check_examples glob it): written
# to a temporary folder from hal.examples.build when a case names them.
GENERATED = {"llama_32l": ("llama_32l_d4096_s128.hal", "make_llama_model", (32, 4096, 128)),
             "llama_1l": ("llama_1l_d4096_s128.hal", "make_llama_model", (1, 4096, 128))}


def _generated_args(args: list[str], tmp: str) -> list[str]:
    out = []
    for a in args:
        if a.startswith("{") and a.endswith("}"):
            from hal.examples import build
            from hal.ir.text import save_graph

            fname, maker, params = GENERATED[a[1:-1]]
            path = Path(tmp) / fname
            if not path.exists():
                save_graph(getattr(build, maker)(*params), path)
            a = str(path)
        out.append(a)
    return out


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _tree_pss_kib(root: int) -> int:
    """The summed proportional set size (KiB) of process `root` and its descendants: what
    the process tree holds, shared pages counted once (Linux /proc; 0 elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(d))
    except OSError:
        return 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            pass
    return total


def run_case(hal: str, args: list[str], timeout: float) -> dict:
    """Run `hal args` under /usr/bin/time -v; wall, user+sys CPU, peak RSS (the largest
    single process: /usr/bin/time), peak PSS of the whole process tree (sampled every
    0.2 s: a sampled run's concurrent children included), simulated fraction."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        load0 = _load()
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf.name, hal, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak_pss = 0
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(p.stdout.read()), daemon=True)
        reader.start()
        while p.poll() is None:
            if time.perf_counter() - t0 > timeout:
                p.kill()
                p.wait()
                return {"wall_s": time.perf_counter() - t0, "rc": "timeout", "load": load0}
            peak_pss = max(peak_pss, _tree_pss_kib(p.pid))
            time.sleep(0.2)
        reader.join()
        rc = p.returncode
        out = "".join(chunks)
        wall = time.perf_counter() - t0
        text = Path(tf.name).read_text()
    num = {k: float(re.search(rf"{k}.*?: ([\d.]+)", text).group(1))
           for k in ("User time", "System time", "Maximum resident set size")}
    res = {"wall_s": wall, "cpu_s": num["User time"] + num["System time"],
           "peak_rss_gib": num["Maximum resident set size"] / 2**20,
           "peak_pss_gib": peak_pss / 2**20, "rc": rc, "load": f"{load0} -> {_load()}"}
    if args and args[0] == "run":
        try:
            js = json.loads(out)
        except json.JSONDecodeError:
            return res
        blocks = simulated = 0
        for st in js.get("stats") or []:
            g = st.get("grid", [1, 1, 1])
            nb = g[0] * g[1] * g[2]
            blocks += nb
            simulated += st.get("sample", {}).get("blocks_simulated", nb)
        res["fraction"] = simulated / blocks if blocks else 1.0
        res["parity"] = "ok" if (js.get("report") or {}).get("ok") else "MISMATCH"
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    ap.add_argument("--hal", default=shutil.which("hal") or "hal", help="the hal executable")
    ap.add_argument("--timeout", type=float, default=3600.0)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| case | wall s | CPU s | peak RSS GiB (one process) | peak PSS GiB (all processes) "
          "| simulated fraction | parity | load before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    tmp = tempfile.mkdtemp(prefix="hal_bench_scale_")
    for name in a.case or list(CASES):
        r = run_case(a.hal, _generated_args(CASES[name], tmp), a.timeout)
        if r["rc"] == "timeout":
            print(f"| {name} | > {a.timeout:.0f} (timeout) | | | | | | {r['load']} |")
            continue
        print(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_gib']:.2f} | "
              f"{r['peak_pss_gib']:.2f} | {r.get('fraction', 1.0):.3f} | {r.get('parity', '-')} "
              f"| {r['load']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

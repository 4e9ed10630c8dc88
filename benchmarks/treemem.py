"""Run a command; report wall, CPU and the peak memory of its whole process tree.

`/usr/bin/time -v` reports the largest single process's peak RSS; with forked
simulator workers (`hal run --jobs N`) the tree holds several processes, whose RSS
counts shared (copy-on-write) pages once per process. This samples every 0.5 s:

* peak_rss_sum: the largest sum of RSS over the tree (counts shared pages per process:
  an upper bound of the memory in use);
* peak_pss_sum: the largest sum of PSS (shared pages split between their users: what
  the tree really holds);
* max_single_rss: the largest RSS of one process (what /usr/bin/time -v shows).

Usage: python benchmarks/treemem.py [--out FILE.json] -- CMD ARGS...
Linux only (/proc).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _mem(pid: int) -> tuple[int, int]:
    """(rss, pss) in bytes, from smaps_rollup; (0, 0) once the process is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def main(argv: list[str]) -> int:
    out = None
    if argv[:1] == ["--out"]:
        out, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    peak_rss = peak_pss = peak_one = 0
    procs = 1
    while proc.poll() is None:
        tree = _tree(proc.pid)
        mems = [_mem(p) for p in tree]
        procs = max(procs, len(tree))
        peak_rss = max(peak_rss, sum(m[0] for m in mems))
        peak_pss = max(peak_pss, sum(m[1] for m in mems))
        peak_one = max(peak_one, max((m[0] for m in mems), default=0))
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    gib = 1 << 30
    res = {"cmd": " ".join(argv), "rc": proc.returncode, "wall_s": round(wall, 1),
           "user_s": round(ru.ru_utime, 1), "sys_s": round(ru.ru_stime, 1),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "peak_rss_sum_gib": round(peak_rss / gib, 2),
           "peak_pss_sum_gib": round(peak_pss / gib, 2),
           "max_single_rss_gib": round(max(peak_one, ru.ru_maxrss * 1024) / gib, 2),
           "max_processes": procs, "load_1min_at_end": os.getloadavg()[0]}
    text = json.dumps(res)
    print(text, file=sys.stderr)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

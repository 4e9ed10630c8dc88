"""CI's slice of conformance through the rendered CUDA and HIP text on the host CPU.

Every primitive op once and every fused pattern once (the first case of each op, model
and stress families left to the full sweep), on cuda-host / h100-sxm and hip-host /
mi300x, plus the planted renderer faults of hal.backends.host.faults. Exit 1 on any
failure. Usage: python scripts/host_conformance_slice.py [--backend cuda-host ...]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

from hal.backends.host.faults import run_render_selftest
from hal.conformance.cases import all_cases
from hal.conformance.runner import execute

TARGETS = (("cuda-host", "h100-sxm"), ("hip-host", "mi300x"))
SKIP_FAMILIES = ("model", "stress", "random")


def slice_cases() -> list[str]:
    """The first case of each op (elementwise/special/overflow count as one family)."""
    seen: dict[tuple[str, str], str] = {}
    for c in all_cases():
        fam = c.id.split("/")[0]
        if fam in SKIP_FAMILIES:
            continue
        fam = "elementwise" if fam in ("special", "overflow") else fam
        seen.setdefault((fam, c.op), c.id)
    return list(seen.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", action="append", help="cuda-host and/or hip-host")
    args = ap.parse_args(argv)
    targets = [t for t in TARGETS if not args.backend or t[0] in args.backend]
    ids, bad = slice_cases(), 0
    from hal.conformance.cases import get_case

    for backend, device in targets:
        t0, counts = time.perf_counter(), collections.Counter()
        for cid in ids:
            r = execute(get_case(cid), backend, device, profile=False)
            counts[r["verdict"]] += 1
            if r["verdict"] not in ("pass", "skip"):
                bad += 1
                print(f"{backend}/{device} {r['verdict']} {cid}: {r.get('reason', '')[:300]}")
        print(f"{backend}/{device}: {dict(counts)} in {time.perf_counter() - t0:.0f} s")
        faults = run_render_selftest(backend, device)
        escaped = [f for f, caught in faults.items() if not caught]
        print(f"{backend}/{device}: planted renderer faults caught "
              f"{len(faults) - len(escaped)}/{len(faults)}"
              + (f", ESCAPED: {escaped}" if escaped else ""))
        bad += len(escaped)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Conformance cases through the real CudaDriver over tests/fake_cuda.py, against cpu_sim.

Every STEP-th case of the suite runs twice in-process with
`hal.conformance.runner.execute`: once on the cuda backend's own runtime path (GpuRunner,
CudaDriver, argument packing, copies, streams) over FakeCuda, which checks each call the
way a GPU would and then executes the kernel on cpu_sim, and once on cpu_sim directly.
Any verdict difference, fault, unordered stream access or leaked buffer is printed: it is
a runtime bug that a lent GPU would otherwise have found. No GPU needed.

    python benchmarks/conformance_fakecuda.py --step 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hal.backends_registry as registry  # noqa: E402
from hal.conformance.cases import all_cases  # noqa: E402
from hal.conformance.runner import execute  # noqa: E402
from hal.devices.loader import load_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=int, default=4, help="run every STEP-th case")
    ap.add_argument("--device", default="h200")
    args = ap.parse_args(argv)

    from fake_cuda import FakeCuda, FakeCudaDriver
    from test_gpu_fixes import FakeBackend

    fake = FakeCuda(load_spec(args.device))
    backend = FakeBackend(FakeCudaDriver(fake))
    real_get = registry.get_backend
    registry.get_backend = lambda name, **kw: backend if name == "fakecuda" else real_get(
        name, **kw)
    cases = all_cases()[::args.step]
    print(f"{len(cases)} cases (every {args.step}th)", flush=True)
    t0, bad = time.time(), 0
    for c in cases:
        a = execute(c, "fakecuda", args.device, unfused=False)
        b = execute(c, "cpu_sim", args.device, unfused=False)
        if a["verdict"] != b["verdict"] or fake.faults or fake.unordered or fake.mem:
            bad += 1
            print(f"DIFF {c.id}: fakecuda {a['verdict']} {a.get('reason', '')[:300]} | "
                  f"cpu_sim {b['verdict']} | faults {fake.faults[:2]} | unordered "
                  f"{fake.unordered[:2]} | leaked {len(fake.mem)}", flush=True)
            fake.faults.clear()
            fake.unordered.clear()
            fake.mem.clear()
            fake.sticky = None
    print(f"{bad} differences, {len(fake.launches)} launches on FakeCuda, "
          f"{time.time() - t0:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""`hal compile --check` over every shipped example x every shipped GPU spec (CI step).

Runs the real command (in-process, click's runner) for each pair and prints one line per
pair with its exit code and wall time; exits 1 if any pair fails. Specs of a generic
vendor (host-cpu, scratch-npu) have no GPU compiler: they are listed as not applicable.
Usage: python scripts/check_examples.py [--examples a.hal,b.hal] [--specs h100-sxm,...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from click.testing import CliRunner

from hal.cli.compile_cmd import BACKENDS_OF_VENDOR
from hal.cli.main import main as hal
from hal.devices.loader import list_specs

ROOT = Path(__file__).resolve().parent.parent


def _arg(argv: list[str], name: str) -> list[str] | None:
    return argv[argv.index(name) + 1].split(",") if name in argv else None


def main(argv: list[str]) -> int:
    examples = _arg(argv, "--examples") or sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.hal"))
    wanted = _arg(argv, "--specs")
    specs = [s for s in list_specs() if wanted is None or s.name in wanted]
    failed, t_all = 0, time.perf_counter()
    for spec in specs:
        backend = BACKENDS_OF_VENDOR.get(spec.vendor)
        if backend is None:
            print(f"n/a   {spec.name:12s} vendor {spec.vendor}: no GPU compiler targets it")
            continue
        for ex in examples:
            t0 = time.perf_counter()
            r = CliRunner().invoke(hal, ["compile", str(ROOT / ex), "--backend", backend,
                                         "--device", spec.name, "--check"], prog_name="hal")
            ok = r.exit_code == 0
            failed += not ok
            print(f"{'ok' if ok else 'FAIL':5s} {spec.name:12s} {ex:36s} "
                  f"{time.perf_counter() - t0:6.1f} s", flush=True)
            if not ok:
                print("      " + r.output.strip().replace("\n", "\n      ")[-3000:])
    print(f"{failed} failing pair(s); {time.perf_counter() - t_all:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

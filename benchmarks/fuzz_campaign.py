"""Fuzz campaign (issue 16; not a CI test): random graphs per spec, mutated .hal and YAML.

* random graphs: hal.conformance.random_graphs (seeded recipes of elementwise, broadcast,
  reduction, matmul, movement ops) run on cpu_sim for each spec, fused and unfused,
  against the float64 reference (hal.conformance.runner.execute: pass / fail / error);
* mutated .hal: each shipped example with a random line deleted, duplicated or cut, a
  number replaced by an extreme one, or a byte flipped; parsing and planning must give
  a result or a HalError (anything else is a crash);
* mutated YAML: each shipped spec mutated the same way; loading must give a spec or a
  SpecError.
Every non-pass and every crash is listed with its id so it can be rerun; the summary is
a markdown table for benchmarks/results/issue-16.md.

    python benchmarks/fuzz_campaign.py --graphs 300 --mutations 300 \\
        --specs h100-sxm,mi300x,scratch-npu [--seed 0] [--out table.md]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_graphs(spec: str, n: int, seed: int) -> tuple[Counter, list[str]]:
    from hal.conformance.random_graphs import random_case
    from hal.conformance.runner import execute

    counts: Counter = Counter()
    notes: list[str] = []
    for i in range(n):
        case = random_case(seed, i)
        rec = execute(case, "cpu_sim", spec, 0)
        counts[rec["verdict"]] += 1
        if rec["verdict"] != "pass":
            notes.append(f"{spec} {case.id}: {rec['verdict']}: {rec.get('reason', '')[:200]}")
    return counts, notes


_NUM = re.compile(r"(?<![\w.])\d+(\.\d+)?")
_EXTREMES = ["0", "-1", "4294967296", "1e308", "nan", "-0", "99999999999999999999", "0.5"]


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    kind = rng.choice(["delete", "duplicate", "cut", "number", "byte", "swap"])
    i = rng.randrange(len(lines))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "cut":
        lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)] + "\n"
    elif kind == "number":
        nums = list(_NUM.finditer(text))
        if nums:
            m = rng.choice(nums)
            return text[:m.start()] + rng.choice(_EXTREMES) + text[m.end():], kind
    elif kind == "byte":
        raw = bytearray(text.encode())
        j = rng.randrange(len(raw))
        raw[j] = rng.randrange(32, 127)
        return raw.decode(errors="replace"), kind
    else:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines), kind


def mutate_hal(n: int, seed: int, spec_name: str) -> tuple[Counter, list[str]]:
    from hal.devices.loader import load_spec
    from hal.errors import HalError
    from hal.fusion import plan
    from hal.ir.text import parse_graph

    spec = load_spec(spec_name)
    sources = [p for p in sorted((ROOT / "examples").glob("*.hal")) if "s2048" not in p.name]
    rng = random.Random(seed)
    counts: Counter = Counter()
    crashes: list[str] = []
    for i in range(n):
        src = sources[i % len(sources)]
        text, kind = mutate(src.read_text(), rng)
        try:
            g = parse_graph(text, file=f"{src.name}#m{i}")
            plan(g, spec, measure="off")
            counts["accepted"] += 1
        except HalError:
            counts["clean error"] += 1
        except Exception as e:  # a crash: hal did not explain it
            counts["crash"] += 1
            crashes.append(f".hal {src.name} mutation {i} ({kind}): {type(e).__name__}: {e}"
                           f" | {traceback.format_exc(limit=3).splitlines()[-3:]}")
    return counts, crashes


def mutate_yaml(n: int, seed: int) -> tuple[Counter, list[str]]:
    import tempfile

    from hal.devices.loader import SPEC_DIR, load_spec
    from hal.errors import HalError

    sources = sorted(SPEC_DIR.glob("*.yaml"))
    rng = random.Random(seed + 1)
    counts: Counter = Counter()
    crashes: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            src = sources[i % len(sources)]
            text, kind = mutate(src.read_text(), rng)
            p = Path(d) / f"m{i}.yaml"
            p.write_text(text)
            try:
                load_spec(p)
                counts["accepted"] += 1
            except HalError:
                counts["clean error"] += 1
            except Exception as e:
                counts["crash"] += 1
                crashes.append(f"yaml {src.name} mutation {i} ({kind}): {type(e).__name__}: {e}")
    return counts, crashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=100)
    ap.add_argument("--mutations", type=int, default=200)
    ap.add_argument("--specs", default="h100-sxm,mi300x,scratch-npu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    os.environ.setdefault("HAL_MEASURE", "off")
    rows = ["| part | spec | n | outcome | seconds |", "|---|---|---|---|---|"]
    notes: list[str] = []
    for spec in a.specs.split(","):
        t0 = time.perf_counter()
        c, nn = run_graphs(spec, a.graphs, a.seed)
        rows.append(f"| random graphs (cpu_sim vs float64, fused and unfused) | {spec} | "
                    f"{a.graphs} | {dict(c)} | {time.perf_counter() - t0:.0f} |")
        notes += nn
        print(rows[-1], flush=True)
    t0 = time.perf_counter()
    c, nn = mutate_hal(a.mutations, a.seed, a.specs.split(",")[0])
    rows.append(f"| mutated .hal (parse + plan) | {a.specs.split(',')[0]} | {a.mutations} | "
                f"{dict(c)} | {time.perf_counter() - t0:.0f} |")
    notes += nn
    print(rows[-1], flush=True)
    t0 = time.perf_counter()
    c, nn = mutate_yaml(a.mutations, a.seed)
    rows.append(f"| mutated spec YAML (load) | all shipped | {a.mutations} | {dict(c)} | "
                f"{time.perf_counter() - t0:.0f} |")
    notes += nn
    print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n\n" + ("\n".join(f"- {n}" for n in notes) or "no findings") + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()

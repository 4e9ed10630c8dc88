"""Fuzz campaign (issue 16; not a CI test): random graphs per spec, mutated .hal and YAML.

* random graphs: hal.conformance.random_graphs (seeded recipes of elementwise, broadcast,
  reduction, matmul, movement ops) run on cpu_sim for each spec, fused and unfused,
  against the float64 reference (hal.conformance.runner.execute: pass / fail / error);
* mutated .hal: each shipped example with a random line deleted, duplicated or cut, a
  number replaced by an extreme one, or a byte flipped; parsing and planning must give
  a result or a HalError (anything else is a crash);
* mutated YAML: each shipped spec mutated the same way; loading must give a spec or a
  SpecError.

Every item is one JSON line in the results file (`--results`, default
benchmarks/results/fuzz-campaign.jsonl), written and flushed as it finishes, so a run can
stop at any point (Ctrl-C, `--budget-s`, a killed job) and `--resume` continues with the
items not yet recorded (an item is (part, spec, index); the seed must match). Random
graphs go round-robin over the specs (graph i on every spec before graph i+1), so a run
cut short is balanced. Per-graph cost: no compiler measurement (HAL_MEASURE=off), shapes
of at most 65 x 65, one process that keeps the spec, the op tables and cpu_sim's compiled
kernels warm; `--workers N` runs graphs in N processes. `--table` only summarises the
results file: a markdown table (counts per outcome) and every non-pass / crash with its
id so it can be rerun (`hal conformance --backend cpu_sim --device D -k random/s0/I
--random N`).

    nice -n 19 python benchmarks/fuzz_campaign.py --graphs 3000 --mutations 600 \\
        --specs h100-sxm,mi300x,scratch-npu --resume [--budget-s 3600] [--workers 2]
    python benchmarks/fuzz_campaign.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "fuzz-campaign.jsonl"
PART_TITLES = {"graph": "random graphs (cpu_sim vs float64, fused and unfused)",
               "hal": "mutated .hal (parse + plan)", "yaml": "mutated spec YAML (load)"}


def run_graph(spec: str, seed: int, i: int) -> dict:
    """Random graph `i` of `seed` on cpu_sim for `spec` (conformance's random case)."""
    from hal.conformance.random_graphs import random_case
    from hal.conformance.runner import execute

    case = random_case(seed, i)
    try:
        rec = execute(case, "cpu_sim", spec, 0)
    except Exception as e:  # execute reports errors itself: anything escaping is a crash
        return {"id": case.id, "outcome": "crash",
                "note": f"{type(e).__name__}: {e} | {_where(e)}"[:400]}
    return {"id": case.id, "outcome": rec["verdict"],
            "note": "" if rec["verdict"] == "pass" else str(rec.get("reason", ""))[:400]}


def _where(e: BaseException) -> str:
    return " / ".join(traceback.format_exception(e)[-3:]).replace("\n", " ")[:300]


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


def mutate_hal(spec_name: str, seed: int, i: int) -> dict:
    """Mutation `i` of a shipped example: parse and plan give a result or a HalError."""
    from hal.devices.loader import load_spec
    from hal.errors import HalError
    from hal.fusion import plan
    from hal.ir.text import parse_graph

    sources = [p for p in sorted((ROOT / "examples").glob("*.hal")) if "s2048" not in p.name]
    src = sources[i % len(sources)]
    text, kind = mutate(src.read_text(), random.Random(f"{seed}/hal/{i}"))
    out = {"id": f"hal/{src.name}/m{i}/{kind}"}
    try:
        plan(parse_graph(text, file=f"{src.name}#m{i}"), load_spec(spec_name), measure="off")
        return {**out, "outcome": "accepted", "note": ""}
    except HalError:
        return {**out, "outcome": "clean error", "note": ""}
    except Exception as e:  # a crash: hal did not explain it
        return {**out, "outcome": "crash", "note": f"{type(e).__name__}: {e} | {_where(e)}"[:400]}


def mutate_yaml(_spec: str, seed: int, i: int) -> dict:
    """Mutation `i` of a shipped spec: loading gives a spec or a SpecError."""
    import tempfile

    from hal.devices.loader import SPEC_DIR, load_spec
    from hal.errors import HalError

    sources = sorted(SPEC_DIR.glob("*.yaml"))
    src = sources[i % len(sources)]
    text, kind = mutate(src.read_text(), random.Random(f"{seed}/yaml/{i}"))
    out = {"id": f"yaml/{src.name}/m{i}/{kind}"}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"m{i}.yaml"
        p.write_text(text)
        try:
            load_spec(p)
            return {**out, "outcome": "accepted", "note": ""}
        except HalError:
            return {**out, "outcome": "clean error", "note": ""}
        except Exception as e:
            return {**out, "outcome": "crash", "note": f"{type(e).__name__}: {e}"[:400]}


RUNNERS = {"graph": run_graph, "hal": mutate_hal, "yaml": mutate_yaml}


def plan_items(specs: list[str], graphs: int, mutations: int) -> list[tuple[str, str, int]]:
    """(part, spec, index) in run order: graph i on every spec before graph i+1, the
    mutations spread evenly between them (a run cut short covers every part)."""
    keyed = [((i + 0.5) / graphs, 0, ("graph", s, i)) for i in range(graphs) for s in specs]
    keyed += [((j + 0.5) / mutations, 1, ("hal", specs[0], j)) for j in range(mutations)]
    keyed += [((j + 0.5) / mutations, 2, ("yaml", "all shipped", j)) for j in range(mutations)]
    return [item for _, _, item in sorted(keyed, key=lambda t: (t[0], t[1]))]


def read_results(path: Path, seed: int | None = None) -> list[dict]:
    """Every record of the results file (of `seed` when given); a torn last line is skipped."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and (seed is None or rec.get("seed") == seed):
            out.append(rec)
    return out


def _work(item: tuple[str, str, int, int]) -> dict:
    part, spec, i, seed = item
    t0, c0 = time.perf_counter(), time.process_time()
    rec = RUNNERS[part](spec, seed, i)
    return {"part": part, "spec": spec, "index": i, "seed": seed, **rec,
            "seconds": round(time.perf_counter() - t0, 3),
            "cpu_s": round(time.process_time() - c0, 3)}


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops the pool


def run(items: list[tuple[str, str, int, int]], path: Path, workers: int,
        budget_s: float | None) -> int:
    """Run `items`, appending each record to `path` as it finishes; returns how many ran."""
    t0, done = time.perf_counter(), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        def record(rec: dict) -> None:
            nonlocal done
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done += 1
            if rec["outcome"] not in ("pass", "accepted", "clean error"):
                print(f"  {rec['outcome']}: {rec['part']} {rec['spec']} {rec['id']}: "
                      f"{rec['note'][:200]}", flush=True)
            if done % 100 == 0:
                print(f"  {done}/{len(items)} in {time.perf_counter() - t0:.0f} s", flush=True)

        def over() -> bool:
            return budget_s is not None and time.perf_counter() - t0 > budget_s

        try:
            if workers <= 1:
                for item in items:
                    if over():
                        break
                    record(_work(item))
            else:
                import multiprocessing as mp

                with mp.get_context("fork").Pool(workers, _init_worker) as pool:
                    for rec in pool.imap_unordered(_work, items, chunksize=4):
                        record(rec)
                        if over():
                            pool.terminate()
                            break
        except KeyboardInterrupt:
            print(f"interrupted: {done} recorded in {path}; rerun with --resume", flush=True)
    return done


def _cpu_per_item(rs: list[dict]) -> str:
    timed = [r["cpu_s"] for r in rs if "cpu_s" in r]
    return f"{sum(timed) / len(timed):.2f} ({len(timed)} timed)" if timed else "-"


def table(records: list[dict]) -> str:
    """Markdown table of the records (counts per outcome) and every non-pass and crash."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    latest = {(r["part"], r["spec"], r["index"], r["seed"]): r for r in records}
    for r in latest.values():
        groups[(r["part"], r["spec"])].append(r)
    rows = ["| part | spec | n | outcome | wall s (sum over items) | CPU s per item |",
            "|---|---|---|---|---|---|"]
    notes = []
    for (part, spec), rs in sorted(groups.items(), key=lambda kv: (list(RUNNERS).index(
            kv[0][0]), kv[0][1])):
        c = Counter(r["outcome"] for r in rs)
        rows.append(f"| {PART_TITLES[part]} | {spec} | {len(rs)} | "
                    + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
                    + f" | {sum(r['seconds'] for r in rs):.0f} | {_cpu_per_item(rs)} |")
        notes += [f"- {part} {spec} {r['id']}: {r['outcome']}: {r['note']}"
                  for r in sorted(rs, key=lambda r: r["index"])
                  if r["outcome"] not in ("pass", "accepted", "clean error")]
    return "\n".join(rows) + "\n\n" + ("\n".join(notes) or "no findings") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=100, help="random graphs per spec")
    ap.add_argument("--mutations", type=int, default=200, help="mutated .hal and YAML each")
    ap.add_argument("--specs", default="h100-sxm,mi300x,scratch-npu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON-lines results file")
    ap.add_argument("--resume", action="store_true",
                    help="keep the results file and run only the items it lacks")
    ap.add_argument("--budget-s", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="only summarise the results file")
    ap.add_argument("--out", default=None, help="also write the table here")
    a = ap.parse_args(argv)
    os.environ.setdefault("HAL_MEASURE", "off")
    path = Path(a.results)
    if not a.table:
        if not a.resume and path.exists():
            path.unlink()
        have = {(r["part"], r["spec"], r["index"]) for r in read_results(path, a.seed)}
        specs = a.specs.split(",")
        todo = [(p, s, i, a.seed) for p, s, i in plan_items(specs, a.graphs, a.mutations)
                if (p, s, i) not in have]
        print(f"{len(have)} items already recorded in {path}, {len(todo)} to run", flush=True)
        run(todo, path, a.workers, a.budget_s)
    text = table(read_results(path, a.seed))
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the LLM op suite table of benchmarks/RESULTS.md from the suite's JSON results.

    python benchmarks/llm_suite_table.py [RESULTS_DIR] [--devices a,b,...] [--cases a,b,...]

Reads RESULTS_DIR/<device>.json (written by benchmarks/run_llm_suite.sh, default
benchmarks/results/cpu_sim) and prints one markdown row per case: for each device
"modelled time, % of the roofline, kernels". `pct_of_roofline` is already a
percentage (hal.bench.runner.BenchResult): it is printed as it is, with a "%" sign.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEVICES = ["h100-sxm", "h200", "mi300x", "a100-sxm", "mi250x-gcd", "scratch-npu", "host-cpu"]
CASES = ["rms_norm_s2048_h4096", "rms_norm_s8192_h8192", "layer_norm_s2048_h4096",
         "layer_norm_s8192_h8192", "residual_add_s2048_h4096", "residual_add_s8192_h8192",
         "softmax_scores_hq32_s2048", "softmax_scores_hq64_s2048", "softmax_logits_s2048",
         "silu_s2048_f14336", "gelu_s2048_f14336", "matmul_proj_s2048_h4096",
         "matmul_proj_s8192_h8192", "attention_prefill_hq32_s128", "attention_prefill_hq32_s2048",
         "attention_prefill_hq32_s8192", "attention_prefill_hq64_s128",
         "attention_prefill_hq64_s2048", "attention_prefill_hq64_s8192",
         "attention_decode_hq32_t2048", "attention_decode_hq32_t8192",
         "attention_decode_hq64_t2048", "attention_decode_hq64_t8192", "embedding_s2048_h4096",
         "embedding_s8192_h8192"]


def cell(r: dict) -> str:
    us = r["median_s"] * 1e6
    return f"{us:.0f} us, {r['pct_of_roofline']:.0f}%, {r['kernels']}k"


def table(results_dir: Path, devices: list[str], cases: list[str]) -> str:
    by_dev = {}
    for d in devices:
        f = results_dir / f"{d}.json"
        if f.exists():
            by_dev[d] = {r["case"]: r for r in json.loads(f.read_text())["results"]}
    devs = list(by_dev)
    lines = ["| case | " + " | ".join(devs) + " |", "|---|" + "---|" * len(devs)]
    for c in cases:
        cells = [cell(by_dev[d][c]) if c in by_dev[d] else "-" for d in devs]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", nargs="?", default="benchmarks/results/cpu_sim")
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--cases", default=",".join(CASES))
    a = ap.parse_args()
    print(table(Path(a.results_dir), a.devices.split(","), a.cases.split(",")))


if __name__ == "__main__":
    main()

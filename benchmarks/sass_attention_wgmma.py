"""SASS of the Hopper prefill attention kernel (hal.lowering.attention_wgmma): renders the
bf16 attention of `heads` query heads (GQA: `kv_heads` K/V heads) over s tokens, head dim d,
causal or not, on h100-sxm, compiles it with `nvcc -cubin -arch=sm_90a -O3 -Xptxas -v`,
disassembles it with cuobjdump -sass and prints ptxas's registers/spills, the counts of the
Hopper instructions (HGMMA forms, UTMALDG, SYNCS, USETMAXREG) and an excerpt.

    python benchmarks/sass_attention_wgmma.py OUT_DIR [--s 2048] [--heads 32] [--kv-heads 8]
        [--d 128] [--no-causal]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hal.backends.cuda.render import render_cuda
from hal.devices.loader import load_spec
from hal.dtypes import bf16
from hal.fusion import plan
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.render.disasm import cuobjdump_path

OP = re.compile(r"/\*([0-9a-f]{4,5})\*/\s+((?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)[^;]*;)")
REGS = re.compile(r"Used (\d+) registers")
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
KEEP = ("HGMMA", "UTMALDG", "USETMAXREG", "SYNCS", "WARPGROUP", "HMMA")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--s", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--no-causal", action="store_true")
    a = ap.parse_args()
    spec = load_spec("h100-sxm")
    b = GraphBuilder("attn")
    q = b.input("q", bf16, (1, a.heads, a.s, a.d))
    k = b.input("k", bf16, (1, a.kv_heads, a.s, a.d))
    v = b.input("v", bf16, (1, a.kv_heads, a.s, a.d))
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=not a.no_causal))
    a.out.mkdir(parents=True, exist_ok=True)
    (gr,) = [g for g in plan(b.build(), spec, measure=None).groups if g.kind == "attention"]
    (kern,) = lower_group(gr, spec)
    print(f"{kern.name}: {kern.meta.plan.strategy}, {kern.meta.plan.detail('attention_path')}")
    cu = a.out / f"{kern.name}.cu"
    cu.write_text(render_cuda(kern, spec))
    cub = a.out / f"{kern.name}.cubin"
    r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-Xptxas", "-v", "-o",
                        str(cub), str(cu)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    sass = subprocess.run([cuobjdump_path(), "-sass", str(cub)], capture_output=True,
                          text=True, check=True).stdout
    (a.out / f"{kern.name}.sass").write_text(sass)
    ops = OP.findall(sass)
    print(f"registers {REGS.findall(r.stderr)}, spill stores/loads (bytes) "
          f"{SPILLS.findall(r.stderr)}")
    print("counts:", dict(sorted(Counter(op for _a, _t, op in ops
                                         if op.startswith(KEEP)).items())))
    shown: Counter = Counter()
    for addr, text, op in ops:
        if op.startswith(KEEP) and shown[op] < 2:
            shown[op] += 1
            print(f"  /*{addr}*/ {' '.join(text.split())}")


if __name__ == "__main__":
    main()

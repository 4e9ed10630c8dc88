"""SASS of the Hopper GEMM's norm prologue: renders the Llama block's (d4096, s2048) QKV
kernel with the attention RMSNorm as A's prologue on h100-sxm, compiles it with
`nvcc -cubin -arch=sm_90a -O3 -Xptxas -v`, disassembles it with cuobjdump -sass and prints
ptxas's registers/spills, the shared/global access forms of the whole kernel and of the
prologue regions (from each consumer's wait on full[s] to its FENCE.VIEW.ASYNC.S).

    python benchmarks/sass_wgmma_prologue.py OUT_DIR [GRAPH] [--scalar]

--scalar: the element-by-element reference rewrite (LoweringOptions(scalar_prologue=True)),
the kernel as it was before the 16-byte chunks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hal.backends.cuda.render import render_cuda
from hal.devices.loader import load_spec
from hal.fusion import plan
from hal.ir.text import load_graph
from hal.lowering import lower_group
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.render.disasm import cuobjdump_path

OP = re.compile(r"/\*[0-9a-f]{4,5}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)")
REGS = re.compile(r"Used (\d+) registers")
SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
MEMORY = ("LDS", "STS", "LDG", "LDL", "STL")


def prologue_regions(ops: list[str]) -> tuple[int, int, Counter]:
    """(regions, instructions, memory forms) between a SYNCS.PHASECHK wait and the
    FENCE.VIEW.ASYNC.S that ends a consumer's rewrite."""
    regions, n, forms = 0, 0, Counter()
    for i, o in enumerate(ops):
        if o != "FENCE.VIEW.ASYNC.S":
            continue
        j = i - 1
        while j >= 0 and not ops[j].startswith("SYNCS.PHASECHK") and ops[j] != o:
            j -= 1
        if j < 0 or ops[j] == o or i - j < 5:    # the fences after the barrier inits
            continue
        regions += 1
        n += i - j - 1
        forms.update(x for x in ops[j + 1:i] if x.startswith((*MEMORY, "BRA")))
    return regions, n, forms


def main(out: Path, graph: str, options: LoweringOptions = DEFAULT_OPTIONS) -> None:
    spec = load_spec("h100-sxm")
    out.mkdir(parents=True, exist_ok=True)
    for gr in plan(load_graph(graph), spec, measure=None).groups:
        if gr.kind != "matmul":
            continue
        for kern in lower_group(gr, spec, options):
            path = kern.meta.plan.detail("matmul_path")
            if not path or "prologue" not in path[1]:
                continue
            cu = out / f"{kern.name}.cu"
            cu.write_text(render_cuda(kern, spec))
            cub = out / f"{kern.name}.cubin"
            r = subprocess.run(["nvcc", "-cubin", "-arch=sm_90a", "-O3", "-Xptxas", "-v",
                                "-o", str(cub), str(cu)], capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            sass = subprocess.run([cuobjdump_path(), "-sass", str(cub)], capture_output=True,
                                  text=True, check=True).stdout
            (out / f"{kern.name}.sass").write_text(sass)
            ops = OP.findall(sass)
            whole = Counter(o for o in ops if o.startswith((*MEMORY, "HGMMA")))
            regions, n, forms = prologue_regions(ops)
            regs = REGS.findall(r.stderr)
            spills = SPILLS.findall(r.stderr)
            print(f"{kern.name}: registers {regs}, spill stores/loads (bytes) {spills}")
            print(f"  kernel: {dict(sorted(whole.items()))}")
            print(f"  prologue regions: {regions}, {n} instructions, {dict(sorted(forms.items()))}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--scalar"]
    main(Path(args[0]), args[1] if len(args) > 1 else "examples/llama_block_d4096_s2048.hal",
         LoweringOptions(scalar_prologue="--scalar" in sys.argv))

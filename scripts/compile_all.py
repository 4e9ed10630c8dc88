"""Compile every example, every primitive-op kernel and the framework bring-up models'
kernels (examples/models: torch Llama and GPT-2 styles, a JAX decoder) for sm_80, sm_90a,
gfx90a and gfx942
and print one resource table (kernel, compiler, arch, registers/VGPRs, SGPRs, spills,
shared/LDS, status). Exit 1 on a compiler error or warning; limits are reported per row
(`--strict` makes them fail too). Compilers that are not installed are skipped with the
reason. A second table proves the matrix-unit kernels really hold matrix instructions:
the kernels lowered to the matrix unit (GEMMs and attention: their plans' math is a matrix
instruction) are compiled once more per arch and disassembled (cuobjdump -sass: HMMA / LDSM /
LDGSTS, and HGMMA / QGMMA / UTMALDG for sm_90a's wgmma kernels; AMDGPU assembly: v_mfma); a
module of matrix-unit kernels without them is an error.
Usage: python scripts/compile_all.py [--strict] [--examples-only]"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hal.devices.loader import load_spec
from hal.errors import HalError
from hal.fusion import plan
from hal.ir.text import load_graph
from hal.lowering import lower_group
from hal.render.check import COMPILERS, check_kernels, compilers_for
from hal.render.cstyle import unique_names

ROOT = Path(__file__).resolve().parent.parent
# (spec, arch) per vendor run: every compiler of the spec's vendor that can target the arch
TARGETS = [("a100-sxm", "sm_80"), ("h100-sxm", "sm_90a"), ("mi250x-gcd", "gfx90a"),
           ("mi300x", "gfx942")]


def kernels_for(spec_name: str, examples_only: bool) -> list:
    spec = load_spec(spec_name)
    ks = []
    for f in sorted((ROOT / "examples").glob("*.hal")):
        for grp in plan(load_graph(str(f)), spec).groups:
            ks += lower_group(grp, spec)
    if not examples_only:
        sys.path.insert(0, str(ROOT))
        from tests.test_render import primitive_kernels
        ks += primitive_kernels(spec_name)
        ks += model_kernels(spec)
    return unique_names(ks, lambda i: f"u{i}_")


MODELS = ["examples/models/llama_style.py:make", "examples/models/gpt2_style.py:make",
          "examples/models/jax_decoder.py:make"]


_SUBJECTS: dict = {}


def model_kernels(spec) -> list:
    """The kernels of the framework bring-up models (torch.export / JAX imports), as planned
    for `spec`; a model whose framework is not installed is skipped with the reason."""
    import warnings

    from hal.frontends.bringup import load_subject

    ks = []
    for model in MODELS:
        if model not in _SUBJECTS:   # import (torch.export, jax tracing) once, plan per spec
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SUBJECTS[model] = load_subject(str(ROOT / model))
        subject = _SUBJECTS[model]
        if subject.model is None:
            print(f"skipped {model}: {subject.error}")
            continue
        for grp in plan(subject.model.graph, spec).groups:
            ks += lower_group(grp, spec)
    return ks


def matrix_unit_rows(spec_name: str, arch: str, ks: list) -> tuple[list[str], bool]:
    """(table row, ok) for the matrix-unit kernels among `ks` on one arch."""
    from hal.render.disasm import count_instructions

    # every kernel whose plan issues a matrix instruction: GEMMs (mma.sync, MFMA, wgmma)
    # and attention
    mma = [k for k in ks if k.meta.plan is not None and k.meta.plan.math.matrix]
    att = sum(k.meta.plan.kind == "attention" for k in mma)
    if not mma:
        return [spec_name, arch, "0", "-", "-", "no matrix-unit kernel"], True
    spec = load_spec(spec_name)
    if spec.vendor == "nvidia":
        from hal.backends.cuda.render import render_cuda_module as render
        vendor, key = "cuda", "HMMA"
    else:
        from hal.backends.rocm.render import render_hip_module as render
        vendor, key = "hip", "v_mfma"
    try:
        r = count_instructions(render(mma, spec), vendor, arch, name=f"mma_{spec_name}")
    except HalError as e:
        return [spec_name, arch, str(len(mma)), "-", "-", f"compile failed: {e.message}"], False
    if isinstance(r, str):
        return [spec_name, arch, str(len(mma)), "-", "-", f"skipped: {r}"], True
    forms = ", ".join(f"{f} x{n}" for f, n in sorted(r.forms.items()))
    ok = r.counts.get(key, 0) > 0
    if any(k.meta.plan.strategy == "wgmma" for k in mma):   # Hopper: wgmma fed by TMA
        ok = ok or (r.counts.get("HGMMA", 0) + r.counts.get("QGMMA", 0) > 0
                    and r.counts.get("UTMALDG", 0) > 0)
        ok = ok and r.counts.get("UTMALDG", 0) > 0
    return [spec_name, arch, f"{len(mma)} ({att} attention)", r.tool, forms,
            "ok" if ok else f"no {key}"], ok


def main(argv: list[str]) -> int:
    strict, examples_only = "--strict" in argv, "--examples-only" in argv
    con = Console(width=160)
    t = Table(title="hal: resource use per kernel")
    for col in ("kernel", "compiler", "arch", "regs/VGPRs", "SGPRs", "spill B", "shared/LDS B",
                "stack B", "s", "status"):
        t.add_column(col, overflow="fold")
    failed = over = 0
    mt = Table(title="hal: matrix instructions in the matrix-unit kernels")
    for col in ("spec", "arch", "kernels", "tool", "instructions", "status"):
        mt.add_column(col, overflow="fold")
    for spec_name, arch in TARGETS:
        spec = load_spec(spec_name)
        ks = kernels_for(spec_name, examples_only)
        row, ok = matrix_unit_rows(spec_name, arch, ks)
        mt.add_row(*row)
        failed += not ok
        for cname in compilers_for(spec.vendor):
            entry = COMPILERS[cname]
            if entry.arches and arch not in entry.arches:
                continue
            if (why := entry.available()) is not None:
                con.print(f"skipped {cname} {arch}: {why}")
                continue
            try:
                recs = check_kernels(ks, spec, [cname], arch=arch, name=f"all_{spec_name}",
                                     raise_on_limit=False)
            except HalError as e:
                con.print(f"[red]{cname} {arch}: {e}[/red]")
                failed += 1
                continue
            fresh = sum(1 for r in recs if r.compile_s)   # 0.0: from the records cache
            con.print(f"{cname} {arch}: {len(recs)} kernels in "
                      f"{max((r.compile_s or 0 for r in recs), default=0):.1f} s "
                      f"({len(recs) - fresh} from the records cache)")
            for r in recs:
                over += r.status != "ok"
                t.add_row(r.kernel, r.compiler, r.arch, str(r.registers), str(r.sgprs or "-"),
                          str(r.spill_bytes), str(r.shared_bytes), str(r.stack_bytes),
                          f"{r.compile_s or 0:.1f}", r.status if r.status == "ok"
                          else f"{r.status}: {'; '.join(r.notes)}")
    con.print(t)
    con.print(mt)
    con.print(f"{failed} compiler run(s) failed, {over} kernel record(s) over a limit")
    return 1 if failed or (strict and over) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

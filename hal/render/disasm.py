"""Which machine instructions a rendered module really holds: `count_instructions`.

The offline proof that a kernel uses the matrix unit: CUDA source is compiled by nvcc to
a cubin and disassembled by `cuobjdump -sass` (the nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm wheels, the `cuda` extra, provide both without a GPU); HIP source
is compiled to AMDGPU assembly by clang-19 (gfx942) or hipcc (gfx90a). Mnemonics are
counted by prefix: HMMA (tensor-core mma.sync), LDSM (ldmatrix), LDGSTS (cp.async),
LDG.E.128 (128-bit global loads), and Hopper's HGMMA / QGMMA (wgmma on 16-bit / fp8
operands), UTMALDG (TMA tensor loads), SYNCS (mbarrier arrive / try_wait) on NVIDIA; v_mfma, ds_read_b128/b64 and
global_load_dwordx4 on AMD. A missing tool is a reason string, never an exception.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hal.render.toolchain import run_tool, save_source

NVIDIA_MNEMONICS = ("HMMA", "LDSM", "LDGSTS", "LDG.E.128", "HGMMA", "QGMMA", "UTMALDG", "SYNCS",
                    "USETMAXREG")
AMD_MNEMONICS = ("v_mfma", "ds_read_b128", "ds_read_b64", "global_load_dwordx4")


@dataclass
class InstructionCount:
    tool: str
    arch: str
    counts: dict[str, int]
    listing: Path                        # the disassembly / assembly file
    forms: dict[str, int] = field(default_factory=dict)   # full mnemonics seen, e.g. HMMA.16816.F32.BF16


def cuobjdump_path() -> str | None:
    """cuobjdump on PATH, or the one the nvidia-cuda-cuobjdump wheel installs."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for root in map(Path, sys.path):
        cand = root / "nvidia" / "cu13" / "bin" / "cuobjdump"
        if cand.is_file():
            return str(cand)
    return None


def _mnemonic_forms(text: str, prefixes: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    counts: Counter = Counter()
    forms: Counter = Counter()
    for line in text.splitlines():
        for tok in re.findall(r"[A-Za-z_][\w.]*", line):
            for p in prefixes:
                if tok.startswith(p):
                    counts[p] += 1
                    forms[tok] += 1
    return dict(counts), dict(forms)


def cuda_instructions(source: str, arch: str, *, name: str = "kernels",
                      out_dir: Path | None = None) -> InstructionCount | str:
    """SASS mnemonic counts of `source` compiled by nvcc for `arch`, or why not."""
    if not shutil.which("nvcc"):
        return "nvcc not found"
    tool = cuobjdump_path()
    if tool is None:
        return "cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"
    path = save_source(source, name, ".cu", out_dir)
    cubin = path.with_suffix(f".{arch}.cubin")
    run_tool(["nvcc", "-cubin", f"-arch={arch}", "-O3", "-o", str(cubin), str(path)],
             what=f"nvcc ({arch})", source_path=path)
    env = dict(os.environ)
    env["PATH"] = str(Path(tool).parent) + os.pathsep + env.get("PATH", "")  # nvdisasm
    sass = run_tool([tool, "-sass", str(cubin)], what="cuobjdump -sass", source_path=path,
                    env=env)
    listing = path.with_suffix(f".{arch}.sass")
    listing.write_text(sass)
    counts, forms = _mnemonic_forms(sass, NVIDIA_MNEMONICS)
    return InstructionCount("cuobjdump", arch, counts, listing, forms)


def amd_instructions(source: str, arch: str, *, name: str = "kernels",
                     out_dir: Path | None = None) -> InstructionCount | str:
    """AMDGPU assembly mnemonic counts: hipcc (ROCm 5.2) for gfx90a when installed (the
    compiler hal's ROCm backend uses there), clang-19 otherwise."""
    path = save_source(source, name, ".hip", out_dir)
    out = path.with_suffix(f".{arch}.s")
    use_hipcc = arch == "gfx90a" and shutil.which("hipcc")
    if shutil.which("clang-19") and not use_hipcc:
        tool = "clang-19"
        cmd = ["clang-19", "-x", "hip", f"--offload-arch={arch}", "--offload-device-only",
               "-nogpulib", "-O3", "-S", "-o", str(out), str(path)]
    elif shutil.which("hipcc"):
        tool = "hipcc"
        cmd = ["hipcc", "-x", "hip", f"--offload-arch={arch}", "--cuda-device-only", "-O3",
               "-Wno-unused-command-line-argument",
               "-S", "-o", str(out), str(path)]
    else:
        return "neither clang-19 nor hipcc found"
    env = dict(os.environ, HIP_PLATFORM="amd")
    run_tool(cmd, what=f"{tool} ({arch})", source_path=path, env=env)
    asm = out.read_text()
    counts, forms = _mnemonic_forms(asm, AMD_MNEMONICS)
    return InstructionCount(tool, arch, counts, out, forms)


def count_instructions(source: str, vendor: str, arch: str, **kw) -> InstructionCount | str:
    """Mnemonic counts of a rendered module for one arch ("cuda" / "hip" vendors)."""
    if vendor == "cuda":
        return cuda_instructions(source, arch, **kw)
    return amd_instructions(source, arch, **kw)

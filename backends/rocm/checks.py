"""Registers the ROCm compilers (hipcc for gfx90a, clang-19 for gfx942) with hal.render.check.

hipRTC (compile_hiprtc) is not registered: with ROCm 5.2's libamdhip64 it compiles a bare
kernel but crashes the process on sources that include hip_fp16.h / hip_bfloat16.h.
"""

from __future__ import annotations

from hal.backends.rocm.compiler import (
    CLANG,
    clang_available,
    clang_resources,
    hipcc_available,
    hipcc_resources,
)
from hal.backends.rocm.render import render_hip_module
from hal.render.check import CompilerEntry, binary_identity, register_compiler

register_compiler(CompilerEntry("hipcc", "amd", render_hip_module, hipcc_available,
                                hipcc_resources, "gfx90a",
                                ("gfx906", "gfx908", "gfx90a", "gfx1030"),
                                identity=binary_identity("hipcc")))
register_compiler(CompilerEntry("clang-19", "amd", render_hip_module, clang_available,
                                clang_resources, "gfx942",
                                identity=binary_identity(CLANG)))

"""Registers the CUDA compilers (NVRTC, nvcc) with hal.render.check."""

from __future__ import annotations

from hal.backends.cuda.compiler import (
    nvcc_available,
    nvcc_resources,
    nvrtc_available,
    nvrtc_identity,
    nvrtc_resources,
)
from hal.backends.cuda.render import render_cuda_module
from hal.render.check import CompilerEntry, binary_identity, register_compiler

register_compiler(CompilerEntry("nvrtc", "nvidia", render_cuda_module, nvrtc_available,
                                nvrtc_resources, "sm_90a", identity=nvrtc_identity))
register_compiler(CompilerEntry("nvcc", "nvidia", render_cuda_module, nvcc_available,
                                nvcc_resources, "sm_90a",
                                identity=binary_identity("nvcc")))

"""hal: a hardware abstraction layer for AI accelerators.

A fused-op IR (graphs of primitive ops) that lowers to CUDA, ROCm and a
reference CPU simulator, with a conformance suite and microbenchmarks.
"""

__version__ = "0.1.0"

"""Planted simulator faults for the conformance self-test (issue 21).

cpu_sim is the device under test of `hal conformance --self-test`: a bug in its
rounding is a bug in "the chip". Each fault here replaces one rounding rule of
the generated code (codegen's rounder, caster and scalar ops) while the
self-test plants it through the frozen LoweringOptions the backend receives
(`run_graph(lowering_options=...)`, passed on to `simulate`); the compiled-kernel
cache keys on the planted faults. `faulty_rounding` / `faulty_scalar` return the
replacement function or None (no fault: the normal rule).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hal.dtypes import DType, cast
from hal.lowering.faults import register_fault

register_fault("sim_bf16_ties_away", "cpu_sim rounds bf16 ties away from zero, not to even")
register_fault("sim_f16_flush_subnormals", "cpu_sim flushes f16 subnormal results to zero")
register_fault("sim_rsqrt_flush_subnormals", "cpu_sim's rsqrt treats subnormal inputs as zero")
register_fault("sim_mac_bf16_accumulator", "cpu_sim's multiply-accumulate loops round their "
               "f32 accumulators to bf16 after every step (seen only with exact rounding)")
register_fault("sim_fp8_overflow_nan", "cpu_sim's fp8 casts overflow to NaN instead of "
               "saturating")


def _bf16_ties_away(x):
    a = np.asarray(x, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x8000) & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(a), rounded, a).astype(np.float32)


def _f16_ftz(x):
    r = cast(x, _dtype("f16")).astype(np.float32)
    return np.where(np.abs(r) < 2.0 ** -14, np.float32(0.0) * np.sign(r), r)


def _fp8_nan(dt: DType):
    def rnd(x):
        a = np.asarray(x, dtype=np.float64)
        r = cast(a, dt).astype(np.float32)
        return np.where(np.abs(a) > dt.max, np.float32(np.nan), r)
    return rnd


def _dtype(name: str) -> DType:
    from hal.dtypes import DTYPES

    return DTYPES[name]


def faulty_rounding(dt: DType, options) -> Callable | None:
    """The planted replacement of codegen's rounding to `dt` (values in float32), or None."""
    if options.fault("sim_bf16_ties_away") and dt.name == "bf16":
        return _bf16_ties_away
    if options.fault("sim_f16_flush_subnormals") and dt.name == "f16":
        return _f16_ftz
    if options.fault("sim_fp8_overflow_nan") and dt.name in ("f8e4m3fn", "f8e5m2"):
        return _fp8_nan(dt)
    return None


def faulty_scalar(name: str, fn: Callable, options) -> Callable:
    """`fn` (an op's scalar function in codegen), or its planted replacement."""
    if name == "rsqrt" and options.fault("sim_rsqrt_flush_subnormals"):
        def rsqrt_ftz(x, _f=fn):
            a = np.asarray(x)
            tiny = np.finfo(a.dtype).tiny if a.dtype.kind == "f" else 0
            return _f(np.where(np.abs(a) < tiny, a * 0, a))
        return rsqrt_ftz
    return fn

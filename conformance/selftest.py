"""The self-test: does the suite catch known bugs? (`hal conformance --self-test`)

Each planted fault is switched on in turn (one at a time) and a set of cases is
run with it on a 32-lane and a 64-lane spec (SELFTEST_DEVICES; `--device`
picks one): by default `SELFTEST_CASES`, a fast subset chosen so that every
fault is caught by at least MIN_CATCHES cases on each spec, or the cases `-k`
selects. A fault is caught when a case fails, by a numeric mismatch
("numeric"), the direct-formula check ("direct"), a simulator check ("race",
"out_of_bounds", ...), or an error verdict (the fault broke lowering). The
same cases first run without any fault and must pass, so a catch is never a
pre-existing failure; expectations (EXPECTED_FAILURES) are not applied: raw
verdicts decide.

Where faults live (FAULT_AREAS): the lowering modules (hooks on the frozen
LoweringOptions, `hal.lowering.faults`), cpu_sim's rounding (the device under
test; `hal.backends.cpu_sim.faults`, passed on to the simulator with the same
options), the error model (`tol_*`: hal.conformance.tolerance.ModelOptions,
caught by the canary cases) and an op definition shared by the kernel and the
reference (`gelu_tanh_constant`: the decomposition's constant, swapped in the
op registry for the run, caught by the direct formulas). A fault that leaves
a spec's code unchanged (the 16-lane-offset butterfly on 32-lane warps) is
reported as "same code" there, not as an escape.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import hal.backends.cpu_sim.faults  # noqa: F401  (registers the simulator's faults)
from hal.lowering import faults
from hal.lowering.options import LoweringOptions

from . import tolerance  # noqa: F401  (registers the tolerance faults)
from .cases import Case, all_cases, get_case, select
from .report import ReportWriter
from .runner import SuiteConfig, execute, plan_cases, run_suite

SELFTEST_DEVICES = ("h100-sxm", "mi300x")   # a 32-lane and a 64-lane spec
MIN_CATCHES = 3

SELFTEST_CASES = (
    "elementwise/exp/bf16/33x257",
    "elementwise/add/f32/33x257",
    "elementwise/add/f32/31",
    "elementwise/tanh/f16/31",
    "reduction/reduce_sum/f32/2x16384/long",
    "reduction/reduce_sum/f32/2x20000/long_partial",
    "reduction/reduce_max/f32/2x20000/long_partial",
    "reduction/reduce_sum/bf16/2x20000/long_partial",
    "reduction/reduce_sum/bf16/257x33/cols",
    "reduction/reduce_sum/f16/257x33/cols",
    "reduction/reduce_sum/f32/33x257/rows",
    "reduction/reduce_sum/f16/33x257/rows",
    "reduction/reduce_max/f32/4x1025/rows1025",
    "reduction/reduce_sum/f32/5x33x7/middle_keep",
    "contraction/matmul/f16-f32/33x257x31/out_f32",
    "contraction/matmul/f32/33x65x31",
    "contraction/matmul/bf16/17x1025x9/longk",
    "layout/transpose_add/f32/5x33x65/perm201",
    "layout/transpose_add/bf16/5x33x65/perm201",
    "layout/transpose_add/f16/5x33x65/perm201",
    "layout/transpose_add/i32/5x33x65/perm201",
    "layout/broadcast_add/f32/33x257/row",
    "layout/broadcast_mul/bf16/33x257/col",
    "movement/transpose/f32/5x33x65",
    "movement/transpose/f32/33x257",
    "movement/transpose/f16/33x257",
    "scan/cumsum/f32/257x33/axis0-rev",
    "scan/cumsum/f16/257x33/axis0-rev",
    "scan/cumsum/i32/257x33/axis0-rev",
    "special/rsqrt/f32/16x33",
    "special/rsqrt/bf16/16x33",
    "special/rsqrt/f64/16x33",
    "special/mul/f16/16x33",
    "special/neg/f16/16x33",
    "overflow/cast/f32-f8e4m3fn/16x33",
    "overflow/cast/f32-f8e5m2/16x33",
    "overflow/exp/f8e4m3fn/16x33",
    "cast/cast/f32-bf16/33x257/ties",
    "cast/cast/f64-bf16/33x257/ties",
    "cast/cast/f16-bf16/33x257/ties",
    "cast/cast/f32-f16/33x257",
    "fused/matmul_bias_gelu/f32/33x65x31",
    "fused/matmul_bias_relu/bf16/64x128x96",
    "fused/matmul_bias_silu/f32/33x65x31",
    "fused/gelu_tanh/f32/33x257",
    "fused/gelu_tanh/f32/4x4097",
    "fused/gelu_tanh/f64/33x257",
    "fused/gelu_tanh/f32/257",
    "fused/matmul_bias_gelu_tanh/f32/33x65x31",
    "fused/softmax/f32/33x257",
    "fused/layer_norm/bf16/33x257",
    "fused/rms_norm_matmul/f32/33x100x31",
    "fused/layer_norm_matmul/f32/17x72x9",
    "fused/rms_norm_matmul/bf16/64x200x48",
    # issue 15: norm prologues on the Hopper GEMM (h100-sxm), LayerNorm's two reductions, f16
    "fused/layer_norm_matmul/bf16/64x200x48",
    "fused/rms_norm_matmul/f16/64x200x48",
    # issue 15 part B: the clustered Hopper GEMM (B multicast) on h100-sxm, three cases so
    # each cluster fault has MIN_CATCHES catchers (f16, and bf16 with an epilogue)
    "contraction/matmul/bf16/256x320x136/cluster",
    "contraction/matmul/f16/256x320x136/cluster",
    "fused/matmul_bias_relu/bf16/256x320x128",
    "fused/attention/f32/1x2x2x33x32",
    "fused/attention/bf16/1x2x2x17x16/causal",
    "fused/attention/bf16/1x2x2x128x32/causal-tile-boundary",
    # since the Hopper attention (issue 15): on h100-sxm bf16 prefill takes the wgmma kernel
    # where TMA can feed it; a batch of two with GQA keeps mma.sync, three wgmma cases
    # (one causal) catch the register-A P fragment fault (measured 2026-12-02: the
    # mma.sync P@V fault and causal over-skip had 2 catchers each on h100-sxm without them)
    "fused/attention/bf16/2x4x2x9x16/causal",
    "fused/attention/bf16/1x1x1x64x128/wgmma-t64",
    "fused/attention/bf16/2x2x2x70x64/wgmma-t200",
    "fused/attention/bf16/1x2x2x130x128/wgmma-t130-causal",
    "fused/attention/f32/1x4x2x1x32/decode_t1500",
    "fused/attention/f32/2x2x2x1x16/decode_t777-vplus1",
    "fused/attention/f16/2x2x2x1x16/decode_t777-vplus1",
    "stress/add/f32/129x513",
    "stress/exp/bf16/129x513",
    "stress/elementwise_chain/f32/129x513",
    "stress/matmul/f32/257x128x96",
    "stress/matmul/bf16/257x128x96",
    # a third grouped-raster catcher on h100-sxm (the bf16 one above takes wgmma clusters)
    "stress/matmul/f16/300x96x200",
    "stress/rms_norm_matmul/f32/257x100x96",
    "stress/reduce_sum/f32/1x20000/split",
    "stress/attention/f32/1x1x1x1x32/decode_t1500-vplus1",
    "canary/ulps/exp/f32/33x257",
    "canary/ulps/tanh/f32/33x257",
    "canary/ulps/rsqrt/f32/33x257",
    "canary/accumulation/reduce_sum/f32/4x4096",
    "canary/accumulation/cumsum/f32/4x1025",
    "canary/accumulation/matmul/f32/17x1025x9",
    "canary/signed_zero/neg/f32/16x33",
    "canary/signed_zero/neg/bf16/16x33",
    "canary/signed_zero/maximum/f32/16x33",
    "canary/truncation/cast/f32-bf16/33x257",
    "canary/truncation/cast/f32-f16/33x257",
    "canary/truncation/cast/f64-f32/33x257",
    "model/mlp/f32/8x64",
)

FAULT_AREAS = {
    "off_by_one_mask": "lowering/pointwise", "grid_stride_block_step": "lowering/pointwise",
    "wrong_reduction_identity": "lowering/reduction", "missing_barrier": "lowering/reduction",
    "f16_accumulation": "lowering/reduction+matmul",
    "split_drops_partial_chunk": "lowering/reduction", "butterfly_offset_16": "lowering/reduction",
    "swapped_transpose": "lowering/expr", "bf16_truncation": "lowering/expr",
    "wrong_broadcast_axis": "lowering/expr", "dropped_epilogue": "lowering/matmul",
    "raster_full_last_group": "lowering/matmul", "matmul_k_tail_unmasked": "lowering/matmul",
    "prologue_floor_k": "lowering/matmul_prologue", "row_block_partial_warp": "lowering/tiling",
    "unravel_wrong_extent": "lowering/context", "attention_key_mask": "lowering/attention",
    "attention_causal_overskip": "lowering/attention_causal",
    "attention_no_rescale": "lowering/attention",
    "split_k_combine_unscaled": "lowering/attention_split",
    "scan_reverse_off_by_one": "lowering/scan", "transpose_tile_pitch": "lowering/movement",
    "sim_bf16_ties_away": "cpu_sim rounding", "sim_f16_flush_subnormals": "cpu_sim rounding",
    "sim_rsqrt_flush_subnormals": "cpu_sim rounding", "sim_fp8_overflow_nan": "cpu_sim rounding",
    "sim_mac_bf16_accumulator": "cpu_sim accumulation",
    "tol_ulps_16x": "tolerance", "tol_accumulation_16x": "tolerance",
    "tol_no_signed_zero": "tolerance+compare", "tol_store_widened": "tolerance",
    "gelu_tanh_constant": "op definition (ops/composite)",
    "mma_swapped_fragment_halves": "lowering/matmul_mma", "mma_wrong_k_order":
    "lowering/matmul_mma", "missing_cp_async_wait": "lowering/matmul_mma",
    "wrong_swizzle": "lowering/matmul_mma",
    "attention_pv_fragment_transposed": "lowering/attention_mma",
    "wgmma_wrong_swizzle": "lowering/matmul_wgmma", "missing_wgmma_wait":
    "lowering/matmul_wgmma", "wrong_mbarrier_tx_count": "lowering/matmul_wgmma",
    "tma_box_off_by_one": "lowering/matmul_wgmma",
    "wgmma_missing_full_wait": "lowering/matmul_wgmma",
    "wgmma_prologue_unswizzled": "lowering/matmul_wgmma_prologue",
    "wgmma_prologue_no_proxy_fence": "lowering/matmul_wgmma_prologue",
    "wgmma_prologue_no_warpgroup_barrier": "lowering/matmul_wgmma_prologue",
    "attention_wgmma_p_fragment_swapped": "lowering/attention_wgmma",
    "cluster_local_release": "lowering/matmul_cluster",
    "cluster_multicast_mask": "lowering/matmul_cluster",
}

# faults that leave the code for some specs unchanged (not a bug there)
def _hopper(spec) -> bool:
    """A bf16 matmul takes the wgmma+TMA kernel on this spec (hal.lowering.matmul_wgmma)."""
    return spec.matrix_instruction("bf16", "bf16", "f32", "warpgroup") is not None


SAME_CODE: dict[str, Callable[[Any], bool]] = {
    "butterfly_offset_16": lambda spec: spec.warp_size == 32,
    # the Hopper kernel's faults where no matmul takes it (the mma.sync faults stay live on
    # sm_90a: the matmuls TMA cannot feed keep the mma.sync kernel)
    **{f: (lambda spec: not _hopper(spec)) for f in (
        "wgmma_wrong_swizzle", "missing_wgmma_wait", "wrong_mbarrier_tx_count",
        "tma_box_off_by_one", "wgmma_missing_full_wait", "wgmma_prologue_unswizzled", "wgmma_prologue_no_proxy_fence",
        "wgmma_prologue_no_warpgroup_barrier", "attention_wgmma_p_fragment_swapped",
        "cluster_local_release", "cluster_multicast_mask")},
}


# --------------------------------------------------------------------------- definition faults

def _gelu_decompose_wrong_constant(b, inputs, attrs):
    """gelu's decomposition with 0.0447 for 0.044715 in the tanh form (the fault)."""
    import math

    from hal.dtypes import compute_dtype

    x0 = inputs[0]
    cdt = compute_dtype(x0.dtype)
    x = x0 if x0.dtype == cdt else b.op("cast", x0, dtype=cdt)

    def c(v):
        return b.op("broadcast_to", b.op("full", shape=(), value=float(v), dtype=cdt),
                    shape=tuple(x.shape)) if tuple(x.shape) else \
            b.op("full", shape=(), value=float(v), dtype=cdt)

    if attrs["approximate"] == "tanh":
        cube = b.op("mul", b.op("mul", x, x), x)
        inner = b.op("add", x, b.op("mul", c(0.0447), cube))
        t = b.op("tanh", b.op("mul", c(math.sqrt(2.0 / math.pi)), inner))
    else:
        t = b.op("erf", b.op("mul", x, c(1.0 / math.sqrt(2.0))))
    y = b.op("mul", b.op("mul", c(0.5), x), b.op("add", c(1.0), t))
    return [y if y.dtype == x0.dtype else b.op("cast", y, dtype=x0.dtype)]


@contextlib.contextmanager
def _swapped_op(name: str, **changes) -> Iterator[None]:
    from hal.ops import OPS

    saved = OPS[name]
    OPS[name] = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        OPS[name] = saved


faults.register_fault("gelu_tanh_constant", "gelu(tanh) decomposition uses 0.0447 instead of "
                      "0.044715 (the reference is built from the same decomposition)")
# name -> context manager planting a fault in an op definition (kernel and reference alike);
# worker processes started inside it (fork) inherit it
DEFINITION_FAULTS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "gelu_tanh_constant": lambda: _swapped_op("gelu", decompose=_gelu_decompose_wrong_constant),
}


# --------------------------------------------------------------------------- running

@dataclass
class FaultResult:
    fault: str
    description: str
    run: dict[str, int] = field(default_factory=dict)          # device -> cases run
    caught_by: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    same_code: set[str] = field(default_factory=set)           # devices where it is no bug

    @property
    def where(self) -> str:
        return FAULT_AREAS.get(self.fault, "")

    def count(self, device: str) -> int:
        return len(self.caught_by.get(device, []))

    def _live(self) -> list[str]:
        return [d for d in self.run if d not in self.same_code]

    @property
    def caught(self) -> bool:
        return all(self.count(d) > 0 for d in self._live())

    @property
    def weak(self) -> list[str]:
        """Devices where fewer than MIN_CATCHES cases catch it."""
        return [d for d in self._live() if self.count(d) < MIN_CATCHES]


def _how(r: dict[str, Any]) -> str:
    if r.get("check"):
        return str(r["check"])
    if r["verdict"] == "error":
        return "error"
    if "direct" in r.get("reason", "") and "outside the bound" not in r.get("reason", ""):
        return "direct"
    if "accepted" in r.get("reason", ""):
        return "canary"
    return "numeric"


def selftest_cases(pattern: str | None = None) -> list[Case]:
    if pattern:
        return select(pattern)
    known = {c.id for c in all_cases()}
    return [get_case(i) for i in SELFTEST_CASES if i in known]


def _raw_results(cases: Sequence[Case], cfg: SuiteConfig) -> list[dict[str, Any]]:
    if cfg.workers <= 1:
        return [execute(c, cfg.backend, cfg.device, cfg.seed, lowering=cfg.lowering)
                for c in cases]
    w = ReportWriter(None, None)
    from . import expectations

    saved = expectations.EXPECTED_FAILURES.get(cfg.backend)
    expectations.EXPECTED_FAILURES[cfg.backend] = {}  # raw verdicts only
    try:
        run_suite(cfg, w, cases=cases)
    finally:
        if saved is not None:
            expectations.EXPECTED_FAILURES[cfg.backend] = saved
    return w.results


def run_selftest(cfg: SuiteConfig, cases: Sequence[Case] | None = None,
                 fault_names: Sequence[str] | None = None,
                 on_fault: Callable[[FaultResult, str], None] | None = None,
                 devices: Sequence[str] | None = None
                 ) -> tuple[dict[str, list[dict[str, Any]]], list[FaultResult]]:
    """({device: baseline failures}, one FaultResult per fault over all devices)."""
    from hal.devices.loader import load_spec

    names = list(fault_names or faults.FAULTS)
    results = {n: FaultResult(n, faults.FAULTS[n]) for n in names}
    base_all: dict[str, list[dict[str, Any]]] = {}
    for dev in devices or (cfg.device,):
        dcfg = replace(cfg, device=dev)
        spec = load_spec(dev)
        todo = list(cases) if cases is not None else selftest_cases(cfg.pattern)
        todo = plan_cases(dcfg, todo)[0]  # applicable ones only
        base = [r for r in _raw_results(todo, dcfg) if r["verdict"] in ("fail", "error")]
        base_all[dev] = base
        clean = [c for c in todo if c.id not in {r["id"] for r in base}]
        for name in names:
            fr = results[name]
            fr.run[dev] = len(clean)
            fr.caught_by[dev] = []
            if name in SAME_CODE and SAME_CODE[name](spec):
                fr.same_code.add(dev)
            planted = replace(dcfg, lowering=LoweringOptions.planting(name))
            ctx = DEFINITION_FAULTS[name]() if name in DEFINITION_FAULTS else \
                contextlib.nullcontext()
            with ctx:
                for r in _raw_results(clean, planted):
                    if r["verdict"] in ("fail", "error"):
                        fr.caught_by[dev].append((r["id"], _how(r)))
            if on_fault:
                on_fault(fr, dev)
    return base_all, [results[n] for n in names]


def selftest_table(results: Sequence[FaultResult], devices: Sequence[str]):
    from rich.table import Table

    t = Table(title="conformance self-test on cpu_sim: planted faults, cases catching each")
    for col in ("fault", "where", "planted bug", *devices, "by", "cases catching it (first 3)"):
        t.add_column(col)
    for fr in results:
        cells = []
        for d in devices:
            if d in fr.same_code:
                cells.append(f"same code ({fr.count(d)}/{fr.run.get(d, 0)})")
            elif fr.count(d):
                cells.append(f"{fr.count(d)}/{fr.run.get(d, 0)}" +
                             (" WEAK" if fr.count(d) < MIN_CATCHES else ""))
            else:
                cells.append(f"ESCAPED 0/{fr.run.get(d, 0)}")
        allc = [x for d in devices for x in fr.caught_by.get(d, [])]
        hows = sorted({h for _, h in allc})
        first = list(dict.fromkeys(i for i, _ in allc))[:3]
        t.add_row(fr.fault, fr.where, fr.description, *cells, ", ".join(hows), ", ".join(first))
    return t


def selftest_markdown(results: Sequence[FaultResult], devices: Sequence[str]) -> str:
    lines = ["| fault | where | " + " | ".join(devices) + " | caught by |",
             "|---|---|" + "---|" * len(devices) + "---|"]
    for fr in results:
        cells = [(f"same code ({fr.count(d)})" if d in fr.same_code else
                  f"{fr.count(d)}/{fr.run.get(d, 0)}") for d in devices]
        hows = sorted({h for d in devices for _, h in fr.caught_by.get(d, [])})
        lines.append(f"| {fr.fault} | {fr.where} | " + " | ".join(cells) + f" | "
                     f"{', '.join(hows)} |")
    return "\n".join(lines)

"""DeviceSpec: a target's memory hierarchy and compute figures, as data.

Nothing in hal asks `if vendor == ...`: lowering, fusion, the simulator and the
renderers read these fields. Specs are loaded from YAML (hal.devices.loader)
and validated there; this module only defines the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MatrixInstruction:
    """One matrix-unit instruction a device issues (`matrix_instructions:` in the YAML).

    `layout` names the per-lane fragment layout in hal.kernel.mma (which also owns the
    instruction's lane count and element counts); `rate` is the dense FLOP/s of the whole
    device issuing it (0: take the spec's peak_flops for `a`). `native` is False when the
    hardware reads other encodings than hal's dtypes of the same name (CDNA3's FNUZ fp8):
    the lowering then does not pick it, the cost model still knows it exists. `opt_in`
    names a capability the user grants (`allow_tf32`: `--allow-tf32`, the "+tf32" spec
    variant) before the lowering may pick it: TF32 rounds f32 inputs to 10 mantissa bits."""

    name: str                        # "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
    m: int
    n: int
    k: int
    a: str                           # dtype name of A
    b: str                           # dtype name of B
    acc: str                         # accumulator (C/D) dtype name
    layout: str                      # hal.kernel.mma layout name, e.g. "nv_m16n8k16_b16"
    rate: float = 0.0
    native: bool = True
    # "warp" (mma.sync, MFMA: hal.kernel.mma layouts) or "warpgroup" (Hopper wgmma: the
    # layout is one of hal.kernel.wgmma.WGMMA_LAYOUTS, n the largest N of the family)
    scope: str = "warp"
    opt_in: str = ""                 # a capability the user must grant ("allow_tf32"), else ""

    @property
    def flops(self) -> int:
        """Flops of one issue by one warp/wave (a multiply and an add per product)."""
        return 2 * self.m * self.n * self.k


@dataclass(frozen=True)
class DeviceSpec:
    name: str                        # "h100-sxm"
    vendor: str                      # "nvidia", "amd", "cpu", "generic"
    arch: str                        # "sm_90a", "gfx942", "x86-64", ...
    kind: str                        # "gpu", "cpu", "scratchpad"
    compute_units: int               # SMs / CUs / cores
    warp_size: int                   # warp / wavefront / SIMD width (lanes that shuffle)
    max_threads_per_block: int
    max_threads_per_unit: int        # resident threads per SM/CU
    max_blocks_per_unit: int
    registers_per_unit: int          # 32-bit registers per SM/CU
    max_registers_per_thread: int
    shared_mem_per_block: int        # bytes, the largest a block may request (opt-in)
    shared_mem_per_unit: int         # bytes
    l1_bytes_per_unit: int           # bytes (0 when there is none)
    l2_bytes: int                    # bytes, last level cache total (incl. infinity cache)
    dram_bytes: int                  # bytes of device memory
    dram_bandwidth: float            # bytes/s
    l2_bandwidth: float              # bytes/s
    peak_flops: dict[str, float]     # dtype name -> FLOP/s (dense, matmul units where present)
    vector_flops: dict[str, float]   # dtype name -> FLOP/s for non-matrix arithmetic
    launch_overhead_s: float         # seconds per kernel launch
    supported_dtypes: tuple[str, ...]
    index_bits: int = 32             # natural index width of generated kernels
    # blocks per grid axis (x, y, z) a launch may ask for; CUDA's and HIP's documented
    # limits. Lowering folds y and z into x when a grid would exceed them.
    max_grid: tuple[int, int, int] = (2**31 - 1, 65535, 65535)
    clock_hz: float = 1.0e9
    description: str = ""
    source: str = ""                 # the file it was loaded from
    capabilities: frozenset[str] = field(default_factory=frozenset)  # e.g. {"fp8", "tensor_cores"}
    matrix_instructions: tuple[MatrixInstruction, ...] = ()

    def matrix_instruction(self, a: str, b: str, acc: str,
                           scope: str = "warp") -> MatrixInstruction | None:
        """The first usable matrix instruction of `scope` ("warp": mma.sync/MFMA,
        "warpgroup": wgmma) for these operand/accumulator dtypes, or None (an opt-in one,
        TF32 for f32, only on a spec the user granted it: `allow_tf32`)."""
        for mi in self.usable_matrix_instructions():
            if mi.scope == scope and (mi.a, mi.b, mi.acc) == (a, b, acc):
                return mi
        return None

    def usable_matrix_instructions(self) -> tuple[MatrixInstruction, ...]:
        """The instructions a lowering may pick: native ones, opt-in ones once granted."""
        return tuple(mi for mi in self.matrix_instructions
                     if mi.native and (not mi.opt_in or mi.opt_in in self.capabilities))

    def __hash__(self) -> int:  # dict fields: hash by identity of the spec, not its tables
        return hash((self.name, self.source, self.arch))

    @property
    def warps_per_block_max(self) -> int:
        return self.max_threads_per_block // self.warp_size

    def registers_per_thread_at(self, threads_per_block: int) -> int:
        """Registers a thread may use when a block of this many threads must fit on one
        unit: the register file is shared by the block's threads (on GPUs a 1024-thread
        block leaves 64 registers per thread on an H100, 128 VGPRs on an MI300X)."""
        share = self.registers_per_unit // max(1, threads_per_block)
        return max(1, min(self.max_registers_per_thread, share))

    def peak_for(self, dtype_name: str, matrix: bool = True) -> float:
        """Peak FLOP/s for a dtype; falls back to f32 vector rate when the dtype has no entry."""
        table = self.peak_flops if matrix else self.vector_flops
        if dtype_name in table:
            return table[dtype_name]
        return self.vector_flops.get(dtype_name, self.vector_flops.get("f32", 1e12))

    def supports(self, dtype_name: str) -> bool:
        return dtype_name in self.supported_dtypes


TF32_SUFFIX = "+tf32"


def allow_tf32(spec: DeviceSpec) -> DeviceSpec:
    """`spec` with the user's TF32 opt-in (`--allow-tf32`): f32 matmuls may issue the spec's
    TF32 matrix instruction. Named "<name>+tf32" (caches and reports keep it apart;
    hal.devices.loader.load_spec reads the suffix back)."""
    from dataclasses import replace

    if "allow_tf32" in spec.capabilities:
        return spec
    return replace(spec, name=spec.name + TF32_SUFFIX,
                   capabilities=frozenset(spec.capabilities) | {"allow_tf32"})

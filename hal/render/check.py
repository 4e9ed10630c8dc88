"""Compile checks against a device spec: `check_kernel`, `check_kernels`, `COMPILERS`.

A check renders kernels for a vendor, runs the real compilers that are installed and
compares what they report with the spec: registers per thread, shared memory / LDS per
block, spills. A kernel over a limit raises `ResourceLimitError` naming the kernel, the
amount and the limit; a compiler failure or warning raises `CompileError`.

`COMPILERS` maps a compiler name to a `CompilerEntry` (vendor, renderer, `available()`,
`run(source, arch, name)`); the CUDA and ROCm backends provide them (register one with
`register_compiler`). Many kernels go into one translation unit per compiler call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec
from hal.errors import CompileError, UnsupportedError
from hal.kernel.ir import Kernel
from hal.render.toolchain import ResourceRecord


class ResourceLimitError(CompileError):
    """A kernel that needs more registers, shared memory or spills than its device allows."""


@dataclass(frozen=True)
class CompilerEntry:
    name: str
    vendor: str                                   # "nvidia" / "amd": which spec it serves
    render: Callable[[Sequence[Kernel], DeviceSpec | None], str]
    available: Callable[[], str | None]           # None, or why it cannot run here
    run: Callable[..., list[ResourceRecord]]      # run(source, arch, name=...) -> records
    default_arch: str
    arches: tuple[str, ...] = ()                  # the arches it can target (empty: any)


COMPILERS: dict[str, CompilerEntry] = {}


def register_compiler(entry: CompilerEntry) -> None:
    COMPILERS[entry.name] = entry


def _load() -> None:
    if not COMPILERS:
        import hal.backends.cuda.checks  # noqa: F401  (registers nvrtc, nvcc)
        import hal.backends.rocm.checks  # noqa: F401  (registers hipcc, clang-19)


def compilers_for(vendor: str) -> list[str]:
    _load()
    return [n for n, e in COMPILERS.items() if e.vendor == vendor]


def spec_limit_errors(kernel: Kernel, spec: DeviceSpec,
                      record: ResourceRecord | None = None,
                      allowed_spill_bytes: int = 0) -> list[str]:
    """Sentences, one per limit `kernel` (or its compiler record) exceeds on `spec`."""
    errs = []
    shared = max(kernel.shared_bytes, (record.shared_bytes or 0) if record else 0)
    if shared > spec.shared_mem_per_block:
        errs.append(f"kernel {kernel.name} uses {shared} bytes of shared memory, over "
                    f"{spec.name}'s limit of {spec.shared_mem_per_block} bytes per block")
    if kernel.block > spec.max_threads_per_block:
        errs.append(f"kernel {kernel.name} has {kernel.block} threads per block, over "
                    f"{spec.name}'s limit of {spec.max_threads_per_block}")
    if record is not None:
        where = f"({record.compiler}, {record.arch})"
        if record.registers is not None and record.registers > spec.max_registers_per_thread:
            errs.append(f"kernel {kernel.name} uses {record.registers} registers per thread "
                        f"{where}, over {spec.name}'s limit of {spec.max_registers_per_thread}")
        if record.spill_bytes > allowed_spill_bytes:
            errs.append(f"kernel {kernel.name} spills {record.spill_bytes} bytes {where}, "
                        f"where at most {allowed_spill_bytes} were expected")
    return errs


def blocks_per_unit(kernel: Kernel, spec: DeviceSpec, rec: ResourceRecord) -> int | None:
    """Resident blocks per SM/CU from the compiler's register count, the kernel's shared
    memory and the spec's thread, block, register-file and shared-memory limits."""
    if rec.registers is None:
        return None
    regs = max(rec.registers, 1) * kernel.block
    limits = [spec.max_blocks_per_unit, spec.max_threads_per_unit // kernel.block,
              spec.registers_per_unit // regs]
    if kernel.shared_bytes:
        limits.append(spec.shared_mem_per_unit // kernel.shared_bytes)
    return max(0, min(limits))


def check_kernels(kernels: Sequence[Kernel], spec: DeviceSpec,
                  compilers: Sequence[str] | None = None, *, arch: str | None = None,
                  name: str = "kernels", allowed_spill_bytes: int = 0,
                  raise_on_limit: bool = True) -> list[ResourceRecord]:
    """Compile `kernels` (one translation unit per compiler) and check them against `spec`.

    `compilers` defaults to every registered compiler of the spec's vendor that is
    available; naming an unavailable one raises UnsupportedError with the reason.
    """
    _load()
    for k in kernels:  # the IR alone already tells shared memory and block size
        errs = spec_limit_errors(k, spec)
        if errs and raise_on_limit:
            raise ResourceLimitError("; ".join(errs))
    names = list(compilers) if compilers is not None else [
        n for n in compilers_for(spec.vendor) if COMPILERS[n].available() is None]
    by_name = {k.name: k for k in kernels}
    records: list[ResourceRecord] = []
    for cname in names:
        entry = COMPILERS.get(cname)
        if entry is None:
            raise UnsupportedError(f"unknown compiler '{cname}'",
                                   hint="one of " + ", ".join(COMPILERS))
        why = entry.available()
        if why is not None:
            raise UnsupportedError(f"compiler {cname} unavailable: {why}")
        source = entry.render(kernels, spec)
        target = arch or (spec.arch if entry.vendor == spec.vendor and (
            not entry.arches or spec.arch in entry.arches) else entry.default_arch)
        for rec in entry.run(source, target, name=name):
            k = by_name.get(rec.kernel)
            if k is None:
                continue
            if rec.occupancy is None:  # compilers that do not report it (ptxas, clang -S)
                rec.occupancy = blocks_per_unit(k, spec, rec)
            errs = spec_limit_errors(k, spec, rec, allowed_spill_bytes)
            if errs:
                rec.status = "over limit"
                rec.notes += errs
                if raise_on_limit:
                    raise ResourceLimitError("; ".join(errs))
            records.append(rec)
    return records


def check_kernel(kernel: Kernel, spec: DeviceSpec, compilers: Sequence[str] | None = None,
                 **kw) -> list[ResourceRecord]:
    """`check_kernels` for one kernel."""
    return check_kernels([kernel], spec, compilers, name=kernel.name, **kw)

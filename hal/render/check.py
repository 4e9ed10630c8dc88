"""Compile checks against a device spec: `check_kernel`, `check_kernels`, `COMPILERS`.

A check renders kernels for a vendor, runs the real compilers that are installed and
compares what they report with the spec: registers per thread, shared memory / LDS per
block, spills. A kernel over a limit raises `ResourceLimitError` naming the kernel, the
amount and the limit; a compiler failure or warning raises `CompileError`.

`COMPILERS` maps a compiler name to a `CompilerEntry` (vendor, renderer, `available()`,
`run(source, arch, name)`); the CUDA and ROCm backends provide them (register one with
`register_compiler`). Many kernels go into one translation unit per compiler call.

A compiler entry with an `identity` (nvcc, hipcc, clang-19: `binary_identity`; NVRTC: its
version) has its records cached per kernel (`compile_records`): the key is the kernel's
own translation unit (rendered alone, comment lines dropped, its symbol replaced by a
placeholder), the target arch and the compiler's identity (for an executable its resolved
path, size, mtime and `--version` text; and the code of the entry's `run` function,
which holds the flags). Only the kernels without an entry are compiled, in one
translation unit; so an identical kernel in another graph, plan or device spec (or the
plan's own register measurement) is compiled once per compiler and arch. Register
allocation and spills are decided per kernel function, so a kernel's records do not
depend on the other kernels of its translation unit. Records served from the cache
carry `compile_s` 0.0. A compiler failure is never cached (it fails again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache

from hal.devices.spec import DeviceSpec
from hal.errors import CompileError, UnsupportedError
from hal.kernel.ir import Kernel
from hal.render.cache import CompileCache
from hal.render.cstyle import kernel_symbol
from hal.render.toolchain import ResourceRecord, records_from_json


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
    # the compiler's version, for the per-kernel records cache (None: not cached)
    identity: Callable[[], str | None] | None = None


COMPILERS: dict[str, CompilerEntry] = {}


def register_compiler(entry: CompilerEntry) -> None:
    COMPILERS[entry.name] = entry


def _load() -> None:
    if not COMPILERS:
        import hal.backends.cuda.checks  # noqa: F401  (registers nvrtc, nvcc)
        import hal.backends.rocm.checks  # noqa: F401  (registers hipcc, clang-19)


def binary_identity(binary: str) -> Callable[[], str | None]:
    """An `identity` for a compiler executable: its resolved path, size, mtime and
    `--version` text (None when it is not installed)."""
    def identity() -> str | None:
        path = shutil.which(binary)
        if path is None:
            return None
        real = os.path.realpath(path)
        st = os.stat(real)
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                     timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return f"{real}|{st.st_size}|{st.st_mtime_ns}|{version}"
    return identity


@cache
def compiler_identity(entry: CompilerEntry) -> str | None:
    """What a cached record must match: the entry's `identity()` (the compiler's version)
    and the code of `entry.run` (its flags). None: not cacheable."""
    if entry.identity is None:
        return None
    ident = entry.identity()
    if ident is None:
        return None
    code = getattr(entry.run, "__code__", None)
    fn = hashlib.sha256(repr((code.co_code, code.co_consts)).encode()).hexdigest() \
        if code is not None else repr(entry.run)
    return f"{entry.name}|{ident}|{fn}"


_TEXTS: dict[tuple, tuple[Kernel, DeviceSpec, str]] = {}
# kernels compiled and kernels served from the records cache, in this process
RECORD_COUNTS: dict[str, int] = {"compiled": 0, "cached": 0}


def kernel_key_text(entry: CompilerEntry, kernel: Kernel, spec: DeviceSpec) -> str:
    """The kernel alone as a translation unit, without comment lines and with its symbol
    replaced: equal texts compile to equal records whatever the kernel is called."""
    memo = (entry.render, id(kernel), id(spec))
    hit = _TEXTS.get(memo)
    if hit is not None and hit[0] is kernel and hit[1] is spec:
        return hit[2]
    text = entry.render([kernel], spec)
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("//"))
    text = re.sub(rf"\b{re.escape(kernel_symbol(kernel))}\b", "HAL_KERNEL_SYMBOL", text)
    if len(_TEXTS) > 4096:
        _TEXTS.clear()
    _TEXTS[memo] = (kernel, spec, text)
    return text


def compile_records(entry: CompilerEntry, kernels: Sequence[Kernel], spec: DeviceSpec,
                    target: str, name: str) -> list[ResourceRecord]:
    """`entry.run` over `kernels` for `target`, through the per-kernel records cache
    (module docstring); the records come back in kernel order."""
    ident = compiler_identity(entry)
    cache = CompileCache(namespace="records") if ident is not None else None
    if cache is None or cache.root is None:
        RECORD_COUNTS["compiled"] += len(kernels)
        return entry.run(entry.render(kernels, spec), target, name=name)
    keys = {k.name: cache.key("records-v1", ident, target, kernel_key_text(entry, k, spec))
            for k in kernels}
    found: dict[str, list[ResourceRecord]] = {}
    for k in kernels:
        raw = cache.get(keys[k.name], validate=records_from_json)
        if raw is not None:
            found[k.name] = [replace(r, kernel=k.name, compile_s=0.0)   # no compile this time
                             for r in records_from_json(raw)]
    missing = [k for k in kernels if k.name not in found]
    RECORD_COUNTS["cached"] += len(kernels) - len(missing)
    RECORD_COUNTS["compiled"] += len(missing)
    if missing:
        fresh: dict[str, list[ResourceRecord]] = {k.name: [] for k in missing}
        for rec in entry.run(entry.render(missing, spec), target, name=name):
            if rec.kernel in fresh:
                fresh[rec.kernel].append(rec)
        for k in missing:
            cache.put(keys[k.name], json.dumps([r.to_dict() for r in fresh[k.name]]).encode())
        found.update(fresh)
    return [r for k in kernels for r in found[k.name]]


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
        target = arch or (spec.arch if entry.vendor == spec.vendor and (
            not entry.arches or spec.arch in entry.arches) else entry.default_arch)
        for rec in compile_records(entry, kernels, spec, target, name):
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

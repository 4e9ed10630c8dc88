"""Compile rendered CUDA / HIP text for the host CPU: `HostCompileOptions`, `compile_host`.

The rendered translation unit is written to a file UNMODIFIED and compiled by a host C++
compiler (clang++-19 first, then clang++, then g++; `$HAL_HOST_CXX` overrides) with the
shim force-included (`-include hal_host_shim.h -DHAL_HOST_SHIM -DHAL_WARP_SIZE=<spec>`)
and the shim's stand-ins for <cuda_fp16.h>, <hip/hip_runtime.h> & co. first on the
include path. A second, generated file `#include`s that text and adds one launch entry
per kernel (`HAL_HOST_ENTRY(name)`, a trampoline that unpacks a cuLaunchKernel-style
argument array). With clang the shim is loaded as a precompiled header
(`backends.host.pch`), which halves a small kernel's compile. The result is a shared
object, cached by sha256 of (compiler, options, source, shim headers) under
$HAL_CACHE_DIR/host-kernels.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hal.errors import CompileError
from hal.render.toolchain import CompileCache, atomic_write, cache_dir, run_tool, save_source

from .pch import pch_flags, shim_pch

SHIM_DIR = Path(__file__).resolve().parent / "shim"
CANDIDATES = ("clang++-19", "clang++", "g++")
# lld links a kernel's shared object in half the time of GNU ld (clang only)
LLD_CANDIDATES = ("ld.lld", "ld.lld-19", "ld.lld-18", "ld.lld-17", "ld.lld-16", "ld.lld-15")

# a kernel definition as both renderers spell it (kernel_prefix, then launch bounds)
_KERNEL = re.compile(r'__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')


def find_compiler() -> str | None:
    """The host C++ compiler to use: $HAL_HOST_CXX, else the first of CANDIDATES on PATH."""
    env = os.environ.get("HAL_HOST_CXX")
    if env:
        return shutil.which(env)
    for c in CANDIDATES:
        path = shutil.which(c)
        if path:
            return path
    return None


def host_supported() -> str | None:
    """Why the shim cannot run here (None: it can). The context switch is x86-64 Linux."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return (f"the host shim's fibers are written for x86-64 Linux, not "
                f"{platform.system()} {platform.machine()}")
    if find_compiler() is None:
        return ("no host C++ compiler: install clang++ (clang-19) or g++, or set "
                "HAL_HOST_CXX")
    return None


@cache
def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def shim_digest() -> str:
    """sha256 of every shim header: editing the shim invalidates the cache."""
    h = hashlib.sha256()
    for p in sorted(SHIM_DIR.rglob("*.h")):
        h.update(p.relative_to(SHIM_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@cache
def find_lld() -> str | None:
    for c in LLD_CANDIDATES:
        path = shutil.which(c)
        if path:
            return path
    return None


def link_flags(cxx: str) -> list[str]:
    """`--ld-path=<lld>` for clang when lld is installed, else nothing (the default ld)."""
    lld = find_lld()
    return [f"--ld-path={lld}"] if lld and "clang" in Path(cxx).name else []


@dataclass(frozen=True)
class HostCompileOptions:
    """How the rendered text is compiled for the host; part of the cache key."""

    warp_size: int = 32
    opt_level: int = 1
    std: str = "c++17"
    vendor: str = "cuda"           # "cuda" or "hip": the source file's suffix, for readers

    def __post_init__(self) -> None:
        if self.warp_size not in (8, 16, 32, 64):
            raise ValueError(f"HostCompileOptions: warp_size {self.warp_size} is not one of "
                             "8, 16, 32, 64")
        if self.opt_level not in (0, 1, 2, 3):
            raise ValueError("HostCompileOptions: opt_level must be 0..3")

    def flags(self) -> list[str]:
        # no fast-math and no FP contraction: every rounding the text asks for happens
        return [f"-std={self.std}", f"-O{self.opt_level}", "-fPIC", "-shared",
                "-fno-exceptions", "-fvisibility=hidden", "-ffp-contract=off",
                "-fno-fast-math", "-DHAL_HOST_SHIM", f"-DHAL_WARP_SIZE={self.warp_size}",
                f"-I{SHIM_DIR}", f"-I{SHIM_DIR / 'include'}", "-include", "hal_host_shim.h"]


def kernel_names(source: str) -> list[str]:
    """The __global__ functions of a rendered translation unit, in order."""
    return _KERNEL.findall(source)


def launch_unit(source_path: Path, names: list[str]) -> str:
    """The generated file that includes the rendered text and adds the launch entries."""
    lines = [f'// hal host launch unit: the rendered text, unmodified, then one entry per '
             f'kernel\n#include "{source_path.name}"']
    lines += [f"HAL_HOST_ENTRY({n})" for n in names]
    return "\n".join(lines) + "\n"


def compile_host(source: str, options: HostCompileOptions, *, name: str = "kernel",
                 cache: CompileCache | None = None) -> bytes:
    """A shared object (its bytes) with `hal_host_launch_<kernel>` for every kernel."""
    cxx = find_compiler()
    if cxx is None:
        raise CompileError("host shim: no host C++ compiler found",
                           hint="install clang-19 or g++, or set HAL_HOST_CXX")
    names = kernel_names(source)  # none for a graph of empty tensors: the unit still builds
    cache = cache or CompileCache(namespace="host-kernels")
    digest = shim_digest()
    key = CompileCache.key("host-shim", _compiler_version(cxx), options, source, digest)
    hit = cache.get(key)
    if hit is not None:
        return hit
    suffix = ".hip" if options.vendor == "hip" else ".cu"
    src_path = save_source(source, name, suffix)
    # a kept build directory, so that the repro command of a failure still works
    build = cache_dir() / "host-build" / key[:16]
    build.mkdir(parents=True, exist_ok=True)
    unit = build / "unit.cpp"
    atomic_write(unit, launch_unit(src_path, names))
    fd, out = tempfile.mkstemp(dir=build, suffix=".so")
    os.close(fd)
    flags = options.flags()
    pch = shim_pch(cxx, tuple(flags), _compiler_version(cxx), digest)
    rest = [*link_flags(cxx), f"-I{src_path.parent}", str(unit), "-o", out]
    what = f"host shim ({Path(cxx).name})"
    try:
        try:
            run_tool([cxx, *pch_flags(flags, pch), *rest], what=what, source_path=src_path,
                     warnings_fail=False)
        except CompileError:
            if pch is None:
                raise
            # the PCH is only a speed-up: a failure with it is judged by the plain compile
            run_tool([cxx, *flags, *rest], what=what, source_path=src_path,
                     warnings_fail=False)
        binary = Path(out).read_bytes()
    finally:
        Path(out).unlink(missing_ok=True)
    cache.put(key, binary)
    return binary


__all__ = ["CANDIDATES", "SHIM_DIR", "HostCompileOptions", "compile_host", "find_compiler",
           "host_supported", "kernel_names", "launch_unit", "shim_digest"]

"""CUDA compilers: NVRTC (cuda-python) to cubin, and `nvcc -cubin -Xptxas -v` for resources.

`NvrtcOptions` is a frozen dataclass that validates itself and hashes into the compile
cache key (source, arch, options). Both paths hand ptxas's `-v` report to
`parse_ptxas`, which yields one `ResourceRecord` per kernel (registers, spill bytes,
stack frame, shared and constant memory). Subprocess handling, warnings-as-failures,
source saving and the cache live once in hal.render.toolchain.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hal.errors import CompileError
from hal.render.toolchain import CompileCache, ResourceRecord, run_tool, save_source, warnings_in

NVIDIA_ARCHES = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "sm_100a", "sm_120")


@dataclass(frozen=True)
class NvrtcOptions:
    """NVRTC options; part of the cache key. No fast-math unless asked."""

    arch: str = "sm_90a"
    opt_level: int = 3
    fast_math: bool = False
    verbose_ptxas: bool = True       # ptxas -v: resource report in the log
    std: str = "c++17"
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in NVIDIA_ARCHES:
            raise ValueError(f"NvrtcOptions: unknown arch '{self.arch}' "
                             f"(one of {', '.join(NVIDIA_ARCHES)})")
        if self.opt_level not in (0, 1, 2, 3):
            raise ValueError("NvrtcOptions: opt_level must be 0..3")

    def flags(self) -> list[str]:
        # The optimisation level goes to ptxas: NVRTC 13.5 rejects `--dopt=off` with
        # NVRTC_ERROR_INVALID_OPTION (with or without -G; reproduced without a GPU), while
        # `--ptxas-options=-O0..3` is accepted by every NVRTC since 11.
        out = [f"--gpu-architecture={self.arch}", f"-std={self.std}",
               f"--ptxas-options=-O{self.opt_level}"]
        if self.fast_math:
            out.append("--use_fast_math")
        if self.verbose_ptxas:
            out.append("--ptxas-options=-v")
        inc = cuda_include_dir()
        if inc:
            out.append(f"-I{inc}")
        return out + list(self.extra)


def cuda_include_dir() -> str | None:
    """The CUDA headers' dir (cuda_fp16.h & co.): $CUDA_HOME / $CUDA_PATH, then
    cuda.pathfinder (which also finds the pip wheels' nvidia/cu13/include, the only copy
    on a machine whose CUDA came with pip), then nvcc's place, then /usr/local/cuda."""
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if root and Path(root, "include", "cuda_fp16.h").exists():
            return str(Path(root, "include"))
    found = _pathfinder_include()
    if found:
        return found
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = Path(nvcc).resolve().parent.parent / "include"
        if (inc / "cuda_fp16.h").exists():
            return str(inc)
    default = Path("/usr/local/cuda/include")
    return str(default) if (default / "cuda_fp16.h").exists() else None


def _pathfinder_include() -> str | None:
    """cuda.pathfinder's cudart header dir when it holds cuda_fp16.h, else None."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory
    except ImportError:  # an older cuda-python without pathfinder
        return None
    try:
        inc = find_nvidia_header_directory("cudart")
    except Exception:  # noqa: BLE001 - not found is an answer here, not an error
        return None
    return str(inc) if inc and Path(inc, "cuda_fp16.h").exists() else None


# --------------------------------------------------------------------------- ptxas report

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")
_CMEM = re.compile(r"(\d+) bytes cmem\[0\]")


def parse_ptxas(log: str, compiler: str) -> list[ResourceRecord]:
    """ResourceRecords from a `ptxas -v` report (nvcc or NVRTC log), one per entry function."""
    out: list[ResourceRecord] = []
    cur: ResourceRecord | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            cur = ResourceRecord(kernel=m.group(1), compiler=compiler, arch=m.group(2),
                                 shared_bytes=0, stack_bytes=0)
            out.append(cur)
        elif cur is None:
            continue
        elif m := _FRAME.search(line):
            cur.stack_bytes = int(m.group(1))
            cur.spill_bytes = int(m.group(2)) + int(m.group(3))
        elif m := _USED.search(line):
            cur.registers = int(m.group(1))
            rest = m.group(2)
            if s := _SMEM.search(rest):
                cur.shared_bytes = int(s.group(1))
            if c := _CMEM.search(rest):
                cur.constant_bytes = int(c.group(1))
    return out


# --------------------------------------------------------------------------- NVRTC


def nvrtc_available() -> str | None:
    """None when NVRTC loads, else the reason (with the install command)."""
    try:
        from cuda.bindings import nvrtc

        err, _, _ = nvrtc.nvrtcVersion()
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return f"NVRTC did not load ({err})"
    except Exception as e:  # ImportError, or the library is missing
        return (f"NVRTC unavailable ({type(e).__name__}: {e}); "
                "pip install cuda-bindings nvidia-cuda-nvrtc")
    return None


def nvrtc_identity() -> str | None:
    """NVRTC's version and the CUDA headers it compiles against (the records cache key)."""
    from importlib import metadata

    try:
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
    except Exception:  # not installed: nothing is cached
        return None
    wheels = []
    for dist in ("cuda-bindings", "nvidia-cuda-nvrtc", "nvidia-cuda-nvrtc-cu12"):
        try:
            wheels.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return f"nvrtc {major}.{minor} {' '.join(wheels)} headers {cuda_include_dir()}"


def _nvrtc_log(nvrtc, prog) -> str:
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    buf = b" " * n
    nvrtc.nvrtcGetProgramLog(prog, buf)
    return buf.rstrip(b"\0 ").decode(errors="replace")


def compile_nvrtc(source: str, options: NvrtcOptions = NvrtcOptions(), *, name: str = "kernels",
                  cache: CompileCache | None = None) -> tuple[bytes, str]:
    """Compile CUDA C++ to a cubin with NVRTC; returns (cubin, log). Cached by
    (source, arch, options); a failure or a warning raises CompileError."""
    cache = cache if cache is not None else CompileCache(namespace="nvrtc")
    key = cache.key("nvrtc", source, options)
    hit = cache.get(key)
    log_key = key + ".log"
    if hit is not None:
        log = cache.get(log_key)
        return hit, (log or b"").decode()
    from cuda.bindings import nvrtc

    path = save_source(source, name, ".cu")
    flags = options.flags()
    repro = f"nvcc -cubin -arch={options.arch} -Xptxas -v {path}  # NVRTC flags: {' '.join(flags)}"
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), path.name.encode(), 0, [], [])
    try:
        err, = nvrtc.nvrtcCompileProgram(prog, len(flags), [f.encode() for f in flags])
        log = _nvrtc_log(nvrtc, prog)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(f"NVRTC ({options.arch}): compilation of {name} failed", log=log,
                               source_path=str(path), command=repro)
        if warnings_in(log):
            raise CompileError(f"NVRTC ({options.arch}): warnings in {name}, and warnings "
                               "fail checks", log=log, source_path=str(path), command=repro)
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * size
        nvrtc.nvrtcGetCUBIN(prog, cubin)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    cache.put(key, cubin)
    cache.put(log_key, log.encode())
    return cubin, log


def nvrtc_resources(source: str, arch: str, *, name: str = "kernels",
                    cache: CompileCache | None = None) -> list[ResourceRecord]:
    t0 = time.perf_counter()
    _, log = compile_nvrtc(source, NvrtcOptions(arch=arch), name=name, cache=cache)
    recs = parse_ptxas(log, "nvrtc")
    for r in recs:
        r.compile_s = time.perf_counter() - t0
    return recs


# --------------------------------------------------------------------------- nvcc


def nvcc_available() -> str | None:
    return None if shutil.which("nvcc") else "nvcc not found: install the CUDA toolkit"


def nvcc_resources(source: str, arch: str, *, name: str = "kernels",
                   out_dir: Path | None = None) -> list[ResourceRecord]:
    """`nvcc -cubin -arch=ARCH -Xptxas -v`: one ResourceRecord per kernel in `source`."""
    path = save_source(source, name, ".cu", out_dir)
    cubin = path.with_suffix(f".{arch}.cubin")
    t0 = time.perf_counter()
    log = run_tool(["nvcc", "-cubin", f"-arch={arch}", "-O3", "-Xptxas", "-v",
                    "-o", str(cubin), str(path)], what=f"nvcc ({arch})", source_path=path)
    dt = time.perf_counter() - t0
    recs = parse_ptxas(log, "nvcc")
    for r in recs:
        r.compile_s = dt
    return recs

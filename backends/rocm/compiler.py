"""ROCm compilers: hipcc (ROCm 5.2) for gfx90a, clang-19 for gfx942, hipRTC via hip-python.

* `hipcc_resources`: `hipcc --genco --offload-arch=gfx90a -Rpass-analysis=kernel-resource-usage`
  (HIP_PLATFORM=amd, since hipcc picks nvcc when one is installed); remarks give VGPRs,
  SGPRs, AGPRs, scratch, spills, LDS and occupancy per kernel.
* `clang_resources`: `clang-19 -x hip --offload-arch=gfx942 --offload-device-only -nogpulib -S`;
  the AMDGPU metadata in the assembly gives .vgpr_count, .sgpr_count,
  .group_segment_fixed_size and .private_segment_fixed_size.
* `compile_hiprtc`: hipRTC through hip-python. ROCm 5.2 keeps hipRTC inside libamdhip64.so.5
  and hip-python looks for libhiprtc.so: `hiprtc_available` says so when it cannot load.
All run through hal.render.toolchain (saved source, warnings fail, repro command, cache).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from hal.errors import CompileError
from hal.render.toolchain import CompileCache, ResourceRecord, run_tool, save_source, warnings_in

CLANG = "clang-19"
_HIP_ENV = {"HIP_PLATFORM": "amd"}

# --------------------------------------------------------------------------- hipcc (gfx90a)

_REMARK = re.compile(r"remark: +(Function Name|SGPRs|VGPRs|AGPRs|ScratchSize \[bytes/lane\]|"
                     r"Occupancy \[waves/SIMD\]|SGPRs Spill|VGPRs Spill|"
                     r"LDS Size \[bytes/block\]): (\S+)")
_FIELDS = {"SGPRs": "sgprs", "VGPRs": "registers", "AGPRs": "agprs",
           "ScratchSize [bytes/lane]": "stack_bytes", "Occupancy [waves/SIMD]": "occupancy",
           "LDS Size [bytes/block]": "shared_bytes"}


def parse_resource_remarks(log: str, compiler: str, arch: str) -> list[ResourceRecord]:
    """ResourceRecords from `-Rpass-analysis=kernel-resource-usage` remarks."""
    out: list[ResourceRecord] = []
    for m in _REMARK.finditer(log):
        key, value = m.group(1), m.group(2)
        if key == "Function Name":
            out.append(ResourceRecord(kernel=value, compiler=compiler, arch=arch))
        elif out and key in _FIELDS:
            setattr(out[-1], _FIELDS[key], int(value))
        elif out and key.endswith("Spill"):
            out[-1].spill_bytes += int(value) * 4  # spilled 32-bit registers, per lane
    return out


def hipcc_available() -> str | None:
    return None if shutil.which("hipcc") else (
        "hipcc not found: apt-get install hipcc libamdhip64-dev rocm-device-libs")


def hipcc_resources(source: str, arch: str = "gfx90a", *, name: str = "kernels",
                    out_dir: Path | None = None) -> list[ResourceRecord]:
    path = save_source(source, name, ".hip", out_dir)
    out = path.with_suffix(f".{arch}.co")
    t0 = time.perf_counter()
    log = run_tool(["hipcc", "--genco", f"--offload-arch={arch}", "-O3",
                    "-Rpass-analysis=kernel-resource-usage", "-o", str(out), str(path)],
                   what=f"hipcc ({arch})", source_path=path, env=_HIP_ENV)
    recs = parse_resource_remarks(log, "hipcc", arch)
    for r in recs:
        r.compile_s = time.perf_counter() - t0
    return recs


# --------------------------------------------------------------------------- clang-19 (gfx942)

_META_FIELDS = {".vgpr_count": "registers", ".sgpr_count": "sgprs",
                ".group_segment_fixed_size": "shared_bytes",
                ".private_segment_fixed_size": "stack_bytes"}
_META_LINE = re.compile(r"^\s*-?\s*(\.[a-z_]+):\s+(\S+)")


def parse_amdgpu_metadata(asm: str, compiler: str, arch: str) -> list[ResourceRecord]:
    """ResourceRecords from the amdhsa.kernels metadata block of AMDGPU assembly."""
    start = asm.find("amdhsa.kernels:")
    if start < 0:
        return []
    out: list[ResourceRecord] = []
    fields: dict[str, str] = {}

    def flush() -> None:
        if ".name" in fields:
            r = ResourceRecord(kernel=fields[".name"], compiler=compiler, arch=arch)
            for k, attr in _META_FIELDS.items():
                if k in fields:
                    setattr(r, attr, int(fields[k]))
            spills = int(fields.get(".vgpr_spill_count", 0)) + int(fields.get(
                ".sgpr_spill_count", 0))
            r.spill_bytes = spills * 4
            out.append(r)

    for line in asm[start:].splitlines()[1:]:
        if line.startswith("amdhsa.") or line.startswith("..."):
            break
        if re.match(r"^  - ", line):  # a new kernel entry
            flush()
            fields = {}
        m = _META_LINE.match(line)
        if m and line.startswith(("  - .", "    .")):
            fields[m.group(1)] = m.group(2)
    flush()
    return out


def clang_available() -> str | None:
    return None if shutil.which(CLANG) else f"{CLANG} not found: apt-get install clang-19"


def clang_resources(source: str, arch: str = "gfx942", *, name: str = "kernels",
                    out_dir: Path | None = None) -> list[ResourceRecord]:
    path = save_source(source, name, ".hip", out_dir)
    out = path.with_suffix(f".{arch}.s")
    t0 = time.perf_counter()
    run_tool([CLANG, "-x", "hip", f"--offload-arch={arch}", "--offload-device-only",
              "-nogpulib", "-O3", "-S", "-o", str(out), str(path)],
             what=f"{CLANG} ({arch})", source_path=path)
    recs = parse_amdgpu_metadata(out.read_text(), CLANG, arch)
    for r in recs:
        r.compile_s = time.perf_counter() - t0
    return recs


# --------------------------------------------------------------------------- hipRTC


def hiprtc_available() -> str | None:
    """None when hipRTC loads through hip-python, else the reason and the fix."""
    try:
        from hip import hiprtc

        err, *_ = hiprtc.hiprtcVersion()
        if int(err) != 0:
            return f"hipRTC did not load ({err})"
    except Exception as e:
        return (f"hipRTC unavailable ({type(e).__name__}: {str(e)[:160]}); pip install "
                "hip-python, and on ROCm 5.2 link libhiprtc.so -> libamdhip64.so.5 "
                "(on the library path)")
    return None


def compile_hiprtc(source: str, arch: str = "gfx90a", *, name: str = "kernels",
                   cache: CompileCache | None = None) -> bytes:
    """Compile HIP C++ to a code object with hipRTC; cached by (source, arch)."""
    cache = cache if cache is not None else CompileCache(namespace="hiprtc")
    key = cache.key("hiprtc", source, arch)
    hit = cache.get(key)
    if hit is not None:
        return hit
    from hip import hiprtc

    path = save_source(source, name, ".hip")
    repro = f"hipcc --genco --offload-arch={arch} {path}  # hipRTC equivalent"
    # hipRTC provides the HIP runtime declarations itself
    rtc_source = re.sub(r"#include <hip/hip_runtime.h>\n", "", source)
    _, prog = hiprtc.hiprtcCreateProgram(rtc_source.encode(), path.name.encode(), 0, [], [])
    try:
        err, = hiprtc.hiprtcCompileProgram(prog, 1, [f"--offload-arch={arch}".encode()])
        _, n = hiprtc.hiprtcGetProgramLogSize(prog)
        buf = bytearray(n)
        hiprtc.hiprtcGetProgramLog(prog, buf)
        log = bytes(buf).rstrip(b"\0").decode(errors="replace")
        if int(err) != 0 or warnings_in(log):
            raise CompileError(f"hipRTC ({arch}): compilation of {name} failed", log=log,
                               source_path=str(path), command=repro)
        _, size = hiprtc.hiprtcGetCodeSize(prog)
        code = bytearray(size)
        hiprtc.hiprtcGetCode(prog, code)
    finally:
        hiprtc.hiprtcDestroyProgram(prog)
    cache.put(key, bytes(code))
    return bytes(code)

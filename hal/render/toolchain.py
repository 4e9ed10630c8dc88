"""Vendor-neutral compile plumbing: `ResourceRecord`, `run_tool`, `CompileCache`, source saving.

Every compiler check (NVRTC, nvcc, hipcc, clang, hipRTC) goes through here, so that all of
them: save the source to a file a user can open, run with a captured log, treat warnings
as failures, raise `CompileError` carrying the log, the source path and a command that
reproduces the failure, and cache binaries under ~/.cache/hal (or $HAL_CACHE_DIR) through
hal.render.cache (validated entries, atomic writes, and no cache at all when the directory
is unusable).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hal.errors import CompileError
from hal.render.cache import CompileCache, atomic_write, cache_dir, save_source

__all__ = ["CompileCache", "ResourceRecord", "atomic_write", "cache_dir", "records_from_json",
           "run_tool", "save_source", "warnings_in"]


@dataclass
class ResourceRecord:
    """What one compiler reported for one kernel (None: the compiler does not say)."""

    kernel: str
    compiler: str                 # "nvrtc", "nvcc", "hipcc", "clang-19", "hiprtc"
    arch: str                     # "sm_90a", "gfx90a", ...
    registers: int | None = None  # registers per thread (NVIDIA) or VGPRs (AMD)
    spill_bytes: int = 0          # spill stores + loads (NVIDIA) / spilled VGPR+SGPR (AMD)
    shared_bytes: int | None = None
    stack_bytes: int | None = None  # stack frame (NVIDIA) / private segment (AMD), per thread
    constant_bytes: int | None = None
    sgprs: int | None = None
    agprs: int | None = None
    occupancy: int | None = None  # waves per SIMD (AMD) or resident blocks per SM (NVIDIA)
    compile_s: float | None = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _json_types(annotation: str) -> tuple[type, ...]:
    """JSON value types a ResourceRecord field of this (string) annotation may hold."""
    base = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}
    out: tuple[type, ...] = ()
    for part in str(annotation).split("|"):
        part = part.strip()
        out += (type(None),) if part == "None" else (list,) if part.startswith("list") \
            else base.get(part, (object,))
    return out


_RECORD_TYPES = {f.name: _json_types(f.type) for f in fields(ResourceRecord)}


def records_from_json(raw: bytes) -> list[ResourceRecord]:
    """ResourceRecords from a cached JSON list (fusion.measured's measurements,
    hal.render.check's per-kernel records); ValueError/TypeError on any schema breach (the
    cache then reports the entry by name and replaces it)."""
    data = json.loads(raw.decode())
    if not isinstance(data, list):
        raise TypeError(f"expected a list of records, found {type(data).__name__}")
    out = []
    for i, r in enumerate(data):
        if not isinstance(r, dict) or set(r) != set(_RECORD_TYPES):
            raise ValueError(f"record {i} does not have the ResourceRecord fields")
        for name, types in _RECORD_TYPES.items():
            if not isinstance(r[name], types) or (isinstance(r[name], bool) and bool not in types):
                raise TypeError(f"record {i} field {name!r}: {type(r[name]).__name__}")
        out.append(ResourceRecord(**r))
    return out


_WARNING = re.compile(r"\bwarning\b", re.IGNORECASE)


def warnings_in(log: str) -> list[str]:
    """Lines of a compiler log that are warnings (remarks and info lines are not)."""
    return [ln for ln in log.splitlines() if _WARNING.search(ln) and "remark" not in ln]


def run_tool(command: list[str], *, what: str, source_path: Path, timeout: float = 600,
             env: dict[str, str] | None = None, warnings_fail: bool = True) -> str:
    """Run one compiler command; returns its combined log. Raises CompileError on a non-zero
    exit, a timeout, or (with `warnings_fail`) any warning, with the log and a repro command."""
    repro = shlex.join(command)
    if env:
        repro = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + repro
    try:
        p = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
    except FileNotFoundError as e:
        raise CompileError(f"{what}: compiler not found: {command[0]}", log=str(e),
                           source_path=str(source_path), command=repro) from None
    except subprocess.TimeoutExpired as e:
        raise CompileError(f"{what}: timed out after {timeout:.0f} s",
                           log=str(e.stderr or ""), source_path=str(source_path),
                           command=repro) from None
    log = (p.stdout or "") + (p.stderr or "")
    if p.returncode != 0:
        raise CompileError(f"{what}: compilation failed (exit {p.returncode})", log=log,
                           source_path=str(source_path), command=repro)
    warns = warnings_in(log)
    if warnings_fail and warns:
        raise CompileError(f"{what}: {len(warns)} warning(s), and warnings fail checks",
                           log="\n".join(warns) + "\n" + log, source_path=str(source_path),
                           command=repro)
    return log

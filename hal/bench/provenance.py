"""Provenance: what a benchmark result needs to be reproduced and compared.

`collect(spec, backend, argv)` returns a dict: date, hostname, CPU model,
platform, Python and hal versions, the git commit (and whether the checkout
is dirty) when hal runs from a checkout, the command line, the device spec
(name, arch, source file), and, where readable, the GPU driver, CUDA / HIP
toolkit versions and clocks (nvidia-smi, rocm-smi, torch.version). Every
probe is best-effort: a missing tool gives no key, never an error.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from hal.devices.spec import DeviceSpec


def _cmd(args: list[str], cwd: str | None = None, timeout: float = 5.0) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info() -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[2])
    commit = _cmd(["git", "rev-parse", "HEAD"], cwd=root)
    if commit is None:
        return {}
    dirty = _cmd(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def nvidia_info() -> dict[str, Any]:
    q = "name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem"
    out = _cmd(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"])
    if not out:
        return {}
    fields = [f.strip() for f in out.splitlines()[0].split(",")]
    keys = ["gpu_name", "driver_version", "sm_clock", "mem_clock", "max_sm_clock",
            "max_mem_clock"]
    return {f"nvidia_{k}": v for k, v in zip(keys, fields, strict=False)}


def rocm_info() -> dict[str, Any]:
    out = _cmd(["rocm-smi", "--showdriverversion", "--showclocks"])
    return {"rocm_smi": out[:2000]} if out else {}


def torch_info() -> dict[str, Any]:
    mod = sys.modules.get("torch")
    if mod is None:  # importing torch only for provenance is too slow; note what is loaded
        return {}
    info = {"torch_version": mod.__version__}
    if getattr(mod.version, "cuda", None):
        info["torch_cuda"] = mod.version.cuda
    if getattr(mod.version, "hip", None):
        info["torch_hip"] = mod.version.hip
    return info


def collect(spec: DeviceSpec | None = None, backend: str | None = None,
            argv: list[str] | None = None) -> dict[str, Any]:
    """Everything readable about this run, as plain JSON-able values."""
    from hal import __version__

    argv = list(sys.argv if argv is None else argv)
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hal_version": __version__,
        "command": " ".join(shlex.quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        if argv else "",
    }
    info.update(git_info())
    if backend:
        info["backend"] = backend
    if spec is not None:
        info.update({"device": spec.name, "device_arch": spec.arch,
                     "device_spec": spec.source, "device_clock_hz": spec.clock_hz})
    info.update(nvidia_info())
    info.update(rocm_info())
    nvcc = _cmd(["nvcc", "--version"])
    if nvcc:
        info["nvcc"] = nvcc.splitlines()[-1].strip()
    info.update(torch_info())
    return info

"""The shim as a precompiled header: `shim_pch`, `pch_flags`.

Every host compile force-includes the shim (`hal_host_shim.h`, about 1,000 lines of
templates); parsing it is about half of the compile of a small kernel. clang can load it
as a precompiled header instead. The PCH is built once per (compiler, options, shim
content) under $HAL_CACHE_DIR/host-pch (a private temporary directory when the cache is
unusable), written through a temporary file and a rename so that concurrent workers never
see half a file. It is an optimisation only: with g++, or when the build fails, compiles
force-include the header as before, and the compiled result is the same code either way.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from hal.render.cache import usable_cache_root

SHIM_HEADER = "hal_host_shim.h"
# clang validates a PCH's inputs by mtime; a checkout that touches the shim without
# changing it would otherwise invalidate it. The key already covers the content.
_VALIDATE = "-fpch-validate-input-files-content"


def _is_clang(cxx: str) -> bool:
    return "clang" in Path(cxx).name


def _shim_include_at(flags: list[str]) -> int | None:
    """Index of `-include hal_host_shim.h` in `flags` (None: not there)."""
    return next((i for i in range(len(flags) - 1)
                 if flags[i] == "-include" and flags[i + 1] == SHIM_HEADER), None)


def _force_include_removed(flags: list[str]) -> list[str]:
    """`flags` without `-include hal_host_shim.h` and without `-shared` (a PCH is no link)."""
    at = _shim_include_at(flags)
    kept = flags if at is None else flags[:at] + flags[at + 2:]
    return [f for f in kept if f != "-shared"]


@cache
def _private_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hal-host-pch-"))


def shim_pch(cxx: str, flags: tuple[str, ...], version: str, digest: str) -> Path | None:
    """The PCH of the shim for these compile flags (built on first use), else None.

    None means: compile with the plain force-include (not clang, or the build failed)."""
    if not _is_clang(cxx):
        return None
    base = _force_include_removed(list(flags))
    key = hashlib.sha256("\0".join([version, digest, *base]).encode()).hexdigest()[:32]
    root = usable_cache_root()
    directory = (root / "host-pch") if root is not None else _private_dir()
    path = directory / f"{key}.pch"
    if path.is_file():
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
    except OSError:
        return None
    from .compiler import SHIM_DIR  # the header's folder (compiler imports this module)

    cmd = [cxx, *base, _VALIDATE, "-x", "c++-header", str(SHIM_DIR / SHIM_HEADER),
           "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            return None
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def pch_flags(flags: list[str], pch: Path | None) -> list[str]:
    """The compile flags that load `pch` in place of the force-include (unchanged: None)."""
    at = None if pch is None else _shim_include_at(flags)
    if at is None:
        return flags
    return [*flags[:at], "-include-pch", str(pch), _VALIDATE, *flags[at + 2:]]


__all__ = ["SHIM_HEADER", "pch_flags", "shim_pch"]

"""The on-disk cache: where it lives, whether it is usable, validated entries, atomic writes.

The cache is an optimisation, never a requirement:

* `usable_cache_root()` resolves $HAL_CACHE_DIR (else ~/.cache/hal) once per value and
  checks that hal can create and write it. An unusable directory (read-only, uncreatable,
  a file) gives ONE warning on stderr and hal runs without a cache; sources a compiler
  must read then go to a private temporary directory.
* `CompileCache` stores each entry in an envelope (magic, the entry's key, the sha256 of
  the payload), written through a temporary file and a rename, so a crash never leaves a
  half-written entry and a truncated, empty or foreign file is never returned. A corrupt
  entry is reported by name once and replaced on the next `put`. `get(key, validate=...)`
  also runs a caller's schema check on the payload (fusion.measured does, for its JSON).
* `save_source` names a source by the sha256 of its text and rewrites a file whose
  content no longer matches its name.
A write that fails later (disk full, permissions changed) is a warning, never an error.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

_MAGIC = b"HALCACHE1\n"
_WARNED: set[str] = set()
_ROOTS: dict[str, Path | None] = {}
_TEMP_SOURCES: list[Path] = []


def warn_once(key: str, message: str) -> None:
    """Print `warning: message` on stderr the first time `key` is seen in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """$HAL_CACHE_DIR, else ~/.cache/hal (not checked: see `usable_cache_root`)."""
    root = os.environ.get("HAL_CACHE_DIR") or os.path.join(Path.home(), ".cache", "hal")
    return Path(root)


def usable_cache_root() -> Path | None:
    """The cache directory when hal can create and write it, else None (warned once)."""
    root = cache_dir()
    key = str(root)
    if key not in _ROOTS:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            _ROOTS[key] = root
        except OSError as e:
            warn_once("root:" + key, f"cache directory {root} is unusable "
                      f"({e.strerror or type(e).__name__}); running without the cache "
                      "(set HAL_CACHE_DIR to a writable directory to keep compiles)")
            _ROOTS[key] = None
    return _ROOTS[key]


def _private_source_dir() -> Path:
    """A temporary directory of this process for sources when the cache is unusable."""
    if not _TEMP_SOURCES:
        _TEMP_SOURCES.append(Path(tempfile.mkdtemp(prefix="hal-sources-")))
    return _TEMP_SOURCES[0]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CompileCache:
    """Entries keyed by sha256 of (compiler, source, arch, options); see the module docstring.

    `root` None: the usable cache root (or no caching at all when there is none).
    """

    def __init__(self, root: Path | None = None, namespace: str = "kernels"):
        base = root if root is not None else usable_cache_root()
        self.root = base / namespace if base is not None else None
        self.hits = 0
        self.misses = 0
        self.corrupt: list[Path] = []

    @staticmethod
    def key(*parts: object) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(repr(p).encode())
            h.update(b"\0")
        return h.hexdigest()

    def path(self, key: str) -> Path | None:
        if self.root is None:
            return None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        return self.root / safe[:2] / safe

    def get(self, key: str, validate: Callable[[bytes], object] | None = None) -> bytes | None:
        """The payload stored under `key`, or None (a miss, or a corrupt entry: reported)."""
        path = self.path(key)
        if path is None:
            self.misses += 1
            return None
        try:
            raw = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        payload, why = _unwrap(raw, key)
        if why is None and validate is not None:
            try:
                validate(payload)
            except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
                why = f"bad content: {type(e).__name__}: {str(e)[:120]}"
        if why is not None:
            self.discard(key, why)
            self.misses += 1
            return None
        self.hits += 1
        return payload

    def discard(self, key: str, why: str) -> None:
        """Report a corrupt entry by name (once) and remove it; the next put replaces it."""
        path = self.path(key)
        if path is None:
            return
        self.corrupt.append(path)
        warn_once("entry:" + str(path), f"cache entry {path} is corrupt ({why}); replacing it")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if path is None:
            return
        digest = hashlib.sha256(data).hexdigest().encode()
        try:
            atomic_write(path, _MAGIC + key.encode() + b"\n" + digest + b"\n" + data)
        except OSError as e:
            warn_once("write:" + str(self.root), f"cannot write the cache under {self.root} "
                      f"({e.strerror or type(e).__name__}); continuing without storing")


def _unwrap(raw: bytes, key: str) -> tuple[bytes, str | None]:
    """(payload, None) for a valid envelope of `key`, else (b"", the reason)."""
    if not raw.startswith(_MAGIC):
        return b"", "empty file" if not raw else "not a hal cache entry"
    rest = raw[len(_MAGIC):]
    parts = rest.split(b"\n", 2)
    if len(parts) != 3:
        return b"", "truncated header"
    stored_key, digest, payload = parts
    if stored_key != key.encode():
        return b"", "entry of another key"
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return b"", "content hash mismatch (truncated or modified)"
    return payload, None


def save_source(source: str, stem: str, suffix: str, directory: Path | None = None) -> Path:
    """Save generated source where a user can read and recompile it; returns the path.

    The file name carries the sha256 of the text; a file of that name with other content
    (a garbage or truncated file) is reported once and rewritten.
    """
    explicit = directory is not None
    if directory is None:
        root = usable_cache_root()
        directory = root / "sources" if root is not None else _private_source_dir()
    full = hashlib.sha256(source.encode()).hexdigest()
    path = Path(directory) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{full[:12]}{suffix}"
    try:
        ok = hashlib.sha256(path.read_bytes()).hexdigest() == full
        if not ok:
            warn_once("source:" + str(path), f"cached source {path} does not match its hash; "
                      "rewriting it")
    except OSError:
        ok = False
    if not ok:
        try:
            atomic_write(path, source)
        except OSError as e:
            if explicit:
                from hal.errors import HalError

                raise HalError(f"cannot write {path}: {e.strerror or e}",
                               hint="choose a writable directory") from None
            if directory == _private_source_dir():
                raise
            warn_once("sources:" + str(directory), f"cannot write sources under {directory} "
                      f"({e.strerror or type(e).__name__}); using a temporary directory")
            return save_source(source, stem, suffix, _private_source_dir())
    return path

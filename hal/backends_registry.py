"""The backend registry: `register_backend`, `get_backend`, `list_backends`.

Backends come from two places: in-tree registrations below (lazy: a module
path, imported on first use) and the `hal.backends` entry-point group of any
installed distribution, read once at the first `get_backend`/`list_backends`.
A backend whose import or constructor fails is listed as unavailable with the
error as its reason; it never crashes the listing.

The extension point for a third-party backend is either

    register_backend("mybackend", MyBackend)          # any zero-argument factory

or, in the plugin's pyproject.toml,

    [project.entry-points."hal.backends"]
    mybackend = "my_pkg.backend:MyBackend"
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

from hal.backend import Availability, Backend
from hal.errors import DeviceError, UnsupportedError

ENTRY_POINT_GROUP = "hal.backends"

Factory = Callable[[], Backend]


@dataclass
class _Entry:
    name: str
    factory: Factory
    origin: str                    # "module:Class" or "entry point ..." for messages
    instance: Backend | None = None
    error: str | None = None       # why the factory failed, once it has


_REGISTRY: dict[str, _Entry] = {}
_discovered = False


def register_backend(name: str, factory: Factory, *, origin: str | None = None,
                     replace: bool = False) -> None:
    """Register `factory` (a Backend subclass or any zero-argument callable) as `name`."""
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend '{name}' is already registered "
                         f"(from {_REGISTRY[name].origin}); pass replace=True to override")
    _REGISTRY[name] = _Entry(name, factory, origin or getattr(factory, "__qualname__", repr(factory)))


def _lazy(target: str) -> Factory:
    """A factory that imports "module:Class" when first called."""
    def load() -> Backend:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)()

    return load


def register_lazy(name: str, target: str, *, replace: bool = False) -> None:
    """Register `name` as "module:Class", imported only when the backend is first used."""
    register_backend(name, _lazy(target), origin=target, replace=replace)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _discover() -> None:
    """Add the entry-point plugins once; in-tree registrations of the same name win."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    try:
        eps = _entry_points()
    except Exception as e:  # a broken distribution's metadata must not stop hal
        _REGISTRY.setdefault("<entry points>", _Entry(
            "<entry points>", _raiser(e), f"entry point group {ENTRY_POINT_GROUP}"))
        return
    for ep in eps:
        if ep.name in _REGISTRY:
            continue
        _REGISTRY[ep.name] = _Entry(ep.name, ep.load, f"entry point {ep.value}")


def _raiser(e: Exception) -> Factory:
    def fail() -> Backend:
        raise e

    return fail


def _instantiate(entry: _Entry) -> Backend | None:
    if entry.instance is None and entry.error is None:
        try:
            obj = entry.factory()
            # an entry point names a class; a registered factory returns an instance
            if isinstance(obj, type):
                obj = obj()
            if not isinstance(obj, Backend):
                raise TypeError(f"{entry.origin} gave {type(obj).__name__}, not a hal Backend")
            entry.instance = obj
        except Exception as e:  # noqa: BLE001 - a plugin may fail in any way
            entry.error = f"failed to load {entry.origin}: {type(e).__name__}: {e}"
    return entry.instance


def _availability(entry: _Entry) -> Availability:
    backend = _instantiate(entry)
    if backend is None:
        return Availability(False, entry.error or "failed to load")
    try:
        return backend.probe()
    except Exception as e:  # noqa: BLE001
        return Availability(False, f"probe failed: {type(e).__name__}: {e}")


def backend_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_backend(name: str, *, require_available: bool = False) -> Backend:
    """The backend registered as `name` (one shared instance).

    Raises UnsupportedError for an unknown name (with did-you-mean) and
    DeviceError when the backend failed to load, or, with
    `require_available`, when its probe says it cannot run here.
    """
    _discover()
    entry = _REGISTRY.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        raise UnsupportedError(f"unknown backend '{name}'",
                               hint=(f"did you mean '{close[0]}'? " if close else "")
                               + "known: " + ", ".join(sorted(_REGISTRY)))
    backend = _instantiate(entry)
    if backend is None:
        raise DeviceError(f"backend '{name}' is unavailable: {entry.error}",
                          hint="run `hal backends` to see what is available")
    if require_available:
        avail = _availability(entry)
        if not avail:
            raise DeviceError(f"backend '{name}' is unavailable: {avail.reason}",
                              hint="run `hal backends` to see what is available")
    return backend


def list_backends() -> list[tuple[str, Availability]]:
    """Every registered backend with its probe result, sorted by name. Never raises."""
    _discover()
    return [(name, _availability(_REGISTRY[name])) for name in sorted(_REGISTRY)]


def _reset_for_tests() -> None:
    """Forget instances, load errors and discovered plugins (tests only)."""
    global _discovered
    for name in [n for n, e in _REGISTRY.items() if e.origin.startswith("entry point")]:
        del _REGISTRY[name]
    for e in _REGISTRY.values():
        e.instance, e.error = None, None
    _discovered = False


# In-tree backends. Each is imported on first use, so `import hal` never pulls
# in a driver binding; a module that is missing or broken shows as unavailable.
register_lazy("reference", "hal.reference_backend:ReferenceBackend")
register_lazy("cpu_sim", "hal.backends.cpu_sim.backend:CpuSimBackend")
register_lazy("cuda", "hal.backends.cuda.backend:CudaBackend")
register_lazy("rocm", "hal.backends.rocm.backend:RocmBackend")
# the CUDA / HIP text compiled for the host CPU through the host shim (backends/host)
register_lazy("cuda-host", "hal.backends.host.backend:CudaHostBackend")
register_lazy("hip-host", "hal.backends.host.backend:HipHostBackend")

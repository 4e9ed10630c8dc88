"""The copy-bandwidth reference: what a plain device-to-device copy of the same bytes achieves.

A memory-bound kernel is judged against the bandwidth the device actually
delivers, not the datasheet: `measure_copy_bandwidth(nbytes)` times
`dst.copy_(src)` on two torch CUDA tensors of `nbytes` bytes each (ROCm torch
also calls its device "cuda") with torch.cuda.Event, `warmup` copies then
`repeat` timed ones (optionally touching 2 x L2 between them), and counts
read + write bytes: GB/s = 2 x nbytes / median time.

`copy_reference(total_bytes, ...)` is what `hal bench` attaches to a result: a
case whose compulsory traffic (reads + writes) is `total_bytes` is compared
with a copy of `total_bytes // 2` bytes, i.e. the same total traffic. It is

* measured (the above) when the backend runs on real hardware;
* modelled ("modelled (spec DRAM bandwidth)") on simulated backends: the
  spec's DRAM bandwidth, labelled as such and never passed off as measured;
* unavailable (available=False, reason "not available: no CUDA device ...")
  where nothing can be measured, e.g. a GPU backend on a machine where torch
  sees no GPU. Never an exception: `measure_copy_bandwidth` raises
  `CopyBandwidthUnavailable`, `copy_reference` turns that into the reason.

`CopyReferences` measures each distinct size once per run (a cache).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.errors import HalError

MEASURED_COPY = "measured (torch dst.copy_(src), torch.cuda.Event)"
MODELLED_COPY = "modelled (spec DRAM bandwidth)"
UNAVAILABLE_COPY = "unavailable"


class CopyBandwidthUnavailable(HalError):
    """No device to measure a copy on (no torch, or torch sees no CUDA/ROCm device)."""


@dataclass
class CopyReference:
    """The copy bandwidth a case is compared with; `GBps` counts read + write bytes."""

    available: bool
    method: str                     # MEASURED_COPY, MODELLED_COPY or UNAVAILABLE_COPY
    bytes_per_copy: int             # size of src (= size of dst)
    reason: str = ""                # why unavailable
    where: str = ""                 # "cuda:0 NVIDIA H100 80GB HBM3", or the spec name
    times_s: list[float] = field(default_factory=list)
    bytes_per_s: float = 0.0        # 2 x bytes_per_copy / median time (modelled: the spec's)

    @property
    def modelled(self) -> bool:
        return self.method == MODELLED_COPY

    @property
    def bytes_moved(self) -> int:
        return 2 * self.bytes_per_copy

    @property
    def GBps(self) -> float:  # noqa: N802 - the unit's spelling
        return self.bytes_per_s / 1e9

    @property
    def median_s(self) -> float | None:
        return float(np.median(self.times_s)) if self.times_s else None

    def label(self) -> str:
        """One line for tables and notes: figure, method, where."""
        if not self.available:
            return f"copy reference {self.reason}"
        return f"copy reference {self.GBps:.0f} GB/s, {self.method}, {self.where}"

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "method": self.method,
                "modelled": self.modelled, "reason": self.reason, "where": self.where,
                "bytes_per_copy": self.bytes_per_copy, "bytes_moved": self.bytes_moved,
                "median_s": self.median_s, "samples": len(self.times_s),
                "GBps": self.GBps if self.available else None}


def cuda_device_name() -> str | None:
    """torch.cuda.get_device_name() when torch sees a GPU, else None (never raises)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken driver is "no device" here
        return None


def _torch_cuda() -> Any:
    if importlib.util.find_spec("torch") is None:
        raise CopyBandwidthUnavailable("not available: torch is not installed, so no device "
                                       "copy can be measured",
                                       hint="pip install torch (a CUDA or ROCm build)")
    import torch

    try:
        ok = torch.cuda.is_available()
    except Exception as e:  # noqa: BLE001
        ok, why = False, f" ({type(e).__name__}: {e})"
    else:
        why = ""
    if not ok:
        raise CopyBandwidthUnavailable("not available: no CUDA device (torch.cuda."
                                       f"is_available() is False){why}")
    return torch


def measure_copy_bandwidth(nbytes: int, repeat: int = 50, warmup: int = 5,
                           flush_bytes: int = 0) -> CopyReference:
    """Time `dst.copy_(src)` of `nbytes` bytes on the current torch CUDA device.

    Median over `repeat` event-timed copies after `warmup`; GB/s counts read + write
    (2 x nbytes). Raises CopyBandwidthUnavailable without a device.
    """
    from hal.bench.baselines import _cuda_event_times

    if nbytes <= 0:
        raise HalError(f"copy size must be positive, got {nbytes} bytes")
    torch = _torch_cuda()
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    src.fill_(1)
    dst = torch.empty_like(src)
    times = _cuda_event_times(torch, lambda: dst.copy_(src), max(1, repeat), max(1, warmup),
                              flush_bytes)
    med = float(np.median(times))
    where = f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return CopyReference(True, MEASURED_COPY, nbytes, "", where, times,
                         2 * nbytes / med if med > 0 else 0.0)


def modelled_copy_reference(total_bytes: int, spec: Any) -> CopyReference:
    """The spec's DRAM bandwidth as the copy reference for a simulated backend (labelled)."""
    return CopyReference(True, MODELLED_COPY, max(1, total_bytes // 2), "",
                         f"{spec.name} spec", [], float(spec.dram_bandwidth))


def copy_reference(total_bytes: int, spec: Any, mode: str, *, repeat: int = 50,
                   warmup: int = 5, flush_bytes: int = 0) -> CopyReference:
    """The reference for a case moving `total_bytes` (reads + writes); never raises.

    mode: "measured" (a device copy of total_bytes // 2), "modelled" (the spec) or
    anything else (unavailable, with `mode` as the reason).
    """
    per_copy = max(1, total_bytes // 2)
    if mode == "modelled":
        return modelled_copy_reference(total_bytes, spec)
    if mode != "measured":
        return CopyReference(False, UNAVAILABLE_COPY, per_copy, mode)
    try:
        return measure_copy_bandwidth(per_copy, repeat, warmup, flush_bytes)
    except CopyBandwidthUnavailable as e:
        return CopyReference(False, UNAVAILABLE_COPY, per_copy, e.message)
    except Exception as e:  # noqa: BLE001 - out of memory, a driver error: report, go on
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return CopyReference(False, UNAVAILABLE_COPY, per_copy,
                             f"not available: copy failed: {type(e).__name__}: {msg[:200]}")


class CopyReferences:
    """Copy references for one run: each distinct total byte size measured once."""

    def __init__(self, repeat: int = 50, warmup: int = 5, flush_bytes: int = 0) -> None:
        self.repeat, self.warmup, self.flush_bytes = repeat, warmup, flush_bytes
        self._cache: dict[tuple[int, str, str], CopyReference] = {}

    def get(self, total_bytes: int, spec: Any, mode: str) -> CopyReference:
        key = (total_bytes, mode, getattr(spec, "name", ""))
        if key not in self._cache:
            self._cache[key] = copy_reference(total_bytes, spec, mode, repeat=self.repeat,
                                              warmup=self.warmup,
                                              flush_bytes=self.flush_bytes)
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)

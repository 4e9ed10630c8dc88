"""Framework tensors on the GPU, used zero-copy: `device_pointer` (a tensor on the driver's
device, by `__dlpack_device__`, passed by its pointer from `__cuda_array_interface__` or
`.data_ptr()` where torch refuses the interface: fp8, requires_grad; it must be contiguous
and of the value's dtype) and `torch_current_stream` (so hal's work is queued on torch's
current stream). Used by hal.gpu_runner and the vendor drivers.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.dtypes import DType
from hal.errors import DeviceError

if TYPE_CHECKING:
    from hal.gpu_driver import GpuDriver

# DLPack device types (dlpack.h): where a tensor's memory lives.
DLPACK_CUDA, DLPACK_ROCM = 2, 10


def device_pointer(x: Any, driver: GpuDriver, d: DType, numel: int) -> int | None:
    """The device address of `x` when it is a tensor on the driver's device (zero-copy),
    None for host data. A device tensor of the wrong dtype, size or layout raises."""
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None or isinstance(x, np.ndarray):
        return None
    kind, index = (int(v) for v in dev()[:2])
    if kind not in driver.dlpack_device_types:
        if kind in (DLPACK_CUDA, DLPACK_ROCM):
            raise DeviceError(f"{driver.name}: a tensor on DLPack device type {kind} is not on "
                              "this backend's device")
        return None
    if index != driver.index:
        raise DeviceError(f"{driver.name}: a tensor on device {index} given to the backend on "
                          f"device {driver.index}",
                          hint=f"move it with x.to('cuda:{driver.index}'), or run the backend "
                               f"on device {index}")
    cai = _array_interface(x)
    if cai is not None:
        ptr, typestr = int(cai["data"][0]), np.dtype(cai["typestr"])
        shape, strides = tuple(cai["shape"]), cai.get("strides")
        ok_dtype = typestr == d.np_dtype or (  # bf16 / fp8 may travel under another typestr
            d.is_float and d.itemsize < 4 and typestr.itemsize == d.itemsize)
    else:  # torch bf16 has no __cuda_array_interface__: data_ptr and element size
        ptr, shape = int(x.data_ptr()), tuple(x.shape)
        strides = None if x.is_contiguous() else "strided"
        ok_dtype = int(x.element_size()) == d.itemsize and _torch_name(x.dtype) in (d.name, None)
    if not ok_dtype or math.prod(shape) != numel or strides not in (None, _contig(shape, d)):
        raise DeviceError(f"{driver.name}: device tensor does not match {d}[{numel}] "
                          "contiguous", hint="pass x.contiguous().to(the graph's dtype)")
    return ptr


def _array_interface(x: Any) -> dict | None:
    """`x.__cuda_array_interface__`, or None where the tensor has none or torch refuses it:
    KeyError for fp8 (no typestr), RuntimeError for a tensor that requires grad."""
    try:
        return x.__cuda_array_interface__
    except (AttributeError, KeyError, RuntimeError, TypeError):
        return None


def _contig(shape: tuple[int, ...], d: DType) -> tuple[int, ...]:
    out, acc = [], d.itemsize
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def _torch_name(t: Any) -> str | None:
    return {"torch.float32": "f32", "torch.float16": "f16", "torch.bfloat16": "bf16",
            "torch.float64": "f64", "torch.int32": "i32", "torch.int64": "i64",
            "torch.bool": "bool", "torch.int8": "i8", "torch.uint8": "u8",
            "torch.int16": "i16", "torch.float8_e4m3fn": "f8e4m3fn",
            "torch.float8_e5m2": "f8e5m2"}.get(str(t))


def torch_current_stream(index: int, vendor: str = "cuda") -> int:
    """torch's current stream on GPU `index` as a raw handle, so hal's work is ordered
    with torch's. torch.cuda is CUDA on a CUDA build and HIP on a ROCm build
    (`torch.version.hip`); `vendor` ("cuda" or "hip") is the runtime the caller drives.
    0 (the default stream) when torch is not imported, has not initialised its GPU
    runtime (asking would), or was built for the other vendor."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        built_for = "hip" if getattr(torch.version, "hip", None) else "cuda"
        if built_for != vendor or not torch.cuda.is_initialized():
            return 0
        return int(torch.cuda.current_stream(index).cuda_stream)
    except Exception:  # noqa: BLE001 - a torch without a GPU runtime: the default stream
        return 0


__all__ = ["DLPACK_CUDA", "DLPACK_ROCM", "device_pointer", "torch_current_stream"]

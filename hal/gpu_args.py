"""Kernel launch arguments: the `void*[n]` array CUDA's cuLaunchKernel and HIP's
hipModuleLaunchKernel both take (`pack_args`), one C scalar per ScalarParam (`scalar_arg`;
16- and 8-bit floats as their bit patterns), device pointers as 64-bit ints, TMA tensor maps
as their encoded bytes. Used by hal.gpu_runner for every vendor.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.dtypes import DType, cast
from hal.errors import DeviceError, UnsupportedError
from hal.kernel.ir import BufferParam, Kernel, ScalarParam

# The C type each hal dtype travels as in a kernel argument (low floats as bits).
ARG_CTYPES: dict[str, type] = {
    "f64": ctypes.c_double, "f32": ctypes.c_float, "f16": ctypes.c_uint16,
    "bf16": ctypes.c_uint16, "f8e4m3fn": ctypes.c_uint8, "f8e5m2": ctypes.c_uint8,
    "i64": ctypes.c_int64, "i32": ctypes.c_int32, "i16": ctypes.c_int16, "i8": ctypes.c_int8,
    "u8": ctypes.c_uint8, "bool": ctypes.c_bool,
}
_BITS = {1: np.uint8, 2: np.uint16}


@dataclass
class PackedArgs:
    """Launch arguments in kernel parameter order, kept alive as long as the launch."""

    names: list[str]
    values: list[ctypes._SimpleCData]
    array: ctypes.Array

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)

    def describe(self) -> list[tuple[str, str, Any]]:
        """(param, C type, value) per argument: pointers as ints, scalars as C values,
        tensor maps as their size."""
        return [(n, type(v).__name__, getattr(v, "value", f"{ctypes.sizeof(v)} bytes"))
                for n, v in zip(self.names, self.values, strict=True)]


def scalar_arg(value: Any, d: DType) -> ctypes._SimpleCData:
    """`value` as the C scalar a kernel parameter of dtype `d` expects (low floats as bits)."""
    ct = ARG_CTYPES.get(d.name)
    if ct is None:
        raise UnsupportedError(f"no kernel-argument type for dtype {d}")
    if d.is_float and d.itemsize < 4:
        bits = np.asarray(cast(np.asarray(value, np.float64), d)).reshape(1)
        return ct(int(bits.view(_BITS[d.itemsize])[0]))
    if d.is_float:
        return ct(float(value))
    return ct(bool(value)) if d.name == "bool" else ct(int(value))


def pack_args(kernel: Kernel, pointers: Mapping[str, int],
              scalars: Mapping[str, Any] | None = None,
              tensor_maps: Mapping[str, bytes] | None = None) -> PackedArgs:
    """The argument array of one launch of `kernel`: buffers from `pointers` (param ->
    device address), scalars from `scalars` or `kernel.meta.scalars`, then the kernel's TMA
    tensor maps (name -> encoded bytes, GpuDriver.encode_tensor_map)."""
    scalars = {**kernel.meta.scalars, **(scalars or {})}
    names, values = [], []
    for p in kernel.params:
        if isinstance(p, BufferParam):
            if p.name not in pointers:
                raise DeviceError(f"kernel {kernel.name}: no device buffer for '{p.name}'")
            values.append(ctypes.c_uint64(int(pointers[p.name])))
        elif isinstance(p, ScalarParam):
            if p.name not in scalars:
                raise DeviceError(f"kernel {kernel.name}: no value for scalar '{p.name}'",
                                  hint="pass it in kernel.meta.scalars or scalars=")
            values.append(scalar_arg(scalars[p.name], p.dtype))
        names.append(p.name)
    for tm in kernel.tensor_maps:
        if tm.name not in (tensor_maps or {}):
            raise DeviceError(f"kernel {kernel.name}: no encoded tensor map '{tm.name}'",
                              hint="encode it with the driver (encode_tensor_map)")
        raw = tensor_maps[tm.name]
        values.append((ctypes.c_ubyte * len(raw)).from_buffer_copy(raw))
        names.append(tm.name)
    array = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
    return PackedArgs(names, values, array)


__all__ = ["ARG_CTYPES", "PackedArgs", "pack_args", "scalar_arg"]

"""TMA tensor maps on the host: `encode_tiled` calls the driver's cuTensorMapEncodeTiled
(cuda-python) for a hal.kernel.tma.TensorMap over a device buffer and returns the 128-byte
CUtensorMap a kernel takes as a `const __grid_constant__` parameter.

The map's rules are hal.kernel.tma's (checked when the lowering built it); here the device
address must be 16-byte aligned, as the driver requires. Element types: f16/bf16/f32/f64
and the integer types by their width; fp8 as UINT8 (TMA moves bytes). Out-of-bounds
elements are filled with zeros (CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE), L2 promotion 128 B.
"""

from __future__ import annotations

import ctypes
from typing import Any

from hal.errors import DeviceError
from hal.kernel.tma import TensorMap

from .driver import check

MAP_BYTES = 128
_DTYPES = {"bf16": "BFLOAT16", "f16": "FLOAT16", "f32": "FLOAT32", "f64": "FLOAT64",
           "i32": "INT32", "i64": "INT64", "u8": "UINT8", "i8": "UINT8", "i16": "UINT16",
           "f8e4m3fn": "UINT8", "f8e5m2": "UINT8", "bool": "UINT8"}
_SWIZZLES = {0: "NONE", 32: "32B", 64: "64B", 128: "128B"}


def encode_tiled(cu: Any, tm: TensorMap, address: int) -> bytes:
    """The CUtensorMap bytes of `tm` over the device buffer at `address`."""
    if address % 16:
        raise DeviceError(f"cuda: tensor map {tm.name}: buffer {tm.buffer} at {address:#x} is "
                          f"not 16-byte aligned", hint="TMA needs 16-byte aligned tensors")
    rank = len(tm.dims)
    dt = getattr(cu.CUtensorMapDataType, f"CU_TENSOR_MAP_DATA_TYPE_{_DTYPES[tm.dtype]}")
    sw = getattr(cu.CUtensorMapSwizzle, f"CU_TENSOR_MAP_SWIZZLE_{_SWIZZLES[tm.swizzle]}")
    m = check(cu, cu.cuTensorMapEncodeTiled(
        dt, rank, address, [cu.cuuint64_t(d) for d in tm.dims],
        [cu.cuuint64_t(s) for s in tm.strides], [cu.cuuint32_t(b) for b in tm.box],
        [cu.cuuint32_t(1)] * rank, cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
        cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
        f"cuTensorMapEncodeTiled({tm.name}: dims {tm.dims}, box {tm.box}, "
        f"swizzle {tm.swizzle}B)")
    return ctypes.string_at(m.getPtr(), MAP_BYTES)


__all__ = ["MAP_BYTES", "encode_tiled"]

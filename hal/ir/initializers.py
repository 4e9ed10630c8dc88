"""Initializer kinds: how a constant's data is made, one registered function per kind.

    inline(values=[...])                     the values, row-major; count must match
    fill(value=0.5)                          every element equal
    random(seed=0, dist="normal", scale=1.0) normal (scale = std) or uniform [-scale, scale];
                                             ints: uniform in [low, high), default [0, 8);
                                             bool: random bits
    iota(start=0, step=1)                    start + step * flat index
    npz(path="w.npz", key="w")               an array from a .npz (or .npy) file, relative
                                             paths resolve against the graph's base_dir

`materialize` returns float64, int64 or bool arrays (by the constant's dtype
kind); the caller rounds them to the declared dtype with `hal.dtypes.cast`.
Add a kind with `register_initializer(InitializerKind(...))`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.errors import GraphError
from hal.ir.graph import Initializer
from hal.ir.types import TensorType

MakeFn = Callable[[Mapping[str, Any], TensorType, "str | None"], np.ndarray]
# (params, static type, chunk elements) -> the flat float64 data in consecutive chunks
# (each may reuse the previous one's memory), or None where this kind cannot for `type`
ChunksFn = Callable[[Mapping[str, Any], TensorType, int], "Iterator[np.ndarray] | None"]


@dataclass(frozen=True)
class InitializerKind:
    name: str
    make: MakeFn                      # (params, static type, base_dir) -> array
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    doc: str = ""
    chunks: ChunksFn | None = None    # the same data chunk by chunk (materialize_as)


INITIALIZERS: dict[str, InitializerKind] = {}


def register_initializer(kind: InitializerKind) -> InitializerKind:
    """Add an initializer kind. The extension point for new ways of making constants."""
    if kind.name in INITIALIZERS:
        raise ValueError(f"initializer kind '{kind.name}' is registered twice")
    INITIALIZERS[kind.name] = kind
    return kind


class _InitError(Exception):
    """Raised inside a make function; `materialize` adds the constant's name."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def _where(init: Initializer, name: str | None) -> str:
    return (f"constant %{name}: " if name else "constant: ") + f"{init.kind} initializer"


def check_initializer(init: Initializer, name: str | None = None) -> InitializerKind:
    """Check the kind and parameter names of `init`; raise GraphError naming the problem."""
    kind = INITIALIZERS.get(init.kind)
    if kind is None:
        close = difflib.get_close_matches(init.kind, INITIALIZERS, n=1)
        raise GraphError(f"{_where(init, name)}: unknown initializer kind '{init.kind}'",
                         hint=f"did you mean {close[0]}?" if close else
                         "use one of " + ", ".join(INITIALIZERS))
    keys = [k for k, _ in init.params]
    allowed = kind.required + kind.optional
    for k in keys:
        if k not in allowed:
            raise GraphError(f"{_where(init, name)}: unknown parameter '{k}'",
                             hint="valid: " + ", ".join(allowed))
    for k in kind.required:
        if k not in keys:
            raise GraphError(f"{_where(init, name)}: missing parameter '{k}'",
                             hint=kind.doc or None)
    return kind


def materialize(init: Initializer, type: TensorType, base_dir: str | None = None, *,
                name: str | None = None) -> np.ndarray:
    """The data of a constant of `type` made by `init` (float64, int64 or bool)."""
    kind = check_initializer(init, name)
    if not type.is_static:
        raise GraphError(f"{_where(init, name)}: shape {list(type.shape)} is symbolic",
                         hint="bind the symbolic dims before materialising constants")
    try:
        arr = kind.make(dict(init.params), type, base_dir)
    except _InitError as e:
        raise GraphError(f"{_where(init, name)}: {e.message}", hint=e.hint) from None
    return _widen(np.asarray(arr).reshape(type.shape), type)


CHUNK_ELEMENTS = 1 << 20


def materialize_as(init: Initializer, type: TensorType, base_dir: str | None = None, *,
                   name: str | None = None, chunk: int = CHUNK_ELEMENTS) -> np.ndarray:
    """The constant in its declared dtype: `cast(materialize(...), type.dtype)`, the same
    bits. A kind that makes its data chunk by chunk (random floats) is cast chunk by
    chunk into the result, so the float64 data never exists whole (a model's weight
    would be 4x its bf16 size) and one chunk's memory is reused throughout."""
    from hal.dtypes import cast

    kind = check_initializer(init, name)
    if kind.chunks is None or not type.is_static or type.numel <= chunk:
        return cast(materialize(init, type, base_dir, name=name), type.dtype)
    try:
        parts = kind.chunks(dict(init.params), type, chunk)
        if parts is None:
            return cast(materialize(init, type, base_dir, name=name), type.dtype)
        out = np.empty(type.numel, type.dtype.np_dtype)
        pos = 0
        for part in parts:
            out[pos:pos + part.size] = cast(part, type.dtype)
            pos += part.size
    except _InitError as e:
        raise GraphError(f"{_where(init, name)}: {e.message}", hint=e.hint) from None
    return out.reshape(type.shape)


def _widen(a: np.ndarray, type: TensorType) -> np.ndarray:
    d = type.dtype
    if d.is_bool:
        return a.astype(bool) if a.dtype == np.bool_ else (a != 0)
    if d.is_int and a.dtype.kind in "biu":
        return a.astype(np.int64)
    # floats, and non-integral data for an int constant (the caller's cast truncates);
    # a float64 array (random, fill) is returned as it is, not copied
    return a.astype(np.float64, copy=False)


def _number(params: Mapping[str, Any], key: str, default: Any) -> Any:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _InitError(f"parameter '{key}' must be a number, got {v!r}")
    return v


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _InitError(f"parameter '{key}' must be an integer, got {v!r}")
    return v


def _inline(params, type: TensorType, base_dir) -> np.ndarray:
    values = params["values"]
    if not isinstance(values, (tuple, list)):
        values = (values,)
    for v in values:
        if not isinstance(v, (int, float, bool)):
            raise _InitError(f"values must be numbers, got {v!r}")
    if len(values) != type.numel:
        raise _InitError(f"has {len(values)} values but {type} holds {type.numel}",
                         hint="give exactly one value per element, row-major")
    _representable(values, type)
    return _array(values)


def _array(values) -> np.ndarray:
    """int64 when every value is an integer that fits, else float64."""
    if values and not any(isinstance(v, float) for v in values):
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except OverflowError:
            pass
    return np.array([float(v) for v in values], dtype=np.float64)


def _representable(values, type: TensorType) -> None:
    """A literal must be a value of the constant's dtype: an integer constant takes
    whole numbers within its range (1000 in an i8 would silently wrap or saturate)."""
    d = type.dtype
    if not d.is_int:
        return
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise _InitError(f"value {v!r} is not a whole number, and {d.name} holds integers",
                             hint="give an integer, or declare a float dtype")
        if not d.min <= int(v) <= d.max:
            raise _InitError(f"value {v!r} is out of range for {d.name} "
                             f"[{int(d.min)}, {int(d.max)}]",
                             hint="use a value in range or a wider integer dtype")


def _fill(params, type: TensorType, base_dir) -> np.ndarray:
    v = params["value"]
    if not isinstance(v, bool):
        v = _number(params, "value", 0)
    _representable([v], type)
    return np.full(type.shape, _array([v])[0])


def _rng(params) -> np.random.Generator:
    """The seeded generator of a random initializer (the seed checked)."""
    seed = _int(params, "seed", 0)
    if seed < 0:
        raise _InitError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed)


def _random_float(params) -> tuple[np.random.Generator, str, float]:
    """The generator, distribution and scale of a float random initializer (checked)."""
    rng = _rng(params)
    scale = float(_number(params, "scale", 1.0))
    if not math.isfinite(scale):
        raise _InitError(f"scale must be finite, got {scale}")
    dist = params.get("dist", "normal")
    if dist not in ("normal", "uniform"):
        raise _InitError(f"dist must be 'normal' or 'uniform', got {dist!r}")
    return rng, dist, scale


def _random(params, type: TensorType, base_dir) -> np.ndarray:
    d = type.dtype
    if d.is_bool:
        return _rng(params).integers(0, 2, size=type.shape).astype(bool)
    if d.is_int:
        rng = _rng(params)
        low, high = _int(params, "low", 0), _int(params, "high", 8)
        if low >= high:
            raise _InitError(f"needs low < high, got low={low}, high={high}")
        return rng.integers(low, high, size=type.shape, dtype=np.int64)
    rng, dist, scale = _random_float(params)
    if dist == "normal":
        out = rng.standard_normal(size=type.shape)
        out *= scale   # in place: the same values as `* scale`, one array less
        return out
    return rng.uniform(-scale, scale, size=type.shape)


def _random_chunks(params, type: TensorType, chunk: int) -> Iterator[np.ndarray] | None:
    """_random's float data in consecutive chunks: a Generator draws the same stream
    whether asked for n values at once or in pieces (tests/test_initializers_chunked.py)."""
    if not type.dtype.is_float:
        return None
    rng, dist, scale = _random_float(params)

    def gen() -> Iterator[np.ndarray]:
        buf = np.empty(chunk, np.float64)
        for start in range(0, type.numel, chunk):
            part = buf[:min(chunk, type.numel - start)]
            if dist == "normal":
                rng.standard_normal(out=part)
                part *= scale
                yield part
            else:
                yield rng.uniform(-scale, scale, size=part.size)

    return gen()


def _iota(params, type: TensorType, base_dir) -> np.ndarray:
    start, step = _number(params, "start", 0), _number(params, "step", 1)
    idx = np.arange(type.numel, dtype=np.int64)
    if isinstance(start, int) and isinstance(step, int) and \
            max(abs(start), abs(start + step * type.numel)) < 2**62:
        return start + step * idx
    return float(start) + float(step) * idx.astype(np.float64)


def _npz(params, type: TensorType, base_dir) -> np.ndarray:
    path = params["path"]
    if not isinstance(path, str):
        raise _InitError(f"path must be a string, got {path!r}")
    full = path if os.path.isabs(path) or base_dir is None else os.path.join(base_dir, path)
    key = params.get("key")
    try:
        data = np.load(full, allow_pickle=False)
    except FileNotFoundError:
        raise _InitError(f"file {full} not found",
                         hint="paths resolve against the .hal file's folder") from None
    except (OSError, ValueError) as e:
        raise _InitError(f"cannot read {full}: {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.files)
            if key is None:
                if len(keys) != 1:
                    raise _InitError(f"{full} holds {len(keys)} arrays; name one with key=",
                                     hint="keys: " + ", ".join(keys[:20]))
                key = keys[0]
            if key not in keys:
                raise _InitError(f"{full} has no array '{key}'",
                                 hint="keys: " + ", ".join(keys[:20]))
            arr = data[key]
    else:
        arr = data
    if tuple(arr.shape) != tuple(type.shape):
        raise _InitError(f"array '{key}' in {full} has shape {list(arr.shape)}, "
                         f"the constant is {type}")
    if arr.dtype.kind not in "biuf" and arr.dtype.name not in ("bfloat16",) \
            and not arr.dtype.name.startswith("float8"):
        raise _InitError(f"array '{key}' in {full} has dtype {arr.dtype}, not numeric")
    if arr.dtype.kind not in "biuf":
        arr = arr.astype(np.float32)  # bf16 / fp8 from ml_dtypes embed exactly
    return arr


register_initializer(InitializerKind("inline", _inline, ("values",), (),
                                     "inline(values=[...]): one number per element"))
register_initializer(InitializerKind("fill", _fill, ("value",), (), "fill(value=0.0)"))
register_initializer(InitializerKind("random", _random, (), ("dist", "high", "low", "scale",
                                                             "seed"),
                                     "random(seed=0, dist=\"normal\", scale=1.0)",
                                     chunks=_random_chunks))
register_initializer(InitializerKind("iota", _iota, (), ("start", "step"),
                                     "iota(start=0, step=1)"))
register_initializer(InitializerKind("npz", _npz, ("path",), ("key",),
                                     "npz(path=\"weights.npz\", key=\"w\")"))

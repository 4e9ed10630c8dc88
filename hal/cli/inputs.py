"""Arrays in and out of `hal run`: `load_inputs`, `check_save_path`, `save_outputs`.

Inputs from an .npz are checked against the graph's declared types before anything
runs, naming the input: the rank and every static dimension (symbolic ones bind
consistently), a numeric dtype, and no lossy cast: an integer input given 3.7 or
2^32 + 5 (which would become 3 or 5) is an error, or a warning with
`--allow-lossy-inputs`. Narrowing one float to another (f64 data for an f32 input) is
rounding, not loss, and is allowed. A garbage file, a single .npy and an unwritable
--save path are one-line errors.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hal.dtypes import DTYPES, DType, cast
from hal.errors import HalError


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _read_npz(path: str, names: list[str]) -> dict[str, np.ndarray]:
    hint = ("pass an .npz of named arrays: numpy.savez(path, " +
            ", ".join(f"{n}=..." for n in names) + ") or `hal run --save`")
    if not os.path.isfile(path):
        raise HalError(f"{path}: no such file", hint=hint)
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # not an .npz/.npy, truncated, pickled objects, ...
        raise HalError(f"{path}: cannot read inputs ({_first_line(e)})", hint=hint) from None
    if isinstance(loaded, np.ndarray):
        raise HalError(f"{path}: a single .npy array, not an .npz of named inputs", hint=hint)
    try:
        with loaded as z:
            return {k: np.asarray(z[k]) for k in z.files if not k.startswith("__")}
    except Exception as e:  # a corrupt member
        raise HalError(f"{path}: cannot read inputs ({_first_line(e)})", hint=hint) from None


def _lossy(a: np.ndarray, c: np.ndarray, d: DType) -> str | None:
    """How casting `a` to integer/bool dtype `d` (giving `c`) changes a value, or None."""
    if not (d.is_int or d.is_bool) or a.size == 0:
        return None
    if a.dtype.kind in "biu":
        back = c.astype(np.int64) if not d.is_bool else c.astype(np.int64)
        bad = np.nonzero(back.ravel() != a.astype(np.int64).ravel()
                         if a.dtype != np.uint64 else
                         back.ravel().astype(np.uint64) != a.ravel())[0]
    else:
        wide = a.astype(np.float64).ravel()
        with np.errstate(invalid="ignore"):
            bad = np.nonzero(~np.isfinite(wide) | (c.astype(np.float64).ravel() != wide))[0]
    if not bad.size:
        return None
    i = int(bad[0])
    return f"{bad.size} value(s) change, e.g. {a.ravel()[i].item()!r} -> {c.ravel()[i].item()!r}"


def _dtype_name(a: np.ndarray) -> str:
    return next((d.name for d in DTYPES.values() if d.np_dtype == a.dtype), str(a.dtype))


def load_inputs(path: str, graph, allow_lossy: bool = False) -> dict[str, np.ndarray]:
    """The graph's inputs from an .npz, checked and cast to their declared dtypes."""
    wanted = {v.name: v for v in graph.inputs}
    arrays = _read_npz(path, list(wanted))
    extra = sorted(set(arrays) - set(wanted))
    missing = sorted(set(wanted) - set(arrays))
    if extra or missing:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else [])
        raise HalError(f"{path}: inputs do not match graph {graph.name}: " + "; ".join(parts),
                       hint="the graph's inputs are " + ", ".join(wanted))
    dims: dict[str, tuple[int, str]] = {}
    out = {}
    for name, v in wanted.items():
        a = arrays[name]
        given = f"{_dtype_name(a)}{list(a.shape)}"
        where = f"{path}: input %{name} is {given}, graph {graph.name} declares {v.type}"
        if a.dtype.kind not in "biuf" and a.dtype.kind != "V":
            raise HalError(where, hint="give a numeric array")
        if a.ndim != len(v.shape):
            raise HalError(where + f" (rank {a.ndim}, not {len(v.shape)})")
        for axis, (got, want) in enumerate(zip(a.shape, v.shape, strict=True)):
            if isinstance(want, str):
                prev = dims.setdefault(want, (got, name))
                if prev[0] != got:
                    raise HalError(where + f" (dimension {want} is {prev[0]} in %{prev[1]})")
            elif got != want:
                raise HalError(where + f" (axis {axis} is {got}, not {want})")
        c = cast(a, v.dtype)
        why = _lossy(a, c, v.dtype)
        if why:
            msg = f"{path}: input %{name}: casting {_dtype_name(a)} to {v.dtype.name} is lossy: {why}"
            if not allow_lossy:
                raise HalError(msg, hint=f"give %{name} as {v.dtype.name} values, or pass "
                                         "--allow-lossy-inputs to cast anyway")
            print(f"warning: {msg}", file=sys.stderr)
        out[name] = c
    return out


def check_save_path(path: str) -> None:
    """Before running: --save must name a file hal can write."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise HalError(f"--save {path}: is a directory", hint="give a file name, e.g. out.npz")
    if not parent.is_dir():
        raise HalError(f"--save {path}: directory {parent} does not exist",
                       hint="create it first or choose another path")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise HalError(f"--save {path}: not writable", hint="choose a writable path")


def save_outputs(path: str, outputs: Mapping[str, np.ndarray]) -> None:
    """np.savez; dtypes NumPy cannot store (bf16, fp8) are widened to f32, names kept aside."""
    arrays, dtypes = {}, {}
    for name, a in outputs.items():
        a = np.asarray(a)
        dtypes[name] = _dtype_name(a)
        arrays[name] = a.astype(np.float32) if a.dtype.kind == "V" or a.dtype.name in (
            "bfloat16", "float8_e4m3fn", "float8_e5m2") else a
    arrays["__hal_dtypes__"] = np.array(json.dumps(dtypes))
    try:
        np.savez(path, **arrays)
    except OSError as e:
        raise HalError(f"--save {path}: cannot write ({e.strerror or _first_line(e)})",
                       hint="choose a writable path") from None

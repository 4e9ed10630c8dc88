"""Load and validate device specs from YAML: `load_spec`, `list_specs`, `shipped_spec_names`.

A spec file is a flat YAML mapping whose keys are DeviceSpec fields, with
quantities in human units (see hal.devices.units):

    name: h100-sxm
    shared_mem_per_block: 227 KiB
    dram_bandwidth: 3.35 TB/s
    peak_flops: {bf16: 989 TFLOP/s, fp8: ...}
    launch_overhead: 4 us

`launch_overhead` and `clock` are the YAML spellings of `launch_overhead_s`
and `clock_hz` (the field names are accepted too). `compute_units: auto`
means the number of CPUs of this machine (used by host-cpu). Every error
names the file, the line and the field, and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hal.devices.spec import TF32_SUFFIX, DeviceSpec, MatrixInstruction, allow_tf32
from hal.devices.units import UnitError, parse_quantity
from hal.devices.yaml_safe import load_yaml
from hal.dtypes import DTYPES
from hal.errors import SpecError

SPEC_DIR = Path(__file__).with_name("specs")
KINDS = ("gpu", "cpu", "scratchpad")

# YAML key -> DeviceSpec field, where the YAML spelling carries the unit in the value.
ALIASES = {"launch_overhead": "launch_overhead_s", "clock": "clock_hz"}

# How each field is read: a parser from the raw YAML value, and the lowest legal value.
_Parser = Callable[[Any], Any]


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise UnitError(f"expected a non-empty string, got {v!r}", hint="quote the value")
    return v.strip()


def _units(v: Any) -> int:
    """compute_units: a count, or "auto" for this machine's CPUs (the host-cpu spec)."""
    return (os.cpu_count() or 1) if v == "auto" else _count(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UnitError(f"expected a whole number, got {v!r}", hint="write e.g. 132")
    return v


def _quantity(dimension: str, integral: bool = False) -> _Parser:
    def parse(v: Any) -> float | int:
        x = parse_quantity(v, dimension)
        if not math.isfinite(x):  # 1e308 MiB overflows to inf (found by the fuzz campaign)
            raise UnitError(f"{v!r} is not a finite quantity", hint="give a realistic value")
        if integral:
            if abs(x - round(x)) > 1e-6 * max(1.0, abs(x)):
                raise UnitError(f"{v!r} is not a whole number of bytes")
            return int(round(x))
        return x

    return parse


def _rate_table(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise UnitError(f"expected a mapping dtype -> rate, got {v!r}",
                        hint="write e.g. {bf16: 989 TFLOP/s, f32: 67 TFLOP/s}")
    out: dict[str, float] = {}
    for k, rate in v.items():
        name = _dtype_name(k)
        per_unit = isinstance(rate, str) and rate.rstrip().endswith(_PER_UNIT)
        if per_unit:
            rate = rate.rstrip()[: -len(_PER_UNIT)]
        x = parse_quantity(rate, "flops")
        if x < 0:
            raise UnitError(f"rate for {name} is negative")
        out[name] = _PerUnit(x) if per_unit else x
    return out


_PER_UNIT = "per unit"


class _PerUnit(float):
    """A rate written "<q> per unit": multiplied by compute_units once that is known."""


def _dtype_name(k: Any) -> str:
    k = str(k)
    if k not in DTYPES:
        close = difflib.get_close_matches(k, DTYPES, n=1)
        raise UnitError(f"'{k}' is not a hal dtype",
                        hint=(f"did you mean '{close[0]}'? " if close else "")
                        + "valid: " + ", ".join(DTYPES))
    return k


def _dtypes(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not v:
        raise UnitError(f"expected a non-empty list of dtype names, got {v!r}",
                        hint="write e.g. [f32, f16, bf16]")
    return tuple(_dtype_name(k) for k in v)


def _strings(v: Any) -> frozenset[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise UnitError(f"expected a list of strings, got {v!r}",
                        hint="write e.g. [tensor_cores, fp8]")
    return frozenset(v)


def _matrix_instructions(v: Any) -> tuple[MatrixInstruction, ...]:
    """`matrix_instructions:` a list of {name, shape: [m, n, k], a, b, acc, layout,
    rate (optional), native (optional), opt_in (optional: a capability the user grants)};
    the layout must be one of hal.kernel.mma's (warp instructions) or hal.kernel.wgmma's
    (warpgroup instructions, n the largest N)."""
    from hal.kernel.mma import LAYOUTS
    from hal.kernel.wgmma import WGMMA_LAYOUTS, M

    if not isinstance(v, list):
        raise UnitError(f"expected a list of instructions, got {v!r}",
                        hint="write e.g. [{name: ..., shape: [16, 8, 16], a: bf16, b: bf16, "
                             "acc: f32, layout: nv_m16n8k16_b16}]")
    out = []
    for item in v:
        if not isinstance(item, dict) or not {"name", "shape", "a", "b", "acc", "layout"} \
                <= set(item):
            raise UnitError(f"matrix instruction {item!r} needs name, shape, a, b, acc, layout")
        shape = item["shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(
                isinstance(x, int) and x > 0 for x in shape)):
            raise UnitError(f"{item['name']}: shape must be [m, n, k], got {shape!r}")
        name = str(item["layout"])
        lay = LAYOUTS.get(name)
        wg = WGMMA_LAYOUTS.get(name)
        if lay is None and wg is None:
            raise UnitError(f"{item['name']}: unknown layout {item['layout']!r}",
                            hint="known: " + ", ".join(sorted([*LAYOUTS, *WGMMA_LAYOUTS])))
        want = (lay.m, lay.n, lay.k) if lay is not None else (M, wg.max_n, wg.k)
        if want != tuple(shape):
            raise UnitError(f"{item['name']}: shape {shape} differs from layout {name} "
                            f"({'x'.join(str(x) for x in want)})")
        rate = parse_quantity(item["rate"], "flops") if "rate" in item else 0.0
        out.append(MatrixInstruction(str(item["name"]), *shape, _dtype_name(item["a"]),
                                     _dtype_name(item["b"]), _dtype_name(item["acc"]),
                                     name, rate, bool(item.get("native", True)),
                                     "warp" if lay is not None else "warpgroup",
                                     str(item.get("opt_in", ""))))
    return tuple(out)


def _choice(options: tuple[str, ...]) -> _Parser:
    def parse(v: Any) -> str:
        if v not in options:
            raise UnitError(f"{v!r} is not one of {', '.join(options)}")
        return v

    return parse


def _bits(v: Any) -> int:
    if v not in (32, 64):
        raise UnitError(f"expected 32 or 64, got {v!r}")
    return v


def _grid(v: Any) -> tuple[int, int, int]:
    if (not isinstance(v, (list, tuple)) or len(v) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
        raise UnitError(f"expected three positive block counts [x, y, z], got {v!r}",
                        hint="CUDA allows [2147483647, 65535, 65535]")
    return (int(v[0]), int(v[1]), int(v[2]))


# field -> (parser, minimum or None for non-numbers). Minimum 1 means "positive".
SCHEMA: dict[str, tuple[_Parser, float | None]] = {
    "name": (_text, None),
    "vendor": (_text, None),
    "arch": (_text, None),
    "kind": (_choice(KINDS), None),
    "compute_units": (_units, 1),
    "warp_size": (_count, 1),
    "max_threads_per_block": (_count, 1),
    "max_threads_per_unit": (_count, 1),
    "max_blocks_per_unit": (_count, 1),
    "registers_per_unit": (_count, 1),
    "max_registers_per_thread": (_count, 1),
    "shared_mem_per_block": (_quantity("bytes", True), 1),
    "shared_mem_per_unit": (_quantity("bytes", True), 1),
    "l1_bytes_per_unit": (_quantity("bytes", True), 0),
    "l2_bytes": (_quantity("bytes", True), 0),
    "dram_bytes": (_quantity("bytes", True), 1),
    "dram_bandwidth": (_quantity("bandwidth"), 1e-30),
    "l2_bandwidth": (_quantity("bandwidth"), 0),
    "peak_flops": (_rate_table, None),
    "vector_flops": (_rate_table, None),
    "launch_overhead_s": (_quantity("time"), 0),
    "supported_dtypes": (_dtypes, None),
    "index_bits": (_bits, None),
    "max_grid": (_grid, None),
    "clock_hz": (_quantity("frequency"), 1e-30),
    "description": (lambda v: "" if v is None else str(v), None),
    "capabilities": (_strings, None),
    "matrix_instructions": (_matrix_instructions, None),
}
_OPTIONAL = {f.name for f in dataclasses.fields(DeviceSpec)
             if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
REQUIRED = tuple(f for f in SCHEMA if f not in _OPTIONAL)
_YAML_KEYS = [k for k in SCHEMA if k not in ALIASES.values()] + list(ALIASES)


def _unknown_field_error(key: str, where: str) -> SpecError:
    close = difflib.get_close_matches(key, _YAML_KEYS + list(ALIASES.values()), n=1)
    hint = f"did you mean '{close[0]}'?" if close else "valid fields: " + ", ".join(_YAML_KEYS)
    return SpecError("unknown field", file=where, field=key, hint=hint)


def spec_from_dict(data: Any, *, file: str = "<dict>",
                   lines: dict[str, int] | None = None) -> DeviceSpec:
    """Validate a mapping as read from YAML and build the DeviceSpec.

    `lines` maps top-level keys to their line numbers, so errors say file:line.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping of fields, got {type(data).__name__}", file=file,
                        hint="a spec is 'field: value' lines; see hal/devices/specs/h100-sxm.yaml")

    def where(key: str | None) -> str:
        return f"{file}:{lines[key]}" if key in lines else file

    values: dict[str, Any] = {}
    keys_for: dict[str, str] = {}
    for key, raw in data.items():
        key = str(key)
        field = ALIASES.get(key, key)
        if field not in SCHEMA:
            raise _unknown_field_error(key, where(key))
        if field in values:
            raise SpecError(f"given twice (as '{keys_for[field]}' and '{key}')",
                            file=where(key), field=field, hint="keep one of them")
        parser, minimum = SCHEMA[field]
        try:
            value = parser(raw)
        except UnitError as e:
            raise SpecError(e.message, file=where(key), field=key, hint=e.hint) from None
        if not _finite(value):
            raise SpecError(f"non-finite value {raw!r}", file=where(key), field=key,
                            hint="give a finite value with its unit")
        if minimum is not None and value < minimum:
            want = "positive" if minimum > 0 else "zero or more"
            raise SpecError(f"must be {want}, got {raw!r}", file=where(key), field=key)
        values[field] = value
        keys_for[field] = key
    missing = [f for f in REQUIRED if f not in values]
    if missing:
        yaml_name = {v: k for k, v in ALIASES.items()}
        names = [yaml_name.get(f, f) for f in missing]
        raise SpecError("missing required field" + ("s " if len(names) > 1 else " ")
                        + ", ".join(names), file=file, field=names[0],
                        hint=f"add '{names[0]}: ...' (see hal/devices/specs/h100-sxm.yaml)")
    for table in ("peak_flops", "vector_flops"):
        for k, x in values.get(table, {}).items():
            if isinstance(x, _PerUnit):
                values[table][k] = float(x) * values["compute_units"]
    values["source"] = file
    spec = DeviceSpec(**values)
    _check_consistency(spec, lambda k: where(keys_for.get(k, k)))
    return spec


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


MIN_REGISTERS_PER_THREAD = 16  # the smallest kernel hal lowers needs about this many


def _check_consistency(s: DeviceSpec, where: Callable[[str], str]) -> None:
    """Cross-field rules that hardware would enforce."""
    def fail(field: str, message: str, hint: str) -> None:
        raise SpecError(message, file=where(field), field=field, hint=hint)

    if s.warp_size & (s.warp_size - 1):
        fail("warp_size", f"{s.warp_size} is not a power of two",
             "warps, wavefronts and SIMD widths are 8, 16, 32 or 64 lanes")
    if s.shared_mem_per_block > s.shared_mem_per_unit:
        fail("shared_mem_per_block",
             f"{s.shared_mem_per_block} bytes per block exceeds shared_mem_per_unit "
             f"({s.shared_mem_per_unit} bytes)",
             "a block runs on one unit: lower shared_mem_per_block or raise shared_mem_per_unit")
    if s.max_threads_per_block > s.max_threads_per_unit:
        fail("max_threads_per_block",
             f"{s.max_threads_per_block} exceeds max_threads_per_unit ({s.max_threads_per_unit})",
             "a block runs on one unit")
    if s.registers_per_unit < s.max_threads_per_block * MIN_REGISTERS_PER_THREAD:
        fail("registers_per_unit",
             f"{s.registers_per_unit} registers cannot hold one block of "
             f"{s.max_threads_per_block} threads at {MIN_REGISTERS_PER_THREAD} registers each",
             "registers_per_unit counts 32-bit registers per SM/CU (65536 on an H100)")
    if s.max_registers_per_thread * s.warp_size > s.registers_per_unit:
        fail("max_registers_per_thread",
             f"one warp of {s.warp_size} threads at {s.max_registers_per_thread} registers "
             f"needs more than registers_per_unit ({s.registers_per_unit})",
             "lower max_registers_per_thread or raise registers_per_unit")
    if s.max_threads_per_block % s.warp_size:
        fail("max_threads_per_block",
             f"{s.max_threads_per_block} is not a multiple of warp_size {s.warp_size}",
             "blocks are made of whole warps")
    for table in ("peak_flops", "vector_flops"):
        extra = [d for d in getattr(s, table) if d not in s.supported_dtypes]
        if extra:
            fail(table, f"lists {', '.join(extra)}, which supported_dtypes does not",
                 "add them to supported_dtypes or remove the rates")
    from hal.kernel.mma import LAYOUTS

    for mi in s.matrix_instructions:
        if mi.scope == "warpgroup":
            if s.warp_size != 32:
                fail("matrix_instructions", f"{mi.name}: a warpgroup instruction needs "
                     f"32-lane warps, warp_size is {s.warp_size}", "remove it")
            continue
        if LAYOUTS[mi.layout].lanes != s.warp_size:
            fail("matrix_instructions", f"{mi.name}: layout {mi.layout} is issued by "
                 f"{LAYOUTS[mi.layout].lanes} lanes, warp_size is {s.warp_size}",
                 "pick a layout for this warp width")
    if "f32" not in s.vector_flops:
        fail("vector_flops", "has no f32 rate", "add e.g. 'f32: 67 TFLOP/s'")


def load_spec_file(path: str | os.PathLike) -> DeviceSpec:
    """Read and validate one YAML spec file."""
    p = Path(path)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec file: {e.strerror}", file=file,
                        hint="check the path, or pass a shipped name (run `hal devices`)") from None
    try:
        data, lines = load_yaml(text, file)  # size cap, no aliases, no duplicate keys
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"YAML syntax error: {problem}", file=at,
                        hint="fix the YAML; each line is 'field: value' and nested "
                             "tables use {a: 1, b: 2} or indentation") from None
    return spec_from_dict(data, file=file, lines=lines)


def shipped_spec_names() -> list[str]:
    """Names of the specs that ship with hal (the YAML file stems), sorted."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def _looks_like_path(s: str) -> bool:
    return s.endswith((".yaml", ".yml")) or os.sep in s or "/" in s or Path(s).is_file()


_CACHE: dict[tuple[str, float], DeviceSpec] = {}


def load_spec(name_or_path: str | os.PathLike | DeviceSpec) -> DeviceSpec:
    """A shipped spec by name ("h100-sxm") or a user's YAML file by path; a DeviceSpec passes through."""
    if isinstance(name_or_path, DeviceSpec):
        return name_or_path
    s = os.fspath(name_or_path)
    if s.endswith(TF32_SUFFIX):   # the user's TF32 opt-in (--allow-tf32)
        return allow_tf32(load_spec(s[:-len(TF32_SUFFIX)]))
    if _looks_like_path(s):
        path = Path(s)
    else:
        path = SPEC_DIR / f"{s}.yaml"
        if not path.is_file():
            names = shipped_spec_names()
            close = difflib.get_close_matches(s, names, n=1)
            raise SpecError(f"no device named '{s}'",
                            hint=(f"did you mean '{close[0]}'? " if close else "")
                            + "shipped: " + ", ".join(names) + "; or pass a path to a .yaml spec")
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except OSError:
        return load_spec_file(path)  # raises the readable error
    if key not in _CACHE:
        _CACHE[key] = load_spec_file(path)
    return _CACHE[key]


def list_specs() -> list[DeviceSpec]:
    """Every shipped spec, loaded and validated, in name order."""
    return [load_spec(n) for n in shipped_spec_names()]

"""Benchmark suites: YAML files listing cases, with sweeps over named sizes.

    suite: llm
    description: norms, activations, matmuls and attention at LLM shapes
    defaults: {dtype: bf16}
    cases:
      - name: rms_norm_s{S}_h{H}          # optional; {VAR} filled from the sweep
        op: rms_norm                       # anything `hal bench OP_OR_FILE` takes
        shapes: ["S x H"]                  # AxB strings or lists; names come from sweep
        dtype: bf16                        # optional, else defaults.dtype, else bf16
        attrs: {eps: 1.0e-6}               # optional op attributes
        sweep:                             # optional; cartesian product of the lists
          S: [1, 128, 2048, 8192]
          "Hq,H": [[32, 4096], [64, 8192]] # a comma-joined key varies its names together

`load_suite(path)` validates the file and returns the expanded `SuiteEntry`
list; every error names the file, the entry (index and op) and the field.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hal.errors import HalError

TOP_KEYS = {"suite", "description", "defaults", "cases"}
ENTRY_KEYS = {"name", "op", "shapes", "dtype", "attrs", "sweep"}
DEFAULT_KEYS = {"dtype", "attrs"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class SuiteEntry:
    name: str
    op: str
    shapes: list[tuple[int, ...]]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict)
    where: str = ""                  # "file: cases[3] (rms_norm)" for error messages


@dataclass
class Suite:
    name: str
    description: str
    path: str
    entries: list[SuiteEntry]


class SuiteError(HalError):
    """A malformed suite file: the message names the file, the entry and the field."""


def _fail(where: str, fld: str | None, msg: str, hint: str | None = None) -> SuiteError:
    return SuiteError(f"{where}: " + (f"field '{fld}': " if fld else "") + msg, hint=hint)


def _sweep_points(where: str, sweep: Any) -> list[dict[str, int]]:
    if sweep is None:
        return [{}]
    if not isinstance(sweep, dict) or not sweep:
        raise _fail(where, "sweep", "must be a mapping of NAME: [values]",
                    hint="e.g. sweep: {S: [1, 128, 2048]}")
    axes = []
    for key, values in sweep.items():
        names = [n.strip() for n in str(key).split(",")]
        bad = [n for n in names if not _NAME.match(n)]
        if bad:
            raise _fail(where, "sweep", f"'{bad[0]}' is not a name (letters, digits, _)")
        if not isinstance(values, list) or not values:
            raise _fail(where, "sweep", f"'{key}' must list at least one value")
        combos = []
        for v in values:
            vals = v if isinstance(v, list) else [v]
            if len(vals) != len(names) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                  and x > 0 for x in vals):
                raise _fail(where, "sweep", f"'{key}' value {v!r} must be "
                            + ("a positive integer" if len(names) == 1 else
                               f"a list of {len(names)} positive integers"))
            combos.append(dict(zip(names, vals, strict=True)))
        axes.append(combos)
    return [{k: v for part in prod for k, v in part.items()} for prod in itertools.product(*axes)]


def _shape(where: str, s: Any, env: dict[str, int]) -> tuple[int, ...]:
    parts = [p.strip() for p in s.split("x")] if isinstance(s, str) else s
    if not isinstance(parts, list) or not parts:
        raise _fail(where, "shapes", f"{s!r} is not a shape", hint="write '4096x4096', "
                    "'S x H' with names from sweep, or [S, 4096]")
    lowered = {k.lower(): v for k, v in env.items()}
    out = []
    for p in parts:
        if isinstance(p, int) and not isinstance(p, bool) and p > 0:
            out.append(p)
        elif isinstance(p, str) and p.isdigit() and int(p) > 0:
            out.append(int(p))
        elif isinstance(p, str) and p.lower() in lowered:
            out.append(lowered[p.lower()])
        else:
            raise _fail(where, "shapes", f"{s!r}: '{p}' is neither a positive integer nor "
                        "a sweep name" + (f" ({', '.join(env)})" if env else ""))
    return tuple(out)


def _entry(path: str, i: int, raw: Any, defaults: dict[str, Any]) -> list[SuiteEntry]:
    op = raw.get("op") if isinstance(raw, dict) else None
    where = f"{path}: cases[{i}]" + (f" ({op})" if isinstance(op, str) else "")
    if not isinstance(raw, dict):
        raise _fail(where, None, "each case must be a mapping with at least 'op' and 'shapes'")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise _fail(where, unknown[0], "unknown field", hint="fields: " +
                    ", ".join(sorted(ENTRY_KEYS)))
    if not isinstance(op, str) or not op:
        raise _fail(where, "op", "missing or not a string",
                    hint="an op name (rms_norm, matmul+bias+gelu, ...) or a .hal file")
    shapes = raw.get("shapes")
    if not isinstance(shapes, list) or not shapes:
        raise _fail(where, "shapes", "missing or empty; list one shape per operand")
    dt = raw.get("dtype", defaults.get("dtype", "bf16"))
    from hal.dtypes import DTYPES

    if dt not in DTYPES:
        raise _fail(where, "dtype", f"unknown dtype {dt!r}", hint="one of " + ", ".join(DTYPES))
    attrs = raw.get("attrs", {})
    if not isinstance(attrs, dict):
        raise _fail(where, "attrs", "must be a mapping of attribute: value")
    attrs = {**defaults.get("attrs", {}), **attrs}
    template = raw.get("name", op)
    if not isinstance(template, str):
        raise _fail(where, "name", "must be a string")
    out = []
    for env in _sweep_points(where, raw.get("sweep")):
        try:
            name = template.format(**env)
        except (KeyError, IndexError, ValueError) as e:
            raise _fail(where, "name", f"{template!r} uses {e} which the sweep does not "
                        "define") from None
        if "sweep" in raw and name == template:
            name = template + "_" + "_".join(f"{k}{v}" for k, v in env.items())
        out.append(SuiteEntry(name, op, [_shape(where, s, env) for s in shapes], dt,
                              dict(attrs), where))
    return out


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; SuiteError names the file, entry and field."""
    path = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SuiteError(f"{path}: cannot read suite: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise _fail(path, None, "a suite is a mapping with 'cases'")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise _fail(path, unknown[0], "unknown top-level field",
                    hint="fields: " + ", ".join(sorted(TOP_KEYS)))
    defaults = raw.get("defaults", {}) or {}
    if not isinstance(defaults, dict) or set(defaults) - DEFAULT_KEYS:
        raise _fail(path, "defaults", "must be a mapping with dtype and/or attrs")
    cases = raw.get("cases")
    if not isinstance(cases, list) or not cases:
        raise _fail(path, "cases", "missing or empty; list the benchmark cases")
    entries = [e for i, c in enumerate(cases) for e in _entry(path, i, c, defaults)]
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            raise _fail(e.where, "name", f"'{e.name}' is also produced by {seen[e.name]}",
                        hint="make names unique, e.g. with {VAR} from the sweep")
        seen[e.name] = e.where
    return Suite(str(raw.get("suite", Path(path).stem)), str(raw.get("description", "")),
                 path, entries)


def entry_case(entry: SuiteEntry):
    """The BenchCase of a suite entry; a bad op or shape is reported at the entry."""
    from hal.bench.cases import make_case

    try:
        return make_case(entry.op, entry.shapes, entry.dtype, entry.attrs, name=entry.name)
    except HalError as e:
        raise SuiteError(f"{entry.where} '{entry.name}': {e.message}", hint=e.hint) from None

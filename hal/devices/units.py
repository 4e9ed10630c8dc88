"""Human-friendly quantities for device specs: parse "227 KiB", "3.35 TB/s", "4 us".

A quantity is a number followed by a unit of one dimension: bytes, bandwidth
(bytes/s), rate (FLOP/s or OP/s), time (seconds) or frequency (Hz). Decimal
prefixes (k, M, G, T, P) are powers of 1000, binary ones (Ki, Mi, Gi, Ti) are
powers of 1024, as in the vendors' datasheets. A plain number is accepted for
every dimension and taken in the base unit (bytes, bytes/s, FLOP/s, s, Hz).

The `format_*` helpers print the same units back for tables.
"""

from __future__ import annotations

import re

from hal.errors import HalError

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}

# dimension -> {unit spelling -> factor to the base unit}
UNITS: dict[str, dict[str, float]] = {
    "bytes": {},
    "bandwidth": {},
    "flops": {},  # also "<q> per unit" in rate tables (hal.devices.loader)
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9},
    "frequency": {},
}
for _p, _f in {**_DECIMAL, **_BINARY}.items():
    UNITS["bytes"][f"{_p}B"] = _f
    UNITS["bandwidth"][f"{_p}B/s"] = _f
for _p, _f in _DECIMAL.items():
    for _spelling in ("FLOP/s", "FLOPS", "OP/s", "OPS"):
        UNITS["flops"][f"{_p}{_spelling}"] = _f
    UNITS["frequency"][f"{_p}Hz"] = _f

BASE_UNIT = {"bytes": "B", "bandwidth": "B/s", "flops": "FLOP/s", "time": "s",
             "frequency": "Hz"}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


class UnitError(HalError):
    """A quantity that does not parse; the spec loader re-raises it as a SpecError."""


def parse_quantity(value: object, dimension: str) -> float:
    """Parse `value` (a number or "<number> <unit>") into the base unit of `dimension`."""
    units = UNITS[dimension]
    if isinstance(value, bool):
        raise UnitError(f"expected a {dimension} quantity, got a boolean {value!r}",
                        hint=_examples(dimension))
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"expected a {dimension} quantity, got {type(value).__name__} {value!r}",
                        hint=_examples(dimension))
    m = _QUANTITY.match(value)
    if m is None:
        raise UnitError(f"'{value}' is not a number with a unit", hint=_examples(dimension))
    number, unit = float(m.group(1)), m.group(2)
    if unit == "":
        return number
    if unit not in units:
        other = next((d for d, us in UNITS.items() if unit in us), None)
        why = f"'{unit}' is a {other} unit" if other else f"unknown unit '{unit}'"
        raise UnitError(f"'{value}': {why}, this field wants {dimension}",
                        hint=_examples(dimension))
    factor = units[unit]
    # divide for sub-unit factors so that '10 us' is exactly 1e-05
    return number / round(1 / factor) if factor < 1 else number * factor


def _examples(dimension: str) -> str:
    samples = {"bytes": "'227 KiB', '50 MB', '80 GiB'",
               "bandwidth": "'3.35 TB/s', '200 GB/s'",
               "flops": "'989 TFLOP/s', '67 TFLOP/s'",
               "time": "'4 us', '2.5 us', '0.5 ms'",
               "frequency": "'1.98 GHz', '2100 MHz'"}[dimension]
    return f"write e.g. {samples}, or a plain number in {BASE_UNIT[dimension]}"


def _scaled(x: float, steps: list[tuple[float, str]], unit: str) -> str:
    for factor, prefix in steps:
        if abs(x) >= factor:
            v = x / factor
            text = f"{v:.3g}" if v < 1000 else f"{v:.0f}"
            return f"{text} {prefix}{unit}"
    return f"{x:.3g} {unit}"


_DEC_STEPS = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def format_bytes(n: float) -> str:
    """Bytes in binary units when exact (228 KiB), else decimal (50 MB)."""
    if n == 0:
        return "0 B"
    for factor, prefix in ((2**40, "Ti"), (2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")):
        if n >= factor and n % factor == 0:
            return f"{int(n // factor)} {prefix}B"
    return _scaled(n, _DEC_STEPS, "B")


def format_bandwidth(x: float) -> str:
    return "0 B/s" if x == 0 else _scaled(x, _DEC_STEPS, "B/s")


def format_flops(x: float) -> str:
    return "-" if x == 0 else _scaled(x, _DEC_STEPS, "FLOP/s")


def format_time(x: float) -> str:
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if x >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x / 1e-9:.3g} ns"


def format_frequency(x: float) -> str:
    return _scaled(x, [(1e9, "G"), (1e6, "M"), (1e3, "k")], "Hz")

"""Per-part counting for one wave that holds blocks of several parts: `Tally`, `per_part`.

A sampled launch (sampled.py) needs its counters per block set (the boundary blocks and
each stratum of the interior sample: the boundary counts as itself, the sample is scaled
to the interior and the spread of the strata gives the stated error). Running each set as
its own wave repeats the kernel's whole statement stream (and its Python overhead) once
per set; `simulator.simulate_parts(..., combine=True)` runs them as ONE wave and counts
per part instead.

Every counter of the simulator is a sum of per-lane (or per-block, per-warp) counts
times constants: `W.gr += n * itemsize`, `_fl[i] += 3 * count`, ... In a wave built with
`parts` (lanes.Wave), the lane counts the wave hands out (`W.L`, `W.B`, `W._count`,
`W.narrow`, `W.tally`, `W.tally_at`) are `Tally` values: ints (so every other use is
unchanged: sizes, reshapes, comparisons) that also carry the count per part. Adding two
tallies, adding 0, multiplying by an int and exact division by an int keep the parts; any
other arithmetic gives a plain int. `per_part` turns a finished counter into its vector
and raises when a counter holds a plain nonzero int, i.e. when some counting site used a
count that is not a tally: a counter is never attributed to a part by guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.errors import HalError


class Tally(int):
    """An int (the total) with `parts`, its split over the parts of a wave (int64 vector).

    Kept as `base * k` (a shared vector and a factor): the generated code multiplies one
    lane count by constants and adds the products up statement after statement, which
    then costs no array operation until two different counts meet."""

    _base: np.ndarray
    _k: int

    def __new__(cls, parts: np.ndarray) -> Tally:
        parts = np.asarray(parts, np.int64)
        return _make(parts, 1, int(parts.sum()))

    @property
    def parts(self) -> np.ndarray:
        return self._base * self._k if self._k != 1 else self._base

    def __add__(self, other: Any) -> Any:
        if type(other) is Tally:
            total = int.__add__(self, other)
            if other._base is self._base:
                return _make(self._base, self._k + other._k, total)
            return _make(self.parts + other.parts, 1, total)
        if isinstance(other, (int, np.integer)) and other == 0:
            return self
        return int(self) + other

    __radd__ = __add__

    def __mul__(self, other: Any) -> Any:
        if type(other) is int or (isinstance(other, (int, np.integer))
                                  and not isinstance(other, (Tally, bool))):
            k = int(other)
            return _make(self._base, self._k * k, int.__mul__(self, k))
        if isinstance(other, Tally):   # a product of two counts is not a count
            return int(self) * int(other)
        return int(self) * other

    __rmul__ = __mul__

    def __floordiv__(self, other: Any) -> Any:
        if isinstance(other, (int, np.integer)) and not isinstance(other, (Tally, bool)) \
                and other > 0 and not (self.parts % int(other)).any():
            return _make(self.parts // int(other), 1, int.__floordiv__(self, int(other)))
        return int(self) // other

    def __reduce__(self):
        return (Tally, (self.parts,))


def _make(base: np.ndarray, k: int, total: int) -> Tally:
    t = int.__new__(Tally, total)
    t._base = base
    t._k = k
    return t


class UnattributedCounter(HalError):
    """A counter of a combined sampled wave was counted without per-part lane counts."""


def per_part(value: Any, nparts: int, what: str) -> np.ndarray:
    """The counter `value` of a combined wave as a vector over its parts."""
    if isinstance(value, Tally):
        if value.parts.size != nparts:
            raise UnattributedCounter(f"cpu_sim: counter {what} has {value.parts.size} parts, "
                                      f"the wave {nparts}")
        return value.parts
    if value == 0:
        return np.zeros(nparts, np.int64)
    raise UnattributedCounter(
        f"cpu_sim: counter {what} = {value} of a combined sampled wave was counted without "
        "per-part lane counts", hint="count with W.tally / W.tally_at (backends/cpu_sim/"
        "tally.py), or run the sampled parts as separate waves (combine=False)")


__all__ = ["Tally", "per_part", "UnattributedCounter"]

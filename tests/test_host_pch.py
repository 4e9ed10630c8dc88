"""The shim's precompiled header (backends.host.pch): built once, used by clang compiles,
and never a requirement: a corrupt PCH or a compiler without PCH support still compiles."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.host import pch
from hal.backends.host.compiler import HostCompileOptions, find_compiler, host_supported

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")

SCALE = r"""
extern "C" __global__ void __launch_bounds__(64) scale(const float* x, float* y) {
  int t = blockIdx.x * 64 + threadIdx.x;
  y[t] = x[t] * %s;
}
"""


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path / "cache"))
    from hal.render import cache as cache_mod

    monkeypatch.setattr(cache_mod, "_ROOTS", {})
    return tmp_path / "cache"


def _run(source: str) -> np.ndarray:
    from hal.backends.host.driver import HostDriver

    x = np.arange(128, dtype=np.float32)
    _, y = HostDriver("cuda", "cuda-host").run_source(source, "scale", [x, np.zeros_like(x)],
                                                      grid=(2, 1, 1), block=64)
    return y


def test_flags_swap_the_force_include_for_the_pch(tmp_path):
    flags = HostCompileOptions().flags()
    assert "-include" in flags and pch.SHIM_HEADER in flags
    swapped = pch.pch_flags(flags, tmp_path / "x.pch")
    assert pch.SHIM_HEADER not in swapped
    assert swapped[swapped.index("-include-pch") + 1] == str(tmp_path / "x.pch")
    assert pch.pch_flags(flags, None) == flags


@pytest.mark.skipif("clang" not in (find_compiler() or ""), reason="PCH is used with clang")
def test_pch_is_built_once_and_used(fresh_cache):
    y = _run(SCALE % "2.0f")
    assert np.array_equal(y, np.arange(128, dtype=np.float32) * 2)
    built = list((fresh_cache / "host-pch").glob("*.pch"))
    assert len(built) == 1 and built[0].stat().st_size > 0
    mtime = built[0].stat().st_mtime_ns
    _run(SCALE % "3.0f")                       # a new kernel: compiled with the same PCH
    assert [p.stat().st_mtime_ns for p in (fresh_cache / "host-pch").glob("*.pch")] == [mtime]


@pytest.mark.skipif("clang" not in (find_compiler() or ""), reason="PCH is used with clang")
def test_a_corrupt_pch_falls_back_to_the_plain_include(fresh_cache):
    _run(SCALE % "2.0f")
    (built,) = (fresh_cache / "host-pch").glob("*.pch")
    built.write_bytes(b"not a precompiled header")
    y = _run(SCALE % "5.0f")
    assert np.array_equal(y, np.arange(128, dtype=np.float32) * 5)


def test_no_pch_for_a_compiler_without_clang_pch(fresh_cache):
    assert pch.shim_pch("/usr/bin/g++", tuple(HostCompileOptions().flags()), "g++", "d") is None

"""Where the host execution of the rendered text differs from a GPU and from cpu_sim
(listed in hal.backends.host.backend's docstring), each pinned by a test."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from hal.backends.host.compiler import host_supported

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")


@pytest.fixture(scope="module")
def driver():
    from hal.backends.host.driver import HostDriver

    return HostDriver("cuda", "cuda-host")


def test_no_fp_contraction(driver):
    # nvcc/hipcc contract a*b+c into one FMA by default; the host compiles with
    # -ffp-contract=off, so the product is rounded before the add (two roundings).
    src = r"""
extern "C" __global__ void k(const float* a, const float* b, const float* c, float* y) {
  y[threadIdx.x] = a[threadIdx.x] * b[threadIdx.x] + c[threadIdx.x];
}
"""
    a = np.float32([1 + 2.0 ** -13])
    b = np.float32([1 - 2.0 ** -13])
    c = np.float32([-1.0])
    *_, y = driver.run_source(src, "k", [a, b, c, np.zeros(1, np.float32)])
    two_roundings = np.float32(a[0] * b[0]) + c[0]        # product rounds to 1.0 first
    fused = np.float32(np.float64(a[0]) * np.float64(b[0]) + np.float64(c[0]))
    assert y[0] == two_roundings == 0.0 and fused != 0.0


def test_math_functions_are_the_host_libm(driver):
    # expf comes from glibc (< 1 ulp); CUDA's expf allows 2 ulp and cpu_sim uses NumPy.
    # Pinned: the host result is within 1 ulp of the correctly rounded value.
    src = r"""
extern "C" __global__ void k(const float* x, float* y, int n) {
  int i = blockIdx.x * 256 + threadIdx.x;
  if (i < n) y[i] = expf(x[i]);
}
"""
    x = np.linspace(-80, 80, 4096, dtype=np.float32)
    *_, y = driver.run_source(src, "k", [x, np.zeros_like(x), ctypes.c_int(x.size)],
                              grid=(16, 1, 1), block=256)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert (np.abs(y - exact) <= ulp).all()


def test_threads_run_in_order_between_barriers(driver):
    # Without a barrier, a thread sees what EARLIER threads of its block wrote (they ran
    # first), never what later ones write: a missing barrier is caught only when a thread
    # reads a later thread's value (cpu_sim's race check sees both directions in the IR).
    src = r"""
extern "C" __global__ void k(float* y) {
  __shared__ float s[64];
  s[threadIdx.x] = threadIdx.x + 1.0f;
  y[threadIdx.x] = threadIdx.x > 0 ? s[threadIdx.x - 1] : -1.0f;
  y[64 + threadIdx.x] = threadIdx.x < 63 ? s[threadIdx.x + 1] : -1.0f;
}
"""
    (y,) = driver.run_source(src, "k", [np.full(128, 7.0, np.float32)], block=64)
    assert np.array_equal(y[1:64], np.arange(1, 64))       # earlier neighbour: visible
    assert not np.array_equal(y[64:127], np.arange(2, 65))  # later neighbour: not yet


def test_out_of_bounds_is_caught_at_16_byte_granularity(driver):
    # Buffers end at a guard page after rounding up to 16 bytes: y[5] of a 5-float buffer
    # lands in the padding (not caught); y[8] is past the padding (caught).
    from hal.errors import DeviceError

    src = r"""
extern "C" __global__ void k(float* y, int i) { y[i] = 1.0f; }
"""
    driver.run_source(src, "k", [np.zeros(5, np.float32), ctypes.c_int(5)])
    with pytest.raises(DeviceError, match="past the end"):
        driver.run_source(src, "k", [np.zeros(5, np.float32), ctypes.c_int(8)])

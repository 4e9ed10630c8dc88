"""The host shim's device API: barriers, lock-step shuffles at 32 and 64 lanes, atomics,
guard pages, deadlock reports, and the half/bf16/fp8 conversions against ml_dtypes.

Each test compiles a small hand-written CUDA or HIP kernel with the shim
(hal.backends.host.driver.HostDriver.run_source) and runs it on the CPU.
"""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest

from hal.backends.host.compiler import host_supported
from hal.errors import DeviceError

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")


@pytest.fixture(scope="module")
def driver():
    from hal.backends.host.driver import HostDriver

    return HostDriver("cuda", "cuda-host")


REVERSE = r"""
extern "C" __global__ void __launch_bounds__(256) rev(const float* x, float* y) {
  __shared__ float s[256];
  int t = threadIdx.x;
  s[t] = x[blockIdx.x * 256 + t];
  __syncthreads();
  y[blockIdx.x * 256 + t] = s[255 - t];  // written by a LATER thread before the barrier
}
"""


def test_syncthreads_is_a_real_barrier(driver):
    x = np.arange(512, dtype=np.float32)
    _, y = driver.run_source(REVERSE, "rev", [x, np.zeros_like(x)], grid=(2, 1, 1), block=256)
    assert np.array_equal(y, np.concatenate([x[:256][::-1], x[256:][::-1]]))


def test_dropped_barrier_reads_stale_shared_memory(driver):
    src = REVERSE.replace("__syncthreads();", "")
    x = np.arange(512, dtype=np.float32) + 1
    _, y = driver.run_source(src, "rev", [x, np.zeros_like(x)], grid=(2, 1, 1), block=256)
    assert not np.array_equal(y[:256], x[:256][::-1])


SUM = r"""
extern "C" __global__ void wsum(const float* x, float* y) {
  float v = x[threadIdx.x];
  for (int o = WIDTH / 2; o > 0; o /= 2) v += SHFL(v, o, WIDTH);
  y[threadIdx.x] = v;
}
"""


@pytest.mark.parametrize("warp,width,shfl", [(32, 32, "__shfl_xor_sync(0xffffffffu, "),
                                            (64, 64, "__shfl_xor("), (64, 32, "__shfl_xor("),
                                            (32, 8, "__shfl_xor_sync(0xffffffffu, ")])
def test_xor_butterfly_sums_each_segment(driver, warp, width, shfl):
    src = SUM.replace("SHFL(", shfl).replace("WIDTH", str(width))
    x = np.arange(128, dtype=np.float32)
    _, y = driver.run_source(src, "wsum", [x, np.zeros_like(x)], block=128, warp_size=warp)
    want = x.reshape(-1, width).sum(1).repeat(width)
    assert np.array_equal(y, want)


def test_shuffle_down_and_idx_follow_the_width_rules(driver):
    src = r"""
extern "C" __global__ void k(int* down, int* idx, int* up) {
  int l = threadIdx.x;
  down[l] = __shfl_down(l, 3, 16);   // beyond the 16-lane segment: own value
  idx[l] = __shfl(l * 10, 37, 16);   // source lane 37 % 16 = 5 of the segment
  up[l] = __shfl_up(l, 2, 64);
}
"""
    z = np.zeros(64, np.int32)
    down, idx, up = driver.run_source(src, "k", [z, z, z], block=64, warp_size=64)
    lane = np.arange(64)
    assert np.array_equal(down, np.where(lane % 16 + 3 < 16, lane + 3, lane))
    assert np.array_equal(idx, (lane // 16 * 16 + 5) * 10)
    assert np.array_equal(up, np.where(lane >= 2, lane - 2, lane))


def test_shuffle_from_an_exited_lane_is_an_error(driver):
    src = r"""
extern "C" __global__ void k(float* y) {
  if (threadIdx.x >= 16) return;
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16, 32);
}
"""
    with pytest.raises(DeviceError, match="did not take part"):
        driver.run_source(src, "k", [np.zeros(32, np.float32)], block=32)


def test_shuffle_width_above_the_warp_is_an_error(driver):
    src = r"""
extern "C" __global__ void k(float* y) {
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1, 64);
}
"""
    with pytest.raises(DeviceError, match="width 64"):
        driver.run_source(src, "k", [np.zeros(32, np.float32)], block=32, warp_size=32)


def test_divergent_barrier_deadlock_is_reported(driver):
    src = r"""
extern "C" __global__ void k(float* y) {
  if (threadIdx.x == 0) { __syncthreads(); } else { __syncwarp(); }
  y[threadIdx.x] = 1.0f;
}
"""
    with pytest.raises(DeviceError, match="deadlock"):
        driver.run_source(src, "k", [np.zeros(64, np.float32)], block=64)


def test_exited_threads_do_not_hold_a_barrier(driver):
    src = r"""
extern "C" __global__ void k(float* y) {
  __shared__ float s[64];
  if (threadIdx.x >= 40) return;
  s[threadIdx.x] = threadIdx.x;
  __syncthreads();
  y[threadIdx.x] = s[39 - threadIdx.x];
}
"""
    (y,) = driver.run_source(src, "k", [np.zeros(64, np.float32)], block=64)
    assert np.array_equal(y[:40], np.arange(40)[::-1])


def test_out_of_bounds_store_names_the_buffer(driver):
    src = r"""
extern "C" __global__ void k(float* y) { y[threadIdx.x] = 1.0f; }
"""
    with pytest.raises(DeviceError, match="past the end of a 256-byte buffer"):
        driver.run_source(src, "k", [np.zeros(64, np.float32)], block=65)


def test_atomic_add_counts_every_thread(driver):
    src = r"""
extern "C" __global__ void k(int* n, float* f) { atomicAdd(n, 1); atomicAdd(f, 0.5f); }
"""
    n, f = driver.run_source(src, "k", [np.zeros(1, np.int32), np.zeros(1, np.float32)],
                             grid=(3, 1, 1), block=256)
    assert n[0] == 768 and f[0] == 384.0


def test_scalar_arguments_and_indices(driver):
    src = r"""
extern "C" __global__ void k(float* y, float a, int b) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  y[i] = a * i + b + gridDim.x * 1000;
}
"""
    (y,) = driver.run_source(src, "k", [np.zeros(96, np.float32), ctypes.c_float(0.5),
                                        ctypes.c_int(7)], grid=(3, 1, 1), block=32)
    assert np.array_equal(y, 0.5 * np.arange(96) + 7 + 3000)


# ------------------------------------------------------------------ conversions

def _probe_values() -> np.ndarray:
    """Random values over the whole range, exact ties and near-ties of every target
    format, subnormals, overflow and specials."""
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(4000).astype(np.float32),
             (rng.standard_normal(4000) * 2.0 ** rng.integers(-30, 30, 4000)).astype(np.float32),
             np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 448, 464, 465, 480, 500, 57344,
                       61440, 65504, 65520, 70000, 1e-9, -1e-9, 2.0 ** -10, 2.0 ** -17,
                       3 * 2.0 ** -17, 3e38, -3e38], np.float32)]
    for dt in (np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        grid = np.unique(np.abs(rng.standard_normal(2000).astype(dt).astype(np.float32)))
        grid = grid[np.isfinite(grid)]
        mids = (grid[:-1].astype(np.float64) + grid[1:]) / 2
        parts += [mids.astype(np.float32), np.nextafter(mids.astype(np.float32), np.inf),
                  -mids.astype(np.float32)]
    return np.concatenate(parts).astype(np.float32)


CONVERT = r"""
extern "C" __global__ void conv(const float* x, unsigned short* h, unsigned short* b,
                                unsigned short* hb, unsigned char* e4, unsigned char* e5, int n) {
  int i = blockIdx.x * 256 + threadIdx.x;
  if (i >= n) return;
  __half hv = __float2half_rn(x[i]);
  __nv_bfloat16 bv = __float2bfloat16_rn(x[i]);
  hip_bfloat16 hbv(x[i]);
  h[i] = hv.__x; b[i] = bv.__x; hb[i] = hbv.data;
  e4[i] = __nv_cvt_float_to_fp8(x[i], __NV_SATFINITE, __NV_E4M3);
  e5[i] = __nv_cvt_float_to_fp8(x[i], __NV_SATFINITE, __NV_E5M2);
}
"""


def test_conversions_round_like_ml_dtypes(driver):
    x = _probe_values()
    n = len(x)
    outs = driver.run_source(CONVERT, "conv", [x, np.zeros(n, np.uint16), np.zeros(n, np.uint16),
                                               np.zeros(n, np.uint16), np.zeros(n, np.uint8),
                                               np.zeros(n, np.uint8), ctypes.c_int(n)],
                             grid=((n + 255) // 256, 1, 1), block=256)
    _, h, b, hb, e4, e5 = outs
    nan = np.isnan(x)

    def same(bits, dt, what, sat=None):
        got = bits.view(dt).astype(np.float32)
        with np.errstate(over="ignore"):  # f16 / bf16 overflow to inf is the rule
            ref = (np.clip(x, -sat, sat) if sat else x).astype(dt).astype(np.float32)
        ok = (got == ref) & (np.signbit(got) == np.signbit(ref)) | (nan & np.isnan(got))
        assert ok.all(), f"{what}: {x[~ok][:5]} -> {got[~ok][:5]}, want {ref[~ok][:5]}"

    same(h, np.float16, "__float2half_rn")
    same(b, ml_dtypes.bfloat16, "__float2bfloat16_rn")
    same(hb, ml_dtypes.bfloat16, "hip_bfloat16(float)")
    same(e4, ml_dtypes.float8_e4m3fn, "fp8 e4m3 satfinite", sat=448.0)
    same(e5, ml_dtypes.float8_e5m2, "fp8 e5m2 satfinite", sat=57344.0)


def test_dynamic_shared_memory_is_shared_by_the_block(driver):
    src = r"""
extern "C" __global__ void k(const float* x, float* y) {
  extern __shared__ unsigned char hal_smem[];  // 16-byte aligned
  float* tile = (float*)(hal_smem + 65536);
  alignas(16) __shared__ float small[4];
  tile[threadIdx.x] = x[threadIdx.x];
  if (threadIdx.x < 4) small[threadIdx.x] = 1.0f;
  __syncthreads();
  y[threadIdx.x] = tile[127 - threadIdx.x] + small[threadIdx.x % 4];
}
"""
    x = np.arange(128, dtype=np.float32)
    _, y = driver.run_source(src, "k", [x, np.zeros_like(x)], block=128)
    assert np.array_equal(y, x[::-1] + 1)

"""The shim's matrix-unit helpers (hal_host_matrix.h, written from the PTX and CDNA3 ISA
documents) against hal's Python layout tables (hal.kernel.mma): the fragments are placed
by the tables, multiplied by the C++ helpers, and the result read back through the tables
must be A @ B. The two implementations are independent, so each checks the other."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from hal.backends.host.compiler import host_supported
from hal.errors import DeviceError
from hal.kernel.mma import get_layout, ldmatrix_source

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")

KERNEL = r"""
extern "C" __global__ void k(const STORE* fa, const STORE* fb, float* out) {
  alignas(16) T a[NA];
  alignas(16) T b[NB];
  alignas(16) float c[NC];
  int l = threadIdx.x;
  for (int i = 0; i < NA; i++) memcpy(&a[i], &fa[l * NA + i], sizeof(T));
  for (int i = 0; i < NB; i++) memcpy(&b[i], &fb[l * NB + i], sizeof(T));
  for (int i = 0; i < NC; i++) c[i] = 0.5f;
  FN(c, a, b, c);
  for (int i = 0; i < NC; i++) out[l * NC + i] = c[i];
}
"""

CASES = [  # helper, layout, element type, storage dtype, warp
    ("hal_mma_m16n8k16_bf16_f32", "nv_m16n8k16_b16", "__nv_bfloat16", ml_dtypes.bfloat16, 32),
    ("hal_mma_m16n8k16_f16_f32", "nv_m16n8k16_b16", "__half", np.float16, 32),
    ("hal_mma_m16n8k32_e4m3_f32", "nv_m16n8k32_b8", "__nv_fp8_storage_t",
     ml_dtypes.float8_e4m3fn, 32),
    ("hal_mma_m16n8k32_e5m2_f32", "nv_m16n8k32_b8", "__nv_fp8_storage_t",
     ml_dtypes.float8_e5m2, 32),
    ("hal_mfma_f32_32x32x8_bf16", "amd_32x32x8_b16", "hip_bfloat16", ml_dtypes.bfloat16, 64),
    ("hal_mfma_f32_16x16x16_bf16", "amd_16x16x16_b16", "hip_bfloat16", ml_dtypes.bfloat16, 64),
    ("hal_mfma_f32_32x32x8_f16", "amd_32x32x8_b16", "__half", np.float16, 64),
    ("hal_mfma_f32_16x16x16_f16", "amd_16x16x16_b16", "__half", np.float16, 64),
]


@pytest.fixture(scope="module")
def driver():
    from hal.backends.host.driver import HostDriver

    return HostDriver("cuda", "cuda-host")


@pytest.mark.parametrize("fn,layout,ctype,dt,warp", CASES, ids=[c[0] for c in CASES])
def test_matrix_helper_agrees_with_the_layout_tables(driver, fn, layout, ctype, dt, warp):
    lay = get_layout(layout)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((lay.m, lay.k)).astype(dt)
    B = rng.standard_normal((lay.k, lay.n)).astype(dt)
    fa = A[lay.a[..., 0], lay.a[..., 1]]          # [lanes, elements] by hal's tables
    fb = B[lay.b[..., 0], lay.b[..., 1]]
    na, nb, nc = fa.shape[1], fb.shape[1], lay.c.shape[1]
    bits = np.uint8 if np.dtype(dt).itemsize == 1 else np.uint16
    src = (KERNEL.replace("STORE", "unsigned char" if bits is np.uint8 else "unsigned short")
           .replace("FN", fn).replace("NA", str(na)).replace("NB", str(nb))
           .replace("NC", str(nc)).replace(" T ", f" {ctype} ").replace("(T)", f"({ctype})"))
    out = np.zeros((lay.lanes, nc), np.float32)
    *_, got = driver.run_source(src, "k", [np.ascontiguousarray(fa).view(bits),
                                           np.ascontiguousarray(fb).view(bits), out],
                                block=lay.lanes, warp_size=warp)
    D = np.full((lay.m, lay.n), np.nan)
    D[lay.c[..., 0], lay.c[..., 1]] = got
    want = A.astype(np.float64) @ B.astype(np.float64) + 0.5
    np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6)


LDMATRIX = r"""
extern "C" __global__ void k(const unsigned short* tile, unsigned short* out) {
  __shared__ unsigned short s[32 * 8];
  int t = threadIdx.x;
  for (int i = 0; i < 8; i++) s[t * 8 + i] = tile[t * 8 + i];
  __syncthreads();
  alignas(16) unsigned short r[2 * COUNT];
  FN(r, &s[(t % 8 + 8 * (t / 8)) * 8]);   // lane t: row t % 8 of matrix t / 8
  for (int i = 0; i < 2 * COUNT; i++) out[t * 2 * COUNT + i] = r[i];
}
"""


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_agrees_with_the_table(driver, count, trans):
    tile = np.arange(32 * 8, dtype=np.uint16)
    fn = f"hal_ldmatrix_x{count}{'_trans' if trans else ''}"
    src = LDMATRIX.replace("FN", fn).replace("COUNT", str(count))
    *_, got = driver.run_source(src, "k", [tile, np.zeros((32, 2 * count), np.uint16)],
                                block=32)
    lane_src, off = ldmatrix_source(count, trans)
    want = tile.reshape(32, 8)[lane_src, off]   # row lane_src of the 32 rows, column off
    assert np.array_equal(got, want)


def test_cp_async_data_appears_only_after_the_wait(driver):
    src = r"""
extern "C" __global__ void k(const float* g, float* before, float* after) {
  alignas(16) __shared__ float s[4 * 32];
  int t = threadIdx.x;
  for (int i = 0; i < 4; i++) s[t * 4 + i] = -1.0f;
  hal_cp_async_16(&s[t * 4], &g[t * 4], true);
  hal_cp_async_commit();
  before[t] = s[t * 4];
  hal_cp_async_wait<0>();
  after[t] = s[t * 4];
}
"""
    g = np.arange(128, dtype=np.float32)
    _, before, after = driver.run_source(src, "k", [g, np.zeros(32, np.float32),
                                                    np.zeros(32, np.float32)], block=32)
    assert (before == -1).all() and np.array_equal(after, g[::4])


def test_mma_with_a_missing_lane_is_an_error(driver):
    src = r"""
extern "C" __global__ void k(float* out) {
  alignas(16) __nv_bfloat16 a[8];
  alignas(16) __nv_bfloat16 b[4];
  alignas(16) float c[4] = {0, 0, 0, 0};
  if (threadIdx.x == 5) return;
  hal_mma_m16n8k16_bf16_f32(c, a, b, c);
  out[threadIdx.x] = c[0];
}
"""
    with pytest.raises(DeviceError, match="needs all 32 lanes"):
        driver.run_source(src, "k", [np.zeros(32, np.float32)], block=32)


@pytest.mark.parametrize("vendor,warp", [("cuda", 32), ("hip", 64)])
def test_every_renderer_helper_has_a_host_definition(driver, vendor, warp):
    # a helper the renderers gain later must get a host definition here too
    from hal.backends.cuda.mma_helpers import CUDA_MATRIX_HELPERS
    from hal.backends.rocm.mma_helpers import HIP_MATRIX_HELPERS

    names = CUDA_MATRIX_HELPERS if vendor == "cuda" else HIP_MATRIX_HELPERS
    refs = "\n".join(f"  (void)&{n}{'<0>' if n == 'hal_cp_async_wait' else ''};"
                     for n in sorted(names))
    src = f'extern "C" __global__ void k(float* y) {{\n{refs}\n  y[0] = 1.0f;\n}}\n'
    (y,) = driver.run_source(src, "k", [np.zeros(1, np.float32)], warp_size=warp)
    assert y[0] == 1.0

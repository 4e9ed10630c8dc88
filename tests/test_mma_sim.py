"""cpu_sim runs matrix instructions lane-exactly, ldmatrix and cp.async as the ISA says."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.simulator import simulate
from hal.devices.loader import load_spec
from hal.dtypes import DTYPES, cast, f32, i32
from hal.kernel.ir import (
    THREAD_IDX,
    Barrier,
    BufferParam,
    Const,
    CpAsyncCommit,
    CpAsyncWait,
    Kernel,
    LdMatrix,
    Load,
    LocalBuffer,
    Mma,
    SharedBuffer,
    Store,
    VecCopy,
)
from hal.kernel.mma import get_layout

SPEC_OF = {"nv_m16n8k16_b16": "h100-sxm", "nv_m16n8k32_b8": "h100-sxm",
           "amd_32x32x8_b16": "mi300x", "amd_16x16x16_b16": "mi300x",
           "amd_32x32x16_b8": "mi300x", "npu_8x8x8": "scratch-npu"}


def _c(v):
    return Const(v, i32)


def _mma_kernel(layout: str, dt, warps: int, perm_a=None) -> Kernel:
    """Each warp w multiplies A_w @ B_w + C_w; fragments loaded by the layout tables
    (given to the kernel as int buffers). `perm_a` permutes the A fragment elements."""
    lay = get_layout(layout)
    L = lay.lanes
    body = []
    w = THREAD_IDX // _c(L)
    lane = THREAD_IDX % _c(L)
    for which, n, (rows, cols) in (("a", lay.a_elems, (lay.m, lay.k)),
                                   ("b", lay.b_elems, (lay.k, lay.n)),
                                   ("c", lay.c_elems, (lay.m, lay.n))):
        for i in range(n):
            src = i if which != "a" or perm_a is None else perm_a[i]
            t = lane * _c(2 * n) + _c(2 * src)
            r, c = Load("t" + which, t, i32), Load("t" + which, t + _c(1), i32)
            idx = w * _c(rows * cols) + r * _c(cols) + c
            fd = f32 if which == "c" else dt
            body.append(Store("f" + which, _c(i), Load(which.upper(), idx, fd)))
    body.append(Mma(layout, "fc", 0, "fa", 0, "fb", 0, "fc", 0))
    for i in range(lay.c_elems):
        t = lane * _c(2 * lay.c_elems) + _c(2 * i)
        idx = w * _c(lay.m * lay.n) + Load("tc", t, i32) * _c(lay.n) + Load("tc", t + _c(1), i32)
        body.append(Store("D", idx, Load("fc", _c(i), f32)))
    params = [BufferParam("A", dt, (warps * lay.m * lay.k,)),
              BufferParam("B", dt, (warps * lay.k * lay.n,)),
              BufferParam("C", f32, (warps * lay.m * lay.n,)),
              *(BufferParam("t" + x, i32, (lay.operand(x).size,)) for x in "abc"),
              BufferParam("D", f32, (warps * lay.m * lay.n,), readonly=False)]
    locs = [LocalBuffer("fa", dt, lay.a_elems), LocalBuffer("fb", dt, lay.b_elems),
            LocalBuffer("fc", f32, lay.c_elems)]
    return Kernel("mma_test", params, body, (1, 1, 1), warps * L, [], locs, warp_size=L)


def _run(layout: str, dtname: str, warps: int = 2, perm_a=None, seed: int = 0):
    lay, dt = get_layout(layout), DTYPES[dtname]
    rng = np.random.default_rng(seed)
    a = cast(rng.standard_normal((warps, lay.m, lay.k)), dt)
    b = cast(rng.standard_normal((warps, lay.k, lay.n)), dt)
    c = rng.standard_normal((warps, lay.m, lay.n)).astype(np.float32)
    d = np.zeros(warps * lay.m * lay.n, np.float32)
    args = {"A": a.ravel(), "B": b.ravel(), "C": c.ravel(), "D": d,
            **{"t" + x: lay.operand(x).astype(np.int32).ravel() for x in "abc"}}
    st = simulate(_mma_kernel(layout, dt, warps, perm_a), args, load_spec(SPEC_OF[layout]))
    want = np.matmul(a.astype(np.float64), b.astype(np.float64)) + c
    return d.reshape(warps, lay.m, lay.n), want, st


@pytest.mark.parametrize("layout,dt", [("nv_m16n8k16_b16", "bf16"), ("nv_m16n8k16_b16", "f16"),
                                       ("nv_m16n8k32_b8", "f8e4m3fn"),
                                       ("amd_32x32x8_b16", "bf16"), ("amd_16x16x16_b16", "f16"),
                                       ("amd_32x32x16_b8", "f8e5m2"), ("npu_8x8x8", "bf16")])
def test_mma_matches_matmul(layout, dt):
    got, want, st = _run(layout, dt)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)
    lay = get_layout(layout)
    assert st.matrix_flops == {layout: 2 * 2 * lay.m * lay.n * lay.k}


def test_swapped_fragment_elements_give_wrong_numbers():
    perm = list(range(8))
    perm[0], perm[2] = perm[2], perm[0]   # a0 <-> a2: rows g and g+8 swapped
    got, want, _ = _run("nv_m16n8k16_b16", "bf16", perm_a=perm)
    assert not np.allclose(got, want, rtol=1e-3, atol=1e-3)


def _ldmatrix_kernel(trans: bool) -> Kernel:
    # a 16x16 bf16 tile in shared memory (row stride 24: padded), x4 load
    body = [Store("S", (THREAD_IDX // _c(16)) * _c(24) + THREAD_IDX % _c(16),
                  Load("G", THREAD_IDX, DTYPES["bf16"]))]
    body[0] = _for_all(body[0])
    body.append(Barrier())
    lane = THREAD_IDX
    j = lane // _c(8)
    row = lane % _c(8) + (j % _c(2)) * _c(8)
    col = (j // _c(2)) * _c(8)
    body.append(LdMatrix("f", 0, "S", row * _c(24) + col, 4, trans))
    for i in range(8):
        body.append(Store("O", lane * _c(8) + _c(i), Load("f", _c(i), DTYPES["bf16"])))
    return Kernel("ldm", [BufferParam("G", DTYPES["bf16"], (256,)),
                          BufferParam("O", DTYPES["bf16"], (256,), readonly=False)],
                  body, (1, 1, 1), 32, [SharedBuffer("S", DTYPES["bf16"], 16 * 24)],
                  [LocalBuffer("f", DTYPES["bf16"], 8)])


def _for_all(store):
    from hal.kernel.ir import For, Var
    v = Var("r", i32)
    idx = v * _c(32) + THREAD_IDX
    return For(v, _c(0), _c(8), _c(1),
               [Store("S", (idx // _c(16)) * _c(24) + idx % _c(16), Load("G", idx, store.value.dtype))])


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_delivers_the_documented_elements(trans):
    g = np.arange(256, dtype=np.float32).astype(DTYPES["bf16"].np_dtype)
    o = np.zeros(256, DTYPES["bf16"].np_dtype)
    st = simulate(_ldmatrix_kernel(trans), {"G": g, "O": o}, load_spec("h100-sxm"))
    tile = g.astype(np.float32).reshape(16, 16)
    got = o.astype(np.float32).reshape(32, 8)
    for t in range(32):
        for jj in range(4):
            r0, c0 = (jj % 2) * 8, (jj // 2) * 8
            for e in range(2):
                r, c = (t // 4, 2 * (t % 4) + e) if not trans else (2 * (t % 4) + e, t // 4)
                assert got[t, 2 * jj + e] == tile[r0 + r, c0 + c]
    assert st.bank_conflicts == 0   # a 24-element (48-byte) row stride spreads the rows


def test_unpadded_rows_conflict():
    """Rows 128 bytes apart (64 bf16): the 8 rows of each 8x8 matrix hit the same 4 banks."""
    bf = DTYPES["bf16"]
    body = [LdMatrix("f", 0, "S", (THREAD_IDX % _c(8)) * _c(64), 4),
            Store("O", THREAD_IDX, Load("f", _c(0), bf))]
    k = Kernel("ldm_conflict", [BufferParam("O", bf, (32,), readonly=False)], body, (1, 1, 1),
               32, [SharedBuffer("S", bf, 8 * 64)], [LocalBuffer("f", bf, 8)])
    st = simulate(k, {"O": np.zeros(32, bf.np_dtype)}, load_spec("h100-sxm"))
    assert st.bank_conflicts == 4 * 7   # four matrices, 8 distinct words per bank: 7 extra each


def _cp_kernel(wait: bool, uniform: bool = False) -> Kernel:
    """Each thread cp.asyncs 8 words; then each reads its neighbour's first word, or with
    `uniform` every thread reads word 8 (thread 1's: cpu_sim's one-word-per-block path)."""
    bf = DTYPES["bf16"]
    body = [VecCopy("S", THREAD_IDX * _c(8), "G", THREAD_IDX * _c(8), 8,
                    mask=None, asynchronous=True), CpAsyncCommit()]
    if wait:
        body.append(CpAsyncWait(0))
    body.append(Barrier())
    at = _c(8) if uniform else ((THREAD_IDX + _c(1)) % _c(32)) * _c(8)
    body.append(Store("O", THREAD_IDX, Load("S", at, bf)))
    return Kernel("cp", [BufferParam("G", bf, (256,)), BufferParam("O", bf, (32,), readonly=False)],
                  body, (1, 1, 1), 32, [SharedBuffer("S", bf, 256, stages=2)], [])


def test_cp_async_wait_then_read():
    g = np.arange(256, dtype=np.float32).astype(DTYPES["bf16"].np_dtype)
    o = np.zeros(32, g.dtype)
    simulate(_cp_kernel(True), {"G": g, "O": o}, load_spec("a100-sxm"))
    np.testing.assert_array_equal(o.astype(np.float32), (np.arange(1, 33) % 32) * 8)


@pytest.mark.parametrize("uniform", [False, True], ids=["per-lane", "uniform"])
def test_cp_async_read_before_wait_is_a_race(uniform):
    g = np.zeros(256, DTYPES["bf16"].np_dtype)
    with pytest.raises(SimulationError, match=r"stage 0\) is read before the cp.async of "
                                              r"thread 1") as e:
        simulate(_cp_kernel(False, uniform), {"G": g, "O": np.zeros(32, g.dtype)},
                 load_spec("a100-sxm"))
    assert e.value.kind == "race" and e.value.kernel == "cp" and e.value.thread == 0


def test_cp_async_wait_then_uniform_read():
    g = np.arange(256, dtype=np.float32).astype(DTYPES["bf16"].np_dtype)
    o = np.zeros(32, g.dtype)
    simulate(_cp_kernel(True, uniform=True), {"G": g, "O": o}, load_spec("a100-sxm"))
    np.testing.assert_array_equal(o.astype(np.float32), np.full(32, 8.0))


@pytest.mark.parametrize("dtname,width", [("bf16", 8), ("f32", 4), ("f16", 2), ("i32", 4),
                                          ("f8e4m3fn", 16)])
def test_whole_vector_rows_equal_the_element_gather(dtname, width):
    """vcopy's global read of whole aligned vectors gathers rows (_whole_vectors): the
    same values as the element gather, lanes in any order; None where it cannot apply."""
    from hal.backends.cpu_sim.mma_sim import _whole_vectors

    rng = np.random.default_rng(5)
    npd = DTYPES[dtname].np_dtype
    buf = rng.integers(-50, 50, 64 * width).astype(np.float32).astype(npd)
    start = rng.integers(0, 64, 300).astype(np.int64) * width
    got = _whole_vectors(buf, start, width)
    want = buf[start[:, None] + np.arange(width)]
    assert got is not None and got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert _whole_vectors(buf[1:], start[:0], width) is None        # not whole vectors
    assert _whole_vectors(buf[::2], start[:0], width) is None       # not contiguous
    assert _whole_vectors(buf, start, 3) is None                    # not a power of two


@pytest.mark.parametrize("dtname,width", [("bf16", 8), ("f32", 4), ("f16", 2), ("i32", 4),
                                          ("f8e4m3fn", 16)])
def test_whole_vector_stores_equal_the_element_scatter(dtname, width, monkeypatch):
    """vcopy's shared store of whole aligned vectors scatters rows (_store_vectors): the
    same buffer as the element scatter (a repeated vector: the last store wins in both),
    and the element scatter where rows cannot apply (misaligned, another dtype)."""
    from hal.backends.cpu_sim import mma_sim

    rng = np.random.default_rng(6)
    npd = DTYPES[dtname].np_dtype
    starts = rng.integers(0, 64, 300).astype(np.int64) * width   # repeats among them
    vals = rng.integers(-50, 50, (300, width)).astype(np.float32).astype(npd)
    words = starts[:, None] + np.arange(width)
    for case in ("rows", "misaligned", "dtype"):
        buf = np.zeros(64 * width + width, npd)
        w, v = (words + 1, vals) if case == "misaligned" else (words, vals)
        if case == "dtype":
            v = vals.astype(np.float64)
        want = buf.copy()
        want[w] = v
        rows = mma_sim._store_vectors(buf, w, v, width)
        assert rows == (case == "rows") and buf.tobytes() == want.tobytes(), case

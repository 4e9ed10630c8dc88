"""The cpu_sim kernel simulator on hand-written kernels: results, rounding and counters."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.simulator import KernelStats, kernel_source, simulate
from hal.devices.spec import DeviceSpec
from hal.dtypes import bf16, cast, f8e4m3fn, f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    Assign,
    AtomicAdd,
    Barrier,
    Binary,
    BufferParam,
    Cast,
    Const,
    Declare,
    For,
    If,
    Kernel,
    Load,
    LocalBuffer,
    Param,
    ScalarParam,
    SharedBuffer,
    Shuffle,
    Store,
    Unary,
    Var,
)


def make_spec(name: str, warp: int, smem: int, max_threads: int) -> DeviceSpec:
    return DeviceSpec(
        name=name, vendor="generic", arch="test", kind="gpu", compute_units=100,
        warp_size=warp, max_threads_per_block=max_threads, max_threads_per_unit=2048,
        max_blocks_per_unit=32, registers_per_unit=65536, max_registers_per_thread=255,
        shared_mem_per_block=smem, shared_mem_per_unit=smem, l1_bytes_per_unit=0,
        l2_bytes=50 << 20, dram_bytes=80 << 30, dram_bandwidth=3.35e12, l2_bandwidth=1e13,
        peak_flops={"bf16": 989e12}, vector_flops={"f32": 67e12}, launch_overhead_s=4e-6,
        supported_dtypes=("f32", "bf16"))


H100 = make_spec("h100-sxm", 32, 227 * 1024, 1024)
MI300X = make_spec("mi300x", 64, 64 * 1024, 1024)
NPU = make_spec("scratch-npu", 16, 32 * 1024, 256)
SPECS = {16: NPU, 32: H100, 64: MI300X}


def pointwise_add(n: int, block: int, *, inclusive_mask: bool = False) -> Kernel:
    i = Var("i", i32)
    nn = Param("n", i32)
    cond = i.le(nn) if inclusive_mask else i.lt(nn)
    body = [Declare(i, BLOCK_IDX_X * block + THREAD_IDX),
            If(cond, [Store("o", i, Load("x", i, f32) + Load("y", i, f32))])]
    return Kernel("add_f32", [BufferParam("x", f32, (n,)), BufferParam("y", f32, (n,)),
                              BufferParam("o", f32, (n,), readonly=False), ScalarParam("n", i32)],
                  body, grid=(-(-n // block), 1, 1), block=block)


def row_sum(rows: int, cols: int, block: int, warp: int, *, barrier: bool = True) -> Kernel:
    """out[r] = sum(x[r, :]): block per row, strided loop, xor shuffles, shared across warps."""
    nwarps = block // warp
    acc, v, row = Var("acc", f32), Var("v", f32), Var("row", i32)
    c = Var("c", i32)
    tid = THREAD_IDX
    body = [
        Declare(row, BLOCK_IDX_X),
        Declare(acc, Const(0.0, f32)),
        For(c, tid, Const(cols, i32), Const(block, i32),
            [Assign(acc, acc + Load("x", row * cols + c, f32))]),
    ]
    off = warp // 2
    while off >= 1:
        body.append(Assign(acc, acc + Shuffle(acc, "xor", Const(off, i32), warp)))
        off //= 2
    body.append(If((tid % warp).eq(0), [Store("partial", tid // warp, acc)]))
    if barrier:
        body.append(Barrier())
    final = [Assign(v, v + Shuffle(v, "xor", Const(o, i32), warp))
             for o in [warp >> k for k in range(1, 32) if warp >> k >= 1]]
    body += [
        Declare(v, Load("partial", tid, f32, mask=tid.lt(nwarps), other=Const(0.0, f32))),
        If((tid // warp).eq(0), final + [If(tid.eq(0), [Store("out", row, v)])]),
    ]
    return Kernel(f"row_sum_w{warp}", [BufferParam("x", f32, (rows * cols,)),
                                        BufferParam("out", f32, (rows,), readonly=False)],
                  body, grid=(rows, 1, 1), block=block,
                  shared=[SharedBuffer("partial", f32, nwarps)], warp_size=warp)


def test_pointwise_add_with_tail_mask() -> None:
    n, block = 1000, 128
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32)
    o = np.zeros(n, np.float32)
    st = simulate(pointwise_add(n, block), {"x": x, "y": y, "o": o, "n": n}, H100)
    np.testing.assert_array_equal(o, x + y)
    assert isinstance(st, KernelStats)
    assert st.global_bytes_read == 2 * n * 4 and st.global_bytes_written == n * 4
    assert st.flops == n and st.flops_by_dtype == {"f32": n}
    assert st.barriers == 0 and st.atomics == 0
    assert st.grid == (8, 1, 1) and st.block == block
    expected = max(3 * n * 4 / H100.dram_bandwidth, n / 67e12) + 4e-6
    assert st.modelled_time_s == pytest.approx(expected)
    d = st.to_dict()
    assert d["global_bytes"] == 3 * n * 4 and d["grid"] == [8, 1, 1]


def test_small_waves_give_the_same_result() -> None:
    n, block = 1000, 64
    x, y = np.arange(n, dtype=np.float32), np.ones(n, np.float32)
    o1, o2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    k = pointwise_add(n, block)
    s1 = simulate(k, {"x": x, "y": y, "o": o1, "n": n}, H100)
    s2 = simulate(k, {"x": x, "y": y, "o": o2, "n": n}, H100, max_lanes=block * 3)
    np.testing.assert_array_equal(o1, o2)
    assert s2.waves == 6 and s1.waves == 1
    assert s1.global_bytes_read == s2.global_bytes_read


@pytest.mark.parametrize("warp", [16, 32, 64])
def test_row_sum_with_shuffles_and_shared_memory(warp: int) -> None:
    rows, cols, block = 37, 1000, 256
    rng = np.random.default_rng(warp)
    x = rng.standard_normal(rows * cols).astype(np.float32)
    out = np.zeros(rows, np.float32)
    st = simulate(row_sum(rows, cols, block, warp), {"x": x, "out": out}, SPECS[warp])
    ref = x.reshape(rows, cols).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    assert st.barriers == rows
    assert st.global_bytes_read == rows * cols * 4 and st.global_bytes_written == rows * 4
    nwarps = block // warp
    assert st.shared_bytes_written == rows * nwarps * 4
    assert st.shared_bytes_read == rows * nwarps * 4   # the masked load reads only nwarps words


def test_row_sum_same_bits_across_wave_sizes() -> None:
    rows, cols = 9, 300
    x = np.random.default_rng(1).standard_normal(rows * cols).astype(np.float32)
    k = row_sum(rows, cols, 128, 32)
    a, b = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    simulate(k, {"x": x, "out": a}, H100)
    simulate(k, {"x": x, "out": b}, H100, max_lanes=256)
    np.testing.assert_array_equal(a, b)


def test_bf16_store_and_arithmetic_round_exactly() -> None:
    n = 4096
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    y = (rng.standard_normal(n) * 3).astype(np.float32)
    i = Var("i", i32)
    xb, yb = Cast(Load("x", i, f32), bf16), Cast(Load("y", i, f32), bf16)
    k = Kernel("bf16_mul_add", [BufferParam("x", f32, (n,)), BufferParam("y", f32, (n,)),
                                BufferParam("o", bf16, (n,), readonly=False),
                                BufferParam("c", bf16, (n,), readonly=False)],
               [Declare(i, BLOCK_IDX_X * 256 + THREAD_IDX),
                Store("c", i, xb),
                Store("o", i, xb * yb + xb)],
               grid=(n // 256, 1, 1), block=256)
    o, c = np.zeros(n, bf16.np_dtype), np.zeros(n, bf16.np_dtype)
    st = simulate(k, {"x": x, "y": y, "o": o, "c": c}, H100)
    np.testing.assert_array_equal(c, cast(x, bf16))
    # f32 math, rounded to bf16 after each op (C++ __nv_bfloat16 operators)
    xr, yr = cast(x, bf16).astype(np.float32), cast(y, bf16).astype(np.float32)
    prod = cast(xr * yr, bf16).astype(np.float32)
    np.testing.assert_array_equal(o, cast(prod + xr, bf16))
    assert st.flops_by_dtype == {"bf16": 2 * n}
    assert st.global_bytes_written == 2 * n * 2


def test_fp8_cast_saturates() -> None:
    n = 256
    x = np.array([1e6, -1e6, 0.3, np.nan] * (n // 4), np.float32)
    i = Var("i", i32)
    k = Kernel("to_fp8", [BufferParam("x", f32, (n,)),
                          BufferParam("o", f8e4m3fn, (n,), readonly=False)],
               [Declare(i, THREAD_IDX), Store("o", i, Cast(Load("x", i, f32), f8e4m3fn))],
               grid=(1, 1, 1), block=n)
    o = np.zeros(n, f8e4m3fn.np_dtype)
    simulate(k, {"x": x, "o": o}, H100)
    np.testing.assert_array_equal(o.astype(np.float32)[:3], [448.0, -448.0, cast(0.3, f8e4m3fn)])
    assert np.isnan(o.astype(np.float32)[3])


def test_exp_uses_registry_scalar_and_local_arrays() -> None:
    n, block, per = 512, 64, 4
    x = np.linspace(-3, 3, n, dtype=np.float32)
    t, j = Var("t", i32), Var("j", i32)
    base = (BLOCK_IDX_X * block + THREAD_IDX) * per
    body = [
        For(j, Const(0, i32), Const(per, i32), Const(1, i32),
            [Store("tile", j, Unary("exp", Load("x", base + j, f32)))], unroll=True),
        Declare(t, Const(0, i32)),
        For(j, Const(0, i32), Const(per, i32), Const(1, i32),
            [Store("o", base + j, Load("tile", Const(per - 1, i32) - j, f32))]),
    ]
    k = Kernel("exp_rev", [BufferParam("x", f32, (n,)), BufferParam("o", f32, (n,), readonly=False)],
               body, grid=(n // (block * per), 1, 1), block=block,
               locals=[LocalBuffer("tile", f32, per)])
    o = np.zeros(n, np.float32)
    st = simulate(k, {"x": x, "o": o}, H100)
    np.testing.assert_array_equal(o, np.exp(x).reshape(-1, per)[:, ::-1].reshape(-1))
    assert st.flops_by_dtype == {"f32": n}
    src = kernel_source(k)
    assert "# variables: v0 = j, v1 = t" in src
    assert "for v0 in range(" in src   # uniform loop: a plain Python loop


def test_divergent_loop_bounds_and_atomics() -> None:
    # thread t sums t values of ones; a per-lane loop bound; one atomic per thread
    block = 64
    ones = np.ones(block, np.float32)
    acc, j = Var("acc", f32), Var("j", i32)
    k = Kernel("tri", [BufferParam("ones", f32, (block,)),
                       BufferParam("out", f32, (block,), readonly=False),
                       BufferParam("total", f32, (1,), readonly=False)],
               [Declare(acc, Const(0.0, f32)),
                For(j, Const(0, i32), THREAD_IDX, Const(1, i32),
                    [Assign(acc, acc + Load("ones", j, f32))]),
                Store("out", THREAD_IDX, acc),
                AtomicAdd("total", Const(0, i32), acc)],
               grid=(1, 1, 1), block=block)
    out, total = np.zeros(block, np.float32), np.zeros(1, np.float32)
    st = simulate(k, {"ones": ones, "out": out, "total": total}, H100)
    np.testing.assert_array_equal(out, np.arange(block, dtype=np.float32))
    assert total[0] == block * (block - 1) / 2
    assert st.atomics == block
    assert st.global_bytes_read == 4 * block * (block - 1) // 2 + 4 * block


def test_barrier_counted_per_block_and_integer_wraparound_without_check() -> None:
    big = Var("big", i32)
    k = Kernel("wrap", [BufferParam("o", i32, (32,), readonly=False), ScalarParam("s", i32)],
               [Declare(big, Param("s", i32) * Const(4, i32)), Barrier(),
                Store("o", THREAD_IDX, big + THREAD_IDX)],
               grid=(3, 1, 1), block=32)
    o = np.zeros(32, np.int32)
    st = simulate(k, {"o": o, "s": 2**30}, H100, check=False)
    assert st.barriers == 3
    np.testing.assert_array_equal(o, np.arange(32, dtype=np.int32))   # 2^32 wraps to 0


def test_select_compare_and_maximum() -> None:
    n = 128
    x = np.linspace(-2, 2, n, dtype=np.float32)
    i = Var("i", i32)
    from hal.kernel.ir import Select

    val = Load("x", i, f32)
    body = [Declare(i, THREAD_IDX),
            Store("o", i, Select(val.lt(Const(0.0, f32)), Unary("neg", val),
                                 Binary("maximum", val, Const(1.0, f32))))]
    k = Kernel("sel", [BufferParam("x", f32, (n,)), BufferParam("o", f32, (n,), readonly=False)],
               body, grid=(1, 1, 1), block=n)
    o = np.zeros(n, np.float32)
    simulate(k, {"x": x, "o": o}, H100)
    np.testing.assert_array_equal(o, np.where(x < 0, -x, np.maximum(x, 1)))


def test_bad_arguments_are_named() -> None:
    from hal.errors import DeviceError

    k = pointwise_add(100, 64)
    with pytest.raises(DeviceError, match="missing argument"):
        simulate(k, {"x": np.zeros(100, np.float32)}, H100)
    with pytest.raises(DeviceError, match="'y' is float64"):
        simulate(k, {"x": np.zeros(100, np.float32), "y": np.zeros(100),
                     "o": np.zeros(100, np.float32), "n": 100}, H100)


def test_per_lane_local_index() -> None:
    # each thread writes slot tid % 4 of its local array, then reads slot (tid + 1) % 4
    block = 64
    t = THREAD_IDX
    k = Kernel("dyn_local", [BufferParam("o", f32, (block,), readonly=False)],
               [Store("tile", Const(0, i32), Const(-1.0, f32)),
                Store("tile", Const(1, i32), Const(-1.0, f32)),
                Store("tile", Const(2, i32), Const(-1.0, f32)),
                Store("tile", Const(3, i32), Const(-1.0, f32)),
                Store("tile", t % 4, Cast(t, f32)),
                Store("o", t, Load("tile", t % 4, f32) + Load("tile", (t + 1) % 4, f32))],
               grid=(1, 1, 1), block=block, locals=[LocalBuffer("tile", f32, 4)])
    o = np.zeros(block, np.float32)
    simulate(k, {"o": o}, H100)
    np.testing.assert_array_equal(o, np.arange(block, dtype=np.float32) - 1)


def test_uniform_shared_read_counts_every_lane() -> None:
    v = Var("v", f32)
    k = Kernel("bcast", [BufferParam("o", f32, (2 * 64,), readonly=False)],
               [If(THREAD_IDX.eq(0), [Store("s", Const(0, i32), Cast(BLOCK_IDX_X, f32))]),
                Barrier(),
                Declare(v, Load("s", Const(0, i32), f32)),
                Store("o", BLOCK_IDX_X * 64 + THREAD_IDX, v)],
               grid=(2, 1, 1), block=64, shared=[SharedBuffer("s", f32, 1)])
    o = np.zeros(128, np.float32)
    st = simulate(k, {"o": o}, H100)
    np.testing.assert_array_equal(o, np.repeat([0.0, 1.0], 64))
    assert st.shared_bytes_read == 128 * 4 and st.shared_bytes_written == 2 * 4
    assert st.barriers == 2

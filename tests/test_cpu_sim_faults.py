"""Planted bugs: each is caught by the simulator with the right kind and a precise message."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.simulator import simulate
from hal.devices.spec import DeviceSpec
from hal.dtypes import f32, i32
from hal.errors import DeviceError
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    AtomicAdd,
    Barrier,
    BufferParam,
    Const,
    Declare,
    For,
    If,
    Kernel,
    Load,
    Param,
    ScalarParam,
    SharedBuffer,
    Shuffle,
    Store,
    Var,
)


def make_spec(name: str, warp: int, smem: int, max_threads: int) -> DeviceSpec:
    return DeviceSpec(
        name=name, vendor="generic", arch="test", kind="gpu", compute_units=100,
        warp_size=warp, max_threads_per_block=max_threads, max_threads_per_unit=2048,
        max_blocks_per_unit=32, registers_per_unit=65536, max_registers_per_thread=255,
        shared_mem_per_block=smem, shared_mem_per_unit=smem, l1_bytes_per_unit=0,
        l2_bytes=50 << 20, dram_bytes=80 << 30, dram_bandwidth=3.35e12, l2_bandwidth=1e13,
        peak_flops={}, vector_flops={"f32": 67e12}, launch_overhead_s=4e-6,
        supported_dtypes=("f32",))


H100 = make_spec("h100-sxm", 32, 227 * 1024, 1024)
MI300X = make_spec("mi300x", 64, 64 * 1024, 1024)


def _row_sum(barrier: bool) -> Kernel:
    from test_cpu_sim import row_sum

    return row_sum(4, 512, 128, 32, barrier=barrier)


def test_missing_barrier_is_a_race() -> None:
    x, out = np.ones(4 * 512, np.float32), np.zeros(4, np.float32)
    simulate(_row_sum(True), {"x": x, "out": out}, H100)   # the correct kernel is clean
    with pytest.raises(SimulationError) as e:
        simulate(_row_sum(False), {"x": x, "out": out}, H100)
    err = e.value
    assert err.kind == "race" and err.buffer == "partial"
    assert err.block == (0, 0, 0) and err.thread == 1 and err.index == 1
    assert "row_sum_w32" in str(err) and "partial[1]" in str(err) and "thread 32" in str(err)
    assert "Barrier" in str(err)


def test_overwrite_after_broadcast_read_is_a_race() -> None:
    # every thread reads s[0]; thread 0 then overwrites it without a barrier (write after read)
    v = Var("v", f32)
    k = Kernel("war", [BufferParam("o", f32, (64,), readonly=False)],
               [If(THREAD_IDX.eq(0), [Store("s", Const(0, i32), Const(1.0, f32))]), Barrier(),
                Declare(v, Load("s", Const(0, i32), f32)),
                If(THREAD_IDX.eq(0), [Store("s", Const(0, i32), Const(2.0, f32))]),
                Store("o", THREAD_IDX, v)],
               grid=(1, 1, 1), block=64, shared=[SharedBuffer("s", f32, 1)])
    with pytest.raises(SimulationError, match="other threads read") as e:
        simulate(k, {"o": np.zeros(64, np.float32)}, H100)
    assert e.value.kind == "race" and e.value.thread == 0


def test_inclusive_mask_is_out_of_bounds() -> None:
    from test_cpu_sim import pointwise_add

    n = 1000
    k = pointwise_add(n, 128, inclusive_mask=True)
    args = {"x": np.zeros(n, np.float32), "y": np.zeros(n, np.float32),
            "o": np.zeros(n, np.float32), "n": n}
    with pytest.raises(SimulationError) as e:
        simulate(k, args, H100)
    err = e.value
    assert err.kind == "out_of_bounds" and err.buffer == "x" and err.index == n
    assert err.block == (7, 0, 0) and err.thread == n - 7 * 128
    assert "add_f32" in str(err) and "x[1000]" in str(err) and "size 1000" in str(err)


def test_shared_memory_beyond_the_spec_is_refused_before_running() -> None:
    o = np.zeros(64, np.float32)
    k = Kernel("big_tile", [BufferParam("o", f32, (64,), readonly=False)],
               [Store("o", THREAD_IDX, Const(1.0, f32))], grid=(1, 1, 1), block=64,
               shared=[SharedBuffer("tile", f32, 80 * 1024 // 4)], warp_size=64)
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": o}, MI300X)
    assert e.value.kind == "launch_refused"
    assert "launch refused: kernel big_tile needs 80 KiB shared memory, mi300x allows 64 KiB " \
           "per block" in str(e.value)
    assert not o.any()                       # nothing ran
    assert isinstance(e.value, DeviceError)
    simulate(k, {"o": o}, make_spec("big", 64, 96 * 1024, 1024))
    assert o.all()


def test_block_and_warp_size_limits_are_refused() -> None:
    k = Kernel("wide", [BufferParam("o", f32, (2048,), readonly=False)],
               [Store("o", THREAD_IDX, Const(1.0, f32))], grid=(1, 1, 1), block=2048)
    with pytest.raises(SimulationError, match="2048 threads per block") as e:
        simulate(k, {"o": np.zeros(2048, np.float32)}, H100)
    assert e.value.kind == "launch_refused"
    k32 = Kernel("w32", [BufferParam("o", f32, (64,), readonly=False)],
                 [Store("o", THREAD_IDX, Const(1.0, f32))], grid=(1, 1, 1), block=64)
    with pytest.raises(SimulationError, match="warp size 32, mi300x has warp size 64"):
        simulate(k32, {"o": np.zeros(64, np.float32)}, MI300X)


def test_index_past_2_31_overflows_before_the_access() -> None:
    i = Var("i", i32)
    k = Kernel("strided", [BufferParam("o", f32, (64,), readonly=False), ScalarParam("stride", i32)],
               [Declare(i, BLOCK_IDX_X * Param("stride", i32) + THREAD_IDX),
                Store("o", i, Const(1.0, f32))],
               grid=(4, 1, 1), block=32)
    o = np.zeros(64, np.float32)
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": o, "stride": 2**30}, H100)
    err = e.value
    assert err.kind == "index_overflow" and err.block == (2, 0, 0) and err.thread == 0
    assert err.index == 2**31
    assert "strided" in str(err) and "2147483648" in str(err) and "index_dtype=i64" in str(err)
    assert not o.any()


def test_barrier_under_thread_condition_is_divergent() -> None:
    k = Kernel("half_sync", [BufferParam("o", f32, (32,), readonly=False)],
               [If(THREAD_IDX.lt(16), [Barrier()]), Store("o", THREAD_IDX, Const(1.0, f32))],
               grid=(2, 1, 1), block=32)
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": np.zeros(32, np.float32)}, H100)
    err = e.value
    assert err.kind == "divergent_barrier" and err.block == (0, 0, 0) and err.thread == 16
    assert "half_sync" in str(err) and "16 of 32 threads" in str(err)


def test_barrier_under_block_uniform_condition_is_fine() -> None:
    o = np.zeros(32, np.float32)
    k = Kernel("block_sync", [BufferParam("o", f32, (32,), readonly=False)],
               [If(BLOCK_IDX_X.eq(1), [Barrier()]),
                If(BLOCK_IDX_X.eq(0), [Store("o", THREAD_IDX, Const(1.0, f32))])],
               grid=(2, 1, 1), block=32)
    st = simulate(k, {"o": o}, H100)
    assert st.barriers == 1 and o.all()


def test_shuffle_from_inactive_lane_is_bad() -> None:
    v = Var("v", f32)
    k = Kernel("half_shfl", [BufferParam("o", f32, (32,), readonly=False)],
               [If(THREAD_IDX.lt(8), [Declare(v, Shuffle(Const(1.0, f32), "down",
                                                          Const(8, i32), 32)),
                                      Store("o", THREAD_IDX, v)])],
               grid=(1, 1, 1), block=32)
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": np.zeros(32, np.float32)}, H100)
    assert e.value.kind == "bad_shuffle" and e.value.thread == 0
    assert "reads thread 8" in str(e.value)


def test_shared_out_of_bounds_names_the_buffer() -> None:
    k = Kernel("sh_oob", [BufferParam("o", f32, (64,), readonly=False)],
               [Store("s", THREAD_IDX, Const(1.0, f32))],
               grid=(1, 1, 1), block=64, shared=[SharedBuffer("s", f32, 32)])
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": np.zeros(64, np.float32)}, H100)
    assert e.value.kind == "out_of_bounds" and e.value.buffer == "s" and e.value.index == 32
    assert "shared access s[32]" in str(e.value)


def test_two_threads_writing_one_word_is_a_race() -> None:
    k = Kernel("waw", [BufferParam("o", f32, (32,), readonly=False)],
               [Store("s", THREAD_IDX // 2, Const(1.0, f32))],
               grid=(1, 1, 1), block=32, shared=[SharedBuffer("s", f32, 16)])
    with pytest.raises(SimulationError, match="writes the same word as thread") as e:
        simulate(k, {"o": np.zeros(32, np.float32)}, H100)
    assert e.value.kind == "race" and e.value.buffer == "s" and e.value.index == 0


def test_checks_off_still_refuse_launch_but_skip_bounds() -> None:
    from test_cpu_sim import pointwise_add

    n = 1000
    k = pointwise_add(n, 128, inclusive_mask=True)
    args = {"x": np.ones(n, np.float32), "y": np.ones(n, np.float32),
            "o": np.zeros(n + 0, np.float32), "n": n}
    simulate(k, args, H100, check=False)    # the stray lane's store is dropped, not reported
    assert (args["o"] == 2).all()
    k2 = Kernel("sh_oob", [BufferParam("o", f32, (64,), readonly=False)],
                [Store("s", THREAD_IDX, Const(1.0, f32)), Barrier(),
                 Store("o", THREAD_IDX, Load("s", THREAD_IDX % 32, f32))],
                grid=(1, 1, 1), block=64, shared=[SharedBuffer("s", f32, 32)])
    o = np.zeros(64, np.float32)
    simulate(k2, {"o": o}, H100, check=False)
    assert (o == 1).all()


def test_checks_off_drop_a_stray_uniform_store_and_stray_atomic_lanes() -> None:
    """Unchecked, a store to a uniform index outside its buffer writes nothing, and an
    atomic's lanes outside the buffer add nothing (global and shared): none of them lands
    on the buffer's first or last element. Checked, each is an out_of_bounds fault."""
    k = Kernel("oob_uniform", [BufferParam("o", f32, (64,), readonly=False)],
               [Store("o", Const(70, i32), Const(5.0, f32)),
                AtomicAdd("o", THREAD_IDX + 60, Const(1.0, f32))],
               grid=(1, 1, 1), block=8)
    o = np.zeros(64, np.float32)
    simulate(k, {"o": o}, H100, check=False)
    want = np.zeros(64, np.float32)
    want[60:64] = 1.0   # lanes 0-3 in range, lanes 4-7 (indices 64-67) dropped
    np.testing.assert_array_equal(o, want)
    with pytest.raises(SimulationError) as e:
        simulate(k, {"o": np.zeros(64, np.float32)}, H100)
    assert e.value.kind == "out_of_bounds" and e.value.index == 70
    ks = Kernel("oob_atomic_s", [BufferParam("o", f32, (64,), readonly=False)],
                [Store("s", THREAD_IDX, Const(0.0, f32)), Barrier(),
                 AtomicAdd("s", THREAD_IDX + 28, Const(1.0, f32)), Barrier(),
                 Store("o", THREAD_IDX, Load("s", THREAD_IDX, f32))],
                grid=(1, 1, 1), block=32, shared=[SharedBuffer("s", f32, 32)])
    o = np.zeros(64, np.float32)
    simulate(ks, {"o": o}, H100, check=False)
    want = np.zeros(64, np.float32)
    want[28:32] = 1.0   # lanes 0-3 add into s[28..31]; lanes 4-31 are past s
    np.testing.assert_array_equal(o, want)
    with pytest.raises(SimulationError) as e:
        simulate(ks, {"o": np.zeros(64, np.float32)}, H100)
    assert e.value.kind == "out_of_bounds" and e.value.buffer == "s"


def test_race_of_a_block_that_left_its_loop_early_is_still_caught() -> None:
    """A loop whose trip count differs per block: its barrier in block 1's extra trip is
    reached by block 1 only. Block 0 left the loop with words written since its last
    barrier; its read of a neighbour's word after the loop is a race, which the partial
    barrier must not forget (the simulator keeps 'written since the barrier' per block)."""
    kv, v = Var("k", i32), Var("v", f32)
    loop = For(kv, Const(0, i32), BLOCK_IDX_X + Const(1, i32), Const(1, i32),
               [Barrier(), If(kv.eq(0), [Store("s", THREAD_IDX, Const(1.0, f32))])])
    read = [Declare(v, Load("s", (THREAD_IDX + Const(1, i32)) % Const(32, i32), f32)),
            Store("o", BLOCK_IDX_X * Const(32, i32) + THREAD_IDX, v)]
    k = Kernel("early_exit", [BufferParam("o", f32, (64,), readonly=False)],
               [loop, *read], grid=(2, 1, 1), block=32, shared=[SharedBuffer("s", f32, 32)])
    with pytest.raises(SimulationError, match="wrote since the last barrier") as e:
        simulate(k, {"o": np.zeros(64, np.float32)}, H100)
    assert e.value.kind == "race" and e.value.block == (0, 0, 0) and e.value.thread == 0
    fixed = Kernel("early_exit_fixed", k.params, [loop, Barrier(), *read], grid=(2, 1, 1),
                   block=32, shared=k.shared)
    simulate(fixed, {"o": np.zeros(64, np.float32)}, H100)   # with the barrier: clean


def _shared_atomics(body: list) -> Kernel:
    return Kernel("atomics", [BufferParam("o", f32, (64,), readonly=False)],
                  [If(THREAD_IDX.eq(0), [Store("s", Const(0, i32), Const(0.0, f32))]),
                   Barrier(), *body],
                  grid=(2, 1, 1), block=32, shared=[SharedBuffer("s", f32, 4)])


ADD = AtomicAdd("s", Const(0, i32), Const(1.0, f32))
READ = Store("o", BLOCK_IDX_X * Const(32, i32) + THREAD_IDX, Load("s", Const(0, i32), f32))


def test_shared_atomics_race_with_plain_accesses_not_with_each_other() -> None:
    """A shared atomic add counts as a write by its thread in the race checks, except
    against other threads' atomic adds: 32 threads adding into one word is clean, and so
    is reading the total after a barrier or a thread reading back its own add; a plain
    read (uniform or per lane) or write of the word by another thread in the same barrier
    interval, before or after the adds, is a race. Before, atomics were not tracked at all."""
    o = np.zeros(64, np.float32)
    simulate(_shared_atomics([ADD, Barrier(), READ]), {"o": o}, H100)
    assert (o == 32).all()
    own = [If(THREAD_IDX.eq(3), [ADD, Store("o", BLOCK_IDX_X * Const(32, i32),
                                            Load("s", Const(0, i32), f32))])]
    simulate(_shared_atomics(own), {"o": np.zeros(64, np.float32)}, H100)
    lane_read = Store("o", BLOCK_IDX_X * Const(32, i32) + THREAD_IDX,
                      Load("s", THREAD_IDX % Const(1, i32), f32))
    cases = {
        "uniform read after": ([ADD, READ], "other threads updated atomically"),
        "lane read after": ([ADD, lane_read], "other threads updated atomically"),
        "plain write after": ([ADD, If(THREAD_IDX.eq(5), [Store("s", Const(0, i32),
                                                              Const(2.0, f32))])],
                              "other threads updated atomically"),
        "plain write before": ([If(THREAD_IDX.eq(1), [Store("s", Const(0, i32),
                                                           Const(5.0, f32))]), ADD],
                               "updates atomically a word that thread 1 wrote"),
        "read before": ([lane_read, ADD], "updates atomically a word that other threads read"),
    }
    for name, (body, what) in cases.items():
        with pytest.raises(SimulationError) as e:
            simulate(_shared_atomics(body), {"o": np.zeros(64, np.float32)}, H100)
        assert e.value.kind == "race" and e.value.buffer == "s", name
        assert what in str(e.value), (name, str(e.value))

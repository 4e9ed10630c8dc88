"""The kernel IR verifier and printer."""

from __future__ import annotations

import pytest

from hal.devices.spec import DeviceSpec
from hal.dtypes import bf16, f32, i32, i64
from hal.kernel import KernelError, print_kernel, verify_kernel
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    Assign,
    Barrier,
    Binary,
    BufferParam,
    Comment,
    Const,
    Declare,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LocalBuffer,
    Param,
    ScalarParam,
    Select,
    SharedBuffer,
    Shuffle,
    Stmt,
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
        l2_bytes=1 << 20, dram_bytes=1 << 30, dram_bandwidth=1e12, l2_bandwidth=1e13,
        peak_flops={}, vector_flops={"f32": 1e13}, launch_overhead_s=4e-6,
        supported_dtypes=("f32",))


IDX = Var("i", i32)
PARAMS = [BufferParam("x", f32, (64,)), BufferParam("o", f32, (64,), readonly=False),
          ScalarParam("n", i32)]


def kernel(body: list[Stmt], **kw) -> Kernel:
    kw.setdefault("grid", (1, 1, 1))
    kw.setdefault("block", 64)
    return Kernel("k_test", list(kw.pop("params", PARAMS)), body, **kw)


def good_body() -> list[Stmt]:
    acc, j = Var("acc", f32), Var("j", i32)
    return [
        Comment("a well formed kernel"),
        Declare(IDX, BLOCK_IDX_X * 64 + THREAD_IDX),
        Declare(acc, Const(0.0, f32)),
        For(j, Const(0, i32), Const(4, i32), Const(1, i32),
            [Assign(acc, acc + Unary("exp", Load("x", IDX, f32, mask=IDX.lt(Param("n", i32)),
                                                 other=Const(0.0, f32))))], unroll=True),
        Store("s", THREAD_IDX, acc),
        Barrier(),
        Assign(acc, Shuffle(Load("s", THREAD_IDX, f32), "xor", Const(1, i32), 32)),
        If(IDX.lt(Param("n", i32)), [Store("o", IDX, Select(acc.lt(0.0), acc, acc * 2.0))],
           [Store("t", Const(0, i32), acc)]),
    ]


GOOD_EXTRA = dict(shared=[SharedBuffer("s", f32, 64)], locals=[LocalBuffer("t", f32, 4)])


def test_well_formed_kernel_passes() -> None:
    verify_kernel(kernel(good_body(), **GOOD_EXTRA))
    verify_kernel(kernel(good_body(), **GOOD_EXTRA), make_spec("h100", 32, 227 * 1024, 1024))


def _bad(body: list[Stmt], match: str, **kw) -> KernelError:
    extra = {**GOOD_EXTRA, **kw}
    with pytest.raises(KernelError, match=match) as e:
        verify_kernel(kernel(body, **extra))
    assert "kernel k_test" in str(e.value)
    return e.value


def test_undeclared_variable() -> None:
    err = _bad([Store("o", IDX, Const(1.0, f32))], "'i' is used before it is declared")
    assert "o[i] = 1.0f;" in str(err)      # names the statement


def test_for_binds_its_variable_only_inside() -> None:
    j = Var("j", i32)
    _bad([For(j, Const(0, i32), Const(4, i32), Const(1, i32), []),
          Store("o", j, Const(1.0, f32))], "'j' is used before")


def test_unknown_buffer_and_param() -> None:
    _bad([Store("nope", THREAD_IDX, Const(1.0, f32))], "buffer 'nope'")
    _bad([Store("o", Param("m", i32), Const(1.0, f32))], "'m' is not a parameter")


def test_dtype_rules() -> None:
    _bad([Store("o", THREAD_IDX, Const(1, i32))], "storing i32 into o of f32")
    _bad([Store("o", THREAD_IDX, Binary("add", Const(1.0, f32), Const(1.0, bf16)))],
         "operands of add are f32 and bf16")
    _bad([Store("o", THREAD_IDX, Select(Const(1, i32), Const(1.0, f32), Const(0.0, f32)))],
         "select predicate")
    _bad([Store("o", Const(1.0, f32), Const(1.0, f32))], "index of o")
    _bad([Store("o", THREAD_IDX, Const(1.0, f32), mask=Const(1, i32))], "mask of the store")
    _bad([Store("o", THREAD_IDX, Load("x", THREAD_IDX, bf16))], "typed bf16")
    _bad([Declare(Var("v", f32), Const(1, i32))], "initial value is i32")


def test_ops_must_be_registered_elementwise() -> None:
    _bad([Store("o", THREAD_IDX, Unary("frobnicate", Const(1.0, f32)))], "unknown op")
    _bad([Store("o", THREAD_IDX, Binary("cast", Const(1.0, f32), Const(1.0, f32)))],
         "no scalar definition")


def test_shuffle_width() -> None:
    for w in (3, 64):
        _bad([Store("o", THREAD_IDX, Shuffle(Const(1.0, f32), "xor", Const(1, i32), w))],
             "power of two <= the warp size 32")


def test_barrier_under_thread_condition() -> None:
    body: list[Stmt] = [If(THREAD_IDX.lt(16), [Barrier()])]
    _bad(body, "Barrier inside a branch on a thread-dependent condition")
    verify_kernel(kernel(body), strict_barriers=False)
    verify_kernel(kernel([If(BLOCK_IDX_X.lt(16), [Barrier()])]))   # block-uniform is fine


def test_store_to_readonly_and_loop_var_assignment() -> None:
    _bad([Store("x", THREAD_IDX, Const(1.0, f32))], "read-only buffer 'x'")
    j = Var("j", i32)
    _bad([For(j, Const(0, i32), Const(4, i32), Const(1, i32), [Assign(j, j + 1)])],
         "loop variable 'j' is assigned")
    _bad([For(j, Const(0, i32), Const(4, i32), Const(0, i32), [])], "must be positive")
    _bad([For(j, Const(0, i64), Const(4, i32), Const(1, i32), [])], "loop start is i64")


def test_spec_limits() -> None:
    k = kernel(good_body(), **GOOD_EXTRA)
    with pytest.raises(KernelError, match="warp size 32, mi300x has 64"):
        verify_kernel(k, make_spec("mi300x", 64, 64 * 1024, 1024))
    big = kernel([], shared=[SharedBuffer("s", f32, 20 * 1024)])
    with pytest.raises(KernelError, match="needs 80 KiB shared memory, npu allows 32 KiB"):
        verify_kernel(big, make_spec("npu", 32, 32 * 1024, 256))
    with pytest.raises(KernelError, match="block of 512 threads"):
        verify_kernel(kernel([], block=512), make_spec("npu", 32, 32 * 1024, 256))


def test_duplicate_names() -> None:
    with pytest.raises(KernelError, match="'x' is used by two"):
        verify_kernel(kernel([], shared=[SharedBuffer("x", f32, 4)]))


def test_printer_is_readable() -> None:
    text = print_kernel(kernel(good_body(), **GOOD_EXTRA))
    assert text.splitlines()[0].startswith("// kernel k_test: grid=(1, 1, 1) block=64 warp=32")
    assert "__global__ void k_test(const f32* x /* shape [64] */, f32* o" in text
    assert "  __shared__ f32 s[64];" in text and "  f32 t[4];  // per thread" in text
    assert "  #pragma unroll\n  for (i32 j = 0; j < 4; j += 1) {" in text
    assert "    acc = (acc + exp(((i < n) ? x[i] : 0.0f)));" in text
    assert "  __syncthreads();" in text
    assert "shfl_xor(s[threadIdx.x], 1, width=32)" in text
    assert "  } else {\n    t[0] = acc;\n  }" in text
    assert str(kernel(good_body(), **GOOD_EXTRA)) == text
    assert text.endswith("}")


def test_printer_special_constants() -> None:
    from hal.kernel.printer import format_expr

    e: Expr = Const(float("inf"), f32)
    assert format_expr(e) == "INFINITY"
    assert format_expr(Const(float("-inf"), bf16)) == "-INFINITY"
    assert format_expr(Const(True, Const(True, i32).dtype)) == "1"

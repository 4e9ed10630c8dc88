"""CUDA for Hopper's asynchronous nodes (hal.kernel.ir_async): inline PTX helpers and the
renderer rules that call them (`HopperRendering`, mixed into CudaRenderer).

PTX ISA sources: 9.7.15 (wgmma.fence / wgmma.mma_async / wgmma.commit_group /
wgmma.wait_group, the matrix descriptor of 9.7.15.5.1.2.2), 9.7.9.25 cp.async.bulk.tensor,
9.7.13.15 mbarrier (init, arrive.expect_tx, try_wait.parity), fence.proxy.async, setmaxnreg.
A tensor map is a 128-byte, 64-byte aligned kernel parameter (`const __grid_constant__
hal_tensor_map`), encoded on the host by cuTensorMapEncodeTiled
(backends/cuda/tensor_maps.py). The accumulators of a wgmma are "+f" operands (N/2 f32
registers); after wgmma.wait_group every accumulator register is fenced (an empty asm that
reads and writes it) so the compiler cannot move its reads above the wait.
"""

from __future__ import annotations

from hal.kernel import ir_async as ira
from hal.render.cstyle import ident

PREAMBLE = """struct alignas(64) hal_tensor_map { unsigned long long opaque[16]; };
HAL_FN unsigned hal_smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}"""

_SW_CODE = {0: 0, 128: 1, 64: 2, 32: 3}


def _wgmma_fn(name: str, shape: str, ptx: str, n: int, immediates: str) -> tuple[str, str]:
    """One wgmma.mma_async helper: D (n/2 f32 per thread) += A(desc) x B(desc); scale-d is
    the predicate, `immediates` the instruction's trailing scale/transpose operands."""
    regs = n // 2
    dlist = ", ".join(f"%{i}" for i in range(regs))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
    text = (f"HAL_FN void {name}(float* d, unsigned long long a, unsigned long long b) {{\n"
            f'  asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{regs + 2}, 0;\\n"\n'
            f'               "wgmma.mma_async.sync.aligned.{shape}.f32.{ptx}.{ptx} "\n'
            f'               "{{{dlist}}}, %{regs}, %{regs + 1}, p, {immediates};\\n}}\\n"\n'
            f'               : {outs}\n'
            f'               : "l"(a), "l"(b), "r"(1));\n}}\n')
    return name, text


def _wgmma(n: int, ptx: str, trans_b: bool) -> tuple[str, str]:
    """16-bit operands: k16, A K-major, B K-major or transposed (tnspB immediate)."""
    return _wgmma_fn(f"hal_wgmma_m64n{n}k16_{ptx}{'_tb' if trans_b else ''}", f"m64n{n}k16",
                     ptx, n, f"1, 1, 0, {1 if trans_b else 0}")


def _wgmma_rs(n: int, ptx: str, trans_b: bool) -> tuple[str, str]:
    """16-bit A from registers (Wgmma.a_regs): A's fragment as 4 x .b32 (two elements each,
    the lower-numbered in the low half), B through its descriptor; no transpose-A immediate
    in this form (PTX ISA 9.7.15.5.2, wgmma.mma_async with register A)."""
    name = f"hal_wgmma_m64n{n}k16_{ptx}_rs{'_tb' if trans_b else ''}"
    t = "__nv_bfloat16" if ptx == "bf16" else "__half"
    regs = n // 2
    dlist = ", ".join(f"%{i}" for i in range(regs))
    alist = ", ".join(f"%{regs + i}" for i in range(4))
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
    text = (f"HAL_FN void {name}(float* d, const {t}* a, unsigned long long b) {{\n"
            f"  const unsigned* A = reinterpret_cast<const unsigned*>(a);\n"
            f'  asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{regs + 5}, 0;\\n"\n'
            f'               "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptx}.{ptx} "\n'
            f'               "{{{dlist}}}, {{{alist}}}, %{regs + 4}, p, 1, 1, '
            f'{1 if trans_b else 0};\\n}}\\n"\n'
            f'               : {outs}\n'
            f'               : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "l"(b), "r"(1));\n}}\n')
    return name, text


def _wgmma8(n: int, ptx: str) -> tuple[str, str]:
    """8-bit operands: k32, both operands K-major (no transpose immediates)."""
    return _wgmma_fn(f"hal_wgmma_m64n{n}k32_{ptx}", f"m64n{n}k32", ptx, n, "1, 1")


def _fence_regs(words: int) -> tuple[str, str]:
    """Pins a register-A fragment's packed 32-bit words before wgmma.fence, so the packing
    of its 16-bit elements happens before the fence, not between the wgmmas (where ptxas
    would inject a warpgroup.arrive per wgmma: C7519)."""
    name = f"hal_wgmma_fence_regs_{words}"
    body = "\n".join(f'  asm volatile("" : "+r"(A[{i}]) :: "memory");' for i in range(words))
    return name, (f"HAL_FN void {name}(void* a) {{\n"
                  f"  unsigned* A = reinterpret_cast<unsigned*>(a);\n{body}\n}}\n")


def _fence_acc(n: int) -> tuple[str, str]:
    name = f"hal_wgmma_fence_acc_{n}"
    body = "\n".join(f'  asm volatile("" : "+f"(d[{i}]) :: "memory");' for i in range(n))
    return name, f"HAL_FN void {name}(float* d) {{\n{body}\n}}\n"


HOPPER_HELPERS: dict[str, str] = {
    "hal_wgmma_desc": (
        "HAL_FN long long hal_wgmma_desc(const void* smem, unsigned lbo, unsigned sbo,\n"
        "                                unsigned long long swizzle) {\n"
        "  unsigned long long a = hal_smem_u32(smem);\n"
        "  return (long long)(((a & 0x3FFFFull) >> 4) | ((unsigned long long)((lbo >> 4) "
        "& 0x3FFF) << 16)\n"
        "      | ((unsigned long long)((sbo >> 4) & 0x3FFF) << 32) | (swizzle << 62));\n}\n"),
    "hal_wgmma_fence": ('HAL_FN void hal_wgmma_fence() '
                        '{ asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory"); }\n'),
    "hal_wgmma_commit": ('HAL_FN void hal_wgmma_commit() '
                         '{ asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory"); }\n'),
    "hal_wgmma_wait": ('template <int N> HAL_FN void hal_wgmma_wait() '
                       '{ asm volatile("wgmma.wait_group.sync.aligned %0;\\n" :: "n"(N) : '
                       '"memory"); }\n'),
    "hal_mbarrier_init": (
        "HAL_FN void hal_mbarrier_init(void* bar, unsigned count) {\n"
        '  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\\n" :: '
        '"r"(hal_smem_u32(bar)), "r"(count) : "memory");\n}\n'),
    "hal_mbarrier_arrive": (
        "HAL_FN void hal_mbarrier_arrive(void* bar) {\n"
        '  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\\n" :: '
        '"r"(hal_smem_u32(bar)) : "memory");\n}\n'),
    "hal_mbarrier_arrive_expect_tx": (
        "HAL_FN void hal_mbarrier_arrive_expect_tx(void* bar, unsigned bytes) {\n"
        '  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\\n" :: '
        '"r"(hal_smem_u32(bar)), "r"(bytes) : "memory");\n}\n'),
    "hal_mbarrier_wait": (
        "HAL_FN void hal_mbarrier_wait(void* bar, unsigned parity) {\n"
        "  unsigned s = hal_smem_u32(bar), done = 0;\n"
        "  while (!done) {\n"
        '    asm volatile("{\\n.reg .pred p;\\n"\n'
        '                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\\n"\n'
        '                 "selp.u32 %0, 1, 0, p;\\n}\\n"\n'
        '                 : "=r"(done) : "r"(s), "r"(parity) : "memory");\n'
        "  }\n}\n"),
    "hal_fence_proxy_async": ('HAL_FN void hal_fence_proxy_async() '
                              '{ asm volatile("fence.proxy.async.shared::cta;\\n" ::: '
                              '"memory"); }\n'),
    "hal_setmaxnreg_inc": ('template <int N> HAL_FN void hal_setmaxnreg_inc() '
                           '{ asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\\n" :: "n"(N)); }\n'),
    "hal_setmaxnreg_dec": ('template <int N> HAL_FN void hal_setmaxnreg_dec() '
                           '{ asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\\n" :: "n"(N)); }\n'),
    **{f"hal_tma_load_{r}d": (
        f"HAL_FN void hal_tma_load_{r}d(void* dst, const hal_tensor_map* map, void* bar, "
        + ", ".join(f"int c{i}" for i in range(r)) + ") {\n"
        f'  asm volatile("cp.async.bulk.tensor.{r}d.shared::cluster.global.tile.'
        f'mbarrier::complete_tx::bytes [%0], [%1, {{'
        + ", ".join(f"%{3 + i}" for i in range(r)) + '}], [%2];\\n"\n'
        '               :: "r"(hal_smem_u32(dst)), "l"(reinterpret_cast<unsigned long long>'
        '(map)), "r"(hal_smem_u32(bar))'
        + "".join(f', "r"(c{i})' for i in range(r)) + ' : "memory");\n}\n')
        for r in range(1, 6)},
    **dict(_wgmma(n, p, t) for n in range(8, 257, 8) for p in ("bf16", "f16")
           for t in (False, True)),
    **dict(_wgmma8(n, p) for n in range(8, 257, 8) for p in ("e4m3", "e5m2")),
    **dict(_wgmma_rs(n, p, t) for n in range(8, 257, 8) for p in ("bf16", "f16")
           for t in (False, True)),
    **dict(_fence_acc(n) for n in range(4, 129, 4)),
    **dict(_fence_regs(w) for w in range(4, 129, 4)),
}


class HopperRendering:
    """Renderer rules for hal.kernel.ir_async nodes (a CStyleRenderer mixin)."""

    def _e_SmemDesc(self, e: ira.SmemDesc) -> str:
        fn = self._matrix("hal_wgmma_desc", "a wgmma descriptor")
        return (f"{fn}(&{ident(e.buffer)}[{self.expr(e.offset)}], {e.lbo}u, {e.sbo}u, "
                f"{_SW_CODE[e.swizzle]}ull)")

    def _s_Wgmma(self, s: ira.Wgmma, pad: str) -> list[str]:
        ptx = {"bf16": "bf16", "f16": "f16", "f8e4m3fn": "e4m3", "f8e5m2": "e5m2"}[s.atype]
        k = 32 if s.atype.startswith("f8") else 16
        if s.a_regs is not None:   # A's fragment from the threads' registers
            fn = self._matrix(f"hal_wgmma_m64n{s.n}k16_{ptx}_rs{'_tb' if s.trans_b else ''}",
                              f"wgmma m64n{s.n}k16 {s.atype} (A from registers)")
            return [f"{pad}{fn}(&{ident(s.acc)}[{s.acc_off}], &{ident(s.a_regs)}[{s.a_off}], "
                    f"(unsigned long long)({self.expr(s.b_desc)}));"]
        fn = self._matrix(f"hal_wgmma_m64n{s.n}k{k}_{ptx}{'_tb' if s.trans_b else ''}",
                          f"wgmma m64n{s.n}k{k} {s.atype}")
        return [f"{pad}{fn}(&{ident(s.acc)}[{s.acc_off}], "
                f"(unsigned long long)({self.expr(s.a_desc)}), "
                f"(unsigned long long)({self.expr(s.b_desc)}));"]

    def _s_WgmmaFence(self, s, pad: str) -> list[str]:
        out = []
        for name in self._fence_operands(s):   # register-A fragments of this group
            size = self._kernel_obj.buffer(name).size * self._kernel_obj.buffer(
                name).dtype.itemsize // 4
            fn = self._matrix(f"hal_wgmma_fence_regs_{size}", "register-A fence")
            out.append(f"{pad}{fn}({ident(name)});")
        return [*out, f"{pad}{self._matrix('hal_wgmma_fence', 'wgmma.fence')}();"]

    def _fence_operands(self, fence) -> list[str]:
        """The register-A buffers of the wgmmas between `fence` and the next commit_group
        in the same statement list."""
        from hal.kernel.ir import stmt_bodies

        cache = getattr(self, "_wg_fence_regs", None)
        if cache is None or cache[0] is not self._kernel_obj:
            found: dict[int, list[str]] = {}

            def walk(body) -> None:
                for i, x in enumerate(body):
                    if isinstance(x, ira.WgmmaFence):
                        regs: list[str] = []
                        for y in body[i + 1:]:
                            if isinstance(y, ira.WgmmaCommit):
                                break
                            if isinstance(y, ira.Wgmma) and y.a_regs and y.a_regs not in regs:
                                regs.append(y.a_regs)
                        found[id(x)] = regs
                    for b in stmt_bodies(x):
                        walk(b)
            walk(self._kernel_obj.body)
            cache = self._wg_fence_regs = (self._kernel_obj, found)
        return cache[1].get(id(fence), [])

    def _s_WgmmaCommit(self, s, pad: str) -> list[str]:
        return [f"{pad}{self._matrix('hal_wgmma_commit', 'wgmma.commit_group')}();"]

    def _s_WgmmaWait(self, s: ira.WgmmaWait, pad: str) -> list[str]:
        out = [f"{pad}{self._matrix('hal_wgmma_wait', 'wgmma.wait_group')}<{s.pending}>();"]
        from hal.kernel.ir import walk_stmts

        accs = {w.acc: w.n // 2 for w in walk_stmts(self._kernel_obj.body)
                if isinstance(w, ira.Wgmma)}
        for name in sorted(accs):   # the accumulators are read only after the wait
            size = self._kernel_obj.buffer(name).size
            fn = self._matrix(f"hal_wgmma_fence_acc_{size}", "accumulator fence")
            out.append(f"{pad}{fn}({ident(name)});")
        return out

    def _s_MbarrierInit(self, s: ira.MbarrierInit, pad: str) -> list[str]:
        fn = self._matrix("hal_mbarrier_init", "mbarrier.init")
        return [f"{pad}{fn}(&{ident(s.bar)}[{self.expr(s.index)}], {s.count}u);"]

    def _s_MbarrierArrive(self, s: ira.MbarrierArrive, pad: str) -> list[str]:
        bar = f"&{ident(s.bar)}[{self.expr(s.index)}]"
        if s.tx_bytes:
            fn = self._matrix("hal_mbarrier_arrive_expect_tx", "mbarrier.arrive.expect_tx")
            return [f"{pad}{fn}({bar}, {s.tx_bytes}u);"]
        return [f"{pad}{self._matrix('hal_mbarrier_arrive', 'mbarrier.arrive')}({bar});"]

    def _s_MbarrierWait(self, s: ira.MbarrierWait, pad: str) -> list[str]:
        fn = self._matrix("hal_mbarrier_wait", "mbarrier.try_wait")
        return [f"{pad}{fn}(&{ident(s.bar)}[{self.expr(s.index)}], "
                f"(unsigned)({self.expr(s.parity)}));"]

    def _s_TmaLoad(self, s: ira.TmaLoad, pad: str) -> list[str]:
        fn = self._matrix(f"hal_tma_load_{len(s.coords)}d", "cp.async.bulk.tensor")
        coords = ", ".join(f"(int)({self.expr(c)})" for c in s.coords)
        return [f"{pad}{fn}(&{ident(s.dst)}[{self.expr(s.dst_index)}], "
                f"&{ident(s.tmap)}, &{ident(s.bar)}[{self.expr(s.bar_index)}], "
                f"{coords});"]

    def _s_FenceProxyAsync(self, s, pad: str) -> list[str]:
        return [f"{pad}{self._matrix('hal_fence_proxy_async', 'fence.proxy.async')}();"]

    def _s_SetMaxNReg(self, s: ira.SetMaxNReg, pad: str) -> list[str]:
        fn = self._matrix(f"hal_setmaxnreg_{'inc' if s.increase else 'dec'}", "setmaxnreg")
        return [f"{pad}{fn}<{s.count}>();"]

    def _tensor_map_param(self, tm) -> str:
        return f"const __grid_constant__ hal_tensor_map {ident(tm.name)}"


__all__ = ["HOPPER_HELPERS", "HopperRendering", "PREAMBLE"]

"""The vendor-neutral GPU graph runner: `GpuRunner`, `PreparedGraph`, `GpuBackend`.

CUDA and ROCm run a graph the same way; only the driver calls differ. So the whole
path lives here once, parametrised by a small `GpuDriver` per vendor (hal.gpu_driver;
hal.backends.cuda.driver.CudaDriver, hal.backends.rocm.driver.HipDriver):

    plan (fusion) -> lower each group -> render ALL kernels as one translation unit with
    the backend's renderer -> compile once (NVRTC / hipRTC, cached on disk) -> load the
    module -> one device buffer per graph value (inputs and constants copied in, a lone
    reshape aliases its input, scratch per group) -> launch every kernel in order with
    its arguments packed in the kernel's parameter order -> synchronize -> copy the
    outputs out -> parity report against hal.reference (cpu_sim's parity_report).

Arguments are packed (hal.gpu_args) as CUDA's cuLaunchKernel and HIP's
hipModuleLaunchKernel both want them: a `void*[n]` whose i-th entry points at the i-th
argument's bytes (a device pointer for a buffer, a C scalar of the ScalarParam's dtype;
16- and 8-bit floats as their bit patterns). Dynamic shared memory is passed when the renderer
chose it (`renderer.dynamic_shared_bytes`), and the driver raises the function's
limit first. Scalars come from `kernel.meta.scalars` (param -> value) or the
`scalars=` option.

Torch (or any) device tensors are used zero-copy (hal.gpu_tensors): an input or `out=`
tensor whose `__dlpack_device__` is the driver's device type and index is passed by its pointer
(`__cuda_array_interface__`, or `.data_ptr()` where torch refuses the interface: fp8,
requires_grad); it must be contiguous and of the value's dtype. The driver queues its
work on the framework's current stream (CudaDriver), so it is ordered with torch's.

Errors. A kernel fault is asynchronous: it shows at the next synchronisation, without a
kernel name. `HAL_SYNC_EACH=1` (or `GpuRunner(sync_each=True)`) synchronises after every
launch and names the kernel, its group, grid and block. Cleanup after a failure (freeing
buffers, which itself fails after a sticky fault) never replaces the first error: its
failures are attached to that error as notes.

`PreparedGraph` (from `GpuRunner.prepare`, or `GpuBackend.prepare_graph`) is the
compiled, resident graph; calling it only launches the kernels (what hal bench times).
"""

from __future__ import annotations

import abc
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.backend import Backend, Buffer, CompiledKernel, RunResult
from hal.dtypes import DType, cast
from hal.dtypes import dtype as as_dtype
from hal.errors import DeviceError, UnsupportedError

# Launch arguments, device tensors and the driver interface have their own modules; their
# names are importable from here too (tests import them from hal.gpu_runner).
from hal.gpu_args import ARG_CTYPES, PackedArgs, pack_args, scalar_arg
from hal.gpu_driver import GpuDriver
from hal.gpu_tensors import DLPACK_CUDA, DLPACK_ROCM, device_pointer, torch_current_stream
from hal.kernel.ir import BufferParam, Kernel
from hal.render.cstyle import kernel_symbol

if TYPE_CHECKING:
    from hal.devices.spec import DeviceSpec
    from hal.fusion.arena import ArenaLayout
    from hal.ir.graph import Graph
    from hal.render.cstyle import CStyleRenderer


# --------------------------------------------------------------------------- a prepared graph


@dataclass
class Launch:
    kernel: Kernel
    group: str
    kind: str
    function: Any
    args: PackedArgs
    shared_bytes: int          # dynamic shared memory passed at launch
    lower_s: float = 0.0


@dataclass
class PreparedGraph:
    """A compiled graph with resident buffers. Calling it launches every kernel (no copies)."""

    driver: GpuDriver
    graph: Graph
    prim: Graph
    launches: list[Launch]
    pointers: dict[str, int]                    # graph value -> device address
    outputs: dict[str, tuple[str, DType, tuple[int, ...]]]  # output -> (value, dtype, shape)
    device_outputs: dict[str, Any] = field(default_factory=dict)  # output -> user tensor
    owned: list[int] = field(default_factory=list)
    compile_s: float = 0.0
    source: str = ""
    sync_each: bool = False                     # synchronise after each launch, name faults
    arena: ArenaLayout | None = None            # where intermediates and scratch share bytes

    def __call__(self) -> None:
        for ln in self.launches:
            self._launch(ln)

    def _launch(self, ln: Launch) -> None:
        """One launch; a refusal, or (with sync_each) a fault, names the kernel."""
        d = self.driver
        try:
            d.launch(ln.function, ln.kernel.grid, ln.kernel.block, ln.shared_bytes,
                     ln.args.address, **_cluster_kw(ln.kernel))
            if self.sync_each:
                d.synchronize()
        except DeviceError as e:
            if type(e) is not DeviceError:  # a subclass (a simulator fault) names it already
                raise
            raise DeviceError(f"{d.name}: kernel {ln.kernel.name} (group {ln.group}, "
                              f"grid {tuple(ln.kernel.grid)}, block {ln.kernel.block}, "
                              f"dynamic shared {ln.shared_bytes} B): {e.message}",
                              hint=e.hint) from e

    def run_timed(self) -> list[float]:
        """Launch every kernel between two events; seconds per kernel (synchronizes)."""
        d = self.driver
        events = [d.event() for _ in range(len(self.launches) + 1)]
        try:
            d.record(events[0])
            for ln, ev in zip(self.launches, events[1:], strict=True):
                self._launch(ln)
                d.record(ev)
            synchronize(d, self.sync_each)
            return [d.elapsed_s(a, b) for a, b in zip(events, events[1:], strict=False)]
        finally:
            for ev in events:
                try:
                    d.release_event(ev)
                except DeviceError:  # after a fault every call fails; keep the first error
                    pass

    def read_outputs(self) -> dict[str, np.ndarray]:
        """Host copies of every output (device `out=` tensors are copied too)."""
        res = {}
        for name, (value, d, shape) in self.outputs.items():
            host = np.empty(shape, d.np_dtype)
            self.driver.copy_out(host, self.pointers[value])
            res[name] = host
        return res

    def free(self, *, after: BaseException | None = None) -> None:
        """Free every owned buffer. Each is tried even when one fails; with `after` (the
        error being handled) failures become notes on it, else the first one is raised."""
        failures: list[BaseException] = []
        for ptr in self.owned:
            try:
                self.driver.free(ptr)
            except Exception as e:  # noqa: BLE001 - collected, reported below
                failures.append(e)
        self.owned.clear()
        if not failures:
            return
        if after is not None:
            after.add_note(f"while cleaning up, {len(failures)} free(s) failed too, first: "
                           f"{failures[0]}")
            return
        raise failures[0]


def synchronize(driver: GpuDriver, sync_each: bool) -> None:
    """driver.synchronize(); a failure says how to find the kernel that faulted."""
    try:
        driver.synchronize()
    except DeviceError as e:
        if sync_each:
            raise
        raise DeviceError(e.message, hint="a kernel faulted; rerun with HAL_SYNC_EACH=1 to "
                                          "synchronise after each launch and name it") from e


def sync_each_from_env() -> bool:
    """HAL_SYNC_EACH=1 (read when a GpuRunner is made, not at import)."""
    return os.environ.get("HAL_SYNC_EACH", "0").strip().lower() in ("1", "true", "yes", "on")


class GpuRunner:
    """Runs graphs through one driver and one renderer (CudaRenderer, HipRenderer)."""

    def __init__(self, driver: GpuDriver, renderer: CStyleRenderer,
                 sync_each: bool | None = None):
        self.driver = driver
        self.renderer = renderer
        self.sync_each = sync_each_from_env() if sync_each is None else sync_each

    def prepare(self, graph: Graph, inputs: Mapping[str, Any], spec: DeviceSpec, *,
                groups: Sequence | None = None, fuse: bool = True,
                out: Mapping[str, Any] | None = None,
                scalars: Mapping[str, Any] | None = None) -> PreparedGraph:
        from hal.fusion.group import is_alias_group
        from hal.fusion.prepare import groups_to_run
        from hal.lowering import lower_group
        from hal.render.cstyle import unique_names

        prim, groups = groups_to_run(graph, spec, groups=groups, fuse=fuse, who=self.driver.name)
        # lower everything first: one translation unit, one compile for the graph
        lowered: list[tuple[Any, list[Kernel], float]] = []
        for g in groups:
            if is_alias_group(g):
                lowered.append((g, [], 0.0))
                continue
            t0 = time.perf_counter()
            ks = lower_group(g, spec)
            lowered.append((g, ks, time.perf_counter() - t0))
        flat = [k for _, ks, _ in lowered for k in ks]
        renamed = unique_names(flat, lambda i: f"k{i}_")
        source = self.renderer.render_module(renamed, spec)
        d = self.driver
        t0 = time.perf_counter()
        module = d.load_module(d.compile(source, d.arch(spec), name=graph.name or "graph"))
        compile_s = time.perf_counter() - t0

        pg = PreparedGraph(d, graph, prim, [], {}, {}, compile_s=compile_s, source=source,
                           sync_each=self.sync_each)
        try:
            self._bind_values(pg, prim, graph, inputs, out or {})
            by_group = _kernels_by_group(lowered, renamed)
            arena_ptr = self._place_in_arena(pg, prim, by_group)
            for g, ks, lower_s in by_group:
                if not ks and is_alias_group(g):  # a lone reshape: a view of its input
                    n = g.nodes[0]
                    pg.pointers.setdefault(n.outputs[0].name, pg.pointers[n.inputs[0].name])
                    continue
                # (a group the lowering gives no kernel, e.g. a broadcast constant that every
                # consumer recomputes, still gets zeroed buffers for its values, as on cpu_sim)
                for v in (o for n in g.nodes for o in n.outputs):
                    if v.name not in pg.pointers:
                        pg.pointers[v.name] = self._alloc(pg, v.type.nbytes)
                for k in ks:
                    ptrs = {}
                    for param, value in k.meta.buffers.items():
                        if param in k.meta.scratch:
                            ptrs[param] = arena_ptr[_scratch_key(g, param)]
                        else:
                            ptrs[param] = pg.pointers[value]
                    fn = d.get_function(module, k)
                    dyn = self.renderer.dynamic_shared_bytes(k)
                    if dyn:
                        d.set_dynamic_shared(fn, dyn)
                    maps = {tm.name: d.encode_tensor_map(tm, ptrs[tm.buffer])
                            for tm in k.tensor_maps}
                    pg.launches.append(Launch(k, g.name, g.kind, fn,
                                              pack_args(k, ptrs, scalars, maps), dyn, lower_s))
        except BaseException as e:
            pg.free(after=e)
            raise
        return pg

    def _place_in_arena(self, pg: PreparedGraph, prim: Graph,
                        by_group: list[tuple[Any, list[Kernel], float]]) -> dict[str, int]:
        """One device allocation for every intermediate, group-internal value and scratch
        buffer, shared between tensors whose lives do not overlap (hal.fusion.arena over
        hal.fusion.memory's liveness model). Sets their entries in `pg.pointers`; returns
        the scratch buffers' addresses by `_scratch_key`. Graph inputs, constants and
        outputs keep buffers of their own (they live for the whole run)."""
        from hal.fusion.arena import ArenaRequest, arena_layout
        from hal.fusion.memory import live_spans

        spans = live_spans(prim, [g for g, _, _ in by_group])
        requests: list[ArenaRequest] = []
        for i, (g, ks, _) in enumerate(by_group):
            if not ks:  # a view, or a kernel-less group (zeroed buffers of its own)
                continue
            for v in (o for n in g.nodes for o in n.outputs):
                sp = spans.get(v.name)
                if v.name in pg.pointers or (sp is not None and sp.role != "intermediate"):
                    continue
                first, last = (sp.first, sp.last) if sp is not None else (i, i)
                requests.append(ArenaRequest(v.name, v.type.nbytes, first, last))
            for k in ks:
                for param, (dt, numel) in k.meta.scratch.items():
                    key = _scratch_key(g, param)
                    if all(r.name != key for r in requests):
                        requests.append(ArenaRequest(key, numel * as_dtype(dt).itemsize, i, i))
        layout = arena_layout(requests)
        pg.arena = layout
        if not requests:
            return {}
        base = self._alloc(pg, layout.nbytes)
        at = {b.request.name: base + b.offset for b in layout.blocks}
        for name, ptr in at.items():
            if not name.startswith(_SCRATCH):
                pg.pointers[name] = ptr
        return at

    def _alloc(self, pg: PreparedGraph, nbytes: int) -> int:
        ptr = self.driver.alloc(max(nbytes, 1))
        pg.owned.append(ptr)
        self.driver.memset_zero(ptr, max(nbytes, 1))
        return ptr

    def _bind_values(self, pg: PreparedGraph, prim: Graph, graph: Graph,
                     inputs: Mapping[str, Any], out: Mapping[str, Any]) -> None:
        d = self.driver
        for v in prim.inputs:
            if v.name not in inputs:
                raise UnsupportedError(f"{d.name}: missing input %{v.name}")
            x = inputs[v.name]
            ptr = device_pointer(x, d, v.dtype, v.type.numel)
            if ptr is None:
                host = np.ascontiguousarray(cast(np.asarray(x), v.dtype)).reshape(-1)
                ptr = self._alloc(pg, host.nbytes)
                d.copy_in(ptr, host)
            pg.pointers[v.name] = ptr
        for name, arr in prim.materialize_constants().items():
            host = np.ascontiguousarray(arr).reshape(-1)
            pg.pointers[name] = self._alloc(pg, host.nbytes)
            d.copy_in(pg.pointers[name], host)
        for orig, new in zip(graph.outputs, prim.outputs, strict=True):
            pg.outputs[orig.name] = (new.name, new.dtype, tuple(new.shape))
            if orig.name in out and new.name not in pg.pointers:
                ptr = device_pointer(out[orig.name], d, new.dtype, new.type.numel)
                if ptr is None:
                    raise DeviceError(f"{d.name}: out[{orig.name!r}] is not a device tensor")
                pg.pointers[new.name] = ptr
                pg.device_outputs[orig.name] = out[orig.name]

    def run(self, graph: Graph, inputs: Mapping[str, Any], spec: DeviceSpec, *,
            groups: Sequence | None = None, fuse: bool = True, compare_reference: bool = True,
            out: Mapping[str, Any] | None = None, scalars: Mapping[str, Any] | None = None,
            **_ignored: Any) -> RunResult:
        """One run: prepare, launch with per-kernel events, copy out, parity report."""
        pg = self.prepare(graph, inputs, spec, groups=groups, fuse=fuse, out=out,
                          scalars=scalars)
        try:
            times = pg.run_timed()
            outputs = pg.read_outputs()
        except BaseException as e:
            pg.free(after=e)  # a fault makes cuMemFree fail too: keep the fault
            raise
        pg.free()
        stats = [{"kernel": ln.kernel.name, "group": ln.group, "kind": ln.kind,
                  "ops": list(ln.kernel.meta.ops),
                  "plan": ln.kernel.meta.plan.summary() if ln.kernel.meta.plan else {},
                  "stage": ln.kernel.meta.stage,
                  "grid": tuple(ln.kernel.grid), "block": ln.kernel.block,
                  "shared_bytes": ln.kernel.shared_bytes, "dynamic_shared_bytes": ln.shared_bytes,
                  "time_s": t, "lower_s": ln.lower_s}
                 for ln, t in zip(pg.launches, times, strict=True)]
        report: dict[str, Any] = {"compile": {"compiler": self.driver.compiler,
                                              "arch": self.driver.arch(spec),
                                              "kernels": len(pg.launches),
                                              "compile_s": pg.compile_s},
                                  "device_time_s": sum(times)}
        if pg.arena is not None:  # intermediates and scratch in one arena (hal.fusion.arena)
            report["arena"] = {"bytes": pg.arena.nbytes, "tensors": len(pg.arena.blocks),
                               "unshared_bytes": pg.arena.unshared_bytes}
        if compare_reference:
            from hal.backends.cpu_sim.backend import parity_report

            host_inputs = {v.name: _host(inputs[v.name], self.driver, v)
                           for v in pg.prim.inputs}
            report.update(parity_report(graph, pg.prim, host_inputs, outputs))
        result_out: dict[str, Any] = dict(outputs)
        result_out.update(pg.device_outputs)  # the caller's own device tensors, filled in
        return RunResult(result_out, stats, report)


_SCRATCH = "scratch:"


def _scratch_key(g: Any, param: str) -> str:
    """A group's scratch buffer `param` (its kernels share it) in the arena."""
    return f"{_SCRATCH}{g.name}:{param}"


def _kernels_by_group(lowered: list[tuple[Any, list[Kernel], float]],
                      renamed: list[Kernel]) -> list[tuple[Any, list[Kernel], float]]:
    """`lowered` with each group's kernels replaced by their renamed copies (in order)."""
    it = iter(renamed)
    return [(g, [next(it) for _ in ks], lower_s) for g, ks, lower_s in lowered]


def _host(x: Any, driver: GpuDriver, v: Any) -> np.ndarray:
    ptr = device_pointer(x, driver, v.dtype, v.type.numel)
    if ptr is None:
        return np.asarray(x)
    host = np.empty(tuple(v.shape), v.dtype.np_dtype)
    driver.copy_out(host, ptr)
    return host


# --------------------------------------------------------------------------- the backend base


class GpuBackend(Backend):
    """What CudaBackend and RocmBackend share: run_graph, prepare_graph, timing and the
    kernel-level runtime, all through `make_driver()` and `renderer()`."""

    _driver: GpuDriver | None = None

    @abc.abstractmethod
    def make_driver(self) -> GpuDriver: ...

    @abc.abstractmethod
    def renderer(self) -> CStyleRenderer: ...

    def driver(self) -> GpuDriver:
        if self._driver is None:
            why = self.probe()
            if not why:
                raise DeviceError(f"{self.name} backend unavailable: {why.reason}",
                                  hint="`hal backends` lists what runs here")
            self._driver = self.make_driver()
        return self._driver

    def runner(self) -> GpuRunner:
        return GpuRunner(self.driver(), self.renderer())

    def l2_bytes(self) -> int | None:
        """The L2 size the device reports (CUDA: CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)."""
        return self.driver().l2_bytes()

    def _spec(self, spec: DeviceSpec | str | None) -> DeviceSpec:
        from hal.devices.loader import load_spec

        return spec if spec is not None and not isinstance(spec, str) else load_spec(
            spec or self.default_device)

    def run_graph(self, graph: Graph, inputs: Mapping[str, Any],
                  spec: DeviceSpec | str | None = None, *, fuse: bool = True,
                  groups: Sequence | None = None, compare_reference: bool = True,
                  **options: Any) -> RunResult:
        """Options: out (output -> device tensor), scalars. `fuse`, `groups` and
        `compare_reference` are named, so callers that look at the signature (conformance's
        fused-vs-unfused check, its reference-free runs) see that they are taken."""
        return self.runner().run(graph, inputs, self._spec(spec), fuse=fuse, groups=groups,
                                 compare_reference=compare_reference, **options)

    def prepare_graph(self, graph: Graph, inputs: Mapping[str, Any],
                      spec: DeviceSpec | str | None = None, **options: Any) -> PreparedGraph:
        """Compiled kernels and resident buffers; calling the result only launches kernels."""
        return self.runner().prepare(graph, inputs, self._spec(spec), **options)

    def synchronize(self) -> None:
        if self._driver is not None:
            self._driver.synchronize()

    def time(self, fn: Callable[[], Any], repeat: int = 10, warmup: int = 1) -> list[float]:
        """Seconds per call of `fn` between two device events, after `warmup` calls."""
        d = self.driver()
        for _ in range(warmup):
            fn()
        d.synchronize()
        out = []
        for _ in range(repeat):
            a, b = d.event(), d.event()
            d.record(a)
            fn()
            d.record(b)
            d.synchronize()
            out.append(d.elapsed_s(a, b))
            d.release_event(a)
            d.release_event(b)
        return out

    # kernel-level runtime (Backend's interface) over the same driver
    def allocate(self, nbytes: int, dtype: DType | None = None,
                 shape: Sequence[int] = ()) -> Buffer:
        return Buffer(nbytes, dtype, tuple(shape), None, self.driver().alloc(max(nbytes, 1)))

    def copy_in(self, buffer: Buffer, array: np.ndarray) -> None:
        self.driver().copy_in(buffer.handle, np.ascontiguousarray(array))

    def fill_zero(self, buffer: Buffer) -> None:
        """Zero the buffer on the device (a memset queued on the stream; no host copy)."""
        self.driver().memset_zero(buffer.handle, max(buffer.nbytes, 1))

    def free(self, buffer: Buffer) -> None:
        self.driver().free(buffer.handle)

    def copy_out(self, buffer: Buffer) -> np.ndarray:
        if buffer.dtype is None:
            host = np.empty(buffer.nbytes, np.uint8)
        else:
            host = np.empty(buffer.shape or (buffer.nbytes // buffer.dtype.itemsize,),
                            buffer.dtype.np_dtype)
        self.driver().copy_out(host, buffer.handle)
        return host

    def compile(self, kernel: Any, spec: DeviceSpec) -> CompiledKernel:
        """One kernel: render, compile, load; a kernel whose shared memory the renderer made
        dynamic (over the static limit, 48 KiB on CUDA) gets its limit raised here, and
        `launch` passes those bytes, as the graph runner does."""
        d = self.driver()
        renderer = self.renderer()
        source = renderer.render(kernel, spec)
        binary = d.compile(source, d.arch(spec), name=kernel_symbol(kernel))
        fn = d.get_function(d.load_module(binary), kernel)
        dyn = renderer.dynamic_shared_bytes(kernel)
        if dyn:
            d.set_dynamic_shared(fn, dyn)
        return CompiledKernel(kernel.name, self.name, fn, binary, source,
                              {"kernel": kernel, "compiler": d.compiler,
                               "dynamic_shared_bytes": dyn})

    def launch(self, compiled: CompiledKernel, args: Sequence[Buffer | int | float],
               grid: tuple[int, ...], block: tuple[int, ...], shared_bytes: int = 0) -> None:
        k: Kernel = compiled.metadata["kernel"]
        ptrs, scal = {}, {}
        for p, a in zip(k.params, args, strict=True):
            if isinstance(p, BufferParam):
                ptrs[p.name] = a.handle if isinstance(a, Buffer) else int(a)
            else:
                scal[p.name] = a
        d = self.driver()
        packed = pack_args(k, ptrs, scal, {tm.name: d.encode_tensor_map(tm, ptrs[tm.buffer])
                                           for tm in k.tensor_maps})
        g = (tuple(grid) + (1, 1, 1))[:3]
        shared = max(int(shared_bytes), int(compiled.metadata.get("dynamic_shared_bytes", 0)))
        # the driver copies the argument values during the launch call itself
        self.driver().launch(compiled.handle, g, int(math.prod(block)), shared, packed.address,
                             **_cluster_kw(k))


def _cluster_kw(k: Kernel) -> dict:
    """The launch's cluster (hal.kernel.ir_cluster) for drivers that take one: only passed
    for clustered kernels, so drivers without clusters keep their signature."""
    return {"cluster": tuple(k.cluster)} if tuple(k.cluster) != (1, 1, 1) else {}


def translate(err: Any, call: str, vendor: str, ok: Callable[[Any], bool]) -> None:
    """Raise DeviceError naming the failed driver call and its error code."""
    if not ok(err):
        raise DeviceError(f"{vendor}: {call} failed: {err!r}",
                          hint="check `nvidia-smi` / `rocm-smi`, and that the spec's arch "
                               "matches the GPU")


__all__ = ["ARG_CTYPES", "DLPACK_CUDA", "DLPACK_ROCM", "GpuBackend", "GpuDriver", "GpuRunner",
           "Launch", "PackedArgs", "PreparedGraph", "device_pointer", "pack_args",
           "scalar_arg", "sync_each_from_env", "synchronize", "torch_current_stream",
           "translate"]

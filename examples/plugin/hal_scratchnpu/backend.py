"""ScratchNpuBackend: a hal backend for the scratch-npu device, as an out-of-tree plugin.

This is the skeleton a hardware team copies to bring up its own accelerator
(docs/bringup.md walks through it). It runs on hal's CPU simulator, so it works
on any machine, but it is written the way a real driver is: `run_graph` plans
and lowers the graph with hal, then drives the device only through the five
runtime methods of `hal.backend.Backend`:

    allocate   device memory for one tensor           (cuMemAlloc, hipMalloc, ...)
    copy_in    host -> device                          (cuMemcpyHtoD, DMA to DRAM)
    compile    kernel IR -> loaded device binary       (render, your compiler, module load)
    launch     run one kernel on its grid              (cuLaunchKernel, queue submit)
    copy_out   device -> host                          (cuMemcpyDtoH)

For real hardware, replace the bodies marked `REPLACE:`; keep `run_graph`.
The simulator stands in for the device: a Buffer's handle is a NumPy array,
a compiled kernel is the kernel IR itself, and a launch is `simulate(...)`,
which also checks what the hardware would punish (scratchpad over capacity,
out-of-bounds access, races) and counts bytes for the cost model.

Capabilities are this backend's own: scratch-npu has no f64 and no fp8
arithmetic, so conformance skips those cases with the reason instead of
running them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal.backend import Availability, Buffer, Capability, CompiledKernel, RunResult
from hal.backends.cpu_sim.backend import CpuSimBackend, parity_report
from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, cast
from hal.errors import DeviceError, UnsupportedError
from hal.ir.graph import Graph


class ScratchNpuBackend(CpuSimBackend):
    """The scratch-npu accelerator (simulated). Subclasses CpuSimBackend only for its
    defaults; every graph runs through allocate/copy_in/compile/launch/copy_out below."""

    name = "scratchnpu"
    default_device = "scratch-npu"      # `--device` may still name any spec or a .yaml path
    # No F64, no FP8, no ATOMICS: conformance reads these to skip cases it must not ask for.
    # A real device adds TIMING and REAL_HARDWARE (then `hal bench` measures instead of
    # modelling) and drops SIMULATED.
    capabilities = frozenset({Capability.FP16, Capability.BF16, Capability.INT,
                              Capability.WARP_SHUFFLE, Capability.KERNELS,
                              Capability.SIMULATED})

    def __init__(self) -> None:
        # Constructing a backend must stay cheap: no driver initialisation here.
        self._availability: Availability | None = None

    # -- discovery -----------------------------------------------------------------
    def probe(self) -> Availability:
        # REPLACE: load your driver library, initialise it, count devices, and on failure
        # return Availability(False, "<what is missing and how to fix it>").
        # hal.backend.probe_driver does this for a C driver API with init/count calls.
        if self._availability is None:
            self._availability = Availability(
                True, "scratch-npu simulated on the CPU (hal_scratchnpu example plugin)")
        return self._availability

    # -- runtime: the five methods a real driver replaces ----------------------------
    def allocate(self, nbytes: int, dtype: DType | None = None,
                 shape: Sequence[int] = ()) -> Buffer:
        # REPLACE: allocate `nbytes` of device memory; put the device pointer in `handle`.
        if dtype is None:
            raise UnsupportedError("scratchnpu: allocate needs a dtype")
        numel = math.prod(shape) if shape else nbytes // dtype.itemsize
        return Buffer(nbytes, dtype, tuple(shape), handle=np.zeros(numel, dtype.np_dtype))

    def copy_in(self, buffer: Buffer, array: np.ndarray) -> None:
        # REPLACE: host -> device copy of `array` (already in buffer.dtype) into buffer.handle.
        flat = np.ascontiguousarray(array).reshape(-1)
        if flat.dtype != buffer.handle.dtype or flat.size != buffer.handle.size:
            raise DeviceError(f"scratchnpu: copy_in of {flat.dtype}[{flat.size}] into a "
                              f"{buffer.dtype}[{buffer.handle.size}] buffer")
        buffer.handle[...] = flat

    def copy_out(self, buffer: Buffer) -> np.ndarray:
        # REPLACE: device -> host copy into a fresh host array.
        return buffer.handle.copy().reshape(buffer.shape)

    def compile(self, kernel: Any, spec: DeviceSpec) -> CompiledKernel:
        # REPLACE: turn the kernel IR into a loaded binary for your device: render it
        # (hal.render's C-style renderer is a starting point for a C-like toolchain),
        # run your compiler, load the module, and report registers / scratchpad use in
        # `metadata`. A failure raises hal.errors.CompileError with the source and a
        # command that reproduces it. Here the "binary" is the kernel IR itself.
        if kernel.shared_bytes > spec.shared_mem_per_block:
            raise DeviceError(f"scratchnpu: kernel {kernel.name} needs {kernel.shared_bytes} "
                              f"bytes of scratchpad, {spec.name} has "
                              f"{spec.shared_mem_per_block} per block",
                              hint="the fusion plan for this spec should have split it: "
                                   "check `hal fuse FILE --device ... --explain`")
        return CompiledKernel(kernel.name, self.name, handle=kernel,
                              metadata={"spec": spec, "shared_bytes": kernel.shared_bytes,
                                        "block": kernel.block})

    def launch(self, compiled: CompiledKernel, args: Sequence[Buffer | int | float],
               grid: tuple[int, ...], block: tuple[int, ...], shared_bytes: int = 0) -> None:
        # REPLACE: submit the kernel with `args` (device pointers and scalars, in the
        # kernel's parameter order) on `grid` x `block`. This simulator runs synchronously;
        # a real queue returns at once and `synchronize` waits for it.
        from hal.backends.cpu_sim.simulator import simulate

        kernel = compiled.handle
        if tuple(grid) != tuple(kernel.grid) or tuple(block)[0] != kernel.block:
            raise DeviceError(f"scratchnpu: kernel {kernel.name} was lowered for grid "
                              f"{kernel.grid} x {kernel.block}, launched on {grid} x {block}")
        bound = {p.name: a.handle if isinstance(a, Buffer) else a
                 for p, a in zip(kernel.params, args, strict=True)}
        stats = simulate(kernel, bound, compiled.metadata["spec"], check=True,
                         max_lanes=1 << 17)
        compiled.metadata["last_launch"] = stats.to_dict()

    # -- the graph-level entry point: keep this as it is for real hardware -------------
    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | str | None = None, *, fuse: bool = True,
                  compare_reference: bool = True, **options: Any) -> RunResult:
        """Plan (fusion for `spec`), lower each group, and run every kernel on the device.

        `fuse=False` runs one kernel per primitive; `compare_reference` adds a parity
        report against hal's float64 reference. Other options (e.g. the simulator's
        `check`) are accepted and ignored.
        """
        from hal.devices.loader import load_spec
        from hal.fusion import plan
        from hal.fusion.group import is_alias_group, trivial_groups
        from hal.lowering import lower_group
        from hal.ops.decompose import decompose_graph

        if spec is None or isinstance(spec, str):
            spec = load_spec(spec or self.default_device)
        if fuse:
            fusion_plan = plan(graph, spec)
            prim, groups = fusion_plan.graph, list(fusion_plan.groups)
        else:
            prim = decompose_graph(graph)
            groups = trivial_groups(prim)
        for v in prim.values().values():
            if not v.type.is_static:
                raise UnsupportedError(f"scratchnpu: value %{v.name} has symbolic shape "
                                       f"{list(v.shape)}", hint="bind symbolic dims first")

        def upload(value, array: np.ndarray) -> Buffer:
            host = np.ascontiguousarray(cast(array, value.dtype))   # host-side cast
            buf = self.allocate(host.nbytes, value.dtype, value.shape)
            self.copy_in(buf, host)
            return buf

        buffers: dict[str, Buffer] = {}
        for v in prim.inputs:
            if v.name not in inputs:
                raise UnsupportedError(f"scratchnpu: missing input %{v.name}")
            buffers[v.name] = upload(v, inputs[v.name])
        values = prim.values()
        for name, array in prim.materialize_constants().items():
            buffers[name] = upload(values[name], array)

        stats: list[dict[str, Any]] = []
        for g in groups:
            if is_alias_group(g):       # a contiguous reshape is a view: no kernel
                n = g.nodes[0]
                src, out = buffers[n.inputs[0].name], n.outputs[0]
                buffers[out.name] = Buffer(src.nbytes, src.dtype, tuple(out.shape),
                                           handle=src.handle)
                continue
            for v in (o for n in g.nodes for o in n.outputs):
                if v.name not in buffers:
                    buffers[v.name] = self.allocate(math.prod(v.shape) * v.dtype.itemsize,
                                                    v.dtype, v.shape)
            scratch: dict[str, Buffer] = {}     # per-group workspace (split reductions)
            for k in lower_group(g, spec):
                compiled = self.compile(k, spec)
                args: list[Buffer] = []
                for p in k.params:
                    if p.name in k.meta.scratch:
                        if p.name not in scratch:
                            from hal.dtypes import dtype as to_dtype

                            dt, numel = k.meta.scratch[p.name]
                            dt = to_dtype(dt)
                            scratch[p.name] = self.allocate(numel * dt.itemsize, dt, (numel,))
                        args.append(scratch[p.name])
                    else:
                        args.append(buffers[k.meta.buffers[p.name]])
                self.launch(compiled, args, k.grid, (k.block, 1, 1), k.shared_bytes)
                d = dict(compiled.metadata.get("last_launch", {}))
                d.update(kernel=k.name, group=g.name, kind=g.kind, ops=list(k.meta.ops),
                         plan=k.meta.plan.summary() if k.meta.plan is not None else {})
                stats.append(d)
        self.synchronize()
        outputs = {orig.name: self.copy_out(buffers[new.name]).reshape(new.shape)
                   for orig, new in zip(graph.outputs, prim.outputs, strict=True)}
        report = parity_report(graph, prim, inputs, outputs) if compare_reference else None
        return RunResult(outputs, stats, report)

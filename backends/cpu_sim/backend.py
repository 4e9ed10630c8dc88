"""CpuSimBackend: runs a graph as the GPU would, kernel by kernel, on the CPU simulator.

run_graph: decompose composites -> groups (trivial_groups, or the fusion pass's
groups) -> lower each group for the spec -> simulate every kernel with one
1-D buffer per graph value (constants materialised from their initializers,
scratch buffers per group) -> outputs in their declared dtypes, per-kernel
stats, and a report comparing every output with hal.reference.evaluate within
parity.tolerance_for. A lone reshape group aliases its input buffer (no
kernel: a contiguous reshape is a view). Waves of 2^17 lanes: on a 4096x4096
softmax they were faster than the simulator's 2^20 default and used 8x less memory.

At model scale: constants are made before the first group that reads them and every
buffer is dropped after its last reader (lazy_buffers.py); the reference of the parity
report is evaluated node by node beside the groups (hal.reference.evaluate_steps) and
reads the constants made here, so weights are made once. Sampled, a group whose
outputs the reference computes under their names hands later groups the reference's
values of them, every element: its simulated blocks are compared with those values and
kept for the run's outputs, and no later kernel reads them (sampled_children.py). With
a second CPU (`jobs` > 1) each sampled kernel runs in a forked child while this process
takes the group's values from the reference and makes the next groups' constants; the
next group's child starts at once, beside the earlier ones (at most `jobs` children; the
reference runs, and stops between its steps, while the parent waits for a slot). A
group whose values are computed functionally is joined before the next group starts,
its stores merged into the buffers later kernels read. The stats, reports and stored
bits are those of the serial path (`jobs=1`).

Sampled, this process's BLAS runs on one thread for the whole run: the reference's
float32 sums (reference_blocked.sums_in_float32) are part of the outputs there, and
OpenBLAS's sums differ in their last bits with its thread count (the threads share
the product out differently: 935-1162 of a 64x512x64 float32 product's 4096 elements
differ between one and two threads on this VM), so the bits would otherwise depend on
the machine's cores and on `jobs`. With children beside
it, a second BLAS thread of this process also only spun on a core they needed (~9% of
the Llama-3-8B layer's CPU time; benchmarks/results/issue-19.md, session 19). The
reference's own parallelism comes back without changing a bit: its independent float32
panels and attention tiles run `jobs` at once on threads, each one single-threaded BLAS
call as before (hal/step_threads.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from hal.backend import Availability, Backend, Capability, RunResult
from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, cast
from hal.errors import UnsupportedError
from hal.ir.graph import Graph
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions

from .lazy_buffers import LazyBuffers
from .parallel import sim_jobs
from .parity import compare, tolerance_for
from .reference_steps import ReferenceSteps, rest_values
from .sampled import SampleOptions, blocked_composites, run_kernel_sampled, samplable
from .sampled_children import SampledChildren, Settle, output_sources, sampled_in_child


class CpuSimBackend(Backend):
    name = "cpu_sim"
    capabilities = frozenset({Capability.F64, Capability.FP16, Capability.BF16, Capability.FP8, Capability.INT,
                              Capability.WARP_SHUFFLE, Capability.KERNELS,
                              Capability.SIMULATED, Capability.ATOMICS})

    def probe(self) -> Availability:
        return Availability(True, "the CPU simulator runs everywhere")

    def preload(self) -> None:
        """Import what run_graph imports on first use (the simulator, the fusion planner,
        the lowerings): a parent about to fork the conformance suite's workers calls it,
        so that each worker's first case does not import them again (~0.2 s of CPU)."""
        import hal.backends.cpu_sim.simulator  # noqa: F401
        import hal.fusion.attention  # noqa: F401
        import hal.fusion.chains  # noqa: F401
        import hal.fusion.measured  # noqa: F401
        import hal.fusion.plan  # noqa: F401
        import hal.fusion.prepare  # noqa: F401
        import hal.ir.initializers  # noqa: F401
        from hal.lowering import _load_all

        _load_all()

    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | str | None = None, *, groups: Sequence | None = None,
                  check: bool = True, compare_reference: bool = True,
                  max_lanes: int = 1 << 17, fuse: bool = True,
                  progress: Callable[[int, int, str], None] | None = None,
                  lowering_options: LoweringOptions = DEFAULT_OPTIONS,
                  sample: Any = None, exact_rounding: bool = False,
                  kernel_progress: Callable[[str, int, int], None] | None = None,
                  jobs: int | None = None, kernel_stats: bool = True,
                  **options: Any) -> RunResult:
        """Plan (or take `groups`), lower, simulate kernel by kernel, compare with the
        reference. `progress(done, total, group_name)` is called before each group and
        `kernel_progress(kernel, blocks_done, blocks_total)` before each wave;
        `sample` (sampled.SampleOptions) simulates boundary blocks and a seeded sample of
        each kernel and computes the rest functionally (sampled.py);
        `lowering_options` (the self-test's planted faults) apply to every group's lowering;
        `jobs` worker processes share each kernel's waves (simulator.simulate);
        `kernel_stats=False` leaves RunResult.stats empty (the conformance suite reads only
        the outputs: a kernel's stats record cost ~0.1 ms, two or more a case)."""
        from hal.backends.cpu_sim.simulator import simulate, simulate_parts

        if isinstance(sample, (int, float)) and not isinstance(sample, bool):
            sample = SampleOptions(float(sample), seed=int(options.pop("sample_seed", None) or 0))
        options.pop("sample_seed", None)
        from hal.devices.loader import load_spec
        from hal.fusion.group import is_alias_group
        from hal.lowering import lower_group

        if spec is None or isinstance(spec, str):
            spec = load_spec(spec or self.default_device)
        from hal.fusion.prepare import groups_to_run

        prim, groups = groups_to_run(graph, spec, groups=groups, fuse=fuse, who="cpu_sim")
        buffers: dict[str, np.ndarray] = {}
        for v in prim.inputs:
            if v.name not in inputs:
                raise UnsupportedError(f"cpu_sim: missing input %{v.name}")
            buffers[v.name] = _input_buffer(inputs[v.name], v.dtype)
        lazy = LazyBuffers(prim, groups, buffers)
        composites = blocked_composites(graph, prim) if sample is not None else {}
        stats: list[dict[str, Any] | None] = []
        sampled_report: dict[str, Any] = {}
        # sampled, with a second CPU: each sampled kernel runs in a forked child while
        # this process takes the group's values from the reference, advances it and makes
        # the next groups' constants; a reference-fed group's child is joined when it
        # finishes, not before the next group starts (sampled_children.py)
        overlap = sample is not None and sim_jobs(jobs) > 1
        settle = Settle(prim, output_sources(prim, groups))
        children = SampledChildren(sim_jobs(jobs)) if overlap else None
        # the whole-output reference, node by node beside the groups, reading the
        # constants cpu_sim made (a model's weights are made once, not twice)
        ref = ReferenceSteps(graph, inputs, lazy, prim, groups, composites) \
            if compare_reference else None

        def record(k: Any, g: Any, st: Any, sample_rep: dict | None, lower_s: float,
                   slot: int | None = None) -> None:
            """Kernel `k`'s sampled report and stats record (at `slot`: the place its
            launch took when it was started in a child)."""
            if sample_rep is not None:
                sampled_report[k.name] = sample_rep
            # a timing: beside wall_s in the stats, not a result of the sampled report
            sim_cpu = sample_rep.pop("sim_cpu_s", None) if sample_rep is not None else None
            if not kernel_stats:
                return
            d = st.to_dict()
            if sample_rep is not None:
                d["sample"] = sample_rep
                if sim_cpu is not None:
                    d["sim_cpu_s"] = sim_cpu
            d.update(kernel=k.name, group=g.name, kind=g.kind, ops=list(k.meta.ops),
                     plan=k.meta.plan.summary() if k.meta.plan is not None else {},
                     stage=k.meta.stage, lower_s=lower_s)
            if slot is None:
                stats.append(d)
            else:
                stats[slot] = d

        one_thread = ExitStack()   # sampled: BLAS on one thread (the module doc)
        if sample is not None:
            from hal.blas_threads import one_blas_thread_within
            from hal.step_threads import step_threads

            one_thread.enter_context(one_blas_thread_within())
            # the reference's independent panels and tiles `jobs` at once instead
            one_thread.enter_context(step_threads(sim_jobs(jobs)))
        try:
            for i, g in enumerate(groups):
                if progress is not None:
                    progress(i, len(groups), g.name)
                lazy.before(i)
                if ref is not None:   # overlapped: it runs while the children simulate,
                    # kept within RETAIN_BYTES
                    ref.advance(until=ref.caught_up if overlap else None)
                if is_alias_group(g):
                    n = g.nodes[0]
                    buffers[n.outputs[0].name] = buffers[n.inputs[0].name]
                    lazy.after(i)
                    if ref is not None:
                        ref.forget(g)
                    continue
                scratch: dict[str, np.ndarray] = {}
                for v in (o for n in g.nodes for o in n.outputs):
                    if v.name not in buffers:
                        buffers[v.name] = np.zeros(math.prod(v.shape), v.dtype.np_dtype)
                t0 = time.perf_counter()
                kernels = lower_group(g, spec, lowering_options)
                lower_s = time.perf_counter() - t0
                for k in kernels:
                    args: dict[str, Any] = {}
                    for param, value in k.meta.buffers.items():
                        if param in k.meta.scratch:
                            dt, numel = k.meta.scratch[param]
                            if param not in scratch:
                                from hal.dtypes import dtype as _dtype

                                scratch[param] = np.zeros(numel, _dtype(dt).np_dtype)
                            args[param] = scratch[param]
                        else:
                            args[param] = buffers[value]
                    kw: dict[str, Any] = dict(check=check, max_lanes=max_lanes, jobs=jobs,
                                              exact_rounding=exact_rounding,
                                              options=lowering_options)
                    if kernel_progress is not None:
                        kw["progress"] = (lambda done, total, _n=k.name:
                                          kernel_progress(_n, done, total))
                    why_exact = samplable(kernels) if sample is not None else None
                    if sample is not None and why_exact is None and overlap:
                        assert children is not None
                        sampled_report[k.name] = None   # its place in launch order
                        slot = None
                        if kernel_stats:
                            slot = len(stats)
                            stats.append(None)
                        sampled_in_child(
                            k, args, spec, sample, kw, g, buffers, composites, ref, lazy, i,
                            jobs, children, settle,
                            lambda st, rep, _k=k, _g=g, _l=lower_s, _s=slot:
                                record(_k, _g, st, rep, _l, _s))
                        continue
                    if sample is not None and why_exact is None:
                        st, rep = run_kernel_sampled(k, args, spec, sample, simulate_parts,
                                                     **kw)
                        rest, rest_from = rest_values(g, buffers, composites, ref)
                        sample_rep = settle.report(g, k, rep, buffers, rest, rest_from,
                                                   buffers)
                    else:   # the roofline of stats nobody reads is left out
                        st = simulate(k, args, spec, model=kernel_stats, **kw)
                        sample_rep = {"exact": why_exact} if sample is not None else None
                    record(k, g, st, sample_rep, lower_s)
                lazy.after(i)
                if ref is not None:
                    ref.forget(g)
            # the rest of the reference while the last children simulate
            expected = ref.finish() if ref is not None else None
            if children is not None:
                if progress is not None and children.running:
                    progress(len(groups), len(groups),
                             f"sampled kernels ({len(children.running)} still simulating)")
                children.join_all()
        except BaseException:
            if children is not None:
                children.kill()
            raise
        finally:
            one_thread.close()
        settle.write_outputs()
        outputs = {orig.name: buffers[new.name].reshape(new.shape)
                   for orig, new in zip(graph.outputs, prim.outputs, strict=True)}
        report = None
        if expected is not None:
            report = _parity(graph, prim, outputs, expected)
        if sample is not None:
            report = dict(report or {})
            report["sampled"] = sampled_report
            simulated_ok = all(r.get("ok", True) for r in sampled_report.values())
            report["ok"] = bool(report.get("ok", True)) and simulated_ok
        return RunResult(outputs, stats, report)


def _input_buffer(x: Any, dt: DType) -> np.ndarray:
    """A fresh 1-D C-order buffer of input `x` in `dt`: `cast`, or a plain copy where `x` is
    already stored in `dt` (the conformance suite's inputs are; the cast of a
    non-saturating type to itself is the identity, and its dispatch cost ~15 us an input)."""
    a = np.asarray(x)
    if a.dtype == dt.np_dtype and not dt.saturates:
        return a.reshape(-1).copy()   # reshape may give a view: the copy is ours, C order
    return np.ascontiguousarray(cast(a, dt)).reshape(-1)


def parity_report(graph: Graph, prim: Graph, inputs: Mapping[str, np.ndarray],
                  outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Each output against hal.reference.evaluate, with the tolerance it was held to."""
    from hal.reference import evaluate

    return _parity(graph, prim, outputs, evaluate(graph, inputs))


def _parity(graph: Graph, prim: Graph, outputs: Mapping[str, np.ndarray],
            expected: Mapping[str, np.ndarray]) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for orig, new in zip(graph.outputs, prim.outputs, strict=True):
        rtol, atol = tolerance_for(prim, new)
        res = compare(outputs[orig.name], expected[orig.name], rtol, atol)
        per[orig.name] = {**res, "rtol": rtol, "atol": atol}
    return {"outputs": per, "ok": all(r["ok"] for r in per.values())}

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
buffer is dropped after its last reader (_LazyBuffers); the reference of the parity
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

from .parallel import sim_jobs
from .parity import compare, tolerance_for
from .sampled import (
    SampleOptions,
    blocked_composites,
    functional_outputs,
    run_kernel_sampled,
    samplable,
)
from .sampled_children import SampledChildren, Settle, output_sources


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
        lazy = _LazyBuffers(prim, groups, buffers)
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
        ref = _ReferenceSteps(graph, inputs, lazy, prim, groups, composites) \
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
                        _sampled_in_child(
                            k, args, spec, sample, kw, g, buffers, composites, ref, lazy, i,
                            jobs, children, settle,
                            lambda st, rep, _k=k, _g=g, _l=lower_s, _s=slot:
                                record(_k, _g, st, rep, _l, _s))
                        continue
                    if sample is not None and why_exact is None:
                        st, rep = run_kernel_sampled(k, args, spec, sample, simulate_parts,
                                                     **kw)
                        rest, rest_from = _rest_values(g, buffers, composites, ref)
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


def _sampled_in_child(k: Any, args: dict[str, Any], spec: DeviceSpec,
                      sample: SampleOptions, kw: dict[str, Any], g: Any,
                      buffers: dict[str, np.ndarray], composites: Mapping[str, Any],
                      ref: _ReferenceSteps | None, lazy: _LazyBuffers, i: int,
                      jobs: int | None, children: SampledChildren, settle: Settle,
                      record: Callable[[Any, dict], None]) -> None:
    """run_kernel_sampled in a forked child (its stores land in shared copies of the
    kernel's output buffers) while this process takes the group's other values
    (`_rest_values`). A reference-fed group ("reference") gives its buffers the
    reference's values at once and leaves the child to `children` (joined when it
    finishes); otherwise this process advances the reference and makes the next groups'
    constants until the child is done, joins it and merges its stores into the buffers
    that later kernels read. `record(stats, report)` gets the kernel's results either
    way. Same stats, report and stored values as the serial path."""
    from hal.backends.cpu_sim.parallel import SharedOutputs, sim_jobs, start_child
    from hal.backends.cpu_sim.simulator import simulate_parts

    # at most `cap` children: the reference runs while the parent waits for a slot
    children.make_room(None if ref is None else (lambda until: ref.advance(until=until)))
    readonly = {p.name for p in k.params if getattr(p, "readonly", False)}
    out = [p for p, a in args.items() if p not in readonly and isinstance(a, np.ndarray)]
    shared = SharedOutputs()
    swapped = shared.swap([args[p] for p in out], [True] * len(out))
    child_args = dict(args) | dict(zip(out, swapped, strict=True))
    param_of = {value: param for param, value in k.meta.buffers.items()}
    stored = {v.name: child_args.get(param_of.get(v.name, ""), buffers[v.name])
              for v in g.outputs}
    ckw = dict(kw, jobs=max(1, sim_jobs(jobs) - 1))
    child = start_child(lambda: run_kernel_sampled(k, child_args, spec, sample,
                                                   simulate_parts, **ckw))
    try:
        rest, rest_from = _rest_values(g, buffers, composites, ref)
        if rest_from == "reference":
            for v in g.outputs:   # what later kernels read: every element the reference's
                buffers[v.name][...] = rest[v.name]
            mine = {v.name: buffers[v.name] for v in g.outputs}
            children.add(child, shared, stored, lambda st, rep, stored: record(
                st, settle.report(g, k, rep, stored, mine, rest_from, None)))
            return
        # functional values read this group's actual inputs and later kernels read its
        # stores: the child is joined now, the reference and the next constants beside it
        until = None if ref is None else (lambda: child.done() and ref.caught_up())
        if ref is not None:
            ref.advance(until=until)
        j = i + 1
        while j < lazy.ngroups and (j == i + 1 or (
                not child.done() and lazy.made_ahead(i) < PREFETCH_BYTES)):
            lazy.before(j)
            if ref is not None:
                ref.advance(until=until)
            j += 1
        st, rep = child.join()
    except BaseException:
        child.kill()
        shared.release()
        raise
    shared.copy_back()
    record(st, settle.report(g, k, rep, buffers, rest, rest_from, None))


class _ReferenceSteps:
    """hal.reference.evaluate_steps driven beside the groups: a node runs once the
    large constants it reads first are made by cpu_sim (handed over, not made again);
    a small one (under PULL_BYTES: norms, rope tables) is made early for it, and one
    cpu_sim does not make is the reference's own. cpu_sim keeps a constant it is done
    with until the reference has taken it (_LazyBuffers.hold), so each weight is made
    once. `finish` runs the rest and returns the outputs."""

    def __init__(self, graph: Graph, inputs: Mapping[str, np.ndarray], lazy: _LazyBuffers,
                 prim: Graph, groups: Sequence = (),
                 composites: Mapping[str, Any] | None = None):
        from hal.reference import evaluate_steps

        self.lazy = lazy
        own = {c.value.name for c in graph.constants}
        self.shape = {c.value.name: tuple(c.value.shape) for c in prim.constants
                      if c.value.name in own}
        self.nbytes = {c.value.name: c.value.type.numel * c.value.dtype.np_dtype.itemsize
                       for c in prim.constants if c.value.name in own}
        self.taken: set[str] = set()
        lazy.hold = lambda name: name in self.shape and name not in self.taken
        # per group, its outputs that are the graph's own named values (a decomposition's
        # internal names may differ between cpu_sim's graph and the reference's) and the
        # outputs of the large composites inside it: the reference keeps each as it passes
        # it, until its group takes it (values_for) or is done (forget)
        named = {v.name: v.type for n in graph.nodes for v in n.outputs}
        self.names: dict[int, list[str]] = {}
        for g in groups:
            made = {v.name for n in g.nodes for v in n.outputs}
            mine = [v.name for v in g.outputs if named.get(v.name) == v.type]
            mine += [c.outputs[0].name for out, c in (composites or {}).items() if out in made]
            self.names[id(g)] = list(dict.fromkeys(mine))
        self.wanted = {n: named[n] for names in self.names.values() for n in names}
        self.seen: dict[str, np.ndarray] = {}
        self.steps = evaluate_steps(graph, inputs, provide=self._provide,
                                    observe=self._observe)
        self.result: dict[str, np.ndarray] | None = None
        self.pending: list[str] | None = self._next()

    def _provide(self, name: str) -> np.ndarray | None:
        if name not in self.shape:
            return None
        self.taken.add(name)
        a = self.lazy.buffers.get(name)
        if a is None:
            a = self.lazy.retained.pop(name, None)
        return None if a is None else a.reshape(self.shape[name])

    def _observe(self, value: Any, a: np.ndarray) -> None:
        from hal.dtypes import narrow

        if self.wanted.get(value.name) == value.type:   # same name, shape and dtype
            # (`a` holds the value's rounded elements: _steps's observe)
            self.seen[value.name] = narrow(a, value.dtype).reshape(-1)

    def values_for(self, group: Any) -> dict[str, np.ndarray]:
        """The reference's values (1-D, declared dtype) of `group`'s outputs and inner
        composites' outputs that it computes under their names, running it as far as they
        need (making the constants it reads now, whatever their size)."""
        names = [n for n in self.names.get(id(group), ()) if n in self.wanted]
        while self.pending is not None and not all(n in self.seen for n in names):
            self._run_node(math.inf)
        got = {n: self.seen.pop(n) for n in names if n in self.seen}
        self.forget(group)
        return got

    def forget(self, group: Any) -> None:
        """`group` is done: the reference no longer keeps values for it."""
        for n in self.names.pop(id(group), ()):
            self.wanted.pop(n, None)
            self.seen.pop(n, None)

    def _next(self) -> list[str] | None:
        try:
            return next(self.steps)
        except StopIteration as done:
            self.result = done.value
            return None

    def advance(self, until: Callable[[], bool] | None = None) -> None:
        """Run the nodes whose first-use constants are available now; with `until`, stop
        before a node once it returns True."""
        while self.pending is not None:
            if until is not None and until():
                return
            if not self._run_node(PULL_BYTES):
                return

    def _run_node(self, pull_limit: float) -> bool:
        """Run the next node, first making the constants it reads that cpu_sim makes later;
        False (nothing run) when one of them is `pull_limit` bytes or more."""
        assert self.pending is not None
        later = [n for n in self.pending if n in self.shape and self.lazy.scheduled(n)]
        if any(self.nbytes[n] >= pull_limit for n in later):
            return False
        for n in later:
            self.lazy.make_now(n)
        self.pending = self._next()
        return True

    def caught_up(self) -> bool:
        """The constants cpu_sim keeps for the reference (made, not taken yet) are within
        RETAIN_BYTES: a reference behind the groups may stay behind."""
        return sum(a.nbytes for a in self.lazy.retained.values()) <= RETAIN_BYTES

    def finish(self) -> dict[str, np.ndarray]:
        while self.pending is not None:
            self.pending = self._next()
        assert self.result is not None
        return self.result


# constants made ahead of the running group while a sampled kernel's child simulates
PREFETCH_BYTES = 1 << 30
# a constant the reference reaches before cpu_sim needs it is made early when smaller
PULL_BYTES = 1 << 20
# the constants a sampled run keeps for a reference running behind its groups, at most
RETAIN_BYTES = 1 << 29


class _LazyBuffers:
    """Constants materialised just before the first group that reads them, and every
    buffer dropped after the last group that reads it (graph outputs stay): a model's
    weights and activations are alive a few groups at a time, not all at once."""

    def __init__(self, prim: Graph, groups: Sequence, buffers: dict[str, np.ndarray]):
        self.buffers = buffers
        self.prim = prim
        self.ngroups = len(groups)
        self.made: dict[int, list[str]] = {}   # group -> the constants made for it
        # hold(name): keep a constant after its last group (the reference still needs
        # it) in `retained` instead of dropping it
        self.hold: Callable[[str], bool] | None = None
        self.retained: dict[str, np.ndarray] = {}
        self.constants = {c.value.name: c for c in prim.constants}
        self.first: dict[int, list[str]] = {}
        self.last: dict[int, list[str]] = {}
        outputs = {v.name for v in prim.outputs}
        first_use: dict[str, int] = {}
        last_use: dict[str, int] = {}
        for i, g in enumerate(groups):
            for n in g.nodes:
                for v in n.inputs:
                    first_use.setdefault(v.name, i)
                    last_use[v.name] = i
                for v in n.outputs:  # a value no later group reads goes after its own
                    last_use.setdefault(v.name, i)
        self.pending: set[str] = set()   # constants made before a later group
        for name in self.constants:
            if name in first_use:
                self.first.setdefault(first_use[name], []).append(name)
                self.pending.add(name)
            else:  # an output or unread constant: now, as before (its initializer checked)
                self._materialize(name)
        for name, i in last_use.items():
            if name not in outputs:
                self.last.setdefault(i, []).append(name)

    def _materialize(self, name: str) -> None:
        from hal.ir.initializers import materialize_as

        c = self.constants[name]
        arr = materialize_as(c.init, c.value.type, self.prim.base_dir, name=name)
        self.buffers[name] = np.ascontiguousarray(arr).reshape(-1)

    def scheduled(self, name: str) -> bool:
        """A constant cpu_sim makes later (before a group still to run)."""
        return name in self.pending

    def before(self, i: int) -> None:
        for name in self.first.pop(i, ()):
            self._materialize(name)
            self.pending.discard(name)
            self.made.setdefault(i, []).append(name)

    def made_ahead(self, i: int) -> int:
        """Bytes of the constants made for groups after group `i`."""
        return sum(self.buffers[n].nbytes for j, names in self.made.items() if j > i
                   for n in names if n in self.buffers)

    def after(self, i: int) -> None:
        for name in self.last.pop(i, ()):
            a = self.buffers.pop(name, None)
            if a is not None and name in self.constants and self.hold is not None \
                    and self.hold(name):
                self.retained[name] = a

    def make_now(self, name: str) -> None:
        """Make a constant scheduled for a later group now (the reference reads it)."""
        for j, names in self.first.items():
            if name in names:
                names.remove(name)
                self._materialize(name)
                self.pending.discard(name)
                self.made.setdefault(j, []).append(name)
                return


def _rest_values(group: Any, buffers: Mapping[str, np.ndarray],
                 composites: Mapping[str, Any],
                 ref: _ReferenceSteps | None) -> tuple[dict[str, np.ndarray], str]:
    """The values a sampled group's blocks that are not simulated take, and where they come
    from: the whole-output reference's values where it computes them under the same names
    (a group's outputs, the attention inside it: at model scale a layer's projections and
    attention are evaluated once, not by the reference and again functionally), the rest
    computed functionally from the group's actual inputs (sampled.functional_outputs):
    "reference", "functional", or "reference and functional"."""
    known = ref.values_for(group) if ref is not None else {}
    rest, computed = functional_outputs(group, buffers, composites, known)
    return rest, ("functional" if not known else
                  "reference" if computed == 0 else "reference and functional")


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

"""Sampled kernels fed by the reference, each in a forked child, several at once.

In a sampled run beside the whole-output reference, a group whose outputs the reference
computes under their names (`rest_from` "reference") hands later groups the reference's
values of its outputs, all of them: its simulated blocks are compared with those values
and kept for the run's outputs (`Settle`), never read by a later kernel. A kernel's
simulated blocks then depend on the reference alone, not on another kernel's child, so
a child can start as soon as the reference has reached its group, while earlier children
still run: on two CPUs the gate/up projection's simulation and the down projection's run
side by side instead of one after the other. The serial path (`jobs=1`) feeds its
kernels the same values, so the stored bits, counters and reports are the same.

`SampledChildren` holds the children started and not yet joined: at most `cap` at once,
joined as they finish; their counters and reports go back to the slots their kernels
took in launch order. A child that fails is reported as the serial run would report it:
the earliest failing kernel's error, once every earlier child has finished.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .parity import compare, tolerance_for
from .reference_steps import rest_values
from .sampled import SampleOptions, run_kernel_sampled

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hal.devices.spec import DeviceSpec

    from .lazy_buffers import LazyBuffers
    from .reference_steps import ReferenceSteps

# constants made ahead of the running group while a sampled kernel's child simulates
PREFETCH_BYTES = 1 << 30


@dataclass
class Settle:
    """Where a sampled kernel's simulated blocks go: the run's outputs (`kept`: the arrays
    whose values the run returns, their simulated indices and values, written at the end)
    and a report per value (`report`)."""
    prim: Any
    outputs: frozenset   # names of the values whose buffers the run returns
    kept: list = field(default_factory=list)

    def report(self, group: Any, kernel: Any, rep: dict[str, Any],
               stored: dict[str, np.ndarray], rest: dict[str, np.ndarray], rest_from: str,
               buffers: dict[str, np.ndarray] | None) -> dict[str, Any]:
        """Compare the simulated elements of `group`'s outputs (in `stored`) with `rest`,
        within the tolerance of the value's whole path from the graph's inputs
        (tolerance_for). A reference-fed group ("reference") keeps them for the run's
        outputs and leaves every element of its buffers the reference's (`buffers`, when
        given, take `rest` here); otherwise its buffers (`stored`) take `rest` except
        where the simulated blocks stored, and later kernels read them."""
        param_of = {value: param for param, value in kernel.meta.buffers.items()}
        parity = {}
        for v in group.outputs:
            param = param_of.get(v.name)
            idx = rep["written"].get(param, np.zeros(0, np.int64)) if param \
                else np.zeros(0, np.int64)
            sim = stored[v.name]
            vals = sim[idx]
            rtol, atol = tolerance_for(self.prim, v)
            res = compare(vals, rest[v.name][idx], rtol, atol)
            parity[v.name] = {**res, "elements": int(idx.size), "rtol": rtol, "atol": atol}
            if rest_from == "reference":
                target = rest[v.name] if buffers is None else buffers[v.name]
                if buffers is not None:
                    target[...] = rest[v.name]
                if v.name in self.outputs:
                    self.kept.append((target, idx, vals))
            else:
                sim[...] = rest[v.name]
                sim[idx] = vals
        out = {k: v for k, v in rep.items() if k != "written"}
        out["rest_from"] = rest_from
        out["parity_on_simulated"] = parity
        out["ok"] = all(p["ok"] for p in parity.values())
        return out

    def write_outputs(self) -> None:
        """The simulated elements into the arrays the run returns (after every kernel:
        no kernel read them)."""
        for target, idx, vals in self.kept:
            target[idx] = vals
        self.kept.clear()


def output_sources(prim: Any, groups: Any) -> frozenset:
    """Names of the values whose buffers the run returns: the graph's outputs and what a
    lone reshape (an alias group: the same buffer) of them reads, transitively."""
    from hal.fusion.group import is_alias_group

    names = {v.name for v in prim.outputs}
    for g in reversed(list(groups)):
        if is_alias_group(g) and g.nodes[0].outputs[0].name in names:
            names.add(g.nodes[0].inputs[0].name)
    return frozenset(names)


@dataclass
class _Running:
    child: Any              # parallel.ChildRun
    shared: Any             # parallel.SharedOutputs: the child's stores
    stored: dict            # value name -> the shared array its stores land in
    finish: Callable[[Any, Any, dict], None]   # (stats, report, stored) -> None


class SampledChildren:
    """The reference-fed sampled kernels running in children (see the module doc)."""

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self.running: list[_Running] = []

    def add(self, child: Any, shared: Any, stored: dict,
            finish: Callable[[Any, Any, dict], None]) -> None:
        self.running.append(_Running(child, shared, stored, finish))

    def full(self) -> bool:
        return len(self.running) >= self.cap

    def any_done(self) -> bool:
        return any(r.child.done() for r in self.running)

    def make_room(self, step: Callable[[Callable[[], bool]], None] | None = None) -> None:
        """Until fewer than `cap` children run: first `step(until)` (the reference,
        which stops between its steps once `until()` holds), then blocking; each finished
        child is joined."""
        while self.full():
            if step is not None and not self.any_done():
                step(self.any_done)
            if not self.any_done():
                select.select([r.child.fd for r in self.running], [], [])
            self.reap()

    def reap(self) -> None:
        """Join every finished child (in start order), handing its result to its finish."""
        for r in [r for r in self.running if r.child.done()]:
            self._join(r)

    def join_all(self) -> None:
        while self.running:
            self._join(self.running[0])

    def _join(self, r: _Running) -> None:
        try:
            st, rep = r.child.join()
        except BaseException:
            # the serial run stops at its first failing kernel: an earlier child's failure
            # comes first; later children are ended
            earlier = self.running[:self.running.index(r)]
            self.running.remove(r)
            r.shared.release()
            for e in earlier:
                self.running.remove(e)
                try:
                    e.child.join()
                except BaseException:
                    self.kill()
                    raise
                finally:
                    e.shared.release()
            self.kill()
            raise
        self.running.remove(r)
        try:
            r.finish(st, rep, r.stored)
        finally:
            r.shared.release()

    def kill(self) -> None:
        for r in self.running:
            r.child.kill()
            r.shared.release()
        self.running.clear()


def sampled_in_child(k: Any, args: dict[str, Any], spec: DeviceSpec,
                      sample: SampleOptions, kw: dict[str, Any], g: Any,
                      buffers: dict[str, np.ndarray], composites: Mapping[str, Any],
                      ref: ReferenceSteps | None, lazy: LazyBuffers, i: int,
                      jobs: int | None, children: SampledChildren, settle: Settle,
                      record: Callable[[Any, dict], None]) -> None:
    """run_kernel_sampled in a forked child (its stores land in shared copies of the
    kernel's output buffers) while this process takes the group's other values
    (`reference_steps.rest_values`). A reference-fed group ("reference") gives its buffers the
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
        rest, rest_from = rest_values(g, buffers, composites, ref)
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


__all__ = ["SampledChildren", "Settle", "output_sources", "sampled_in_child"]

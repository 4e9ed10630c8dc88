"""The per-kernel records cache of the compile checks (hal.render.check.compile_records).

What makes `scripts/check_examples.py` (hal compile --check over every example x spec)
fit in CI: a kernel's compiler records are cached by its own text, so an identical
kernel (in another graph, plan or spec, or the plan's own register measurement) is
compiled once per compiler and arch, and only the kernels without an entry are compiled.
"""

from __future__ import annotations

import dataclasses
import re

from hal.devices.loader import load_spec
from hal.fusion import plan
from hal.ir.text import parse_graph
from hal.lowering import lower_group
from hal.render.cache import CompileCache
from hal.render.check import CompilerEntry, compile_records
from hal.render.toolchain import ResourceRecord

GRAPHS = ["""graph g {
  input %x: f32[64, 256]
  %y: f32[64, 256] = tanh(%x)
  %s: f32[64] = reduce_sum(%y, axes=[1])
  output %s
}
""", """graph h {
  input %x: f32[64, 256]
  %y: f32[64, 256] = exp(%x)
  output %y
}
"""]


def _kernels(spec):
    out = []
    for i, text in enumerate(GRAPHS):
        p = plan(parse_graph(text), spec, measure="off")
        out += [dataclasses.replace(k, name=f"g{i}_{k.name}")
                for g in p.groups for k in lower_group(g, spec)]
    assert len(out) == 2
    return out


def _entry(calls: list, version: str = "1") -> CompilerEntry:
    from hal.backends.cuda.render import render_cuda_module

    def run(source: str, arch: str, *, name: str = "kernels") -> list[ResourceRecord]:
        names = re.findall(r'__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
        calls.append(names)
        return [ResourceRecord(kernel=n, compiler="fake", arch=arch, registers=len(source) % 97,
                               compile_s=1.5) for n in names]

    return CompilerEntry("fake", "nvidia", render_cuda_module, lambda: None, run, "sm_90a",
                         identity=lambda: "fake " + version)


def test_an_identical_kernel_is_compiled_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    spec = load_spec("h100-sxm")
    ks = _kernels(spec)
    calls: list = []
    entry = _entry(calls)
    first = compile_records(entry, ks, spec, "sm_90a", "t")
    assert calls == [[k.name for k in ks]] and [r.kernel for r in first] == [k.name for k in ks]
    # the same kernels again, renamed, and for another spec of the same arch (h200: the
    # comment lines name the spec): served from the cache, under their own names
    renamed = [dataclasses.replace(k, name=f"other_{i}") for i, k in enumerate(ks)]
    again = compile_records(entry, renamed, load_spec("h200"), "sm_90a", "t")
    assert len(calls) == 1
    assert [r.kernel for r in again] == [k.name for k in renamed]
    assert [r.registers for r in again] == [r.registers for r in first]
    assert all(r.compile_s == 0.0 for r in again)   # nothing was compiled for them
    # another arch, or another compiler version: compiled again
    compile_records(entry, ks, spec, "sm_80", "t")
    compile_records(_entry(calls, version="2"), ks, spec, "sm_90a", "t")
    assert len(calls) == 3
    assert CompileCache(namespace="records").root.exists()


def test_only_the_kernels_without_an_entry_are_compiled(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    spec = load_spec("h100-sxm")
    ks = _kernels(spec)
    calls: list = []
    entry = _entry(calls)
    compile_records(entry, ks[:1], spec, "sm_90a", "t")
    recs = compile_records(entry, ks, spec, "sm_90a", "t")
    assert calls == [[ks[0].name], [k.name for k in ks[1:]]]
    assert [r.kernel for r in recs] == [k.name for k in ks]


def test_an_entry_without_identity_is_never_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path))
    spec = load_spec("h100-sxm")
    ks = _kernels(spec)
    calls: list = []
    entry = dataclasses.replace(_entry(calls), identity=None)
    compile_records(entry, ks, spec, "sm_90a", "t")
    compile_records(entry, ks, spec, "sm_90a", "t")
    assert len(calls) == 2

"""cuda-host and hip-host: whole graphs through the rendered text on the CPU, and the
renderer bugs this path found (each pinned here as a regression test)."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.host.compiler import host_supported
from hal.backends_registry import get_backend, list_backends
from hal.ir.text import load_graph, parse_graph

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")

TARGETS = [("cuda-host", "h100-sxm"), ("hip-host", "mi300x")]


def test_backends_are_registered_and_available():
    names = dict(list_backends())
    for name, _ in TARGETS:
        assert names[name].available, names[name].reason


@pytest.mark.parametrize("backend,device", TARGETS)
def test_tiny_gpt_runs_through_the_rendered_text(backend, device):
    g = load_graph("examples/tiny_gpt.hal")
    rng = np.random.default_rng(0)
    inputs = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np_dtype)
              if v.dtype.is_float else rng.integers(0, 8, v.shape).astype(v.dtype.np_dtype)
              for v in g.inputs}
    res = get_backend(backend).run_graph(g, inputs, device)
    assert res.report["ok"], res.report["outputs"]
    assert len(res.stats) >= 2 and all(s["time_s"] >= 0 for s in res.stats)


@pytest.mark.parametrize("backend,device", TARGETS)
def test_sign_of_negative_zero_is_positive_zero(backend, device):
    # Found by the host shim: hal_sign_T returned its argument for zeros, so -0.0 gave -0.0
    # while hal's definition (np.sign) gives +0.0; cpu_sim runs the definition and passed.
    g = parse_graph("""graph s {
  input %x: f32[4]
  %y: f32[4] = sign(%x)
  output %y
}""")
    x = np.array([-0.0, 0.0, -2.0, np.nan], np.float32)
    y = get_backend(backend).run_graph(g, {"x": x}, device, compare_reference=False)
    out = y.outputs["y"]
    assert out[0] == 0 and not np.signbit(out[0]) and not np.signbit(out[1])
    assert out[2] == -1 and np.isnan(out[3])


def test_a_group_without_kernels_is_not_taken_for_a_reshape(monkeypatch):
    # Found by the host path on the JAX decoder bring-up: a pointwise group the lowering
    # gives no kernel (its values are recomputed by their consumers) was treated as a lone
    # reshape by the GPU runner, which then indexed the missing input (IndexError).
    import hal.lowering

    real = hal.lowering.lower_group

    def lower(group, spec, *args, **kw):
        return [] if any(n.op == "neg" for n in group.nodes) else real(group, spec, *args, **kw)

    monkeypatch.setattr(hal.lowering, "lower_group", lower)
    g = parse_graph("""graph t {
  input %x: f32[8]
  %y: f32[8] = exp(%x)
  %z: f32[8] = neg(%x)
  output %y
  output %z
}""")
    x = np.linspace(-1, 1, 8).astype(np.float32)
    out = get_backend("cuda-host").run_graph(g, {"x": x}, "h100-sxm", fuse=False,
                                             compare_reference=False).outputs
    np.testing.assert_allclose(out["y"], np.exp(x), rtol=1e-6)
    assert (out["z"] == 0).all()  # no kernel ran for it: zeroed, as cpu_sim leaves it


def test_wgmma_groups_run_the_mma_sync_kernel_on_the_host_and_say_so():
    # The shim does not emulate Hopper's warpgroup instructions (wgmma, TMA, clusters), so
    # on h100-sxm the host runs the mma.sync kernel where the GPU's plan takes wgmma. That
    # must never pass silently: the case record names the substituted groups.
    from hal.conformance.cases import get_case
    from hal.conformance.runner import execute
    from hal.devices.loader import load_spec
    from hal.fusion.prepare import groups_to_run
    from hal.lowering.registry import plan_group

    cid = "contraction/matmul/bf16/256x320x136/cluster"
    g = get_case(cid).graph()
    full = load_spec("h100-sxm")   # the GPU's plan: wgmma with a 2-CTA cluster
    assert any(plan_group(x, full).strategy == "wgmma" for x in groups_to_run(g, full)[1]
               if str(x.kind) == "matmul")
    rec = execute(get_case(cid), "cuda-host", "h100-sxm", profile=False)
    assert rec["verdict"] == "pass", rec.get("reason")
    note = rec["substituted"]
    assert "wgmma" in note and "2-CTA cluster" in note and "mma.sync kernel ran" in note
    # nothing is substituted where the spec has no warpgroup instruction or no contraction
    assert "substituted" not in execute(get_case(cid), "hip-host", "mi300x", profile=False,
                                        unfused=False)
    assert "substituted" not in execute(get_case("elementwise/exp/f32/31"), "cuda-host",
                                        "h100-sxm", profile=False)


@pytest.mark.parametrize("backend,device", TARGETS)
def test_conformance_compares_fused_and_unfused_runs_on_the_host(backend, device,
                                                                   monkeypatch):
    # GpuBackend.run_graph took `fuse` and `compare_reference` only through **options, so
    # conformance's signature check never saw them: on cuda, rocm and both host backends
    # the fused-vs-unfused comparison of the cases marked `unfused` never ran, and every run
    # built a reference parity report that the runner then ignored.
    from hal.conformance.cases import get_case
    from hal.conformance.runner import execute
    from hal.gpu_runner import GpuRunner

    seen = []
    real = GpuRunner.run

    def spy(self, graph, inputs, spec, **kw):
        seen.append((kw.get("fuse"), kw.get("compare_reference")))
        return real(self, graph, inputs, spec, **kw)

    monkeypatch.setattr(GpuRunner, "run", spy)
    rec = execute(get_case("layout/transpose_add/f32/5x33x65/perm102"), backend, device,
                  profile=False)
    assert rec["verdict"] == "pass", rec.get("reason")
    assert rec["unfused"] and all(c["ok"] for c in rec["unfused"].values())
    assert seen == [(True, False), (False, False)]

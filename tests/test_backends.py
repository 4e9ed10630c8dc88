"""The backend registry: lookup, lazy probing, plugins that fail, the reference backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hal.backends_registry as reg
from hal.backend import Availability, Backend, Capability, RunResult
from hal.errors import DeviceError, UnsupportedError


def _python(code: str, *, path: str | None = None) -> subprocess.CompletedProcess:
    env = None
    if path is not None:
        import os

        env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_import_hal_is_light():
    r = _python("""
        import sys
        import hal, hal.backend, hal.backends_registry, hal.cli.main, hal.devices.loader
        heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'cuda', 'hip')]
        assert not heavy, heavy
        # registering the in-tree backends imported none of their modules
        assert 'hal.backends.cuda.backend' not in sys.modules
        assert 'hal.reference_backend' not in sys.modules
        print('ok')
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_in_tree_backends_listed():
    listed = dict(reg.list_backends())
    assert {"reference", "cpu_sim", "cuda", "rocm"} <= set(listed)
    assert listed["reference"].available
    for name in ("cuda", "rocm"):
        a = listed[name]
        assert isinstance(a, Availability)
        if not a.available:  # on the CI machines: a reason a user can act on
            assert ("not installed: pip install 'hal[" in a.reason or "driver" in a.reason
                    or "GPU" in a.reason), a.reason


def test_unknown_backend_did_you_mean():
    with pytest.raises(UnsupportedError) as info:
        reg.get_backend("refrence")
    assert "did you mean 'reference'" in str(info.value)


def test_gpu_backend_without_a_gpu_says_why():
    cuda = reg.get_backend("cuda")
    assert Capability.KERNELS in cuda.capabilities
    if not cuda.probe():
        with pytest.raises(DeviceError, match="unavailable"):
            cuda.allocate(16)
        with pytest.raises(DeviceError, match="unavailable"):
            reg.get_backend("cuda", require_available=True)


class _Toy(Backend):
    name = "toy"
    capabilities = frozenset({Capability.SIMULATED})

    def probe(self) -> Availability:
        return Availability(False, "toy is never available")

    def run_graph(self, graph, inputs, spec=None, **options) -> RunResult:
        return RunResult({})


def test_register_and_probe_and_broken_factory():
    try:
        reg.register_backend("toy", _Toy)
        with pytest.raises(ValueError, match="already registered"):
            reg.register_backend("toy", _Toy)
        assert dict(reg.list_backends())["toy"] == Availability(False, "toy is never available")
        assert isinstance(reg.get_backend("toy"), _Toy)
        with pytest.raises(DeviceError, match="toy is never available"):
            reg.get_backend("toy", require_available=True)

        def broken() -> Backend:
            raise RuntimeError("driver exploded")

        reg.register_backend("broken", broken)
        avail = dict(reg.list_backends())["broken"]  # must not raise
        assert not avail and "RuntimeError: driver exploded" in avail.reason
        with pytest.raises(DeviceError, match="driver exploded"):
            reg.get_backend("broken")
    finally:
        reg._REGISTRY.pop("toy", None)
        reg._REGISTRY.pop("broken", None)


def test_reference_backend_kernel_methods_unsupported():
    ref = reg.get_backend("reference")
    assert Capability.KERNELS not in ref.capabilities
    with pytest.raises(UnsupportedError, match="does not"):
        ref.allocate(4)
    times = ref.time(lambda: None, repeat=3)
    assert len(times) == 3 and all(t >= 0 for t in times)


def test_reference_run_graph():
    from hal.dtypes import f32
    from hal.ir import GraphBuilder

    b = GraphBuilder("g")
    x = b.input("x", f32, (2, 3))
    b.output(b.op("add", x, x))
    g = b.build()
    res = reg.get_backend("reference").run_graph(g, {"x": np.ones((2, 3), np.float32)})
    assert isinstance(res, RunResult) and res.stats is None
    (out,) = res.outputs.values()
    assert out.dtype == np.float32 and np.all(out == 2.0)


def test_entry_point_plugins(tmp_path):
    """A plugin that fails to import shows as unavailable; a good one is found; nothing crashes."""
    dist = tmp_path / "halplugs-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: halplugs\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[hal.backends]\n"
        "exploding = halplugs_bad:Backend\n"
        "goodplug = halplugs_good:GoodBackend\n")
    (tmp_path / "halplugs_bad.py").write_text("raise ImportError('needs libfoo.so')\n")
    (tmp_path / "halplugs_good.py").write_text(textwrap.dedent("""
        from hal.backend import Availability, Backend, RunResult
        class GoodBackend(Backend):
            name = "goodplug"
            def probe(self):
                return Availability(True, "always")
            def run_graph(self, graph, inputs, spec=None, **options):
                return RunResult({})
    """))
    r = _python("""
        import sys
        from hal.backends_registry import list_backends, get_backend
        found = dict(list_backends())
        print(found['exploding'].available, found['exploding'].reason)
        print(found['goodplug'].available, type(get_backend('goodplug')).__name__)
        print(found['reference'].available)
    """, path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("False") and "needs libfoo.so" in lines[0]
    assert lines[1] == "True GoodBackend"
    assert lines[2] == "True"

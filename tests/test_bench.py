"""hal bench: cases, the runner's figures (modelled and measured), baselines, suites, CLI.

No timed assertions: structure, counts, units and monotonic modelled figures only.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hal.backend import Availability, Backend, Capability, RunResult
from hal.backends_registry import register_backend
from hal.bench.baselines import BASELINES, Baseline, TorchOps, get_baseline
from hal.bench.cases import CASES, EPILOGUES, make_case, parse_shape
from hal.bench.runner import (
    MEASURED_EVENTS,
    MODELLED_COST,
    MODELLED_SIM,
    run_case,
    summarize_times,
    touched_bytes,
)
from hal.bench.suites import SuiteError, entry_case, load_suite
from hal.cli.main import main
from hal.devices.loader import load_spec
from hal.errors import HalError
from hal.reference import evaluate

ROOT = Path(__file__).resolve().parents[1]
LLM_SUITE = ROOT / "benchmarks" / "suites" / "llm.yaml"
H100 = load_spec("h100-sxm")
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None


# --------------------------------------------------------------------------- cases

@pytest.mark.parametrize("op, shapes, inputs, out", [
    ("rms_norm", ["8x64"], {"x": (8, 64), "weight": (64,)}, (8, 64)),
    ("layer_norm", ["8x64"], {"x": (8, 64), "weight": (64,), "bias": (64,)}, (8, 64)),
    ("matmul", ["32x64x16"], {"a": (32, 16), "b": (16, 64)}, (32, 64)),
    ("matmul", ["32x16", "16x64"], {"a": (32, 16), "b": (16, 64)}, (32, 64)),
    ("matmul+bias+gelu", ["32x64x16"], {"a": (32, 16), "b": (16, 64), "bias": (64,)},
     (32, 64)),
    ("attention", ["1x4x16x8", "1x2x16x8"],
     {"q": (1, 4, 16, 8), "k": (1, 2, 16, 8), "v": (1, 2, 16, 8)}, (1, 4, 16, 8)),
    ("embedding", ["100x16", "2x8"], {"table": (100, 16), "indices": (2, 8)}, (2, 8, 16)),
    ("exp", ["4x4"], {"x0": (4, 4)}, (4, 4)),
    ("reduce_sum", ["4x8"], {"x": (4, 8)}, (4,)),
])
def test_case_shapes(op, shapes, inputs, out):
    case = make_case(op, shapes, "bf16")
    assert {v.name: v.shape for v in case.graph.inputs} == inputs
    assert case.graph.outputs[0].shape == out
    assert case.recipe is not None and case.dtype == "bf16"


def test_case_errors_name_the_problem():
    with pytest.raises(HalError, match="unknown benchmark op 'rms_nrm'") as e:
        make_case("rms_nrm", ["4x4"])
    assert "rms_norm" in e.value.hint
    with pytest.raises(HalError, match="unknown epilogue 'gleu'"):
        make_case("matmul+gleu", ["4x4x4"])
    with pytest.raises(HalError, match="expected MxNxK"):
        make_case("matmul", ["4x4", "4x4", "4x4"])
    with pytest.raises(HalError, match="AxBxC"):
        parse_shape("4096by4096")
    assert parse_shape("1x4096") == (1, 4096)


def test_gather_indices_in_range_and_file_case():
    case = make_case("gather", ["10x4", "3x50"], "f32")
    idx = case.make_inputs(0)["indices"]
    assert idx.min() >= 0 and idx.max() < 10
    fc = make_case(str(ROOT / "examples" / "mlp.hal"), [], "f32")
    assert fc.recipe is None and fc.graph.inputs[0].shape == (8, 64)
    assert {"bias", "gelu", "silu", "residual"} <= set(EPILOGUES)
    assert {"softmax", "layer_norm", "rms_norm", "gelu", "silu", "matmul", "attention",
            "gather", "embedding"} <= set(CASES)


# --------------------------------------------------------------------------- runner


def test_modelled_small_uses_simulator_counts():
    case = make_case("rms_norm", ["16x128"], "f32")
    r = run_case(case, "cpu_sim", H100)
    assert r.method == MODELLED_SIM and r.modelled
    s = summarize_times(r.times_s)
    assert s["samples"] == 1 and s["median_s"] == s["p10_s"] == s["p90_s"] > 0
    assert r.compulsory_bytes == (16 * 128 * 2 + 128) * 4
    assert r.modelled_bytes >= r.compulsory_bytes and r.kernels >= 1
    assert 0 < r.pct_of_roofline <= 100
    assert r.bound == "memory" and r.peak_kind == "vector f32"
    d = r.to_dict()
    assert d["method"] == MODELLED_SIM and d["achieved_GBps"] > 0
    json.dumps(d)


def test_big_shapes_use_cost_model_and_scale_monotonically():
    times, rates = [], []
    for s in (128, 2048, 8192):
        r = run_case(make_case("rms_norm", [f"{s}x8192"], "bf16"), "cpu_sim", H100)
        assert r.method == MODELLED_COST
        times.append(r.median_s)
        rates.append(r.achieved_bytes_per_s)
    assert times == sorted(times) and rates == sorted(rates)
    assert rates[-1] <= H100.dram_bandwidth * 1.0001
    mm = run_case(make_case("matmul", ["8192x8192x8192"], "bf16"), "cpu_sim", H100)
    assert mm.method == MODELLED_COST and mm.bound == "compute"
    assert mm.flops == pytest.approx(2 * 8192 ** 3, rel=0.01)
    assert mm.peak_kind == "matrix bf16" and 0 < mm.pct_of_roofline <= 100


def test_gather_counts_rows_not_table():
    case = make_case("embedding", ["128256x4096", "1x16"], "bf16")
    total, notes = touched_bytes(case.graph)
    assert total == 16 * 4096 * 2 * 2 + 16 * 4 and notes
    r = run_case(case, "cpu_sim", H100, model="cost")
    assert r.compulsory_bytes == total and r.flops == 0


class FakeGpu(Backend):
    """A pretend hardware backend: runs the reference, times on the host."""

    name = "fake_gpu"
    capabilities = frozenset({Capability.REAL_HARDWARE, Capability.TIMING, Capability.KERNELS})
    prepared = 0

    def probe(self):
        return Availability(True)

    def run_graph(self, graph, inputs, spec=None, **options):
        return RunResult(evaluate(graph, inputs))

    def prepare_graph(self, graph, inputs, spec):
        FakeGpu.prepared += 1
        return lambda: evaluate(graph, inputs)


def test_measured_path_on_a_hardware_backend():
    register_backend("fake_gpu", FakeGpu, replace=True)
    case = make_case("softmax", ["8x32"], "f32")
    r = run_case(case, "fake_gpu", H100, repeat=5, warmup=1, baselines=["torch"])
    assert r.method == MEASURED_EVENTS and not r.modelled and FakeGpu.prepared == 1
    s = summarize_times(r.times_s)
    assert s["samples"] == 5 and s["p10_s"] <= s["median_s"] <= s["p90_s"]
    r2 = run_case(case, "fake_gpu", H100, repeat=3, warmup=0, flush_l2=True)
    assert summarize_times(r2.times_s)["samples"] == 3
    if HAS_TORCH:   # torch baseline on the GPU target: no CUDA here means a clear reason
        import torch

        (b,) = r.baselines
        assert b.available == torch.cuda.is_available()


def test_reference_backend_gets_the_cost_model():
    r = run_case(make_case("softmax", ["8x32"], "f32"), "reference", H100)
    assert r.method == MODELLED_COST and r.median_s > 0


# --------------------------------------------------------------------------- baselines


def test_baseline_registry_and_unavailable_reasons():
    assert {"torch", "torch-compile", "jax"} <= set(BASELINES)
    with pytest.raises(HalError, match="unknown baseline"):
        get_baseline("tensorflow")

    class Missing(Baseline):
        name, module = "missing", "no_such_framework_xyz"

    res = Missing().run(make_case("silu", ["4x4"], "f32"), "host", 2, 0)
    assert not res.available and "not installed" in res.reason
    fc = make_case(str(ROOT / "examples" / "mlp.hal"), [], "f32")
    res = get_baseline("torch").run(fc, "host", 2, 0)
    assert not res.available and ".hal" in res.reason
    res = get_baseline("torch").run(make_case("silu", ["4x4"], "f32"), "gpu", 2, 0)
    if HAS_TORCH:   # no GPU on CI machines: a clear reason, never a host timing
        import torch

        if not torch.cuda.is_available():
            assert not res.available and "GPU" in res.reason


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("op, shapes", [
    ("rms_norm", ["4x32"]), ("layer_norm", ["4x32"]), ("softmax", ["4x32"]),
    ("matmul+bias+gelu", ["8x16x4"]), ("attention", ["1x4x8x16", "1x2x8x16"]),
    ("embedding", ["10x4", "2x3"]), ("reduce_max", ["4x8"]), ("matmul+silu+residual",
                                                              ["8x8x8"]),
])
def test_torch_recipe_matches_reference(op, shapes):
    import torch

    case = make_case(op, shapes, "f32")
    inputs = case.make_inputs(0)
    want = next(iter(evaluate(case.graph, inputs).values()))
    got = case.recipe(TorchOps(), *(torch.from_numpy(np.asarray(a)) for a in inputs.values()))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(not HAS_JAX, reason="jax not installed")
def test_jax_recipe_matches_reference():
    from hal.bench.baselines import JaxOps

    for op, shapes in (("rms_norm", ["4x32"]), ("attention", ["1x4x8x16", "1x2x8x16"])):
        case = make_case(op, shapes, "f32")
        inputs = case.make_inputs(0)
        want = next(iter(evaluate(case.graph, inputs).values()))
        got = case.recipe(JaxOps(), *inputs.values())
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_baseline_runs_in_the_same_result():
    r = run_case(make_case("silu", ["16x64"], "f32"), "cpu_sim", H100, repeat=4, warmup=1,
                 baselines=["torch"])
    (b,) = r.baselines
    assert b.available and b.where == "host CPU" and len(b.times_s) == 4
    assert r.ratio(b) is not None and r.ratio(b) > 0
    assert any("host CPU" in n for n in r.notes)
    row = r.csv_row()
    assert row["torch_where"] == "host CPU" and row["torch_ratio"] == r.ratio(b)


# --------------------------------------------------------------------------- suites


def test_llm_suite_loads_with_standard_shapes():
    s = load_suite(LLM_SUITE)
    names = [e.name for e in s.entries]
    assert len(names) == len(set(names)) > 50
    ops = {e.op for e in s.entries}
    assert {"rms_norm", "layer_norm", "softmax", "silu", "gelu", "attention", "embedding",
            "matmul+bias+gelu"} <= ops
    dims = {d for e in s.entries for shape in e.shapes for d in shape}
    assert {4096, 8192, 14336, 28672, 1, 32, 64, 8} <= dims
    assert entry_case(s.entries[0]).graph.inputs


@pytest.mark.parametrize("text, match", [
    ("cases: []", "field 'cases'"),
    ("cases:\n  - {op: rms_norm, shapes: ['4x4'], colour: red}", r"cases\[0\] \(rms_norm\): "
                                                                 "field 'colour'"),
    ("cases:\n  - {op: rms_norm}", r"cases\[0\] \(rms_norm\): field 'shapes'"),
    ("cases:\n  - {op: rms_norm, shapes: ['S x 4'], dtype: f33}", "field 'dtype'"),
    ("cases:\n  - {op: rms_norm, shapes: ['S x 4']}", "'S' is neither"),
    ("cases:\n  - {op: rms_norm, shapes: ['S x 4'], sweep: {'S,H': [1, 2]}}", "field 'sweep'"),
    ("cases:\n  - {op: rms_norm, shapes: ['4x4'], name: a}\n"
     "  - {op: softmax, shapes: ['4x4'], name: a}", r"cases\[1\].*field 'name'"),
    ("oops: 1\ncases: []", "field 'oops'"),
])
def test_suite_errors_name_file_entry_field(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SuiteError, match=match) as e:
        load_suite(p)
    assert str(p) in e.value.message


def test_suite_sweep_expands_and_bad_op_names_entry(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("cases:\n  - name: n_{S}_{H}\n    op: rms_norm\n    shapes: ['S x H']\n"
                 "    sweep: {S: [1, 2], 'H,F': [[8, 16], [32, 64]]}\n"
                 "  - {op: nosuchop, shapes: ['4x4']}\n")
    s = load_suite(p)
    assert [e.name for e in s.entries[:4]] == ["n_1_8", "n_1_32", "n_2_8", "n_2_32"]
    assert s.entries[1].shapes == [(1, 32)]
    with pytest.raises(SuiteError, match=r"cases\[1\] \(nosuchop\).*unknown benchmark op"):
        entry_case(s.entries[-1])


# --------------------------------------------------------------------------- CLI


def test_cli_bench_writes_json_csv_plot_with_provenance(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["bench", "rms_norm", "--shape", "16x128", "--dtype", "f32",
                                    "--device", "mi300x", "--json", f"{out}.json", "--csv",
                                    f"{out}.csv", "--plot", f"{out}.png"])
    assert res.exit_code == 0, res.output
    assert "modelled (simulator counts)" in res.output and "% roof" in res.output
    doc = json.loads(Path(f"{out}.json").read_text())
    prov = doc["provenance"]
    # Under CliRunner the command line is the test runner's own sys.argv: only check it is there.
    assert prov["device"] == "mi300x" and prov["hal_version"] and prov["command"]
    assert {"date", "hostname", "cpu", "python"} <= set(prov)
    (rec,) = doc["results"]
    assert rec["method"] == "modelled (simulator counts)" and rec["device"] == "mi300x"
    rows = list(csv.DictReader(Path(f"{out}.csv").open()))
    assert len(rows) == 1 and rows[0]["case"].startswith("rms_norm")
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_suite_and_errors(tmp_path):
    pytest.importorskip("matplotlib")
    p = tmp_path / "s.yaml"
    p.write_text("suite: tiny\ncases:\n  - {op: silu, shapes: ['S x 64'], sweep: {S: [4, 8]}}\n"
                 "  - {op: matmul+bias, shapes: ['8192x8192x8192']}\n"
                 "  - {op: gather, shapes: ['4x4']}\n")
    res = CliRunner().invoke(main, ["bench", "--suite", str(p), "--json",
                                    str(tmp_path / "o.json"), "--plot", str(tmp_path / "o.png")])
    assert res.exit_code == 1
    assert "1 of 4 case(s) failed" in res.output and "gather" in res.output
    doc = json.loads((tmp_path / "o.json").read_text())   # written despite the failure
    assert doc["suite"] == "tiny" and len(doc["results"]) == 3
    assert {r["method"] for r in doc["results"]} == {MODELLED_SIM, MODELLED_COST}
    res = CliRunner().invoke(main, ["bench", "rms_norm", "--suite", str(p)])
    assert res.exit_code == 1 and "either OP_OR_FILE or --suite" in res.output
    res = CliRunner().invoke(main, ["bench", "--list"])
    assert res.exit_code == 0 and "matmul" in res.output and "epilogues" in res.output


# --------------------------------------------------------------------------- copy reference


def test_copy_reference_not_available_without_a_gpu():
    from hal.bench.copy_bandwidth import (
        CopyBandwidthUnavailable,
        copy_reference,
        cuda_device_name,
        measure_copy_bandwidth,
    )

    if cuda_device_name() is not None:
        pytest.skip("a GPU is visible: the copy is measurable here")
    with pytest.raises(CopyBandwidthUnavailable, match="not available"):
        measure_copy_bandwidth(1 << 20)
    ref = copy_reference(1 << 21, H100, "measured")
    assert not ref.available and "not available" in ref.reason and ref.GBps == 0
    assert ref.bytes_per_copy == 1 << 20 and ref.to_dict()["GBps"] is None
    if HAS_TORCH:
        assert "no CUDA device" in ref.reason


def test_copy_reference_measured_arithmetic_with_a_fake_cuda(monkeypatch):
    """The measured path (torch.cuda.Event around dst.copy_(src)) with a stand-in torch."""
    from hal.bench import copy_bandwidth as cb

    calls = {"copies": 0}

    class T:
        def fill_(self, v):
            return self

        def zero_(self):
            return self

        def copy_(self, other):
            calls["copies"] += 1
            return self

    class FakeEvent:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return 0.5                               # ms

    class Cuda:
        Event = FakeEvent

        @staticmethod
        def synchronize():
            pass

        @staticmethod
        def current_device():
            return 0

        @staticmethod
        def get_device_name():
            return "Fake H100"

    class FakeTorch:
        uint8, cuda = "uint8", Cuda

        @staticmethod
        def empty(n, dtype=None, device=None):
            return T()

        @staticmethod
        def empty_like(t):
            return T()

    monkeypatch.setattr(cb, "_torch_cuda", lambda: FakeTorch)
    ref = cb.measure_copy_bandwidth(1_000_000, repeat=7, warmup=2)
    assert ref.available and ref.method == cb.MEASURED_COPY and not ref.modelled
    assert calls["copies"] == 9 and len(ref.times_s) == 7
    assert ref.bytes_moved == 2_000_000
    assert ref.GBps == pytest.approx(2_000_000 / 0.5e-3 / 1e9)
    assert "Fake H100" in ref.where and "measured" in ref.label()
    cache = cb.CopyReferences(repeat=3, warmup=1)
    a = cache.get(4_000_000, H100, "measured")
    assert cache.get(4_000_000, H100, "measured") is a and len(cache) == 1
    assert a.bytes_per_copy == 2_000_000


def test_run_case_copy_reference_modelled_and_on_gpu_backends():
    from hal.bench.copy_bandwidth import MODELLED_COPY, CopyReferences

    r = run_case(make_case("rms_norm", ["8192x8192"], "bf16"), "cpu_sim", H100,
                 copy_reference=True)
    c = r.copy_reference
    assert c.available and c.modelled and c.method == MODELLED_COPY
    assert c.bytes_per_s == H100.dram_bandwidth and c.bytes_moved == r.compulsory_bytes
    assert r.pct_of_copy_bw == pytest.approx(100 * r.achieved_bytes_per_s / H100.dram_bandwidth)
    assert any("copy reference modelled" in n for n in r.notes)
    d = r.to_dict()
    assert d["copy_method"] == MODELLED_COPY and d["copy_reference"]["modelled"] is True
    assert d["pct_of_copy_bw"] == r.pct_of_copy_bw and d["copy_GBps"] > 0
    row = r.csv_row()
    assert row["copy_method"] == MODELLED_COPY and "copy_reference" not in row
    assert run_case(make_case("silu", ["4x4"], "f32"), "cpu_sim", H100).copy_reference is None
    # a hardware backend on a machine where torch sees no GPU: unavailable, with the reason
    register_backend("fake_gpu", FakeGpu, replace=True)
    cache = CopyReferences()
    g = run_case(make_case("softmax", ["8x32"], "f32"), "fake_gpu", H100, repeat=2,
                 warmup=0, copy_reference=True, copy_cache=cache)
    from hal.bench.copy_bandwidth import cuda_device_name

    if cuda_device_name() is None:
        assert not g.copy_reference.available and g.pct_of_copy_bw is None
        assert "not available" in g.copy_reference.reason
        assert any("copy reference not available" in n for n in g.notes)
        assert g.to_dict()["copy_GBps"] is None
    assert len(cache) == 1


def test_cli_bench_reports_the_modelled_copy_reference(tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["bench", "rms_norm", "--shape", "4096x4096", "--backend",
                                    "cpu_sim", "--device", "h100-sxm", "--json", f"{out}.json",
                                    "--csv", f"{out}.csv"])
    assert res.exit_code == 0, res.output
    assert "copy GB/s" in res.output and "% copy BW" in res.output
    assert "3350 (modelled)" in res.output
    assert "copy reference modelled" in res.output and "not a measured copy" in res.output
    (rec,) = json.loads(Path(f"{out}.json").read_text())["results"]
    assert rec["copy_reference"]["modelled"] and rec["copy_method"].startswith("modelled")
    assert 0 < rec["pct_of_copy_bw"] <= 100.01
    (row,) = list(csv.DictReader(Path(f"{out}.csv").open()))
    assert float(row["pct_of_copy_bw"]) > 0 and row["copy_method"].startswith("modelled")
    res = CliRunner().invoke(main, ["bench", "rms_norm", "--shape", "16x128",
                                    "--no-copy-reference"])
    assert res.exit_code == 0 and "% copy BW" not in res.output
    res = CliRunner().invoke(main, ["bench", "--help"])
    assert "--copy-reference" in res.output and "modelled" in res.output


# --------------------------------------------------------------------------- gpu_check.sh


def test_gpu_check_syntax_and_dry_run_lists_membound(tmp_path):
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "OUT": str(tmp_path / "gc")}
    res = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    (mb,) = [ln for ln in lines if ln.startswith("[dry-run] membound:")]
    assert "benchmarks/bench_membound.py --backend cuda --device h200" in mb
    assert f"--out {tmp_path / 'gc'}/run/membound" in mb
    assert "--baselines torch,torch-compile" in mb and "--time-budget" in mb
    steps = [ln.split(":")[0].removeprefix("[dry-run] ") for ln in lines
             if ln.startswith("[dry-run]")]
    assert steps == ["install", "probe", "smoke", "conformance", "membound", "kernels"]
    limits = [int(ln.split("timeout ")[1].split()[0]) for ln in lines
              if ln.startswith("[dry-run]")]
    assert all(0 < t <= 380 for t in limits)
    assert sum(limits) <= 380 - 15    # worst case, every step timing out, packing kept
    assert limits[4] == 75 and "--time-budget 60" in mb   # membound stops itself first
    assert not (tmp_path / "gc").exists()                 # a dry run writes nothing

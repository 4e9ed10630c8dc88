"""benchmarks/bench_membound.py: end to end on cpu_sim (modelled), and the verdict logic.

No GPU here: the measured path is exercised with a pretend hardware backend (host timings)
and a stand-in copy reference; no timed assertions.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hal.backend import Availability, Backend, Capability, RunResult
from hal.backends_registry import register_backend
from hal.bench.baselines import BaselineResult
from hal.bench.copy_bandwidth import CopyReference
from hal.reference import evaluate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_membound.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def load_script():
    spec = importlib.util.spec_from_file_location("bench_membound", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_membound"] = mod
    spec.loader.exec_module(mod)
    return mod


mb = load_script()


def test_quick_cpu_sim_end_to_end_subprocess(tmp_path):
    out = tmp_path / "mb"
    res = subprocess.run([sys.executable, str(SCRIPT), "--backend", "cpu_sim", "--device",
                          "h100-sxm", "--quick", "--out", str(out), "--baselines",
                          "torch" if HAS_TORCH else ""],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[16/16]" in res.stderr and "membound: wrote" in res.stderr   # progress on stderr
    md = (out / "membound.md").read_text()
    assert md == res.stdout.rstrip("\n") + "\n" or md in res.stdout
    header = "| " + " | ".join(mb.MD_COLUMNS) + " |"
    assert header in md
    for col in ("hal time", "GB/s", "% of copy BW", "torch eager", "torch.compile",
                "speedup vs eager", "speedup vs compile", "verdict"):
        assert col in header
    for k in ("**date**", "**command**", "**machine**", "MODELLED"):
        assert k in md
    assert "bench_membound.py --backend cpu_sim" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and "n/a (modelled)" in ln]
    assert len(table) == 16                           # 4 ops x 2 cols x 2 dtypes
    assert all("n/a (modelled)" in ln and "3350 (modelled)" in ln for ln in table)
    assert {ln.split(" | ")[0][2:] for ln in table} == set(mb.DEFAULT_OPS)
    doc = json.loads((out / "membound.json").read_text())
    assert doc["complete"] and doc["header"]["modelled"] and len(doc["rows"]) == 16
    assert doc["criteria"]["min_pct_of_copy_bw"] == 80.0
    row = doc["rows"][0]
    for k in ("case", "shape", "dtype", "hal_median_s", "hal_GBps", "copy_GBps",
              "pct_of_copy_bw", "verdict", "copy_reference", "hal"):
        assert k in row
    assert row["copy_reference"]["modelled"] and row["method"].startswith("modelled")
    assert row["verdict"] == "n/a (modelled)" and row["pct_of_copy_bw"] > 0
    assert {r["dtype"] for r in doc["rows"]} == {"bf16", "f32"}
    assert (out / "membound.csv").read_text().startswith("case,")
    if HAS_TORCH:   # host-CPU baseline against a modelled device time: no speedup claimed
        assert row["torch_median_s"] > 0 and row["speedup_vs_torch"] is None


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_quick_with_torch_compile_in_process(tmp_path):
    rc = mb.main(["--backend", "cpu_sim", "--quick", "--ops", "softmax", "--dtypes", "f32",
                  "--cols", "256", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "membound.json").read_text())
    (row,) = doc["rows"]
    names = {b["name"]: b for b in row["baselines"]}
    assert set(names) == {"torch", "torch-compile"}
    assert names["torch"]["available"] and names["torch"]["where"] == "host CPU"
    if names["torch-compile"]["available"]:   # a host without a C++ compiler says why
        assert row["torch-compile_median_s"] > 0


def test_full_plan_shapes_and_order():
    args = mb.parse_args(["--out", "x"])
    plan = mb.plan_cases(args)
    assert len(plan) == 32 and args.backend == "cuda"
    assert {c for _, _, c, _ in plan} == {4096, 8192, 16384, 32768}
    assert [c for _, _, c, _ in plan[:16]] == [4096] * 8 + [32768] * 8   # extremes first
    assert all(r * c == 1 << 24 for _, r, c, _ in plan)                   # 32/64 MiB tensors
    assert {d for *_, d in plan} == {"bf16", "f32"}
    assert args.baselines == ["torch", "torch-compile"]
    with pytest.raises(SystemExit):
        mb.parse_args(["--out", "x", "--ops", "nosuch"])
    with pytest.raises(SystemExit):
        mb.parse_args(["--out", "x", "--baselines", "tensorflow"])


def _row(hal_s, pct_copy_gbps, eager_s, compile_s, modelled=False):
    from hal.bench.cases import make_case
    from hal.bench.runner import MEASURED_EVENTS, MODELLED_COST, BenchResult

    case = make_case("softmax", ["8x32"], "f32")
    nbytes = 1_000_000
    res = BenchResult(case.name, "softmax", ["8x32"], "f32", "x", "h100-sxm",
                      MODELLED_COST if modelled else MEASURED_EVENTS, [hal_s], nbytes, nbytes,
                      0.0, 1, 1e12, 1e12, "vector f32")
    bases = [BaselineResult("torch", eager_s is not None, "" if eager_s else "no GPU",
                            "cuda:0 X", [eager_s] if eager_s else []),
             BaselineResult("torch-compile", compile_s is not None, "",
                            "cuda:0 X", [compile_s] if compile_s else [])]
    copy = CopyReference(True, "measured", nbytes // 2, "", "cuda:0", [1.0],
                         pct_copy_gbps * 1e9)
    return mb.Row("softmax", "8x32", "f32", case.name, nbytes, res, "", bases, copy)


def test_verdicts():
    wanted = ["torch", "torch-compile"]
    # 1 MB in 1 us = 1000 GB/s; copy 1200 GB/s -> 83%
    r = _row(1e-6, 1200, 2e-6, 1e-6)
    assert r.gbps == pytest.approx(1000) and r.pct_of_copy == pytest.approx(100 * 1000 / 1200)
    assert r.speedup("torch") == pytest.approx(2.0) and r.verdict(80, wanted) == "PASS"
    assert r.verdict(90, wanted).startswith("FAIL (83% < 90% of copy BW")
    slow = _row(1e-6, 1200, 2e-6, 0.5e-6)
    assert slow.verdict(80, wanted) == "FAIL (slower than torch-compile)"
    missing = _row(1e-6, 1200, None, 1e-6)
    assert missing.verdict(80, wanted).startswith("INCOMPLETE (torch not measured")
    assert _row(1e-6, 1200, 2e-6, 1e-6, modelled=True).verdict(80, wanted) == "n/a (modelled)"
    err = mb.Row("softmax", "8x32", "f32", "c", error="DeviceError: boom")
    assert err.verdict(80, wanted) == "ERROR" and err.pct_of_copy is None
    d = r.to_dict(80, wanted)
    assert d["checks"] == {"bandwidth": True, "vs_torch": True, "vs_torch-compile": True}
    json.dumps(d, default=str)


class FakeGpuMB(Backend):
    """Pretend hardware: reference results, host timings."""

    name = "fake_gpu_mb"
    capabilities = frozenset({Capability.REAL_HARDWARE, Capability.TIMING, Capability.KERNELS})

    def probe(self):
        return Availability(True)

    def run_graph(self, graph, inputs, spec=None, **options):
        return RunResult(evaluate(graph, inputs))

    def prepare_graph(self, graph, inputs, spec):
        if graph.inputs[0].shape[-1] == 64:
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS (pretend)")
        return lambda: evaluate(graph, inputs)


def test_measured_backend_with_a_failing_case_still_reports(tmp_path, monkeypatch):
    """A hal failure on one case is an ERROR row; the run goes on and writes everything."""
    from hal.bench import copy_bandwidth as cb

    register_backend("fake_gpu_mb", FakeGpuMB, replace=True)
    monkeypatch.setattr(cb, "measure_copy_bandwidth", lambda n, *a, **k: CopyReference(
        True, cb.MEASURED_COPY, n, "", "cuda:0 Fake", [1e-3], 2 * n / 1e-3))
    rc = mb.main(["--backend", "fake_gpu_mb", "--device", "h100-sxm", "--rows", "2",
                  "--cols", "32,64", "--dtypes", "f32", "--ops", "rms_norm",
                  "--baselines", "", "--repeat", "2", "--warmup", "0", "--no-flush-l2",
                  "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "membound.json").read_text())
    by_shape = {r["shape"]: r for r in doc["rows"]}
    ok, bad = by_shape["2x32"], by_shape["2x64"]
    assert bad["verdict"] == "ERROR" and "ILLEGAL_ADDRESS" in bad["error"]
    assert bad["copy_reference"]["available"]            # still measured for that size
    assert ok["method"] == "measured (device events)" and ok["pct_of_copy_bw"] > 0
    assert ok["verdict"] in ("PASS",) or ok["verdict"].startswith("FAIL")
    assert not doc["header"]["modelled"]
    md = (tmp_path / "membound.md").read_text()
    assert "## errors" in md and "cuda:0 Fake" in md
    rc = mb.main(["--backend", "fake_gpu_mb", "--rows", "2", "--cols", "32", "--dtypes",
                  "f32", "--ops", "rms_norm", "--baselines", "", "--repeat", "1",
                  "--warmup", "0", "--no-flush-l2", "--strict", "--min-pct", "1e9",
                  "--out", str(tmp_path / "strict")])
    assert rc == 1


def test_time_budget_skips_and_labels(tmp_path, monkeypatch):
    ticks = iter(range(0, 10_000, 50))        # every monotonic() call: +50 s
    monkeypatch.setattr(mb.time, "monotonic", lambda: next(ticks))
    rc = mb.main(["--backend", "cpu_sim", "--quick", "--ops", "rms_norm", "--dtypes", "f32",
                  "--baselines", "", "--time-budget", "120", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "membound.json").read_text())
    verdicts = [r["verdict"] for r in doc["rows"]]
    assert verdicts[0] == "n/a (modelled)" and verdicts[-1] == "SKIPPED (time budget)"
    assert "skipped" in (tmp_path / "membound.md").read_text()

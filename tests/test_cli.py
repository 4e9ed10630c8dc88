"""The `hal` command line: tables, errors without tracebacks, and `hal run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hal.cli.main import main

SHIPPED = ["a100-sxm", "h100-sxm", "h200", "host-cpu", "mi250x-gcd", "mi300x", "scratch-npu"]

SMALL_HAL = """\
# two inputs, one symbolic dim
graph small {
  input %x: f32[B, 4]
  input %y: f32[B, 4]
  %z: f32[B, 4] = add(%x, %y)
  %w: f32[B, 4] = exp(%z)
  output %z, %w
}
"""


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help():
    r = invoke("--version")
    assert r.exit_code == 0 and "0.1.0" in r.output
    r = invoke("--help")
    for cmd in ("devices", "backends", "ops", "run"):
        assert cmd in r.output


def test_devices_lists_six():
    r = invoke("devices")
    assert r.exit_code == 0, r.output
    for name in SHIPPED:
        assert name in r.output
    assert "3.35 TB/s" in r.output and "989 TFLOP/s" in r.output and "227 KiB" in r.output


def test_devices_show_name_and_json():
    r = invoke("devices", "show", "mi300x")
    assert r.exit_code == 0, r.output
    assert "gfx942" in r.output and "64 KiB" in r.output and "5.3 TB/s" in r.output
    r = invoke("devices", "show", "h100-sxm", "--json")
    data = json.loads(r.output)
    assert data["compute_units"] == 132 and data["shared_mem_per_block"] == 227 * 1024


def test_devices_show_path(tmp_path):
    from hal.devices.loader import load_spec

    p = tmp_path / "npu2.yaml"
    text = Path(load_spec("scratch-npu").source).read_text()
    p.write_text(text.replace("compute_units: 64", "compute_units: 8"))
    r = invoke("devices", "show", str(p), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["compute_units"] == 8


def test_malformed_spec_is_one_clear_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nvendor: x\narch: y\nkind: gpu\nwarp_size: 24\n")
    r = invoke("devices", "show", str(p))
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.output.startswith("error: ") and str(p) in r.output and "hint:" in r.output
    p.write_text("name: [unclosed\n")
    r = invoke("devices", "show", str(p))
    assert r.exit_code == 1 and "YAML syntax error" in r.output and "Traceback" not in r.output


def test_unknown_device_name():
    r = invoke("devices", "show", "h100")
    assert r.exit_code == 1 and "no device named 'h100'" in r.output
    assert "Traceback" not in r.output


def test_debug_shows_the_exception():
    from hal.errors import SpecError

    with pytest.raises(SpecError):
        invoke("--debug", "devices", "show", "h100")


def test_usage_error_exit_2():
    r = invoke("devices", "show")
    assert r.exit_code == 2


def test_backends_and_ops():
    r = invoke("backends")
    assert r.exit_code == 0, r.output
    for name in ("reference", "cpu_sim", "cuda", "rocm"):
        assert name in r.output
    r = invoke("ops")
    assert r.exit_code == 0 and "add" in r.output and "elementwise" in r.output
    r = invoke("ops", "--category", "composite")
    assert r.exit_code == 0 and "elementwise" not in r.output
    assert invoke("ops", "--category", "nonsense").exit_code == 2


def test_run_table_json_and_save(tmp_path):
    f = tmp_path / "small.hal"
    f.write_text(SMALL_HAL)
    r = invoke("run", str(f), "--dim", "B=3")
    assert r.exit_code == 0, r.output
    assert "graph small on reference" in r.output and "(3, 4)" in r.output

    out = tmp_path / "out.npz"
    r = invoke("run", str(f), "--dim", "B=3", "--seed", "7", "--json", "--save", str(out))
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["backend"] == "reference" and set(data["outputs"]) == {"z", "w"}
    assert data["outputs"]["z"]["shape"] == [3, 4] and data["outputs"]["z"]["dtype"] == "f32"
    with np.load(out) as z:
        w, zz = z["w"], z["z"]
    assert np.allclose(w, np.exp(zz), rtol=1e-6)
    assert data["outputs"]["w"]["min"] == pytest.approx(float(w.min()))


def test_run_with_inputs_and_device_path(tmp_path):
    from hal.devices.loader import load_spec

    f = tmp_path / "small.hal"
    f.write_text(SMALL_HAL)
    inp = tmp_path / "in.npz"
    np.savez(inp, x=np.full((2, 4), 1.0), y=np.full((2, 4), 0.5))
    spec = tmp_path / "dev.yaml"
    spec.write_text(Path(load_spec("host-cpu").source).read_text())
    r = invoke("run", str(f), "--inputs", str(inp), "--device", str(spec), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["outputs"]["z"]["min"] == data["outputs"]["z"]["max"] == 1.5
    assert data["device"] == "host-cpu"


def test_run_errors_are_one_line(tmp_path):
    f = tmp_path / "small.hal"
    f.write_text(SMALL_HAL)
    r = invoke("run", str(f))
    assert r.exit_code == 1 and "--dim B=4" in r.output and "Traceback" not in r.output
    r = invoke("run", str(f), "--dim", "B=2", "--backend", "refrence")
    assert r.exit_code == 1 and "did you mean 'reference'" in r.output
    bad = tmp_path / "bad.hal"
    bad.write_text(SMALL_HAL.replace("add(%x, %y)", "add(%x, %q)"))
    r = invoke("run", str(bad), "--dim", "B=2")
    assert r.exit_code == 1 and "Traceback" not in r.output and "bad.hal" in r.output
    r = invoke("run", str(f), "--dim", "B=2", "--device", str(tmp_path / "none.yaml"))
    assert r.exit_code == 1 and "cannot read spec file" in r.output


def test_run_prints_backend_stats(tmp_path, monkeypatch):
    """The hook for cpu_sim: per-kernel stats and a report returned by run_graph are printed."""
    import hal.backends_registry as reg
    from hal.backend import RunResult

    ref = reg.get_backend("reference")

    def fake_run(graph, inputs, spec=None, **options):
        assert options == {"checks": True}
        return RunResult({"z": np.zeros(2, np.float32)},
                         stats=[{"kernel": "fused_add_exp", "bytes": 96, "flops": 8}],
                         report={"shared_mem_peak": 0})

    monkeypatch.setattr(ref, "run_graph", fake_run)
    f = tmp_path / "small.hal"
    f.write_text(SMALL_HAL)
    r = invoke("run", str(f), "--dim", "B=2", "-o", "checks=true", "--stats")
    assert r.exit_code == 0, r.output
    assert "fused_add_exp" in r.output and "shared_mem_peak" in r.output
    assert "1 kernel(s)" in r.output

"""`hal compile` defects from issue 16, each as its reproduction.

* `--check` on mi250x-gcd failed a shipped example: the plan was measured with hipcc,
  the check compiled the same arch with clang-19 (which spills 16 bytes);
* 0 shared bytes shown for an attention kernel launched with 90 KiB of dynamic shared;
* "over limit" rows with exit status 0;
* `--backend cuda --device mi300x` silently compiled for sm_90a;
* rich markup printed literally (`[yellow]...[/yellow]`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hal.cli.main import main
from hal.devices.loader import SPEC_DIR

ROOT = Path(__file__).resolve().parents[1]
GPT = str(ROOT / "examples" / "gpt_block_d768_s128.hal")
MLP = str(ROOT / "examples" / "mlp.hal")


def _need(*names: str) -> None:
    from hal.render.check import COMPILERS, _load

    _load()
    for n in names:
        why = COMPILERS[n].available()
        if why:
            pytest.skip(why)


def _compile(*args: str):
    return CliRunner().invoke(main, ["compile", *args])


def test_other_vendors_spec_is_an_error():
    r = _compile(MLP, "--backend", "cuda", "--device", "mi300x")
    assert r.exit_code == 1 and "mi300x is an amd device" in r.output
    r = _compile(MLP, "--backend", "rocm", "--device", "h100-sxm")
    assert r.exit_code == 1 and "h100-sxm is an nvidia device" in r.output


def test_check_uses_the_plans_compiler_for_the_specs_arch():
    _need("hipcc", "clang-19")
    r = _compile(GPT, "--backend", "rocm", "--device", "mi250x-gcd", "--check", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    on_spec_arch = {rec["compiler"] for rec in data["records"] if rec["arch"] == "gfx90a"}
    assert on_spec_arch == {"hipcc"}


def test_shared_memory_shown_includes_dynamic_shared_memory():
    _need("nvrtc")
    r = _compile(GPT, "--backend", "cuda", "--device", "h100-sxm", "--json")
    assert r.exit_code == 0, r.output
    att = [rec for rec in json.loads(r.output)["records"] if "attention" in rec["kernel"]]
    assert att and all(rec["shared_bytes"] > 48 * 1024 for rec in att)


def test_an_over_limit_row_fails_the_command(tmp_path, monkeypatch):
    _need("nvrtc")
    monkeypatch.setenv("HAL_MEASURE", "off")  # the plan does not know the tight limit
    text = (SPEC_DIR / "h100-sxm.yaml").read_text()
    text = re.sub(r"(?m)^name:.*$", "name: tight", text)
    text = re.sub(r"(?m)^max_registers_per_thread:.*$", "max_registers_per_thread: 24", text)
    spec = tmp_path / "tight.yaml"
    spec.write_text(text)
    r = _compile(GPT, "--backend", "cuda", "--device", str(spec), "--json")
    out = r.output[:r.output.rindex("}") + 1]
    rows = json.loads(out)["records"]
    assert any(rec["status"] == "over limit" for rec in rows)
    assert r.exit_code == 1 and "error:" in r.output


def test_skipped_compilers_print_without_markup(monkeypatch):
    from dataclasses import replace

    from hal.render import check

    check._load()
    monkeypatch.setitem(check.COMPILERS, "nvcc", replace(
        check.COMPILERS["nvcc"], available=lambda: "nvcc not found: pretend"))
    monkeypatch.setitem(check.COMPILERS, "nvrtc", replace(
        check.COMPILERS["nvrtc"], available=lambda: "NVRTC missing: pretend"))
    r = _compile(MLP, "--backend", "cuda", "--device", "h100-sxm")
    assert "skipped nvcc: nvcc not found: pretend" in r.output
    assert "[yellow]" not in r.output and "[/yellow]" not in r.output


WGMMA = """graph mm {
  input %a: bf16[128, 512]
  input %b: bf16[512, 512]
  %c: bf16[128, 512] = matmul(%a, %b)
  output %c
}
"""


def _wgmma_kernels():
    from hal.devices.loader import load_spec
    from hal.fusion import plan
    from hal.ir.text import parse_graph
    from hal.lowering import lower_group

    spec = load_spec("h100-sxm")
    ks = [k for g in plan(parse_graph(WGMMA), spec, measure="off").groups
          for k in lower_group(g, spec)]
    assert [k.meta.plan.strategy for k in ks] == ["wgmma"] and ks[0].tensor_maps
    return spec, ks


def test_check_compiles_other_arches_only_with_what_they_have():
    # Reproduction: once h100-sxm plans used wgmma and TMA, `--check` compiled them for
    # sm_80 too, and ptxas refused ("wgmma.fence not supported on .target sm_80"), so
    # every shipped llama example failed `hal compile --check` on h100-sxm and h200.
    from hal.cli.compile_cmd import portable

    spec, ks = _wgmma_kernels()
    ok, why = portable(ks, spec, "sm_80")
    assert ok == [] and len(why) == 1
    assert "wgmma.mma_async" in why[0] and "TMA" in why[0] and "a100-sxm (sm_80) lacks" in why[0]
    assert portable(ks, spec, "sm_90a") == (ks, [])


def test_check_of_a_wgmma_kernel_passes_with_the_skip_named(tmp_path):
    _need("nvcc", "nvrtc")
    f = tmp_path / "mm.hal"
    f.write_text(WGMMA)
    r = _compile(str(f), "--backend", "cuda", "--device", "h100-sxm", "--check")
    assert r.exit_code == 0, r.output
    assert "skipped on nvcc: k0_matmul not compiled for sm_80" in " ".join(r.output.split())
    assert "sm_90a" in r.output

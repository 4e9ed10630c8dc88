"""Device specs: the six shipped specs load with DESIGN.md's figures; bad specs fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hal.devices.loader import list_specs, load_spec, shipped_spec_names
from hal.devices.units import parse_quantity
from hal.errors import SpecError

SHIPPED = ["a100-sxm", "h100-sxm", "h200", "host-cpu", "mi250x-gcd", "mi300x", "scratch-npu"]
KiB, MiB = 1024, 1024**2


def test_shipped_specs_load():
    assert shipped_spec_names() == SHIPPED
    specs = list_specs()
    assert [s.name for s in specs] == SHIPPED
    for s in specs:
        assert s.source.endswith(f"{s.name}.yaml")
        assert s.shared_mem_per_block <= s.shared_mem_per_unit
        assert s.warp_size & (s.warp_size - 1) == 0
        assert "f32" in s.vector_flops and s.supports("f32")


# name: (arch, units, warp, smem/block, smem/unit, dram B/s, bf16 FLOP/s, fp8 FLOP/s or None)
DESIGN = {
    "h100-sxm": ("sm_90a", 132, 32, 227 * KiB, 228 * KiB, 3.35e12, 989e12, 1979e12),
    "a100-sxm": ("sm_80", 108, 32, 163 * KiB, 164 * KiB, 2.04e12, 312e12, None),
    "mi300x": ("gfx942", 304, 64, 64 * KiB, 64 * KiB, 5.3e12, 1307e12, 2615e12),
    "mi250x-gcd": ("gfx90a", 110, 64, 64 * KiB, 64 * KiB, 1.6e12, 191.5e12, None),
}


@pytest.mark.parametrize("name", sorted(DESIGN))
def test_key_figures_match_design(name):
    arch, units, warp, smb, smu, bw, bf16, fp8 = DESIGN[name]
    s = load_spec(name)
    assert (s.arch, s.compute_units, s.warp_size) == (arch, units, warp)
    assert (s.shared_mem_per_block, s.shared_mem_per_unit) == (smb, smu)
    assert s.dram_bandwidth == pytest.approx(bw)
    assert s.peak_flops["bf16"] == pytest.approx(bf16)
    assert s.peak_flops.get("f8e4m3fn") == (pytest.approx(fp8) if fp8 else None)
    assert s.supports("f8e4m3fn") == (fp8 is not None)
    assert s.launch_overhead_s == pytest.approx(4e-6)


def test_other_figures():
    h100 = load_spec("h100-sxm")
    assert h100.registers_per_unit == 65536 and h100.max_registers_per_thread == 255
    assert h100.l2_bytes == 50_000_000 and h100.l1_bytes_per_unit == 256 * KiB
    mi300 = load_spec("mi300x")
    assert mi300.registers_per_unit * 4 == 512 * KiB  # 512 KiB VGPR per CU
    assert mi300.l2_bytes == 288 * MiB
    assert load_spec("mi250x-gcd").l2_bytes == 8 * MiB
    npu = load_spec("scratch-npu")
    assert (npu.kind, npu.compute_units, npu.warp_size) == ("scratchpad", 64, 16)
    assert npu.shared_mem_per_block == npu.shared_mem_per_unit == 32 * KiB
    assert npu.dram_bandwidth == pytest.approx(200e9) and not npu.supports("f64")
    cpu = load_spec("host-cpu")
    assert cpu.compute_units == (os.cpu_count() or 1)
    # "per unit" rates scale with the core count
    assert cpu.peak_flops["f32"] == pytest.approx(96e9 * cpu.compute_units)


def test_units():
    assert parse_quantity("227 KiB", "bytes") == 227 * 1024
    assert parse_quantity("50 MB", "bytes") == 50e6
    assert parse_quantity("3.35 TB/s", "bandwidth") == pytest.approx(3.35e12)
    assert parse_quantity("4 us", "time") == pytest.approx(4e-6)
    assert parse_quantity("1.98 GHz", "frequency") == pytest.approx(1.98e9)
    assert parse_quantity(1024, "bytes") == 1024.0


def test_path_and_passthrough_and_unknown_name(tmp_path):
    s = load_spec("h100-sxm")
    assert load_spec(s) is s
    p = tmp_path / "mine.yaml"
    p.write_text(Path(s.source).read_text().replace("name: h100-sxm", "name: my-h100"))
    mine = load_spec(str(p))
    assert mine.name == "my-h100" and mine.source == str(p)
    with pytest.raises(SpecError, match="did you mean 'h100-sxm'"):
        load_spec("h100-sm")


def _write_bad(tmp_path, edit) -> Path:
    text = Path(load_spec("a100-sxm").source).read_text()
    p = tmp_path / "bad.yaml"
    p.write_text(edit(text))
    return p


BAD = [
    # (edit, field in error, words in the message or hint)
    (lambda t: t.replace("warp_size: 32\n", ""), "warp_size", "missing"),
    (lambda t: t.replace("dram_bandwidth: 2.04 TB/s", "dram_bandwidth: 2.04 TB"),
     "dram_bandwidth", "bytes unit"),
    (lambda t: t.replace("dram_bandwidth: 2.04 TB/s", "dram_bandwidth: 2.04 furlongs"),
     "dram_bandwidth", "unknown unit"),
    (lambda t: t.replace("l2_bytes:", "l2_byte:"), "l2_byte", "did you mean 'l2_bytes'"),
    (lambda t: t.replace("[f64, f32,", "[f64, f33,"), "supported_dtypes", "not a hal dtype"),
    (lambda t: t.replace("warp_size: 32", "warp_size: 24"), "warp_size", "power of two"),
    (lambda t: t.replace("warp_size: 32", "warp_size: -32"), "warp_size", "positive"),
    (lambda t: t.replace("compute_units: 108", "compute_units: many"), "compute_units",
     "whole number"),
    (lambda t: t.replace("shared_mem_per_block: 163 KiB", "shared_mem_per_block: 200 KiB"),
     "shared_mem_per_block", "exceeds shared_mem_per_unit"),
    (lambda t: t.replace("  bf16: 312 TFLOP/s", "  bf17: 312 TFLOP/s"), "peak_flops",
     "did you mean 'bf16'"),
]


@pytest.mark.parametrize("edit,field,words", BAD)
def test_malformed_spec_names_file_and_field(tmp_path, edit, field, words):
    p = _write_bad(tmp_path, edit)
    with pytest.raises(SpecError) as info:
        load_spec(str(p))
    e = info.value
    text = str(e)
    assert str(p) in text and f"field '{field}'" in text
    assert words in text
    assert e.field == field


def test_error_carries_line_number(tmp_path):
    p = _write_bad(tmp_path, lambda t: t.replace("warp_size: 32", "warp_size: 24"))
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1)
                if ln.startswith("warp_size"))
    with pytest.raises(SpecError, match=f"bad.yaml:{line}: field 'warp_size'"):
        load_spec(str(p))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nvendor: nvidia\narch: [sm_90a\nkind: gpu\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(p))
    assert f"{p}:" in str(info.value) and "YAML syntax error" in str(info.value)
    assert info.value.file.startswith(f"{p}:")


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(str(tmp_path / "nope.yaml"))
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(str(p))


def test_h200_is_an_h100_with_more_and_faster_memory():
    h100, h200 = load_spec("h100-sxm"), load_spec("h200")
    assert h200.arch == h100.arch == "sm_90a"
    assert h200.compute_units == h100.compute_units
    assert h200.dram_bandwidth == 4.8e12
    assert h200.l2_bytes == 60e6          # what the device reports, for honest L2 flushes
    assert h200.dram_bytes > h100.dram_bytes

"""Hostile or silently-wrong device spec YAML (issue 16).

Reproductions: an alias bomb inside a valid field (`capabilities`) hung `hal devices show`
(945 MB after 25 s); duplicate keys let the last one win; `dram_bandwidth: .nan` gave
"modelled time nan us"; `registers_per_unit: 16` passed and later failed inside tiling.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hal.cli.main import main
from hal.devices.loader import SPEC_DIR, load_spec
from hal.errors import SpecError

BASE = (SPEC_DIR / "h100-sxm.yaml").read_text()


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dev.yaml"
    p.write_text(text)
    return p


def _replace(field: str, value: str) -> str:
    out, n = re.subn(rf"(?m)^{field}:.*$", f"{field}: {value}", BASE)
    assert n == 1
    return out


BOMB = """a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_alias_bomb_in_a_valid_field_is_refused_at_once(tmp_path):
    nested = "{" + ", ".join(ln.strip() for ln in BOMB.strip().splitlines()) + "}"
    text = _replace("capabilities", f"[tensor_cores, {nested}]")
    assert "*h" in text
    p = _spec(tmp_path, text)
    r = CliRunner().invoke(main, ["devices", "show", str(p)])
    assert r.exit_code == 1
    assert "anchors and aliases" in r.output and "capabilities" in r.output


def test_duplicate_key_is_refused_naming_both_lines(tmp_path):
    p = _spec(tmp_path, BASE + "warp_size: 64\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert "duplicate key 'warp_size'" in e.value.message and "first on line" in e.value.message


def test_duplicate_key_in_a_nested_table_is_refused(tmp_path):
    p = _spec(tmp_path, BASE.replace("  f16: 989 TFLOP/s\n",
                                     "  f16: 989 TFLOP/s\n  f16: 1 TFLOP/s\n", 1))
    with pytest.raises(SpecError, match="duplicate key 'f16'") as e:
        load_spec(p)
    assert e.value.field == "peak_flops.f16"


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_naming_the_field(tmp_path, value):
    p = _spec(tmp_path, _replace("dram_bandwidth", value))
    with pytest.raises(SpecError, match="non-finite") as e:
        load_spec(p)
    assert e.value.field == "dram_bandwidth"


def test_non_finite_quantity_string_is_refused(tmp_path):
    p = _spec(tmp_path, _replace("dram_bandwidth", "nan TB/s"))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert "dram_bandwidth" in str(e.value)


def test_quantity_that_overflows_is_refused(tmp_path):
    # found by benchmarks/fuzz_campaign.py: `l2_bytes: 1e308 MiB` raised OverflowError
    p = _spec(tmp_path, _replace("l2_bytes", "1e308 MiB"))
    with pytest.raises(SpecError, match="not a finite quantity") as e:
        load_spec(p)
    assert e.value.field == "l2_bytes"


def test_too_few_registers_per_unit_is_refused(tmp_path):
    p = _spec(tmp_path, _replace("registers_per_unit", "16"))
    with pytest.raises(SpecError, match="cannot hold one block") as e:
        load_spec(p)
    assert e.value.field == "registers_per_unit"


def test_oversized_spec_is_refused(tmp_path):
    p = _spec(tmp_path, BASE + "#" + "x" * (2 << 20) + "\n")
    with pytest.raises(SpecError, match="larger than"):
        load_spec(p)


def test_every_shipped_spec_still_loads():
    for p in sorted(SPEC_DIR.glob("*.yaml")):
        assert load_spec(p).name == p.stem

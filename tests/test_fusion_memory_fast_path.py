"""check_device_memory's early return (all listed tensors fit at once) agrees with the
full check at its boundary: a plan whose tensors are all live to the end and sum to
exactly dram_bytes fits; one byte less and its peak is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hal.devices.loader import SPEC_DIR, load_spec
from hal.errors import DeviceMemoryError
from hal.fusion import plan
from hal.ir.text import parse_graph

# x and three outputs, 256 KiB each, all live to the end: 1 MiB at the peak
GRAPH = """graph four {
  input %x: f32[256, 256]
  %a: f32[256, 256] = tanh(%x)
  %b: f32[256, 256] = exp(%x)
  %c: f32[256, 256] = neg(%x)
  output %a, %b, %c
}
"""


def _spec(tmp_path: Path, dram: int):
    text, n = re.subn(r"(?m)^dram_bytes:.*$", f"dram_bytes: {dram}",
                      (SPEC_DIR / "h100-sxm.yaml").read_text())
    assert n == 1
    p = tmp_path / "dram.yaml"
    p.write_text(text)
    return load_spec(p)


def test_tensors_summing_to_dram_bytes_fit(tmp_path):
    assert plan(parse_graph(GRAPH), _spec(tmp_path, 1 << 20), measure="off").groups


@pytest.mark.parametrize("fuse", [True, False])
def test_one_byte_less_is_refused_at_the_peak(tmp_path, fuse):
    with pytest.raises(DeviceMemoryError) as e:
        plan(parse_graph(GRAPH), _spec(tmp_path, (1 << 20) - 1), fuse=fuse, measure="off")
    assert "graph four needs 1.00 MiB (1048576 bytes) of device memory at its peak" in \
        " ".join(str(e.value).split())

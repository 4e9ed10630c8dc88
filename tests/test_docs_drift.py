"""The command outputs in README.md and docs/ are what the commands print (issue 16).

`scripts/gen_docs.py --check` reruns every marked command (HAL_MEASURE=off, the example
plugin installed privately) and fails on any difference; the fast tests pin the
generator's own rules (markers, keep= filtering with "..." gaps, edit=).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_keep_filter_marks_gaps():
    gen = _gen()
    assert gen._keep("a\nb\nc\nkeep\nd", "keep|^a") == "a\n...\nkeep\n..."


def test_generated_block_is_replaced_by_a_real_run(tmp_path):
    gen = _gen()
    doc = tmp_path / "d.md"
    doc.write_text("x\n<!-- hal-doc-file: s.yaml -->\n```yaml\n"
                   + (ROOT / "hal/devices/specs/scratch-npu.yaml").read_text()
                   + "```\n<!-- hal-doc: hal devices show s.yaml | keep=warp_size -->\n"
                   "```console\nstale\n```\n"
                   "<!-- hal-doc: hal devices show s.yaml | edit=warp_size: 16=>warp_sz: 16 -->"
                   "\n```console\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    new = gen.regenerate(doc, work)
    assert "stale" not in new and "$ hal devices show s.yaml\n...\n" in new
    assert "│ warp_size" in new and "did you mean 'warp_size'?" in new


def test_docs_match_what_the_commands_print():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                       capture_output=True, text=True, timeout=3000)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]

"""Errors in the user's own model are "model error" with the user's file:line (issue 16).

Reproductions: an exception or SyntaxError in the model file, a missing module and a
dict output were reported as "internal error ... report it"; data-dependent control flow
dumped about 40 lines of export text; a truncated .pt2 let torch's logger print a
traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hal.cli.main import main

pytest.importorskip("torch")

MODELS = {
    "raises.py": ("def make():\n    x = 1\n    raise ValueError('bad config')\n", 3,
                  "ValueError: bad config"),
    "syntax.py": ("def make(:\n    pass\n", 1, "SyntaxError"),
    "missing.py": ("import not_a_real_module_xyz\n\n\ndef make():\n    pass\n", 1,
                   "No module named 'not_a_real_module_xyz'"),
    "returns.py": ("def make():\n    return 3\n", None, "must return (model, example_inputs)"),
    "dictout.py": ("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                   "        return {'y': 'not a tensor'}\n\n\ndef make():\n"
                   "    return M(), (torch.ones(4),)\n", None, "returns dict holding str"),
    "eager.py": ("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                 "        return x @ torch.ones(5, 5)\n\n\ndef make():\n"
                 "    return M(), (torch.ones(4),)\n", 6, "RuntimeError"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_code_errors_are_model_errors_with_file_and_line(name, tmp_path):
    text, line, words = MODELS[name]
    path = tmp_path / name
    path.write_text(text)
    r = CliRunner().invoke(main, ["bringup", f"{path}:make", "--backend", "reference"])
    assert r.exit_code == 1, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert "error: model error:" in r.output and words in r.output
    if line is not None:
        assert f"{path}:{line}" in r.output


def _stderr_of_bringup(model: str, cwd: Path) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "hal.cli.main", "bringup", model, "--backend",
                        "reference"], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HAL_MEASURE": "off"})
    return p.returncode, p.stderr


def test_corrupt_pt2_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(os.urandom(3000))
    rc, err = _stderr_of_bringup(str(bad), tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 2, err
    assert lines[0].startswith(f"error: {bad}: not a readable torch.export archive")
    assert lines[1].startswith("hint:")


def test_data_dependent_control_flow_is_summarised(tmp_path):
    path = tmp_path / "ddcf.py"
    path.write_text("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                    "        if x.sum() > 0:\n            return x * 2\n        return x - 1\n"
                    "\n\ndef make():\n    return M(), (torch.ones(4),)\n")
    rc, err = _stderr_of_bringup(f"{path}:make", tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) <= 4, err
    assert "model error: torch.export could not capture" in err and f"{path}:6" in err


def test_no_future_warnings_in_a_good_bringup(tmp_path):
    models = Path(__file__).resolve().parents[1] / "examples" / "models"
    rc, err = _stderr_of_bringup(f"{models / 'gpt2_style.py'}:make", tmp_path)
    assert rc == 0, err
    assert "FutureWarning" not in err and "DeprecationWarning" not in err

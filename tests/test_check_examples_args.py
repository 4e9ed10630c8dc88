"""scripts/check_examples.py's options (issue 16: a filter that matches nothing is an error).

Reproduction (2026-12-02): the script read its options by hand and ignored any other
word, so `--help` or `--device h100-sxm` (hal's own flag) ran all 30 pairs (about 12 minutes
here), and `--specs h100` (no such spec) checked 0 pairs and exited 0, as
`hal conformance -k <typo>` once did. None of these tests compiles anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_examples.py"


def _script():
    spec = importlib.util.spec_from_file_location("hal_check_examples", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv,words", [
    (["--device", "h100-sxm"], "unrecognized arguments: --device h100-sxm"),
    (["--specs", "h100"], "unknown spec(s) h100; shipped: "),
    (["--specs", ","], "unknown spec(s) (none given)"),
    (["--examples", "examples/nope.hal"], "no such example file(s) examples/nope.hal"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_a_bad_option_is_an_error_before_anything_runs(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_help_prints_the_options_and_runs_nothing(capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--examples" in out and "--specs" in out and "--jobs" in out
    assert "failing pair" not in out


def test_only_specs_without_a_gpu_compiler_is_an_error(capsys):
    assert _script().main(["--specs", "scratch-npu,host-cpu"]) == 2
    cap = capsys.readouterr()
    assert "n/a   scratch-npu" in cap.out and "no pair to check" in cap.err

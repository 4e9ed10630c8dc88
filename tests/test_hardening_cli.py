"""CLI form (issue 16): click usage errors in the `error:`/`hint:` form, and `--json` for
devices, backends and ops (reproductions: click printed its own `Usage: ... Error: ...`
block; those commands had no --json)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hal.cli.main import main


@pytest.mark.parametrize("args,words", [(["run"], "Missing argument 'FILE'"),
                                        (["--nope"], "No such option '--nope'"),
                                        (["frob"], "No such command 'frob'"),
                                        (["ops", "--category", "x"], "Invalid value")])
def test_usage_errors_are_error_and_hint_lines(args, words):
    r = CliRunner().invoke(main, args, prog_name="hal")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0]
    assert lines[1].startswith("hint: Usage: hal") and len(lines) == 2


def test_json_listings():
    names = {d["name"] for d in json.loads(CliRunner().invoke(main, ["devices", "--json"]).output)}
    assert {"h100-sxm", "mi300x", "scratch-npu"} <= names
    bk = json.loads(CliRunner().invoke(main, ["backends", "--json"]).output)
    assert any(b["name"] == "cpu_sim" and b["available"] for b in bk)
    ops = json.loads(CliRunner().invoke(main, ["ops", "--json", "--category",
                                               "reduction"]).output)
    assert ops and all(o["category"] == "reduction" for o in ops)

"""`hal --help` / `hal --version` import only click: commands load when they run."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from hal.cli.main import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    module, attr, text = COMMANDS[name]
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command)
    assert cmd.get_short_help_str(limit=300) == text
    assert main.get_command(click.Context(main), name) is cmd


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_top_level_flags_import_no_numeric_stack(flag: str) -> None:
    code = ("import sys; from hal.cli.main import main\n"
            f"try:\n    main(['{flag}'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'ml_dtypes', 'rich', 'hal.dtypes') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout

"""Helpers the CLI commands share: the rich console, the --device option, number formatting."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from hal.devices.loader import load_spec
from hal.devices.spec import DeviceSpec


def console() -> Console:
    """A console on the current stdout; wide when not a terminal so tables never truncate.

    Markup is off: cells hold user text (paths, docs with [brackets]); colour with rich.text.Text.
    """
    out = sys.stdout
    return Console(file=out, width=None if out.isatty() else 200, highlight=False, markup=False,
                   soft_wrap=not out.isatty())


def device_option(default: str | None = None, help_extra: str = "") -> Callable:
    """`--device NAME_OR_PATH`: a shipped spec name or a path to a spec YAML file."""
    return click.option("--device", "device", default=default, metavar="NAME_OR_PATH",
                        help="device spec: a shipped name (see `hal devices`) or a path "
                             "to a .yaml spec" + help_extra)


def resolve_device(device: str | None, fallback: str) -> DeviceSpec:
    return load_spec(device if device else fallback)


def fmt_number(x: Any) -> str:
    """Compact text for a table cell: 6 significant digits, ints as ints."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)

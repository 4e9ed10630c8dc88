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
    """`--device NAME_OR_PATH` (a shipped spec name or a path to a spec YAML file) and
    `--allow-tf32` (the user's TF32 opt-in, read by `resolve_device`)."""
    device = click.option("--device", "device", default=default, metavar="NAME_OR_PATH",
                          help="device spec: a shipped name (see `hal devices`) or a path "
                               "to a .yaml spec" + help_extra)
    tf32 = click.option("--allow-tf32", is_flag=True, expose_value=False,
                        callback=_remember_tf32,
                        help="let f32 matmuls use the device's TF32 matrix instructions "
                             "(10-bit mantissa inputs); default: f32 stays exact SIMT")

    def deco(f: Callable) -> Callable:
        return device(tf32(f))
    return deco


def _remember_tf32(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    ctx.meta["hal.allow_tf32"] = bool(value)


def resolve_device(device: str | None, fallback: str) -> DeviceSpec:
    """The spec of `--device` (or `fallback`), with TF32 allowed when `--allow-tf32` was
    given to the running command."""
    from hal.devices.spec import allow_tf32

    spec = load_spec(device if device else fallback)
    ctx = click.get_current_context(silent=True)
    return allow_tf32(spec) if ctx is not None and ctx.meta.get("hal.allow_tf32") else spec


def fmt_number(x: Any) -> str:
    """Compact text for a table cell: 6 significant digits, ints as ints."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)

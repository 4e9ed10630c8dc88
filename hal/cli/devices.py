"""`hal devices` (table of shipped specs) and `hal devices show NAME_OR_PATH` (every field)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from hal.cli.common import console
from hal.devices.loader import list_specs, load_spec
from hal.devices.spec import DeviceSpec
from hal.devices.units import (
    format_bandwidth,
    format_bytes,
    format_flops,
    format_frequency,
    format_time,
)


def _rates(table: dict[str, float]) -> str:
    return ", ".join(f"{k} {format_flops(v)}" for k, v in table.items()) or "-"


# field -> how `show` prints it; fields not listed print with str()
FORMATTERS: dict[str, Callable[[Any], str]] = {
    **{f: format_bytes for f in ("shared_mem_per_block", "shared_mem_per_unit",
                                 "l1_bytes_per_unit", "l2_bytes", "dram_bytes")},
    "dram_bandwidth": format_bandwidth,
    "l2_bandwidth": format_bandwidth,
    "peak_flops": _rates,
    "vector_flops": _rates,
    "launch_overhead_s": format_time,
    "clock_hz": format_frequency,
    "supported_dtypes": lambda v: ", ".join(v),
    "capabilities": lambda v: ", ".join(sorted(v)) or "-",
    "matrix_instructions": lambda v: "; ".join(
        f"{m.name} ({m.m}x{m.n}x{m.k} {m.a}->{m.acc}, {format_flops(m.rate)}"
        + ("" if m.native else ", not native") + ")" for m in v) or "-",
}


def spec_as_dict(spec: DeviceSpec) -> dict[str, Any]:
    """Plain JSON-able values, in field order."""
    out = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name == "matrix_instructions":
            v = [dataclasses.asdict(m) for m in v]
        out[f.name] = sorted(v) if isinstance(v, frozenset) else list(v) if isinstance(
            v, tuple) else v
    return out


@click.group("devices", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print every shipped spec as JSON")
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """List the shipped device specs."""
    if ctx.invoked_subcommand is not None:
        return
    if as_json:
        click.echo(json.dumps([spec_as_dict(s) for s in list_specs()], indent=2))
        return
    table = Table(title="device specs")
    for col in ("name", "vendor", "arch", "kind", "units", "warp", "shared/block", "L2",
                "DRAM BW", "bf16 peak"):
        table.add_column(col, no_wrap=True)
    for s in list_specs():
        table.add_row(s.name, s.vendor, s.arch, s.kind, str(s.compute_units),
                      str(s.warp_size), format_bytes(s.shared_mem_per_block),
                      format_bytes(s.l2_bytes), format_bandwidth(s.dram_bandwidth),
                      format_flops(s.peak_flops.get("bf16", 0.0)))
    console().print(table)


@devices.command("show")
@click.argument("name_or_path")
@click.option("--json", "as_json", is_flag=True, help="print the spec as JSON (base units)")
def show(name_or_path: str, as_json: bool) -> None:
    """Every field of one spec: a shipped NAME or a PATH to a .yaml spec."""
    spec = load_spec(name_or_path)
    if as_json:
        click.echo(json.dumps(spec_as_dict(spec), indent=2))
        return
    table = Table(title=f"{spec.name}: {spec.description}" if spec.description else spec.name)
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        table.add_row(f.name, FORMATTERS.get(f.name, str)(v))
    console().print(table)

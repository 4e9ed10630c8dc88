"""`hal backends`: every registered backend, whether it can run here and why, and what it can do."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.text import Text

from hal.backends_registry import get_backend, list_backends
from hal.cli.common import console
from hal.errors import HalError


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def backends(as_json: bool) -> None:
    """List backends (in-tree and plugins) with availability and capabilities."""
    table = Table(title="backends")
    for col in ("name", "available", "reason", "capabilities"):
        table.add_column(col, no_wrap=col != "reason")
    rows = []
    for name, avail in list_backends():
        try:
            caps = ", ".join(sorted(c.value for c in get_backend(name).capabilities))
        except HalError:
            caps = "-"
        rows.append({"name": name, "available": bool(avail), "reason": avail.reason,
                     "capabilities": [c for c in caps.split(", ") if c and c != "-"]})
        table.add_row(name, Text("yes", style="green") if avail else Text("no", style="red"),
                      avail.reason, caps)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console().print(table)

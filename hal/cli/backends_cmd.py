"""`hal backends`: every registered backend, whether it can run here and why, and what it can do."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from hal.backends_registry import get_backend, list_backends
from hal.cli.common import console
from hal.errors import HalError


@click.command("backends")
def backends() -> None:
    """List backends (in-tree and plugins) with availability and capabilities."""
    table = Table(title="backends")
    for col in ("name", "available", "reason", "capabilities"):
        table.add_column(col, no_wrap=col != "reason")
    for name, avail in list_backends():
        try:
            caps = ", ".join(sorted(c.value for c in get_backend(name).capabilities))
        except HalError:
            caps = "-"
        table.add_row(name, Text("yes", style="green") if avail else Text("no", style="red"),
                      avail.reason, caps)
    console().print(table)

"""`hal ops`: the registered ops with their category, accepted dtypes and documentation."""

from __future__ import annotations

import json

import click
from rich.table import Table

from hal.cli.common import console


@click.command("ops")
@click.option("--category", default=None, metavar="NAME",
              help="only ops of this category (elementwise, reduction, ...)")
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def ops(category: str | None, as_json: bool) -> None:
    """List the ops hal defines."""
    from hal.ops import OPS, Category

    if category is not None:
        valid = [c.value for c in Category]
        if category not in valid:
            raise click.BadParameter(f"'{category}' is not one of {', '.join(valid)}",
                                     param_hint="--category")
    table = Table(title="ops")
    for col in ("name", "category", "dtypes", "doc"):
        table.add_column(col, no_wrap=col in ("name", "category"))
    rows = []
    for op in sorted(OPS.values(), key=lambda o: (o.category.value, o.name)):
        if category is not None and op.category.value != category:
            continue
        doc = op.doc.strip().splitlines()[0] if op.doc.strip() else ""
        rows.append({"name": op.name, "category": op.category.value,
                     "dtypes": list(op.dtypes), "doc": doc})
        table.add_row(op.name, op.category.value, ", ".join(op.dtypes) or "any", doc)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console().print(table)

"""`hal ops`: the registered ops with their category, accepted dtypes and documentation."""

from __future__ import annotations

import click
from rich.table import Table

from hal.cli.common import console


@click.command("ops")
@click.option("--category", default=None, metavar="NAME",
              help="only ops of this category (elementwise, reduction, ...)")
def ops(category: str | None) -> None:
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
    for op in sorted(OPS.values(), key=lambda o: (o.category.value, o.name)):
        if category is not None and op.category.value != category:
            continue
        doc = op.doc.strip().splitlines()[0] if op.doc.strip() else ""
        table.add_row(op.name, op.category.value, ", ".join(op.dtypes) or "any", doc)
    console().print(table)

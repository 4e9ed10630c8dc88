"""`hal fuse FILE --device D [--explain] [--json]`: print the fusion plan for a device."""

from __future__ import annotations

import json

import click
from rich.table import Table

from hal.cli.common import console, device_option, resolve_device
from hal.fusion.cost import fmt_bytes, fmt_time


@click.command("fuse")
@click.argument("file", type=click.Path(dir_okay=False))
@device_option(default="h100-sxm")
@click.option("--explain", is_flag=True, help="list every fusion decision with its reason")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@click.option("--no-fuse", is_flag=True, help="plan without fusion (one kernel per primitive)")
def fuse(file: str, device: str, explain: bool, as_json: bool, no_fuse: bool) -> None:
    """Plan the fusion of FILE (.hal) for a device and show groups, kernels and modelled cost."""
    from hal.fusion import plan
    from hal.ir.text import load_graph

    spec = resolve_device(device, "h100-sxm")
    graph = load_graph(file)
    p = plan(graph, spec, fuse=not no_fuse)
    d = p.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    con = console()
    t = Table(title=f"fusion plan: {graph.name} on {spec.name}")
    for col in ("kernel", "kind", "ops", "DRAM bytes", "GFLOP", "modelled time", "why"):
        t.add_column(col, overflow="fold")
    for g in p.groups:
        c = p.costs[g.name]
        ops = ", ".join(g.ops) if len(g.ops) <= 6 else ", ".join(g.ops[:5]) + f", ... ({len(g.ops)})"
        t.add_row(g.name, g.kind, ops, fmt_bytes(c.dram_bytes), f"{c.flops / 1e9:.3f}",
                  fmt_time(c.time_s), "; ".join(g.reasons[1:] + c.notes))
    con.print(t)
    tot = d["totals"]
    con.print(f"kernels: {tot['kernels']}   modelled DRAM: {fmt_bytes(tot['modelled_dram_bytes'])}"
              f"   compulsory DRAM: {fmt_bytes(tot['compulsory_dram_bytes'])}"
              f"   ratio: {tot['ratio_to_compulsory']:.3f}   GFLOP: {tot['flops'] / 1e9:.3f}"
              f"   modelled time: {fmt_time(tot['modelled_time_s'])}")
    if explain:
        con.print("kernel plans (hal.lowering.plan: what each kernel is lowered as and priced by):")
        for g in p.groups:
            kp = p.costs[g.name].plan
            if kp is None:
                con.print(f"  {g.name}: a view of its input, no kernel")
                continue
            con.print(f"  {g.name} [{kp.kind}] {kp.strategy}: " + "; ".join(
                f"{x.name}{'/' + x.stage if x.stage else ''} grid={x.grid} block={x.block}"
                for x in kp.launches))
            parts = []
            if kp.tiles:
                parts.append("tiles " + " ".join(f"{a}={b}" for a, b in kp.tiles))
            parts += [f"stages {kp.stages}", f"math {kp.math}", f"~{kp.registers} registers"]
            parts += [f"{a}={b}" for a, b in kp.details]
            con.print("      " + ", ".join(parts))
            for x in kp.loads:
                con.print(f"      load %{x.value}: {x.loads:g}x via {x.staged}, issued "
                          f"{fmt_bytes(x.issued_bytes)}, DRAM {fmt_bytes(x.dram_bytes)}")
        con.print("decisions:")
        for dec in p.decisions:
            mark = "+" if dec.fused else "-"
            con.print(f"  {mark} {dec.producer} -> {dec.consumer}: {dec.reason}")

"""`hal compile FILE --backend cuda|rocm --device D [--emit-dir DIR] [--check] [--no-fuse]`.

Plans the fusion, lowers every group, renders CUDA or HIP, writes the sources and runs
the compilers installed here (cuda: NVRTC and nvcc for the spec's arch, with --check also
sm_80 and sm_90a; rocm: hipcc gfx90a and clang-19 gfx942), then prints a resource table.
Limits are checked against the device spec; any kernel over a limit, or any compiler
failure, makes the command exit non-zero after the table is printed.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table

from hal.cli.common import console, device_option, resolve_device

# backend -> (vendor, file suffix, extra arches that --check adds per compiler)
BACKENDS = {
    "cuda": ("nvidia", ".cu", {"nvrtc": ("sm_80", "sm_90a"), "nvcc": ("sm_80", "sm_90a")}),
    "rocm": ("amd", ".hip", {"hipcc": ("gfx90a",), "clang-19": ("gfx942",)}),
}


def safe_stem(name: str) -> str:
    """A graph name as a file name inside --emit-dir: no separators, no leading dots
    (a graph named `../x` or `/abs/path` must not write outside the directory)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")
    return stem[:120] or "graph"


def _row(t: Table, r) -> None:
    dash = "-"
    t.add_row(r.kernel, r.compiler, r.arch, str(r.registers if r.registers is not None else dash),
              str(r.sgprs if r.sgprs is not None else dash), str(r.spill_bytes),
              str(r.shared_bytes if r.shared_bytes is not None else dash),
              str(r.occupancy if r.occupancy is not None else dash), r.status)


@click.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="cuda")
@device_option(default="h100-sxm")
@click.option("--emit-dir", type=click.Path(file_okay=False), default=None,
              help="write the generated source here")
@click.option("--check", is_flag=True, help="also compile for the other arches of the vendor")
@click.option("--no-fuse", is_flag=True, help="one kernel per primitive")
def compile_(file: str, backend: str, device: str, emit_dir: str | None, check: bool,
             no_fuse: bool) -> None:
    """Render FILE (.hal) as CUDA or HIP, compile it and print registers, spills, shared."""
    from hal.errors import CompileError, HalError
    from hal.fusion import plan
    from hal.ir.text import load_graph
    from hal.lowering import lower_group
    from hal.render.check import COMPILERS, check_kernels, compilers_for

    vendor, suffix, extra = BACKENDS[backend]
    spec = resolve_device(device, "h100-sxm")
    graph = load_graph(file)
    fusion_plan = plan(graph, spec, fuse=not no_fuse)
    kernels = [k for g in fusion_plan.groups for k in lower_group(g, spec)]
    # Groups the plan kept knowing they spill (fusion.measured weighed the spill traffic).
    spills_accepted = {g.name for g in fusion_plan.groups
                       if any(r.startswith("kept although") for r in g.reasons)}
    group_of = {k.name: k.meta.get("group") for k in kernels}
    con = console()
    names = compilers_for(vendor)
    if emit_dir:
        out = Path(emit_dir)
        out.mkdir(parents=True, exist_ok=True)
        src = COMPILERS[names[0]].render(kernels, spec)
        path = out / f"{safe_stem(graph.name)}{suffix}"
        path.write_text(src)
        con.print(f"wrote {path} ({len(kernels)} kernels)")
    t = Table(title=f"{graph.name}: {len(kernels)} kernels, {backend} for {spec.name}")
    for col in ("kernel", "compiler", "arch", "regs/VGPRs", "SGPRs", "spill B", "shared/LDS B",
                "occupancy", "status"):
        t.add_column(col, overflow="fold")
    failures: list[str] = []
    for cname in names:
        why = COMPILERS[cname].available()
        if why is not None:
            con.print(f"[yellow]skipped {cname}: {why}[/yellow]")
            continue
        arches = [None]
        if check:
            own = COMPILERS[cname].arches
            native = spec.vendor == vendor and (not own or spec.arch in own)
            arches = sorted({*extra.get(cname, ()), *([spec.arch] if native else [])})
        for arch in arches:
            try:
                recs = check_kernels(kernels, spec, [cname], arch=arch, name=graph.name,
                                     raise_on_limit=False)
            except (CompileError, HalError) as e:
                failures.append(f"{cname} {arch or spec.arch}: {e.message}")
                continue
            for r in recs:
                _row(t, r)
                if r.status == "ok":
                    continue
                # Spills are a failure only on the spec's own arch and where the plan did
                # not accept them; every other limit (registers, shared memory) always is.
                spill_ok = r.arch != spec.arch or group_of.get(r.kernel) in spills_accepted
                failures += [n for n in r.notes if not (spill_ok and " spills " in n)]
    con.print(t)
    if failures:
        raise HalError(f"{len(failures)} problem(s): " + " | ".join(failures[:5]),
                       hint="see the table and the compiler log above")

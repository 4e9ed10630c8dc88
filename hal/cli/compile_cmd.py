"""`hal compile FILE --backend cuda|rocm --device D [--emit-dir DIR] [--check] [--no-fuse]`.

Plans the fusion, lowers every group, renders CUDA or HIP, writes the sources and runs
the compilers installed here (cuda: NVRTC and nvcc for the spec's arch, with --check also
sm_80 and sm_90a; rocm: hipcc gfx90a and clang-19 gfx942), then prints a resource table.
Limits are checked against the device spec; any kernel over a limit, or any compiler
failure, makes the command exit non-zero after the table is printed; a row says
"over limit" only when it fails the command ("spills (accepted)" when the plan weighed
the spill, or another compiler than the plan's measured it). For the spec's own arch,
--check uses the compiler the plan's register feedback used (fusion.measured). The
shared column includes dynamic shared memory. A spec of the other GPU vendor is an
error. On another arch than the spec's own, --check compiles only the kernels that arch
can run (`portable`): a kernel using a matrix instruction or TMA that the shipped spec of
that arch lacks (an h100-sxm wgmma kernel on sm_80) is listed as skipped, with the
reason. `--json` prints the records.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from hal.cli.common import console, device_option, resolve_device

# backend -> (vendor, file suffix, extra arches that --check adds per compiler)
BACKENDS = {
    "cuda": ("nvidia", ".cu", {"nvrtc": ("sm_80", "sm_90a"), "nvcc": ("sm_80", "sm_90a")}),
    "rocm": ("amd", ".hip", {"hipcc": ("gfx90a",), "clang-19": ("gfx942",)}),
}
BACKENDS_OF_VENDOR = {v[0]: k for k, v in BACKENDS.items()}


def safe_stem(name: str) -> str:
    """A graph name as a file name inside --emit-dir: no separators, no leading dots
    (a graph named `../x` or `/abs/path` must not write outside the directory)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")
    return stem[:120] or "graph"


def shown_shared(r, kernel) -> int | None:
    """Shared memory / LDS a launch really uses: the compiler's static figure, or the
    kernel's total (static + dynamic, passed at launch) when that is larger."""
    total = kernel.shared_bytes if kernel is not None else 0
    return max(r.shared_bytes or 0, total) if r.shared_bytes is not None or total else None


def portable(kernels: list, spec, arch: str) -> tuple[list, list[str]]:
    """(kernels `arch` can run, one sentence per kernel it cannot). What a kernel needs is
    read from its plan (the matrix instructions it issues, from `spec`'s list) and its TMA
    tensor maps; what `arch` has, from the shipped spec of that arch (none: all run)."""
    from hal.devices.loader import list_specs

    if arch == spec.arch:
        return list(kernels), []
    target = next((s for s in list_specs() if s.vendor == spec.vendor and s.arch == arch), None)
    if target is None:
        return list(kernels), []
    own = {mi.name for mi in spec.matrix_instructions}
    there = {mi.name for mi in target.matrix_instructions}
    ok, why = [], []
    for k in kernels:
        plan_ = k.meta.plan
        names = set()
        if plan_ is not None:
            names = {m.name for m in (plan_.math, *(m for m, _ in plan_.math_flops))
                     if m.name is not None}
        missing = sorted(n for n in names if n in own and n not in there)
        if k.tensor_maps and "tma" not in target.capabilities:
            missing.append("TMA (cp.async.bulk.tensor)")
        if missing:
            why.append(f"{k.name} not compiled for {arch}: it uses {', '.join(missing)}, "
                       f"which {target.name} ({arch}) lacks")
        else:
            ok.append(k)
    return ok, why


def _row(t: Table, r, kernel) -> None:
    dash = "-"
    shared = shown_shared(r, kernel)
    t.add_row(r.kernel, r.compiler, r.arch, str(r.registers if r.registers is not None else dash),
              str(r.sgprs if r.sgprs is not None else dash), str(r.spill_bytes),
              str(shared if shared is not None else dash),
              str(r.occupancy if r.occupancy is not None else dash), r.status)


@click.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="cuda")
@device_option(default="h100-sxm")
@click.option("--emit-dir", type=click.Path(file_okay=False), default=None,
              help="write the generated source here")
@click.option("--check", is_flag=True, help="also compile for the other arches of the vendor")
@click.option("--no-fuse", is_flag=True, help="one kernel per primitive")
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
def compile_(file: str, backend: str, device: str, emit_dir: str | None, check: bool,
             no_fuse: bool, as_json: bool) -> None:
    """Render FILE (.hal) as CUDA or HIP, compile it and print registers, spills, shared."""
    from hal.errors import CompileError, HalError
    from hal.fusion import plan
    from hal.fusion.measured import measuring_compiler
    from hal.ir.text import load_graph
    from hal.lowering import lower_group
    from hal.render.check import COMPILERS, check_kernels, compilers_for

    vendor, suffix, extra = BACKENDS[backend]
    spec = resolve_device(device, "h100-sxm")
    if spec.vendor in BACKENDS_OF_VENDOR and spec.vendor != vendor:
        raise HalError(f"--backend {backend} renders for {vendor} GPUs, but {spec.name} is an "
                       f"{spec.vendor} device ({spec.arch})",
                       hint=f"use --backend {BACKENDS_OF_VENDOR[spec.vendor]} for {spec.name}, "
                            f"or a {vendor} spec")
    graph = load_graph(file)
    fusion_plan = plan(graph, spec, fuse=not no_fuse)
    kernels = [k for g in fusion_plan.groups for k in lower_group(g, spec)]
    # Groups the plan kept knowing they spill (fusion.measured weighed the spill traffic).
    spills_accepted = {g.name for g in fusion_plan.groups
                       if any(r.startswith("kept although") for r in g.reasons)}
    group_of = {k.name: k.meta.group for k in kernels}
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
    records = []
    skipped: list[str] = []
    by_kernel = {k.name: k for k in kernels}
    # The plan's register feedback used one compiler for the spec's own arch: --check
    # compiles that arch with the same one, and judges spills there against the plan.
    measurer = measuring_compiler(spec)
    for cname in names:
        why = COMPILERS[cname].available()
        if why is not None:
            skipped.append(f"skipped {cname}: {why}")
            if not as_json:
                con.print(Text(skipped[-1], style="yellow"))
            continue
        arches = [None]
        if check:
            own = COMPILERS[cname].arches
            native = spec.vendor == vendor and (not own or spec.arch in own)
            mine = native and (measurer is None or cname == measurer)
            arches = sorted({*(a for a in extra.get(cname, ()) if a != spec.arch or mine),
                             *([spec.arch] if mine else [])})
        for arch in arches:
            runnable, why_not = portable(kernels, spec, arch or spec.arch)
            for line in why_not:
                skipped.append(f"skipped on {cname}: {line}")
                if not as_json:
                    con.print(Text(skipped[-1], style="yellow"))
            if not runnable:
                continue
            try:
                recs = check_kernels(runnable, spec, [cname], arch=arch, name=graph.name,
                                     raise_on_limit=False)
            except (CompileError, HalError) as e:
                failures.append(f"{cname} {arch or spec.arch}: {e.message}")
                continue
            for r in recs:
                if r.status != "ok":
                    # Spills fail only on the spec's own arch, with the compiler the plan was
                    # measured with, where the plan did not accept them; every other limit
                    # (registers, shared memory) always fails.
                    spill_ok = (r.arch != spec.arch or group_of.get(r.kernel) in spills_accepted
                                or (measurer is not None and r.compiler != measurer))
                    bad = [n for n in r.notes if not (spill_ok and " spills " in n)]
                    failures += bad
                    if not bad:
                        r.status = "spills (accepted)"
                _row(t, r, by_kernel.get(r.kernel))
                records.append(r)
    if as_json:
        import json

        click.echo(json.dumps({
            "graph": graph.name, "backend": backend, "device": spec.name,
            "kernels": len(kernels), "skipped": skipped, "failures": failures,
            "records": [{**r.to_dict(), "shared_bytes": shown_shared(r, by_kernel.get(r.kernel))}
                        for r in records]}, indent=2))
    else:
        con.print(t)
    if failures:
        raise HalError(f"{len(failures)} problem(s): " + " | ".join(failures[:5]),
                       hint="see the table and the compiler log above")

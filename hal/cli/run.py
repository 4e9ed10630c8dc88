"""`hal run FILE.hal`: run a graph on a backend and summarise its outputs.

Inputs are random (seeded, hal.reference.random_inputs) or read from an .npz;
outputs print as a table (or JSON) and can be saved to an .npz. When the
backend's RunResult carries per-kernel `stats` or a `report`, they print too.

Backend-specific switches reach `Backend.run_graph(**options)` through
`-o KEY=VALUE`. A backend that wants a first-class flag (the simulator's
`--stats`, say) adds a click option to `RUN_OPTIONS` below and maps it into
`options` in `_backend_options`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml
from rich.table import Table

from hal.backend import RunResult
from hal.backends_registry import get_backend
from hal.cli.common import console, device_option, fmt_number, resolve_device
from hal.cli.inputs import check_save_path, load_inputs, save_outputs
from hal.dtypes import DTYPES
from hal.errors import HalError
from hal.fusion.cost import fmt_bytes, fmt_time

HEAD = 6  # values shown per output

# Extra click options for `hal run`, appended by backends that need flags.
RUN_OPTIONS: list = [
    click.option("--sample", type=float, default=None, metavar="FRACTION",
                 help="cpu_sim: simulate the boundary blocks and this fraction of the other "
                      "blocks of each kernel exactly, give the rest the reference's values "
                      "(computed functionally where it has none), "
                      "extrapolate the counters (e.g. 0.05)"),
    click.option("--sample-seed", type=int, default=None, metavar="N",
                 help="seed of the --sample block draw (default 0)"),
    click.option("--jobs", type=click.IntRange(min=1), default=None, metavar="N",
                 help="cpu_sim: worker processes that share each kernel's waves; with "
                      "--sample, the kernels simulated side by side and the reference's "
                      "threads (default: $HAL_SIM_JOBS, else the CPUs available, at most 8; "
                      "1: one process)"),
]


def _backend_options(params: Mapping[str, Any], pairs: tuple[str, ...]) -> dict[str, Any]:
    """`-o KEY=VALUE` pairs (values read as YAML scalars) plus any RUN_OPTIONS flags."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="-o/--option")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    known = {"file", "backend", "device", "seed", "inputs", "save", "as_json", "options",
             "dims", "allow_lossy_inputs"}
    out.update({k: v for k, v in params.items() if k not in known and v is not None})
    return out


def _parse_dims(pairs: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise click.BadParameter(f"'{pair}' is not NAME=SIZE", param_hint="--dim")
        dims[name.strip()] = int(value)
    return dims


def summarize(a: np.ndarray) -> dict[str, Any]:
    """dtype, shape, stats over the finite values, count of non-finite values, first values."""
    a = np.asarray(a)
    wide = a.astype(np.float64).ravel()
    finite = wide[np.isfinite(wide)]
    dtype = next((d.name for d in DTYPES.values() if d.np_dtype == a.dtype), str(a.dtype))
    stats: dict[str, Any] = {"dtype": dtype, "shape": list(a.shape)}
    for key, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
        stats[key] = float(fn(finite)) if finite.size else None
    stats["nonfinite"] = int(wide.size - finite.size)
    stats["head"] = [_json_float(x) for x in wide[:HEAD]]
    return stats


def _json_float(x: float) -> float | str:
    return float(x) if math.isfinite(x) else str(x)


def _print_result(graph, backend_name: str, spec_name: str, result: RunResult,
                  show_stats: bool = False) -> None:
    con = console()
    table = Table(title=f"graph {graph.name} on {backend_name} ({spec_name})")
    for col in ("output", "dtype", "shape", "min", "max", "mean", "std", "non-finite", "first"):
        table.add_column(col, no_wrap=col != "first")
    for name, a in result.outputs.items():
        s = summarize(a)
        cell = [fmt_number(s[k]) if s[k] is not None else "-" for k in ("min", "max", "mean",
                                                                          "std")]
        table.add_row(name, s["dtype"], str(tuple(s["shape"])), *cell, str(s["nonfinite"]),
                      ", ".join(fmt_number(x) for x in s["head"]))
    con.print(table)
    if result.stats:
        _print_kernel_stats(con, result.stats, show_all=show_stats)
    if result.report:
        _print_parity(con, result.report)
        print_sampled(con, result.report.get("sampled"))


def print_sampled(con, sampled: Mapping[str, Any] | None) -> None:
    """One line per kernel of a --sample run: which blocks ran, the counters' error."""
    for kernel, r in (sampled or {}).items():
        if "exact" in r:
            con.print(f"{kernel}: every block simulated ({r['exact'] or 'small grid'})")
            continue
        bad = [v for v, p in r.get("parity_on_simulated", {}).items() if not p["ok"]]
        batch = r.get("batch_axes") or []
        edges = f" (batch axis {', '.join(batch)}: no edge)" if batch else ""
        con.print(f"{kernel}: simulated {r['blocks_simulated']} of {r['blocks']} blocks "
                  f"({100 * r['fraction']:.1f}%: {r['boundary_blocks']} boundary{edges} + "
                  f"{r['sampled_blocks']} sampled, seed {r['seed']}); counters extrapolated, "
                  f"error <= {100 * r['counter_rel_error']:.1f}%; simulated elements: "
                  + ("ok" if not bad else "MISMATCH in " + ", ".join(bad)))


STAT_COLUMNS = (
    ("kernel", lambda r: r.get("kernel", "")),
    ("kind", lambda r: r.get("kind", "")),
    ("ops", lambda r: _short_ops(r.get("ops", []))),
    ("grid x block", lambda r: f"{tuple(r.get('grid', ()))} x {r.get('block', '')}"),
    ("DRAM read", lambda r: fmt_bytes(r.get("global_bytes_read", 0))),
    ("DRAM written", lambda r: fmt_bytes(r.get("global_bytes_written", 0))),
    ("shared", lambda r: fmt_bytes(r.get("shared_bytes", 0))),
    ("flops", lambda r: fmt_number(r.get("flops", 0))),
    ("barriers", lambda r: fmt_number(r.get("barriers", 0))),
    ("modelled", lambda r: fmt_time(r.get("modelled_time_s", 0.0))),
    ("simulated in", lambda r: f"{r.get('wall_s', 0.0):.3f} s"),
)


def _short_ops(ops) -> str:
    ops = list(ops)
    return ", ".join(ops) if len(ops) <= 5 else ", ".join(ops[:4]) + f", ... ({len(ops)} ops)"


def _print_kernel_stats(con, stats, show_all: bool) -> None:
    total_time = sum(r.get("modelled_time_s", 0.0) for r in stats)
    total_bytes = sum(r.get("global_bytes_read", 0) + r.get("global_bytes_written", 0)
                      for r in stats)
    if show_all:
        kt = Table(title="kernels (counted by the simulator, time modelled from the spec)")
        for name, _ in STAT_COLUMNS:
            kt.add_column(name, overflow="fold")
        for row in stats:
            kt.add_row(*(fn(row) for _, fn in STAT_COLUMNS))
        con.print(kt)
    con.print(f"{len(stats)} kernel(s); counted DRAM traffic {fmt_bytes(total_bytes)}; "
              f"modelled time {fmt_time(total_time)}" + ("" if show_all else
                                                         "  (--stats for the per-kernel table)"))


def _print_parity(con, report) -> None:
    per = report.get("outputs")
    if not isinstance(per, dict):
        rt = Table(title="report")
        rt.add_column("item", no_wrap=True)
        rt.add_column("value")
        for k, v in report.items():
            rt.add_row(str(k), fmt_number(v))
        con.print(rt)
        return
    pt = Table(title="parity against the float64 reference")
    for col in ("output", "max abs err", "max rel err", "bound (rtol, atol)", "verdict"):
        pt.add_column(col)
    for name, r in per.items():
        pt.add_row(name, fmt_number(r.get("max_abs")), fmt_number(r.get("max_rel")),
                   f"{fmt_number(r.get('rtol'))}, {fmt_number(r.get('atol'))}",
                   "ok" if r.get("ok") else "MISMATCH")
    con.print(pt)


@contextlib.contextmanager
def kernel_progress(quiet: bool):
    """A progress bar on stderr over the kernels a backend runs (kernel backends call it);
    nothing when quiet or when stderr is not a terminal."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("kernels", total=None)
        blocks = bar.add_task("blocks", total=None, visible=False)

        def update(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"running {name}")

        def waves(kernel: str, done: int, total: int) -> None:
            # inside one kernel: blocks done so far (one wave at a time) and the time left
            if done == 0:
                bar.reset(blocks, total=total, visible=True)
            bar.update(blocks, completed=done, total=total,
                       description=f"  {kernel}: blocks")

        update.waves = waves  # type: ignore[attr-defined]
        yield update


def _run_command(fn):
    for opt in reversed(RUN_OPTIONS):
        fn = opt(fn)
    return fn


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backend", default="reference", show_default=True, help="see `hal backends`")
@device_option(help_extra=" (default: the backend's own)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed for random inputs")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="size of a symbolic dimension, e.g. --dim B=4 (repeatable)")
@click.option("--inputs", type=click.Path(dir_okay=False), default=None,
              help="an .npz with one array per graph input (instead of random inputs)")
@click.option("--save", type=click.Path(dir_okay=False), default=None,
              help="write the outputs to this .npz")
@click.option("--allow-lossy-inputs", is_flag=True,
              help="cast --inputs arrays that do not fit their integer dtype (3.7 -> 3, "
                   "2^32+5 -> 5) with a warning instead of an error")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary instead of tables")
@click.option("--stats", "show_stats", is_flag=True, help="print the per-kernel statistics table")
@click.option("--no-fuse", "no_fuse", is_flag=True,
              help="one kernel per primitive (skip the fusion pass) on kernel backends")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="backend-specific option passed to run_graph (repeatable)")
@_run_command
def run(file: str, backend: str, device: str | None, seed: int, dims: tuple[str, ...],
        inputs: str | None, save: str | None, allow_lossy_inputs: bool, as_json: bool,
        show_stats: bool, no_fuse: bool, options: tuple[str, ...], **extra: Any) -> None:
    """Run the graph in FILE (.hal text) and summarise its outputs."""
    from hal.ir.text import load_graph
    from hal.reference import random_inputs

    graph = load_graph(file)
    impl = get_backend(backend, require_available=True)
    spec = resolve_device(device, impl.default_device)
    if save is not None:
        check_save_path(save)  # before the run, not after it
    if inputs is not None:
        values = load_inputs(inputs, graph, allow_lossy_inputs)
    else:
        given = _parse_dims(dims)
        unbound = sorted({d for v in graph.inputs for d in v.shape
                          if isinstance(d, str) and d not in given})
        if unbound:
            raise HalError(f"{file}: graph {graph.name} has symbolic dims "
                           f"{', '.join(unbound)} with no size",
                           hint="give each a size, e.g. " + " ".join(
                               f"--dim {d}=4" for d in unbound) + ", or pass --inputs")
        values = random_inputs(graph, seed, dims=given)
    run_options = _backend_options(extra, options)
    if no_fuse:
        run_options["fuse"] = False
    with kernel_progress(as_json) as progress:
        if progress is not None:
            run_options.setdefault("progress", progress)
            run_options.setdefault("kernel_progress", progress.waves)
        result = impl.run_graph(graph, values, spec, **run_options)
    if save is not None:
        save_outputs(save, result.outputs)
    if as_json:
        click.echo(json.dumps({
            "graph": graph.name, "file": str(Path(file)), "backend": backend,
            "device": spec.name, "seed": None if inputs else seed,
            "outputs": {k: summarize(v) for k, v in result.outputs.items()},
            "stats": result.stats, "report": result.report,
        }, indent=2, default=str))
    else:
        _print_result(graph, backend, spec.name, result, show_stats)
        if save is not None:
            click.echo(f"saved {len(result.outputs)} output(s) to {save}")
    if result.report and result.report.get("ok") is False:
        bad = [k for k, r in (result.report.get("outputs") or {}).items() if not r.get("ok")]
        bad += [f"{k} (simulated blocks)" for k, r in (result.report.get("sampled") or {}).items()
                if r.get("ok") is False]
        raise HalError(f"{file}: outputs {', '.join(bad) or '?'} differ from the reference "
                       f"beyond their tolerance on {backend} ({spec.name})",
                       hint="rerun with --no-fuse to see whether fusion is at fault, "
                            "or `hal conformance` to localise the op")

"""`hal bench OP_OR_FILE --shape ...` and `hal bench --suite FILE.yaml`: op microbenchmarks.

Prints one row per case: time (median and p10-p90 when measured; one
labelled figure when modelled), achieved GB/s and TFLOP/s from compulsory
bytes and the plan's flops, the roofline bound and percent of it, the copy
reference (a device-to-device copy moving the same total bytes: measured with
torch on the GPU for hardware backends, the spec's DRAM bandwidth, labelled
modelled, for simulated ones) and percent of it, and each requested framework
baseline with the ratio hal / baseline. --json, --csv and
--plot write the results (with provenance) as they are; a failing case in a
suite is reported at the end and makes the exit code non-zero, after the
other results have been written.
"""

from __future__ import annotations

from typing import Any

import click
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hal.cli.common import console, device_option, resolve_device
from hal.errors import HalError
from hal.fusion.cost import fmt_bytes, fmt_time


def _pairs(pairs: tuple[str, ...], what: str, flag: str, ints: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{pair}' is not {what}", param_hint=flag)
        if ints:
            if not value.strip().isdigit():
                raise click.BadParameter(f"'{pair}' is not {what}", param_hint=flag)
            out[key.strip()] = int(value)
        else:
            out[key.strip()] = yaml.safe_load(value)
    return out


def _time_cell(r) -> str:
    from hal.bench.runner import summarize_times

    s = summarize_times(r.times_s)
    if r.modelled:
        return f"{fmt_seconds(s['median_s'])} (modelled)"
    return (f"{fmt_seconds(s['median_s'])} [{fmt_seconds(s['p10_s'])} - "
            f"{fmt_seconds(s['p90_s'])}]")


def fmt_seconds(s: float | None) -> str:
    """fmt_time, with ns for the sub-microsecond roofline figures of tiny shapes."""
    if s is None:
        return "-"
    return f"{s * 1e9:.0f} ns" if s < 1e-6 else fmt_time(s)


def copy_cells(r) -> tuple[str, str]:
    """(copy reference GB/s, % of it) for a result; '(modelled)' marks the spec's figure."""
    c = r.copy_reference
    if c is None:
        return "-", "-"
    if not c.available:
        return "n/a", "-"
    tag = " (modelled)" if c.modelled else ""
    return f"{c.GBps:.0f}{tag}", f"{r.pct_of_copy_bw:.0f}%"


def print_results(results, backend: str, spec_name: str, baselines: list[str]) -> None:
    from hal.bench.runner import summarize_times

    con = console()
    methods = sorted({r.method for r in results})
    with_copy = any(r.copy_reference is not None for r in results)
    table = Table(title=f"hal bench on {backend} ({spec_name}): " + ", ".join(methods))
    cols = ["case", "time", "GB/s", "TFLOP/s", "FLOP/B", "roofline", "% roof"]
    cols += ["copy GB/s", "% copy BW"] if with_copy else []
    for c in (*cols, "kernels", "DRAM compulsory", "DRAM modelled"):
        table.add_column(c, overflow="fold")
    for r in results:
        table.add_row(r.case, _time_cell(r), f"{r.achieved_bytes_per_s / 1e9:.1f}",
                      f"{r.achieved_flops_per_s / 1e12:.3g}", f"{r.intensity:.3g}",
                      f"{fmt_seconds(r.roofline_s)} ({r.bound})", f"{r.pct_of_roofline:.0f}%",
                      *(copy_cells(r) if with_copy else ()),
                      str(r.kernels), fmt_bytes(r.compulsory_bytes), fmt_bytes(r.modelled_bytes))
    con.print(table)
    if baselines:
        bt = Table(title="framework baselines (same case, same run)")
        for c in ("case", "baseline", "where", "time [p10 - p90]", "GB/s",
                  *(("% copy BW",) if with_copy else ()), "TFLOP/s", "hal / baseline (time)"):
            bt.add_column(c, overflow="fold")
        for r in results:
            for b in r.baselines:
                if not b.available:
                    bt.add_row(r.case, b.name, f"unavailable: {b.reason}", "-",
                               *(("-",) if with_copy else ()), "-", "-", "-")
                    continue
                s = summarize_times(b.times_s)
                med = s["median_s"]
                ref = r.copy_bytes_per_s
                comparable = ref and med and not r.copy_reference.modelled \
                    and b.where != "host CPU"
                pct = f"{100 * r.compulsory_bytes / med / ref:.0f}%" if comparable else "-"
                bt.add_row(r.case, b.name, b.where, f"{fmt_seconds(med)} "
                           f"[{fmt_seconds(s['p10_s'])} - {fmt_seconds(s['p90_s'])}]",
                           f"{r.compulsory_bytes / med / 1e9:.1f}",
                           *((pct,) if with_copy else ()),
                           f"{r.flops / med / 1e12:.3g}", f"{r.ratio(b):.3g}")
        con.print(bt)
    for note in dict.fromkeys(n for r in results for n in r.notes):
        con.print(f"note: {note}")
    refs = {r.copy_reference.label(): None for r in results
            if r.copy_reference is not None and not r.copy_reference.modelled}
    for line in list(refs)[:3]:
        con.print(f"note: {line}")
    if len(refs) > 3:
        con.print(f"note: ... {len(refs) - 3} more copy sizes measured (see --json)")
    if any(r.modelled for r in results):
        con.print("modelled figures come from the device spec (cost model or simulator "
                  "counts): the expected roofline, not a measurement")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[case]}"),
                    console=console(), transient=True)


@click.command("bench")
@click.argument("op_or_file", required=False)
@click.option("--shape", "shapes", multiple=True, metavar="AxBxC",
              help="operand shape (repeatable, one per operand; see --list)")
@click.option("--dtype", default="bf16", show_default=True)
@click.option("--backend", default="cpu_sim", show_default=True, help="see `hal backends`")
@device_option(help_extra=" (default: the backend's own)")
@click.option("--baseline", "baselines", multiple=True, metavar="NAME",
              help="framework baseline on the same device: torch, torch-compile, jax "
                   "(repeatable)")
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0))
@click.option("--flush-l2", is_flag=True, help="touch 2 x L2 bytes between timed runs")
@click.option("--model", default="auto", show_default=True,
              type=click.Choice(["auto", "cost", "sim"]),
              help="simulated backends: cost model, simulator counts, or auto by size")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
              help="op attribute, e.g. --attr causal=false (repeatable)")
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE",
              help="size of a symbolic dim of a .hal file (repeatable)")
@click.option("--suite", type=click.Path(dir_okay=False), default=None,
              help="a YAML suite of cases (instead of OP_OR_FILE)")
@click.option("--copy-reference/--no-copy-reference", default=True, show_default=True,
              help="report each case's GB/s as a percentage of a device-to-device copy moving "
                   "the same total bytes (copy of compulsory bytes / 2; read + write "
                   "counted): measured with torch (dst.copy_(src), torch.cuda.Event, median "
                   "of --repeat after --warmup) once per distinct size when the backend runs "
                   "on a GPU; the spec's DRAM bandwidth, labelled modelled, on simulated "
                   "backends (cpu_sim); 'n/a' with the reason when no GPU is visible to torch")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="write results and provenance as JSON")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None,
              help="write one CSV row per case")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="write a roofline PNG (needs matplotlib)")
@click.option("--list", "list_cases", is_flag=True, help="list the named cases and epilogues")
def bench(op_or_file: str | None, shapes: tuple[str, ...], dtype: str, backend: str,
          device: str | None, baselines: tuple[str, ...], repeat: int, warmup: int,
          flush_l2: bool, model: str, attrs: tuple[str, ...], dims: tuple[str, ...],
          suite: str | None, copy_reference: bool, seed: int, json_out: str | None,
          csv_out: str | None, plot_out: str | None, list_cases: bool) -> None:
    """Benchmark OP_OR_FILE (an op, a fused pattern like matmul+bias+gelu, or a .hal file)
    against the device's roofline and framework baselines."""
    from hal.backends_registry import get_backend
    from hal.bench import provenance as prov
    from hal.bench.baselines import get_baseline
    from hal.bench.cases import make_case
    from hal.bench.copy_bandwidth import CopyReferences
    from hal.bench.runner import run_case

    if list_cases:
        _list_cases()
        return
    if (op_or_file is None) == (suite is None):
        raise HalError("give either OP_OR_FILE or --suite FILE.yaml",
                       hint="e.g. hal bench rms_norm --shape 4096x4096, or "
                            "hal bench --suite benchmarks/suites/llm.yaml")
    for b in baselines:
        get_baseline(b)
    impl = get_backend(backend, require_available=True)
    spec = resolve_device(device, impl.default_device)
    provenance = prov.collect(spec, backend)
    copies = CopyReferences(repeat=max(repeat, 10), warmup=max(warmup, 2),
                            flush_bytes=2 * spec.l2_bytes if flush_l2 else 0)
    options = dict(repeat=repeat, warmup=warmup, flush_l2=flush_l2, baselines=baselines,
                   model=model, seed=seed, provenance=provenance,
                   copy_reference=copy_reference, copy_cache=copies)
    suite_name = None
    failures: list[str] = []
    if suite is None:
        case = make_case(op_or_file, list(shapes), dtype, _pairs(attrs, "KEY=VALUE", "--attr"),
                         _pairs(dims, "NAME=SIZE", "--dim", ints=True))
        results = [run_case(case, backend, spec, **options)]
    else:
        from hal.bench.suites import entry_case, load_suite

        s = load_suite(suite)
        suite_name = s.name
        results = []
        with _progress() as bar:
            task = bar.add_task(f"{s.name} on {backend} ({spec.name})", total=len(s.entries),
                                case="")
            for entry in s.entries:
                bar.update(task, case=entry.name)
                try:
                    results.append(run_case(entry_case(entry), backend, spec, **options))
                except HalError as e:
                    failures.append(f"{entry.name}: {e.message}")
                bar.advance(task)
        provenance["suite"] = suite
    _write(results, provenance, spec, suite_name, json_out, csv_out, plot_out)
    if results:
        print_results(results, backend, spec.name, list(baselines))
    if failures:
        for f in failures:
            click.echo(f"failed: {f}", err=True)
        raise HalError(f"{len(failures)} of {len(failures) + len(results)} case(s) failed")


def _write(results, provenance, spec, suite_name, json_out, csv_out, plot_out) -> None:
    from hal.bench.report import write_csv, write_json

    if json_out:
        write_json(json_out, results, provenance, suite_name)
        click.echo(f"wrote {json_out}")
    if csv_out:
        write_csv(csv_out, results, provenance)
        click.echo(f"wrote {csv_out}")
    if plot_out and results:
        from hal.bench.plot import roofline_plot

        roofline_plot(results, spec, plot_out)
        click.echo(f"wrote {plot_out}")


def _list_cases() -> None:
    from hal.bench.cases import CASES, EPILOGUES

    con = console()
    t = Table(title="hal bench cases (also: any elementwise or reduction op; a .hal file)")
    for c in ("name", "shapes", "example", "attrs", "doc"):
        t.add_column(c, overflow="fold")
    for name, c in sorted(CASES.items()):
        t.add_row(name, c.shapes, c.example, ", ".join(f"{k}={v}" for k, v in c.attrs.items()),
                  c.doc)
    con.print(t)
    e = Table(title="epilogues (OP+EPILOGUE+...)")
    e.add_column("name")
    e.add_column("doc")
    for name, ep in sorted(EPILOGUES.items()):
        e.add_row(name, ep.doc)
    con.print(e)

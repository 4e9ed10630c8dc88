"""`hal bringup MODEL --backend B --device D [--dtype bf16|f32] [--json]`: bring up a model.

MODEL is a .pt2 file (torch.export.save), a .hal file, or `module:function`
(also `path/to/file.py:function`) returning (torch.nn.Module or JAX function,
example_inputs). The command imports the model, plans its fusion for the
device, runs it on the backend, runs the framework's own model on the same
inputs, and prints what it found: ops, unsupported ops, fusion summary,
kernels, modelled time and DRAM bytes, and parity per output against a bound
from the output dtype. Exit code 0 only when parity holds.

`--decode N`: MODEL returns (decode step, (prompt [B, P], *initial KV cache)); the step
is exported once, the prompt fed one token per step and N tokens generated greedily on
the backend and in eager torch (hal.frontends.decode). Exit code 0 only when every step
is within the bound and hal's tokens equal torch's.
"""

from __future__ import annotations

import contextlib
import json

import click
from rich.table import Table

from hal.cli.common import console, device_option, fmt_number, resolve_device


@click.command("bringup")
@click.argument("model")
@click.option("--backend", default="cpu_sim", show_default=True, help="hal backend to run on")
@device_option(default="h100-sxm")
@click.option("--dtype", type=click.Choice(["f32", "bf16"]), default="f32", show_default=True,
              help="run the model in this dtype (torch: weights and float inputs; JAX: "
                   "float inputs only, closed-over weights keep their dtype; .pt2 and "
                   ".hal: f32 as saved)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--sample", type=float, default=None, metavar="FRACTION",
              help="cpu_sim: simulate boundary blocks and this fraction of the others, "
                   "the rest take the reference's values (see `hal run --sample`)")
@click.option("--sample-seed", type=int, default=0, show_default=True,
              help="seed of the --sample block draw")
@click.option("--decode", "decode_tokens", type=click.IntRange(min=1), default=None,
              metavar="N", help="MODEL is a KV-cache decode step: generate N tokens greedily "
                                "on the backend and in torch, and compare every step")
def bringup(model: str, backend: str, device: str | None, dtype: str, as_json: bool,
            sample: float | None, sample_seed: int, decode_tokens: int | None) -> None:
    """Import MODEL, plan, run on a backend and check parity with its framework."""
    from hal.frontends.bringup import bringup as run_bringup
    from hal.frontends.bringup import load_subject

    spec = resolve_device(device, "h100-sxm")
    if decode_tokens is not None:
        _decode(model, backend, spec, decode_tokens, as_json)
        return
    run_options: dict = {}
    if sample is not None:
        run_options.update(sample=sample, sample_seed=sample_seed)
    with _phases(as_json) as phase:
        phase("export and import")
        subject = load_subject(model, dtype)
        if phase.kernel_progress is not None:
            run_options["kernel_progress"] = phase.kernel_progress
        rep = run_bringup(subject, backend, spec, phase=phase, run_options=run_options)
    # Report the dtypes the model really runs in (a .pt2 keeps the ones it was exported with).
    graph = subject.model.graph if subject.model is not None else None
    floats = sorted({v.dtype.name for v in [*graph.inputs, *(c.value for c in graph.constants)]
                     if v.dtype.is_float}) if graph is not None else []
    rep["dtype"] = "/".join(floats) if floats else dtype
    if as_json:
        click.echo(json.dumps(rep, indent=2, default=str))
    else:
        _print(rep)
    if not rep["ok"]:
        raise click.exceptions.Exit(1)


def _decode(model: str, backend: str, spec, new_tokens: int, as_json: bool) -> None:
    from hal.frontends.bringup import ModelError, load_callable
    from hal.frontends.decode import decode, decode_subject

    with _phases(as_json) as phase:
        phase("export and import")
        made = load_callable(model, "a decode step")
        if not (isinstance(made, tuple) and len(made) == 2 and len(made[1]) >= 2):
            raise ModelError(f"model error: {model} must return (step, (prompt, *cache))",
                             hint="see examples/models/hf_zoo.py:llama_decode")
        step, (prompt, *cache) = made
        name = model.rpartition(":")[2]
        rep = decode(decode_subject(name, step, prompt, tuple(cache)), new_tokens, backend,
                     spec, phase=phase)
    if as_json:
        click.echo(json.dumps(rep, indent=2, default=str))
    else:
        con = console()
        tot = rep["fusion"]["totals"]
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(rep["fusion"]["kinds"].items()))
        con.print(f"decode: {rep['model']} on {rep['backend']} / {rep['device']}")
        con.print(f"fusion: {tot['kernels']} kernels ({kinds})")
        for a in rep["attention"]:
            con.print(f"attention {a['group']}: split-K {a['split_k']} "
                      f"({a['launches']} launches)")
        t = Table(title="decode steps: parity against eager torch")
        for col in ("step", "torch token", "hal token", "logits max abs err / atol",
                    "cache ok", "ok"):
            t.add_column(col)
        for r in rep["steps"]:
            logits, *cache = r["outputs"]
            t.add_row(str(r["step"]), str(r["torch_token"]), str(r["hal_token"]),
                      f"{fmt_number(logits['max_abs'])} / {fmt_number(logits['atol'])}",
                      "yes" if all(c["ok"] for c in cache) else "NO",
                      "yes" if r["ok"] else "NO")
        con.print(t)
        con.print(f"prompt: {rep['prompt']}")
        con.print(f"generated (torch): {rep['torch_tokens']}")
        con.print(f"generated (hal):   {rep['hal_tokens']}")
        con.print("decode: " + ("OK" if rep["ok"] else "FAIL"))
    if not rep["ok"]:
        raise click.exceptions.Exit(1)


class _Phase:
    """Callable phase(name) for a status line on stderr (a terminal only): the phase,
    its elapsed time and, while kernels run, the blocks done in the current kernel."""

    def __init__(self, status=None):
        import time

        self.status, self.name, self.t0, self._time = status, "", time.perf_counter(), time
        self.kernel_progress = self._kernel if status is not None else None

    def __call__(self, name: str) -> None:
        self.name, self.t0 = name, self._time.perf_counter()
        if self.status is not None:
            self.status.update(f"bring-up: {name}")

    def _kernel(self, kernel: str, done: int, total: int) -> None:
        el = self._time.perf_counter() - self.t0
        self.status.update(f"bring-up: {self.name} ({el:.0f} s): {kernel}, "
                           f"block {done}/{total}")


@contextlib.contextmanager
def _phases(quiet: bool):
    import sys

    if quiet or not sys.stderr.isatty():
        yield _Phase()
        return
    from rich.console import Console

    with Console(stderr=True).status("bring-up") as status:
        yield _Phase(status)


def _print(rep: dict) -> None:
    from hal.fusion.cost import fmt_bytes, fmt_time

    con = console()
    con.print(f"bring-up: {rep['model']} ({rep['frontend']}) on {rep['backend']} / "
              f"{rep['device']}, dtype {rep.get('dtype', 'f32')}")
    ops = rep["framework_ops"]
    if ops:
        con.print(f"framework ops ({sum(ops.values())}): " + ", ".join(
            f"{k} x{v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1])))
    if rep["unsupported"]:
        con.print(f"unsupported ops ({len(rep['unsupported'])}):")
        for k, locs in sorted(rep["unsupported"].items()):
            con.print(f"  {k}  at {'; '.join(locs)}")
    else:
        con.print("unsupported ops: none")
    if "error" in rep:
        con.print(f"import failed: {rep['error']}")
        con.print("parity: FAIL (not run)")
        return
    hal_ops = rep["hal_ops"]
    con.print(f"hal ops ({sum(hal_ops.values())}): " + ", ".join(
        f"{k} x{v}" for k, v in sorted(hal_ops.items(), key=lambda kv: -kv[1])))
    tot = rep["fusion"]["totals"]
    kinds = ", ".join(f"{k} x{v}" for k, v in sorted(rep["fusion"]["kinds"].items()))
    con.print(f"fusion: {tot['kernels']} kernels ({kinds})")
    con.print(f"modelled time: {fmt_time(tot['modelled_time_s'])}   modelled DRAM: "
              f"{fmt_bytes(tot['modelled_dram_bytes'])}   compulsory DRAM: "
              f"{fmt_bytes(tot['compulsory_dram_bytes'])}   GFLOP: {tot['flops'] / 1e9:.3f}")
    t = Table(title="parity against the framework")
    for col in ("output", "dtype", "shape", "max abs err", "max rel err", "rtol", "atol", "ok"):
        t.add_column(col)
    for p in rep["parity"]:
        t.add_row(p["output"], p["dtype"], str(p["shape"]), fmt_number(p["max_abs"]),
                  fmt_number(p["max_rel"]), fmt_number(p["rtol"]), fmt_number(p["atol"]),
                  "yes" if p["ok"] else "NO")
    con.print(t)
    if rep.get("sampled"):
        from hal.cli.run import print_sampled

        print_sampled(con, rep["sampled"])
    con.print("parity: " + ("OK" if rep["ok"] else "FAIL"))

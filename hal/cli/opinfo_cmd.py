"""`hal conformance --suite torch-opinfo`: PyTorch's OpInfo samples on a backend, reported.

The runner is hal.conformance.opinfo_suite; this module selects the OpInfos, streams the
rows into the conformance report (JSON with its .jsonl sidecar, JUnit XML), prints the
OpInfo-level summary (fully passing of exportable, by verdict, missing converters by
OpInfos blocked) and the samples that fail, and sets the exit code.
"""

from __future__ import annotations

import warnings

import click

from hal.cli.common import console
from hal.errors import HalError


def run_opinfo_suite_cli(backend: str, device: str, pattern: str | None, every: int,
                         max_samples: int, timeout: float, report: str | None,
                         junit: str | None, list_only: bool) -> None:
    try:
        from hal.conformance import opinfo
        from hal.conformance.opinfo_suite import report_row, run_opinfo_suite
        ops = opinfo.select_opinfos(pattern, every)
    except ImportError as e:
        raise HalError(f"--suite torch-opinfo needs torch and expecttest: {e}",
                       hint='pip install "torch==2.13.0" -e ".[torch,opinfo]"') from None
    if pattern and not ops:
        raise HalError(f"-k {pattern!r} matches no OpInfo",
                       hint="-k takes comma-separated substrings of OpInfo names "
                            "(e.g. -k sort,nn.functional.conv2d); --list shows them")
    if list_only:
        for op in ops:
            click.echo(opinfo.opinfo_name(op))
        return
    from hal.backends_registry import get_backend
    from hal.conformance.report import FAILING, ReportWriter
    from hal.devices.loader import load_spec

    avail = get_backend(backend).probe()
    if not avail:
        raise HalError(f"backend '{backend}' is not available here: {avail.reason}",
                       hint="run `hal backends`; cpu_sim runs everywhere")
    spec = load_spec(device)
    out = console()
    meta = {"suite": "torch-opinfo", "backend": backend, "device": spec.name,
            "pattern": pattern, "every": every, "samples": max_samples, "timeout": timeout}
    writer = ReportWriter(report, junit, meta)
    done = [0]

    def on_opinfo(name: str, results: list) -> None:
        done[0] += 1
        for r in results:
            writer.add(report_row(r, backend, spec.name))
        v = opinfo.opinfo_verdict(results)
        if v in ("crash", "mismatch", "rejected", "timeout"):
            msg = next((r.message for r in results if r.verdict == v), "")
            out.print(f"[{done[0]}/{len(ops)}] {name}: {v} {msg[:160]}")

    try:
        with warnings.catch_warnings():   # torch's pytree FutureWarnings, once per export
            warnings.simplefilter("ignore", FutureWarning)
            results = run_opinfo_suite(ops, backend, spec, max_samples=max_samples,
                                       timeout=timeout, on_opinfo=on_opinfo)
    except KeyboardInterrupt:
        writer.finalize(complete=False)
        raise click.exceptions.Exit(130) from None
    summary = writer.finalize()
    s = opinfo.summarize(results)
    out.print(f"torch-opinfo on {backend} / {spec.name}")
    out.print(opinfo.format_summary(s))
    from hal.conformance.opinfo_scope import format_scope, scope_summary

    out.print(format_scope(scope_summary(results)))
    out.print(f"samples: {summary['total']} ({summary['pass']} pass, {summary['skip']} skip, "
              f"{summary['fail']} fail, {summary['error']} error)")
    bad = [r for r in writer.results if r["verdict"] in FAILING]
    for r in bad[:25]:
        out.print(f"  {r['id']}: {r['reason'][:160]}")
    if report or junit:
        out.print("reports: " + ", ".join(str(p) for p in (report, junit) if p))
    if bad:
        raise click.exceptions.Exit(1)

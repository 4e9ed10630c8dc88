"""`hal conformance`: run the conformance suite on a backend and device, or its self-test.

    hal conformance --backend cpu_sim --device h100-sxm [-k PATTERN] [--report out.json]
                    [--junit out.xml] [--seed N] [--random N] [--workers N] [--self-test]
                    [--strict] [--profile/--no-profile]

Exit code 0 only when every required case passes (fail, error and an
unexpected pass of an EXPECTED_FAILURE fail the run); 130 when interrupted,
after the report is finalized with every result received. `--resume r.json` runs
only the cases r.json (and its .jsonl sidecar) lacks and completes it in place.
A -k pattern that matches no case is an error (a CI typo must not pass). `--self-test`
plants each fault of hal.lowering.faults (lowering, cpu_sim rounding, tolerance, op
definitions) on a 32-lane and a 64-lane spec (or the `--device` given) and exits
non-zero if one escapes, or, on the default cases, is caught by fewer than 3 cases on a
spec; on the host backends (cuda-host, hip-host) it plants renderer faults instead. On a
backend other than cpu_sim, each case's error profile is compared with cpu_sim's on the
same plan; `--strict` fails a precision regression (hal.conformance.error_profile).

`--suite torch-opinfo` runs PyTorch's OpInfo samples instead (hal.conformance.opinfo_suite;
-k: comma-separated substrings of OpInfo names; `--opinfo-every K`, `--opinfo-samples N`,
`--sample-timeout S`), with the same --report/--junit files; it fails on a crash, a typed
rejection, a timeout or a mismatch, and lists what is unsupported with the missing op.
"""

from __future__ import annotations

import click

from hal.cli.common import console
from hal.errors import HalError


@click.command("conformance")
@click.option("--backend", default="cpu_sim", show_default=True, help="backend to test")
@click.option("--device", default=None, metavar="NAME_OR_PATH",
              help="device spec: a shipped name or a .yaml path [default: h100-sxm; "
                   "--self-test: h100-sxm and mi300x]")
@click.option("-k", "pattern", default=None, help="run cases whose id contains these words "
                                                  "(or matches this glob)")
@click.option("--report", "report", type=click.Path(dir_okay=False), default=None,
              help="JSON report (a .jsonl sidecar is appended per case)")
@click.option("--junit", type=click.Path(dir_okay=False), default=None, help="JUnit XML report")
@click.option("--seed", default=0, show_default=True, help="offset added to every case's seed")
@click.option("--random", "n_random", default=0, show_default=True,
              help="also run N seeded random graphs (fused vs reference vs unfused)")
@click.option("--workers", default=2, show_default=True, help="worker processes")
@click.option("--compare-backend", default=None, help="also compare with this backend")
@click.option("--no-unfused", is_flag=True, help="skip the fused-vs-unfused comparisons")
@click.option("--repro-dir", type=click.Path(file_okay=False), default="conformance-repro",
              show_default=True, help="where shrunk random-graph reproducers go")
@click.option("--self-test", "self_test", is_flag=True,
              help="plant known lowering faults and check the suite catches each")
@click.option("--list", "list_only", is_flag=True, help="list the selected case ids and exit")
@click.option("--resume", "resume", type=click.Path(dir_okay=False), default=None,
              help="continue an interrupted run: read its --report JSON (and .jsonl) and "
                   "run only the cases it lacks; the report is completed in place")
@click.option("--coverage", "measure_coverage", is_flag=True,
              help="also print the lowering branch coverage this run reaches (one worker, "
                   "in-process; needs coverage.py)")
@click.option("--strict", is_flag=True,
              help="fail a case whose error profile is a precision regression against cpu_sim")
@click.option("--profile/--no-profile", default=None,
              help="compare error profiles with cpu_sim [default: on for backends but cpu_sim]")
@click.option("--allow-tf32", "allow_tf32", is_flag=True,
              help="let f32 matmuls use TF32 matrix instructions (the device becomes "
                   "'<name>+tf32'; tolerances follow TF32's unit roundoff 2^-11)")
@click.option("--suite", type=click.Choice(["hal", "torch-opinfo"]), default="hal",
              show_default=True, help="hal's own cases, or PyTorch's OpInfo samples through "
                                      "torch.export")
@click.option("--opinfo-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch-opinfo: every K-th OpInfo (a representative slice)")
@click.option("--opinfo-samples", type=click.IntRange(min=1), default=3, show_default=True,
              help="torch-opinfo: samples per OpInfo at most")
@click.option("--sample-timeout", type=float, default=60.0, show_default=True,
              help="torch-opinfo: seconds per sample (0: no limit)")
@click.pass_context
def conformance(ctx: click.Context, backend: str, device: str | None, pattern: str | None,
                report: str | None, junit: str | None, seed: int, n_random: int, workers: int,
                compare_backend: str | None, no_unfused: bool, repro_dir: str, self_test: bool,
                list_only: bool, resume: str | None, measure_coverage: bool, strict: bool,
                profile: bool | None, allow_tf32: bool, suite: str, opinfo_every: int,
                opinfo_samples: int, sample_timeout: float) -> None:
    """Check a backend's numbers against the float64 reference within the error model."""
    if suite == "torch-opinfo":
        from hal.cli.opinfo_cmd import run_opinfo_suite_cli

        run_opinfo_suite_cli(backend, device or "h100-sxm", pattern, opinfo_every,
                             opinfo_samples, sample_timeout, report, junit, list_only)
        return
    from hal.conformance.cases import select
    from hal.conformance.random_graphs import random_case
    from hal.conformance.runner import SuiteConfig
    from hal.devices.loader import load_spec

    previous: list[dict] = []
    if resume:
        from hal.conformance.report import load_report

        meta, previous = load_report(resume)
        given = {k: v for k, v in dict(backend=backend, device=device, pattern=pattern,
                                       seed=seed, random=n_random).items()
                 if ctx.get_parameter_source(k if k != "random" else "n_random")
                 == click.core.ParameterSource.COMMANDLINE}
        for key, value in given.items():
            if key in meta and meta[key] != value:
                raise HalError(f"--resume {resume}: the report was run with {key}="
                               f"{meta[key]!r}, not {value!r}",
                               hint=f"drop the option; --resume reuses the report's {key}")
        backend, device = meta.get("backend", backend), meta.get("device", device)
        pattern, seed = meta.get("pattern", pattern), int(meta.get("seed", seed))
        n_random = int(meta.get("random", n_random))
        report = report or resume
    if allow_tf32:
        from hal.devices.spec import TF32_SUFFIX

        device = (device or "h100-sxm")
        device = device if device.endswith(TF32_SUFFIX) else device + TF32_SUFFIX
    out = console()
    if self_test:
        from hal.backends_registry import get_backend
        from hal.conformance.selftest import SELFTEST_DEVICES

        if device:
            devices = (device,)
        elif hasattr(get_backend(backend), "render_selftest"):   # the host backends
            devices = (get_backend(backend).default_device,)
        else:
            devices = SELFTEST_DEVICES
        for d in devices:
            load_spec(d)
        cfg = SuiteConfig(backend, devices[0], pattern, seed, max(1, workers), compare_backend,
                          not no_unfused)
        _self_test(cfg, out, devices)
        return
    device = device or "h100-sxm"
    spec = load_spec(device)
    cfg = SuiteConfig(backend, device, pattern, seed, max(1, workers), compare_backend,
                      not no_unfused, strict=strict, profile=profile)
    cases = select(pattern) + [random_case(seed, i) for i in range(n_random)]
    if pattern and not cases:
        raise HalError(f"-k {pattern!r} matches no conformance case",
                       hint="`hal conformance --list` shows the case ids; -k takes words "
                            "of an id (e.g. softmax f16) or a glob (elementwise/add/*)")
    if list_only:
        for c in cases:
            click.echo(c.id)
        return
    _check_backend(backend)
    if resume:
        done = {r["id"] for r in previous}
        todo = [c for c in cases if c.id not in done]
        out.print(f"resuming {resume}: {len(done)} cases already recorded, "
                  f"{len(todo)} to run")
        cases = todo
    if not measure_coverage:
        _run(cfg, cases, spec.name, report, junit, repro_dir, out, n_random, previous)
        return
    try:
        from hal.conformance.coverage import measuring, summary_line
    except ImportError as e:  # pragma: no cover - coverage.py missing
        raise HalError(f"--coverage needs coverage.py: {e}",
                       hint="pip install coverage (in the [test] extra)") from None
    cfg.workers = 1   # measured in this process
    failed: click.exceptions.Exit | None = None
    with measuring() as cov_run:
        try:
            _run(cfg, cases, spec.name, report, junit, repro_dir, out, n_random, previous)
        except click.exceptions.Exit as e:   # print the figure for a failing run too
            failed = e
    out.print(summary_line(cov_run.report()) + f" on {spec.name}")
    cov_run.close()
    if failed is not None:
        raise failed


def _check_backend(name: str) -> None:
    from hal.backends_registry import get_backend

    avail = get_backend(name).probe()
    if not avail:
        raise HalError(f"backend '{name}' is not available here: {avail.reason}",
                       hint="run `hal backends`; cpu_sim runs everywhere")


def _run(cfg, cases, device_name: str, report, junit, repro_dir: str, out, n_random: int = 0,
         previous: list | None = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hal.conformance.random_graphs import shrink_failure
    from hal.conformance.report import FAILING, ReportWriter, summary_table
    from hal.conformance.runner import run_suite

    meta = {"backend": cfg.backend, "device": cfg.device, "pattern": cfg.pattern,
            "seed": cfg.seed, "workers": cfg.workers, "random": n_random}
    writer = ReportWriter(report, junit, meta, previous=previous or ())
    counts = {"fail": 0}
    progress = Progress(TextColumn("[bold]conformance"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        console=out, transient=not out.is_terminal)
    with progress:
        task = progress.add_task("cases", total=len(cases), status="")

        def on_result(r):
            if r["verdict"] in FAILING:
                counts["fail"] += 1
            progress.update(task, advance=1, status=f"{counts['fail']} failing | {r['id']}")

        try:
            summary = run_suite(cfg, writer, on_result=on_result, cases=cases)
        except KeyboardInterrupt:
            out.print(summary_table(writer.document(False)["summary"], writer.results,
                                    f"conformance {cfg.backend} / {device_name} (interrupted)"))
            raise click.exceptions.Exit(130) from None
    for r in writer.results:
        if r["id"].startswith("random/") and r["verdict"] in FAILING:
            try:
                r["reproducer"] = shrink_failure(r["id"], cfg.backend, cfg.device, repro_dir,
                                                 cfg.seed)
                out.print(f"shrunk {r['id']} -> {r['reproducer']['hal']}")
            except Exception as e:  # shrinking is best effort; the failure stands
                r["reproducer"] = {"error": f"{type(e).__name__}: {e}"}
    if report:
        writer.write_json(final=True)
    out.print(summary_table(summary, writer.results,
                            f"conformance {cfg.backend} / {device_name}"))
    if report or junit:
        out.print("reports: " + ", ".join(str(p) for p in (report, junit) if p))
    if not summary["ok"]:
        raise click.exceptions.Exit(1)


def _self_test(cfg, out, devices) -> None:
    from hal.backends_registry import get_backend
    from hal.conformance.selftest import MIN_CATCHES, run_selftest, selftest_table

    backend = get_backend(cfg.backend)
    if hasattr(backend, "render_selftest"):  # runs the rendered text: plant renderer faults
        results = backend.render_selftest(device=cfg.device)
        for fault, caught in results.items():
            out.print(f"{fault}: " + ("caught by " + ", ".join(c for c, _ in caught)
                                      if caught else "ESCAPED"))
        escaped = [f for f, caught in results.items() if not caught]
        if escaped:
            out.print("renderer faults that escaped: " + ", ".join(escaped))
            raise click.exceptions.Exit(1)
        out.print(f"all {len(results)} planted renderer faults caught on {cfg.backend}")
        return
    if cfg.backend != "cpu_sim":
        raise HalError("--self-test plants faults in hal's lowering (cpu_sim) or in the "
                       "rendered text (cuda-host, hip-host)",
                       hint="use --backend cpu_sim, cuda-host or hip-host")
    base, results = run_selftest(cfg, devices=devices, on_fault=lambda fr, dev: out.print(
        f"{dev} {fr.fault}: " + (f"caught by {fr.count(dev)}" if fr.count(dev) else
                                 ("no bug on this spec" if dev in fr.same_code
                                  else "ESCAPED"))))
    for dev, failing in base.items():
        if failing:
            out.print(f"{dev}: cases failing without any fault (left out of the self-test): "
                      + ", ".join(r["id"] for r in failing))
    out.print(selftest_table(results, list(devices)))
    escaped = [fr.fault for fr in results if not fr.caught]
    weak = [fr.fault for fr in results if fr.caught and fr.weak]
    if escaped:
        out.print("faults that escaped: " + ", ".join(escaped))
        raise click.exceptions.Exit(1)
    if weak and not cfg.pattern:
        out.print(f"faults caught by fewer than {MIN_CATCHES} cases on a spec: "
                  + ", ".join(weak))
        raise click.exceptions.Exit(1)
    out.print(f"all {len(results)} planted faults caught on {', '.join(devices)}")



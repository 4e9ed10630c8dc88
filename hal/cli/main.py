"""The `hal` command: a click group whose commands live one per module in hal.cli.

Every HalError a command raises is printed as `error: <message>` (and
`hint: <fix>`) on stderr with exit code 1; click's usage errors are printed in the
same form (the usage line as the hint) and exit 2. A
traceback appears only with `--debug`, for hal's own errors and for bugs alike.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hal import __version__
from hal.errors import HalError

# Each command's module, attribute and one-line help. Commands are imported when they
# run (or when their own --help is asked for), so `hal --help` and `hal --version`
# pay only for click; tests/test_cli_startup.py holds the help lines equal to the
# commands' own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backends": ("hal.cli.backends_cmd", "backends",
                 "List backends (in-tree and plugins) with availability and capabilities."),
    "bench": ("hal.cli.bench_cmd", "bench",
              "Benchmark OP_OR_FILE (an op, a fused pattern like matmul+bias+gelu, or a .hal "
              "file) against the device's roofline and framework baselines."),
    "bringup": ("hal.cli.bringup_cmd", "bringup",
                "Import MODEL, plan, run on a backend and check parity with its framework."),
    "compile": ("hal.cli.compile_cmd", "compile_",
                "Render FILE (.hal) as CUDA or HIP, compile it and print registers, spills, "
                "shared."),
    "conformance": ("hal.cli.conformance_cmd", "conformance",
                    "Check a backend's numbers against the float64 reference within the "
                    "error model."),
    "devices": ("hal.cli.devices", "devices", "List the shipped device specs."),
    "fuse": ("hal.cli.fuse_cmd", "fuse",
             "Plan the fusion of FILE (.hal) for a device and show groups, kernels and "
             "modelled cost."),
    "ops": ("hal.cli.ops_cmd", "ops", "List the ops hal defines."),
    "run": ("hal.cli.run", "run", "Run the graph in FILE (.hal text) and summarise its outputs."),
}


def _report(message: str, hint: str | None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


class HalGroup(click.Group):
    """Turns exceptions from any subcommand into one clear message and an exit code;
    imports a command's module only when that command is used (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and name in COMMANDS:
            import importlib

            module, attr, _ = COMMANDS[name]
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in COMMANDS and name not in self.commands:
                text = click.utils.make_default_short_help(COMMANDS[name][2], limit)
            else:
                cmd = self.get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                text = cmd.get_short_help_str(limit)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """click's usage errors in hal's form: `error: ...` and `hint: usage ...`, exit 2."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.UsageError as e:
            hint = None
            if e.ctx is not None:
                hint = (e.ctx.get_usage().replace("\n", " ").strip() +
                        f"; see `{e.ctx.command_path} --help`")
            _report(e.format_message(), hint)
            code = e.exit_code
        except click.ClickException as e:
            _report(e.format_message(), None)
            code = e.exit_code
        except click.Abort:  # click's wrapper of KeyboardInterrupt / EOF
            click.echo("interrupted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except HalError as e:
            if ctx.params.get("debug"):
                raise
            _report(e.message, e.hint)
            ctx.exit(getattr(e, "exit_code", 1))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # a bug in hal: still no traceback unless asked
            if ctx.params.get("debug"):
                raise
            _report(f"internal error: {type(e).__name__}: {e}",
                    "rerun with `hal --debug ...` for the traceback, and report it")
            ctx.exit(1)


@click.group(cls=HalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show tracebacks for errors")
@click.version_option(__version__, "--version", prog_name="hal")
def main(debug: bool) -> None:
    """hal: a hardware abstraction layer for AI accelerators."""



if __name__ == "__main__":
    sys.exit(main())

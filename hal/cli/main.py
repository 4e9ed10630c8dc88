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
from hal.cli.backends_cmd import backends
from hal.cli.bench_cmd import bench
from hal.cli.bringup_cmd import bringup
from hal.cli.compile_cmd import compile_
from hal.cli.conformance_cmd import conformance
from hal.cli.devices import devices
from hal.cli.fuse_cmd import fuse
from hal.cli.ops_cmd import ops
from hal.cli.run import run
from hal.errors import HalError


def _report(message: str, hint: str | None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


class HalGroup(click.Group):
    """Turns exceptions from any subcommand into one clear message and an exit code."""

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


for _command in (devices, backends, ops, run, fuse, bringup, bench, compile_, conformance):
    main.add_command(_command)


if __name__ == "__main__":
    sys.exit(main())

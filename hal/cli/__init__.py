"""hal.cli: the `hal` command. `entry` is the console script: it imports the commands
inside a guard, so that Ctrl-C during start-up (torch, numpy imports) also exits 130
with one line instead of an import traceback."""

from __future__ import annotations

import sys


def entry() -> int:
    try:
        from hal.cli.main import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130

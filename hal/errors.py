"""The one error hierarchy hal raises.

Every error a user can cause derives from HalError, names the place (file, line,
field, node, kernel) and, where one exists, the fix. The CLI prints the message
on one line and exits non-zero; tracebacks appear only with --debug.
"""

from __future__ import annotations


class HalError(Exception):
    """Base of every error hal raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} (hint: {hint})")


class ParseError(HalError):
    """Malformed .hal text: carries file, line and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<string>",
        line: int = 0,
        column: int = 0,
        found: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ):
        self.file, self.line, self.column = file, line, column
        self.found, self.expected = found, expected
        parts = [f"{file}:{line}:{column}: {message}"]
        if expected is not None:
            parts.append(f"expected {expected}")
        if found is not None:
            parts.append(f"found {found}")
        super().__init__("; ".join(parts), hint=hint)


class SpecError(HalError):
    """A device spec that is missing a field or has a bad value."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 hint: str | None = None):
        self.file, self.field = file, field
        where = ""
        if file is not None:
            where += f"{file}: "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message, hint=hint)


class ShapeError(HalError):
    """Operands whose shapes or dtypes an op does not accept."""


class UnsupportedError(HalError):
    """An op, dtype or feature that a frontend, backend or lowering cannot handle."""


class CompileError(HalError):
    """A kernel that a compiler rejected: carries the log, the source path and a repro command."""

    def __init__(self, message: str, *, log: str = "", source_path: str | None = None,
                 command: str | None = None, hint: str | None = None):
        self.log, self.source_path, self.command = log, source_path, command
        text = message
        if source_path:
            text += f"\n  source: {source_path}"
        if command:
            text += f"\n  reproduce: {command}"
        if log:
            text += "\n  log:\n" + "\n".join("    " + ln for ln in log.strip().splitlines()[:40])
        super().__init__(text, hint=hint)


class DeviceError(HalError):
    """A device or runtime failure: unavailable backend, launch refused, simulator check."""


class GraphError(HalError):
    """A graph that fails verification (dangling value, duplicate name, type mismatch)."""


class DeviceMemoryError(HalError):
    """A graph whose tensors do not fit in the device spec's memory (`dram_bytes`)."""

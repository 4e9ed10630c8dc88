"""The statement being translated, as codegen's emitters see it: `_Ctx` (the mask and
lane count its code runs under, the access whose index is being generated, its headline,
its site) and the headline that names a statement in simulator messages (`_Text`,
`headline_text`: formatted only when a message needs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hal.kernel.ir import For, If, Stmt
from hal.kernel.printer import format_expr, format_stmt


class _Text:
    """A message fragment (a statement's headline, an expression) formatted on first use:
    every access gets a site, and almost none of them ever reports."""

    __slots__ = ("fn", "arg", "text")

    def __init__(self, fn: Callable[[Any], str], arg: Any):
        self.fn, self.arg, self.text = fn, arg, None

    def __str__(self) -> str:
        if self.text is None:
            self.text = self.fn(self.arg)
        return self.text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))


def headline_text(s: Stmt) -> _Text:
    """`_headline(s)` (at most 160 characters), formatted when a message needs it."""
    return _Text(_headline_160, s)


def _headline_160(s: Stmt) -> str:
    return _headline(s)[:160]


def _headline(s: Stmt) -> str:
    """One line naming a statement in messages (bodies of If/For left out)."""
    if isinstance(s, If):
        return f"if ({format_expr(s.cond)})"
    if isinstance(s, For):
        v = s.var.name
        return (f"for ({v} = {format_expr(s.start)}; {v} < {format_expr(s.stop)}; "
                f"{v} += {format_expr(s.step)})")
    return format_stmt(s)[0].strip()

@dataclass(slots=True)
class _Ctx:
    mask: str = "None"
    count: str = "_L"
    buffer: str | None = None       # the access whose index is being generated
    stmt: Any = ""                  # the headline (a _Text) of the statement being run
    site: int = -1

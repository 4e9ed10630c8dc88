"""Compiled code objects of generated wave functions, by their source text: `compile_wave`.

Kernels that differ only in a float constant (bound as a name in the function's
namespace, codegen.`_Translator.const`) or in a value the code does not read translate
to the same source; `compile()` of a long wave function is a large part of a
translation, so one code object serves every such kernel. A code object is immutable;
each translation still executes it in its own namespace (its own constants, ops and
tables), so a hit differs from a fresh compile in nothing but the time taken.

The key is the whole source, so a changed kernel never gets another kernel's code.
Not the file name (which names the kernel in tracebacks): kernels of equal source under
other names (a fused run's k0_exp, an unfused run's g0_exp; a third of the conformance
suite's compiles) get the cached code renamed (`_renamed`: CodeType.replace of the code
and of the functions it defines, far cheaper than compile()). Bounded LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from types import CodeType

_CODE: OrderedDict[str, CodeType] = OrderedDict()
CODE_CACHE_SIZE = 2048


def compile_wave(source: str, filename: str) -> CodeType:
    """`compile(source, filename, "exec")`, from the cache when seen before."""
    code = _CODE.get(source)
    if code is not None:
        _CODE.move_to_end(source)
        return code if code.co_filename == filename else _renamed(code, filename)
    code = compile(source, filename, "exec")
    _CODE[source] = code
    if len(_CODE) > CODE_CACHE_SIZE:
        _CODE.popitem(last=False)
    return code


def _renamed(code: CodeType, filename: str) -> CodeType:
    """`code` with `filename`, as compile() under that name would have made it: the code
    objects of the functions it defines (run, the prelude's) carry the name too."""
    consts = tuple(_renamed(c, filename) if isinstance(c, CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def clear() -> None:
    _CODE.clear()


def cached() -> int:
    """How many code objects the cache holds (tests)."""
    return len(_CODE)


__all__ = ["CODE_CACHE_SIZE", "cached", "clear", "compile_wave"]

"""Compiled code objects of generated wave functions, by their source text: `compile_wave`.

Kernels that differ only in a float constant (bound as a name in the function's
namespace, codegen.`_Translator.const`) or in a value the code does not read translate
to the same source; `compile()` of a long wave function is a large part of a
translation, so one code object serves every such kernel. A code object is immutable;
each translation still executes it in its own namespace (its own constants, ops and
tables), so a hit differs from a fresh compile in nothing but the time taken.

The key is the whole source and the file name (which names the kernel in
tracebacks), so a changed kernel never gets another kernel's code. Bounded LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from types import CodeType

_CODE: OrderedDict[tuple[str, str], CodeType] = OrderedDict()
CODE_CACHE_SIZE = 2048


def compile_wave(source: str, filename: str) -> CodeType:
    """`compile(source, filename, "exec")`, from the cache when seen before."""
    key = (source, filename)
    code = _CODE.get(key)
    if code is not None:
        _CODE.move_to_end(key)
        return code
    code = compile(source, filename, "exec")
    _CODE[key] = code
    if len(_CODE) > CODE_CACHE_SIZE:
        _CODE.popitem(last=False)
    return code


def clear() -> None:
    _CODE.clear()


def cached() -> int:
    """How many code objects the cache holds (tests)."""
    return len(_CODE)


__all__ = ["CODE_CACHE_SIZE", "cached", "clear", "compile_wave"]

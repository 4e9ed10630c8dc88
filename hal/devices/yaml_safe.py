"""Safe YAML for device specs: `load_yaml(text, file) -> (data, top-level key lines)`.

A spec is a small, flat document, so anything a spec never needs is refused before
PyYAML builds Python objects from it:
* a size cap (`MAX_BYTES`) and a node cap (`MAX_NODES`);
* anchors and aliases (`&a` / `*a`): an alias bomb inside a valid field (a billion
  laughs under `capabilities`) used to hang `hal devices show` while it expanded;
* duplicate keys in any mapping (YAML lets the last one win silently);
* non-finite numbers (`.nan`, `.inf`), which would flow into the cost model.
Every refusal is a SpecError naming the file, the line and the field.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from hal.errors import SpecError

MAX_BYTES = 1 << 20     # a shipped spec is about 3 KiB
MAX_NODES = 100_000


def _path(keys: list[str]) -> str:
    return ".".join(keys) if keys else "<document>"


def _check_tree(root: yaml.Node, file: str) -> None:
    """Walk the composed node graph (aliases are shared nodes there, not yet expanded)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, list[str]]] = [(root, [])]
    count = 0
    while stack:
        node, keys = stack.pop()
        count += 1
        at = f"{file}:{node.start_mark.line + 1}"
        if count > MAX_NODES:
            raise SpecError(f"more than {MAX_NODES} YAML nodes", file=at,
                            hint="a device spec is a short list of fields")
        if id(node) in seen or getattr(node, "anchor", None):
            raise SpecError("YAML anchors and aliases (&name / *name) are not allowed in a "
                            "spec", file=at, field=_path(keys) if keys else None,
                            hint="write the value out")
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "<complex key>"
                line = k.start_mark.line + 1
                if name in first:
                    raise SpecError(f"duplicate key '{name}' (first on line {first[name]})",
                                    file=f"{file}:{line}", field=_path([*keys, name]),
                                    hint="keep one of them; YAML would silently keep the last")
                first[name] = line
                stack.append((k, keys))
                stack.append((v, [*keys, name]))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, [*keys, str(i)]) for i, v in enumerate(node.value))


def _reject_non_finite(data: Any, file: str, lines: dict[str, int]) -> None:
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    while stack:
        x, keys = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            top = keys[0] if keys else None
            at = f"{file}:{lines[top]}" if top in lines else file
            raise SpecError(f"non-finite number {x!r}", file=at, field=_path(keys),
                            hint="give a finite value with its unit")
        if isinstance(x, dict):
            stack.extend((v, [*keys, str(k)]) for k, v in x.items())
        elif isinstance(x, list):
            stack.extend((v, [*keys, str(i)]) for i, v in enumerate(x))


def load_yaml(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """(data, top-level key -> line) of a spec's YAML text; SpecError on anything unsafe.
    A YAML syntax error propagates as yaml.YAMLError (the caller words it)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise SpecError(f"spec file is larger than {MAX_BYTES // 1024} KiB", file=file,
                        hint="a device spec is a short list of fields")
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None, {}
    _check_tree(node, file)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value
                 if isinstance(k, yaml.ScalarNode)}
    _reject_non_finite(data, file, lines)
    return data, lines

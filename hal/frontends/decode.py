"""Greedy decoding with a KV-cache step: hal against eager torch, step by step (issue 17).

A decode step is a torch module

    step(ids [B, 1] int64, pos [1] int64, *cache) -> (logits [B, 1, V], *new_cache)

with a static cache: the new cache tensors have the inputs' shapes and are the next
step's cache inputs, in order; the step writes position `pos` (index_copy / index_put:
the cache update) and attends over the whole cache with a mask of the positions
written so far (decode attention). `decode_subject(step, prompt, cache)` exports the
step once (with the prompt's first token), imports it and `decode(...)` runs it:

* the prompt is fed one token per step (prefill by decode), then `new_tokens` tokens
  are generated greedily (argmax of the last logits);
* eager torch runs the same steps on its own cache (slots on axis -2: [.., T, D]); hal runs them on its own cache
  (what hal computed at step i is hal's input at step i + 1), both on the same tokens,
  so every step's logits and cache are compared (the parity bound of `hal bringup`);
* hal's argmax at every step must equal torch's: then hal's greedy output equals
  eager torch's, token for token.

`hal bringup --decode N MODEL` takes MODEL returning `(step, (prompt [B, P], *cache))`
(see examples/models/hf_zoo.py:llama_decode, the transformers StaticCache layers
driven functionally).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.errors import HalError
from hal.frontends.bringup import ModelError, compare, tolerance, user_code
from hal.frontends.common import ImportedModel


@dataclass(frozen=True)
class DecodeSubject:
    """A decode step exported and imported, with the prompt and the initial cache."""

    name: str
    step: Any                      # the torch module (eager reference)
    model: ImportedModel           # the step in hal
    prompt: np.ndarray             # [B, P] int64
    cache: tuple[np.ndarray, ...]  # initial cache tensors


def decode_subject(name: str, step: Any, prompt: Any, cache: tuple) -> DecodeSubject:
    """Export `step` with the prompt's first token at position 0 and import it."""
    import torch

    from hal.frontends.bringup import _quiet_frameworks, _quiet_torch_logs
    from hal.frontends.torch_export import import_exported_program

    if not isinstance(prompt, torch.Tensor) or prompt.dtype != torch.int64 or prompt.dim() != 2:
        raise ModelError(f"model error: {name}: a decode model's first input is the prompt, "
                         f"an int64 [B, P] tensor of token ids",
                         hint="return (step, (prompt_ids, *initial_cache))")
    args = (prompt[:, :1], torch.tensor([0]), *cache)
    step = step.eval()
    with _quiet_frameworks(), _quiet_torch_logs(), user_code("exporting", name):
        ep = torch.export.export(step, args, strict=False)
    model = import_exported_program(ep, name)
    n_cache = len(cache)
    if len(model.graph.outputs) != 1 + n_cache:
        raise ModelError(f"model error: {name}: the step returns {len(model.graph.outputs)} "
                         f"tensors for {n_cache} cache inputs",
                         hint="return (logits, *new_cache) with the cache in input order")
    for i, (o, c) in enumerate(zip(model.graph.outputs[1:], cache, strict=True)):
        if tuple(o.shape) != tuple(c.shape):
            raise ModelError(f"model error: {name}: new cache {i} has shape {list(o.shape)}, "
                             f"its input {list(c.shape)}",
                             hint="a decode step keeps a static cache: same shapes in and out")
    return DecodeSubject(name, step, model, prompt.numpy(),
                         tuple(c.detach().numpy() for c in cache))


def _compare_output(graph: Any, j: int, got: np.ndarray, expected: np.ndarray,
                    pos: int) -> dict[str, Any]:
    """Output j of step `pos` against torch. A cache output (j >= 1, slots on axis -2) is
    judged on the slots written so far (positions 0..pos), with the bound's scale taken
    from them (the empty slots would shrink it); the empty slots must match exactly."""
    extra_ok = True
    if j >= 1 and expected.ndim >= 2:
        extra_ok = bool(np.array_equal(got[..., pos + 1:, :], expected[..., pos + 1:, :]))
        got, expected = got[..., :pos + 1, :], expected[..., :pos + 1, :]
    rtol, atol = tolerance(graph, j, expected)
    c = compare(got, expected, rtol, atol)
    return {"output": graph.outputs[j].name, "atol": atol, "max_abs": c["max_abs"],
            "ok": bool(c["ok"]) and extra_ok}


def decode(subject: DecodeSubject, new_tokens: int, backend: str, spec: Any, *,
           phase: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the prompt and `new_tokens` greedy steps on `backend` and in eager torch; a
    JSON-ready report whose `ok` holds when every step is within the parity bound and
    every greedy token equals torch's."""
    import torch

    from hal.fusion import plan

    phase = phase or (lambda name: None)
    graph = subject.model.graph
    phase("plan")
    p = plan(graph, spec).to_dict()
    attn = [g for g in p["groups"] if getattr(g["kind"], "value", g["kind"]) == "attention"]
    rep: dict[str, Any] = {
        "model": subject.name, "backend": backend, "device": spec.name,
        "hal_ops": dict(collections.Counter(n.op for n in graph.nodes)),
        "fusion": {"totals": p["totals"],
                   "kinds": dict(collections.Counter(
                       getattr(g["kind"], "value", g["kind"]) for g in p["groups"]))},
        "attention": [{"group": g["name"], "split_k": (g["plan"] or {}).get("split_k", 1),
                       "launches": len((g["plan"] or {}).get("launches", []))} for g in attn],
        "steps": [], "ok": False}
    prompt = subject.prompt
    total = prompt.shape[1] + new_tokens - 1
    slots = min((c.shape[-2] for c in subject.cache if c.ndim >= 2), default=None)
    if slots is not None and total > slots:
        raise HalError(f"{subject.name}: {total} positions do not fit the cache "
                       f"({slots} slots)", hint="generate fewer tokens or build the cache longer")
    t_cache = [torch.from_numpy(c.copy()) for c in subject.cache]
    h_cache = [c.copy() for c in subject.cache]
    torch_tokens: list[int] = []
    hal_tokens: list[int] = []
    ok = True
    token = prompt[:, :1]
    for i in range(total):
        phase(f"step {i + 1}/{total}")
        ids = prompt[:, i:i + 1] if i < prompt.shape[1] else token
        pos = np.array([i], dtype=np.int64)
        with torch.no_grad(), user_code("running", subject.name):
            out = subject.step(torch.from_numpy(ids), torch.from_numpy(pos), *t_cache)
        expected = [o.detach().numpy() for o in out]
        got = subject.model.run([ids, pos, *h_cache], backend=backend, spec=spec)
        row: dict[str, Any] = {"step": i, "position": i, "outputs": []}
        for j, (g, e) in enumerate(zip(got, expected, strict=True)):
            row["outputs"].append(_compare_output(graph, j, np.asarray(g), e, i))
        want = int(np.argmax(expected[0][0, -1]))
        have = int(np.argmax(got[0][0, -1]))
        row.update(torch_token=want, hal_token=have,
                   ok=all(o["ok"] for o in row["outputs"]) and want == have)
        ok = ok and row["ok"]
        rep["steps"].append(row)
        if i >= prompt.shape[1] - 1:
            torch_tokens.append(want)
            hal_tokens.append(have)
        token = np.array([[want]], dtype=np.int64)
        t_cache = [torch.as_tensor(o) for o in out[1:]]
        h_cache = [np.asarray(g) for g in got[1:]]
    rep.update(prompt=prompt[0].tolist(), torch_tokens=torch_tokens, hal_tokens=hal_tokens,
               ok=ok and torch_tokens == hal_tokens)
    return rep

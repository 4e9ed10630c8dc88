"""Framework baselines: the same op, run by torch (eager or compiled) or jax (jit).

A baseline runs a case's `recipe` (hal.bench.cases) with the framework's own
kernels on the same device as hal: the GPU when hal runs on real hardware and
the framework sees one (CUDA tensors timed with torch.cuda.Event, jax arrays
with block_until_ready), otherwise the host CPU, labelled "host CPU". A
missing framework, a missing GPU or a failing compile gives
`BaselineResult(available=False, reason=...)`, never an exception.

torch-compile is `torch.compile(..., dynamic=False)` in the default mode, compiled
afresh for each case (dynamo reset first), so every shape gets its own
specialised kernels and the compile is never counted in the timings (warmup >= 2).

Registry: `BASELINES` (name -> Baseline), extended with `register_baseline`.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.bench.cases import BenchCase

# where a baseline runs: "host" (the CPU this process runs on) or "gpu"
Target = str


@dataclass
class BaselineResult:
    name: str
    available: bool
    reason: str = ""                # why unavailable, or a note ("host CPU: not comparable ...")
    where: str = ""                 # "host CPU", "cuda:0 NVIDIA H100 80GB HBM3"
    times_s: list[float] = field(default_factory=list)
    timer: str = ""                 # "host wall clock" or "torch.cuda.Event"

    def to_dict(self) -> dict[str, Any]:
        from hal.bench.runner import summarize_times

        return {"name": self.name, "available": self.available, "reason": self.reason,
                "where": self.where, "timer": self.timer, **summarize_times(self.times_s)}


def host_times(fn: Callable[[], Any], repeat: int, warmup: int,
               sync: Callable[[], Any] | None = None,
               flush: Callable[[], Any] | None = None) -> list[float]:
    """Wall-clock seconds per call; `sync` waits for the work, `flush` runs outside the timing."""
    sync = sync or (lambda _result: None)
    for _ in range(warmup):
        sync(fn())
    out = []
    for _ in range(repeat):
        if flush is not None:
            flush()
        t0 = time.perf_counter()
        sync(fn())
        out.append(time.perf_counter() - t0)
    return out


def host_flusher(nbytes: int) -> Callable[[], None]:
    """Touch a host buffer of `nbytes` (evicts the caches between runs)."""
    buf = np.zeros(max(nbytes, 1) // 8, np.int64)

    def flush() -> None:
        np.add(buf, 1, out=buf)
    return flush


# --------------------------------------------------------------------------- op namespaces


_REDUCE_TORCH = {"reduce_sum": "sum", "reduce_max": "amax", "reduce_min": "amin",
                 "reduce_prod": "prod", "reduce_any": "any", "reduce_all": "all",
                 "argmax": "argmax", "argmin": "argmin"}
_ELEMENTWISE_TORCH = {"remainder": "fmod", "select": "where", "ne": "ne", "pow": "pow"}


class TorchOps:
    """What the case recipes call, on torch tensors."""

    def __init__(self) -> None:
        import torch
        import torch.nn.functional as F

        self.t, self.F = torch, F

    def add(self, a, b):
        return a + b

    def matmul(self, a, b):
        return self.t.matmul(a, b)

    def softmax(self, x, axis):
        return self.t.softmax(x, axis)

    def layer_norm(self, x, w, b, eps):
        return self.F.layer_norm(x, x.shape[-1:], w, b, eps)

    def rms_norm(self, x, w, eps):
        if hasattr(self.F, "rms_norm"):
            return self.F.rms_norm(x, x.shape[-1:], w, eps)
        xf = x.float()
        return (xf * self.t.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    def gelu(self, x, approximate):
        return self.F.gelu(x, approximate=approximate)

    def silu(self, x):
        return self.F.silu(x)

    def relu(self, x):
        return self.F.relu(x)

    def attention(self, q, k, v, causal, scale):
        gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
        return self.F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal),
                                                   scale=scale, **gqa)

    def gather(self, table, idx):
        return self.F.embedding(idx, table)

    def elementwise(self, op, *xs):
        return getattr(self.t, _ELEMENTWISE_TORCH.get(op, op))(*xs)

    def reduce(self, op, x, axis):
        return getattr(self.t, _REDUCE_TORCH[op])(x, axis)


_REDUCE_JAX = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min",
               "reduce_prod": "prod", "reduce_any": "any", "reduce_all": "all",
               "argmax": "argmax", "argmin": "argmin"}


class JaxOps:
    """What the case recipes call, on jax arrays (inside jax.jit)."""

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def add(self, a, b):
        return a + b

    def matmul(self, a, b):
        return self.jnp.matmul(a, b)

    def softmax(self, x, axis):
        return self.jax.nn.softmax(x, axis=axis)

    def layer_norm(self, x, w, b, eps):
        xf = x.astype(self.jnp.float32)
        mu = xf.mean(-1, keepdims=True)
        var = ((xf - mu) ** 2).mean(-1, keepdims=True)
        return ((xf - mu) * self.jax.lax.rsqrt(var + eps) * w + b).astype(x.dtype)

    def rms_norm(self, x, w, eps):
        xf = x.astype(self.jnp.float32)
        r = self.jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + eps)
        return (xf * r * w).astype(x.dtype)

    def gelu(self, x, approximate):
        return self.jax.nn.gelu(x, approximate=approximate == "tanh")

    def silu(self, x):
        return self.jax.nn.silu(x)

    def relu(self, x):
        return self.jax.nn.relu(x)

    def attention(self, q, k, v, causal, scale):
        # jax wants [B, T, N, H]; hal's (and torch's) layout is [B, N, T, H]
        tr = (0, 2, 1, 3)
        out = self.jax.nn.dot_product_attention(q.transpose(tr), k.transpose(tr),
                                                v.transpose(tr), scale=scale,
                                                is_causal=bool(causal))
        return out.transpose(tr)

    def gather(self, table, idx):
        return self.jnp.take(table, idx, axis=0)

    def elementwise(self, op, *xs):
        special = {"rsqrt": self.jax.lax.rsqrt, "sigmoid": self.jax.nn.sigmoid,
                   "erf": self.jax.scipy.special.erf, "remainder": self.jnp.fmod,
                   "select": self.jnp.where, "pow": self.jnp.power}
        return (special.get(op) or getattr(self.jnp, op))(*xs)

    def reduce(self, op, x, axis):
        return getattr(self.jnp, _REDUCE_JAX[op])(x, axis=axis)


# --------------------------------------------------------------------------- baselines


class Baseline:
    """One framework way of running a case; subclasses fill `prepare` and `timer`."""

    name = "abstract"
    module = ""                     # the import that must be present

    def missing(self) -> str | None:
        if importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed (pip install 'hal[{self.module}]')"
        return None

    def run(self, case: BenchCase, target: Target, repeat: int, warmup: int,
            flush_bytes: int = 0, seed: int = 0) -> BaselineResult:
        if case.recipe is None:
            return BaselineResult(self.name, False, "no framework equivalent of a .hal file")
        why = self.missing()
        if why:
            return BaselineResult(self.name, False, why)
        try:
            return self._run(case, target, repeat, warmup, flush_bytes, seed)
        except Exception as e:  # noqa: BLE001 - a framework may fail in any way
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return BaselineResult(self.name, False, f"{type(e).__name__}: {msg[:200]}")

    def _run(self, case: BenchCase, target: Target, repeat: int, warmup: int,
             flush_bytes: int, seed: int) -> BaselineResult:
        raise NotImplementedError


class TorchBaseline(Baseline):
    name = "torch"
    module = "torch"
    compiled = False

    def _run(self, case, target, repeat, warmup, flush_bytes, seed):
        import torch

        if target == "gpu" and not torch.cuda.is_available():
            return BaselineResult(self.name, False, "torch sees no GPU here (torch.cuda."
                                  "is_available() is False); host timings would not compare")
        dev = "cuda" if target == "gpu" else "cpu"
        xs = [_to_torch(torch, a, dev) for a in case.make_inputs(seed).values()]
        ops = TorchOps()
        recipe = case.recipe

        def body(*args):
            return recipe(ops, *args)

        if self.compiled:
            # a fresh compile per case, specialised to its shapes: every case's `body`
            # shares one code object, so without the reset dynamo would count each case
            # as a recompile (generalising to dynamic shapes after the second, falling
            # back to eager past its recompile limit)
            torch._dynamo.reset()
            fn = torch.compile(body, dynamic=False)
        else:
            fn = body
        warmup = max(warmup, 2 if self.compiled else warmup)
        with torch.inference_mode():
            call = lambda: fn(*xs)  # noqa: E731
            if dev == "cuda":
                times = _cuda_event_times(torch, call, repeat, warmup, flush_bytes)
                where = f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
                timer = "torch.cuda.Event"
            else:
                flush = host_flusher(flush_bytes) if flush_bytes else None
                times = host_times(call, repeat, warmup, flush=flush)
                where, timer = "host CPU", "host wall clock"
        return BaselineResult(self.name, True, "", where, times, timer)


class TorchCompileBaseline(TorchBaseline):
    name = "torch-compile"
    compiled = True


class JaxBaseline(Baseline):
    name = "jax"
    module = "jax"

    def _run(self, case, target, repeat, warmup, flush_bytes, seed):
        import jax

        if target == "gpu":
            try:
                device = jax.devices("gpu")[0]
            except RuntimeError:
                return BaselineResult(self.name, False, "jax sees no GPU here; host timings "
                                      "would not compare")
        else:
            device = jax.devices("cpu")[0]
        xs = [jax.device_put(a, device) for a in case.make_inputs(seed).values()]
        ops = JaxOps()
        recipe = case.recipe
        fn = jax.jit(lambda *args: recipe(ops, *args))
        flush = host_flusher(flush_bytes) if flush_bytes and target != "gpu" else None
        times = host_times(lambda: fn(*xs), repeat, max(warmup, 1),
                           sync=lambda r: r.block_until_ready(), flush=flush)
        where = "host CPU" if target != "gpu" else f"{device.platform}:{device.id} " \
                                                    f"{device.device_kind}"
        return BaselineResult(self.name, True, "", where, times, "host wall clock "
                              "(block_until_ready)")


def _to_torch(torch: Any, a: np.ndarray, device: str) -> Any:
    """A NumPy array (ml_dtypes bf16/fp8 included) as a torch tensor of the same dtype."""
    names = {"bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn",
             "float8_e5m2": "float8_e5m2"}
    if a.dtype.name in names:
        t = torch.from_numpy(a.astype(np.float32)).to(getattr(torch, names[a.dtype.name]))
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device)


def _cuda_event_times(torch: Any, fn: Callable[[], Any], repeat: int, warmup: int,
                      flush_bytes: int) -> list[float]:
    buf = torch.empty(max(flush_bytes, 1), dtype=torch.uint8, device="cuda") \
        if flush_bytes else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeat):
        if buf is not None:
            buf.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return out


BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> None:
    BASELINES[baseline.name] = baseline


for _b in (TorchBaseline(), TorchCompileBaseline(), JaxBaseline()):
    register_baseline(_b)


def get_baseline(name: str) -> Baseline:
    from hal.errors import HalError

    if name not in BASELINES:
        raise HalError(f"unknown baseline '{name}'",
                       hint="baselines: " + ", ".join(sorted(BASELINES)))
    return BASELINES[name]

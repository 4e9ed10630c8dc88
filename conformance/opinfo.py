"""PyTorch's OpInfo database as a conformance suite: torch.export -> hal -> a backend.

Each OpInfo's sample inputs (float32 where the op supports it, else its first
supported dtype; at most `max_samples` per OpInfo) are wrapped in a module
whose tensor operands are the inputs and whose other arguments are baked in,
exported with torch.export, imported by hal's torch frontend, run on a
backend for a device spec and compared with eager PyTorch.

Every sample gets one verdict:

- ``pass``: every output within the parity bound (see `judge`);
- ``unsupported``: hal reports an op or dtype it does not support (the
  message names it; `missing` lists the ATen ops without a converter);
- ``rejected``: another typed hal error (HalError) on a program torch runs;
- ``mismatch``: outputs outside the bound;
- ``crash``: an exception that is not a HalError (a bug in hal);
- ``timeout``: the sample ran past the sweep's per-sample limit;
- ``export_fail``: torch.export (or eager torch) itself fails, or the sample
  has no tensor input or output: nothing for hal to do.

The parity bound follows `hal bringup`: rtol = 8 u sqrt(L) from the output
dtype and the longest accumulation. Like the bring-up verdict, a sample whose
hal error exceeds the bound still passes when hal is no farther from the
float64 truth (torch on float64 copies of the inputs) than eager torch is,
plus the bound: the framework's own rounding is not held against hal.

An OpInfo is summarised by its worst sample (crash > mismatch > rejected >
unsupported > pass); samples that fail to export are left out, and an OpInfo
none of whose samples exports counts as not exportable.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERDICTS = ("pass", "unsupported", "rejected", "timeout", "mismatch", "crash", "export_fail")
SEVERITY = {"pass": 0, "unsupported": 1, "rejected": 2, "timeout": 3, "mismatch": 4, "crash": 5}


class SampleTimeout(Exception):
    """Raised (by the sweep's alarm) when one sample runs past its time limit."""


@dataclass(frozen=True)
class SampleResult:
    """The verdict on one OpInfo sample."""

    opinfo: str           # "name" or "name.variant"
    index: int            # sample number within the OpInfo
    verdict: str          # one of VERDICTS
    message: str = ""
    missing: tuple[str, ...] = ()   # ATen ops with no converter (unsupported)
    seconds: float = 0.0

    @property
    def case_id(self) -> str:
        return f"opinfo/{self.opinfo}/{self.index}"

    def to_dict(self) -> dict[str, Any]:
        status = {"pass": "pass", "unsupported": "unsupported", "export_fail": "skip",
                  "mismatch": "fail"}.get(self.verdict, "error")
        return {"id": self.case_id, "opinfo": self.opinfo, "sample": self.index,
                "verdict": self.verdict, "status": status, "message": self.message,
                "missing": list(self.missing), "seconds": round(self.seconds, 3)}


@dataclass
class OpInfoSummary:
    """Counts over OpInfos (by worst sample) and the missing converters' reach."""

    total: int = 0
    exportable: int = 0
    by_verdict: Counter = field(default_factory=Counter)
    missing_ops: Counter = field(default_factory=Counter)   # aten op -> OpInfos blocked

    def to_dict(self) -> dict[str, Any]:
        rate = self.by_verdict["pass"] / self.exportable if self.exportable else 0.0
        return {"opinfos": self.total, "exportable": self.exportable,
                "passing": self.by_verdict["pass"], "pass_rate": round(rate, 4),
                "by_verdict": dict(self.by_verdict),
                "missing_converters": dict(self.missing_ops.most_common())}


def opinfo_name(op: Any) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def all_opinfos() -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db

    return list(op_db)


def select_opinfos(pattern: str | None = None, every: int = 1, offset: int = 0) -> list[Any]:
    """OpInfos whose name contains `pattern` (comma-separated alternatives), every `every`-th."""
    ops = all_opinfos()
    if pattern:
        pats = [p.strip() for p in pattern.split(",") if p.strip()]
        ops = [o for o in ops if any(p in opinfo_name(o) for p in pats)]
    return ops[offset::every]


def sample_dtype(op: Any) -> Any:
    import torch

    dts = op.supported_dtypes("cpu")
    for dt in (torch.float32, torch.int64, torch.int32, torch.bool):
        if dt in dts:
            return dt
    return next(iter(sorted(dts, key=str)), None)


def samples(op: Any, max_samples: int) -> Iterator[Any]:
    dt = sample_dtype(op)
    if dt is None:
        return
    import torch

    torch.manual_seed(0)
    yield from _take(op.sample_inputs("cpu", dt, requires_grad=False), max_samples)


def _take(it: Iterable[Any], n: int) -> Iterator[Any]:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


class _SampleModule:
    """Builds a torch module computing `op(*args, **kwargs)` with the tensor leaves as inputs."""

    @staticmethod
    def make(fn: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
        import torch
        import torch.utils._pytree as pytree

        leaves, spec = pytree.tree_flatten((args, kwargs))
        where = [i for i, x in enumerate(leaves) if isinstance(x, torch.Tensor)]
        tensors = tuple(leaves[i].detach().clone() for i in where)

        class Sample(torch.nn.Module):
            def forward(self, *xs):
                vals = list(leaves)
                for i, x in zip(where, xs, strict=True):
                    vals[i] = x
                a, k = pytree.tree_unflatten(vals, spec)
                return fn(*a, **k)

        return Sample().eval(), tensors


def _outputs(y: Any) -> list[Any] | None:
    """The tensor leaves of an op's result, or None if any leaf is not a tensor."""
    import torch
    import torch.utils._pytree as pytree

    leaves = pytree.tree_leaves(y)
    if not leaves or not all(isinstance(t, torch.Tensor) for t in leaves):
        return None
    return leaves


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu().resolve_conj().resolve_neg()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        return t.float().numpy()   # 16-bit and fp8 floats: exact in f32
    return t.numpy()


def _float64_truth(module: Any, tensors: tuple) -> list[np.ndarray] | None:
    """torch's outputs on float64 copies of the float inputs (None when that fails)."""
    import torch

    ups = tuple(t.double() if t.is_floating_point() else t for t in tensors)
    try:
        with torch.no_grad():
            outs = _outputs(module(*ups))
    except Exception:  # noqa: BLE001 - an op without float64 support: no truth, plain verdict
        return None
    return None if outs is None else [_to_numpy(o) for o in outs]


def judge(actual: np.ndarray, expected: np.ndarray, truth: np.ndarray | None,
          rtol: float, atol: float) -> tuple[bool, str]:
    """(ok, detail): hal within the bound of torch, or no farther from float64 than torch."""
    from hal.frontends.bringup import compare

    c = compare(actual, expected, rtol, atol)
    if c["ok"]:
        return True, ""
    detail = f"max_abs {c['max_abs']:.3g} (atol {atol:.3g}, rtol {rtol:.3g})"
    if truth is None or truth.shape != np.shape(actual) or np.asarray(actual).dtype.kind not in "fc":
        return False, detail
    with np.errstate(all="ignore"):
        a, e, t = (np.asarray(x, dtype=np.float64) for x in (actual, expected, truth))
        hal_err = np.where(np.isnan(a) & np.isnan(t), 0.0, np.abs(a - t))
        fw_err = np.where(np.isnan(e) & np.isnan(t), 0.0, np.abs(e - t))
        hal_err = np.nan_to_num(hal_err, nan=np.inf)
        fw_err = np.nan_to_num(fw_err, nan=np.inf)
        ok = bool(np.all(hal_err <= fw_err + atol + rtol * np.abs(np.nan_to_num(t))))
    return ok, detail + f"; vs float64: hal {float(np.max(hal_err, initial=0)):.3g}, " \
                        f"torch {float(np.max(fw_err, initial=0)):.3g}"


def run_sample(op: Any, index: int, sample: Any, backend: str = "cpu_sim",
               spec: Any = "h100-sxm") -> SampleResult:
    """Export, import, run and judge one sample; never raises."""
    import torch

    from hal.errors import HalError, UnsupportedError
    from hal.frontends.torch_export import decompose_program

    name = opinfo_name(op)
    t0 = time.perf_counter()

    def done(verdict: str, message: str = "", missing: tuple[str, ...] = ()) -> SampleResult:
        return SampleResult(name, index, verdict, message[:400], missing,
                            time.perf_counter() - t0)

    args = (sample.input, *sample.args)
    module, tensors = _SampleModule.make(op.op, args, dict(sample.kwargs))
    if not tensors:
        return done("export_fail", "the sample has no tensor input")
    if any(t.layout != torch.strided for t in tensors):
        return done("unsupported", "sparse tensor layouts are out of hal's scope (dense only)",
                    ("layout:sparse",))
    try:
        with torch.no_grad():
            eager = _outputs(module(*tensors))
        if eager is None:
            return done("export_fail", "the op returns a non-tensor")
        ep = decompose_program(torch.export.export(module, tensors))
    except Exception as e:  # noqa: BLE001 - classify torch's own failures
        return done("export_fail", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    try:
        return _run_exported(ep, module, tensors, eager, backend, spec, done)
    except SampleTimeout:
        return done("timeout", "ran past the per-sample time limit")
    except UnsupportedError as e:
        from hal.frontends.torch_convert import unsupported_nodes

        missing = tuple(sorted(unsupported_nodes(ep.graph_module)))
        return done("unsupported", e.message.splitlines()[0], missing)
    except HalError as e:
        return done("rejected", f"{type(e).__name__}: {e.message.splitlines()[0]}")
    except Exception as e:  # noqa: BLE001 - an untyped exception is a crash by definition
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"
        return done("crash", f"{type(e).__name__} at {where}: {e}")


def _run_exported(ep: Any, module: Any, tensors: tuple, eager: list, backend: str, spec: Any,
                  done: Any) -> SampleResult:
    from hal.backends_registry import get_backend
    from hal.devices.loader import load_spec
    from hal.frontends.bringup import tolerance
    from hal.frontends.torch_export import import_exported_program

    if isinstance(spec, str):
        spec = load_spec(spec)
    expected = [_to_numpy(t) for t in eager]
    model = import_exported_program(ep, "opinfo", decompose=False)
    graph = model.graph
    if len(graph.outputs) != len(expected):
        return done("rejected", f"hal graph has {len(graph.outputs)} outputs, torch "
                                f"{len(expected)}")
    inputs = [_to_numpy(t) for t in tensors]
    run_inputs = {v.name: a for v, a in zip(graph.inputs, inputs, strict=False)}
    opts = {"compare_reference": False} if backend == "cpu_sim" else {}
    result = get_backend(backend).run_graph(graph, model.bind(list(run_inputs.values())),
                                            spec, **opts)
    truth = None
    for i, (name, exp) in enumerate(zip(model.output_names, expected, strict=True)):
        act = result.outputs[name]
        if np.shape(act) != exp.shape:
            return done("mismatch", f"output {i}: shape {list(np.shape(act))} != {list(exp.shape)}")
        rtol, atol = tolerance(graph, i, exp)
        ok, detail = judge(act, exp, None, rtol, atol)
        if not ok:
            if truth is None:
                truth = _float64_truth(module, tensors) or []
            t = truth[i] if i < len(truth) else None
            ok, detail = judge(act, exp, t, rtol, atol)
            if not ok:
                return done("mismatch", f"output {i}: {detail}")
    return done("pass")


def run_opinfos(ops: Iterable[Any], max_samples: int = 3, backend: str = "cpu_sim",
                spec: Any = "h100-sxm", progress: Any = None) -> list[SampleResult]:
    """Every selected OpInfo's first `max_samples` samples; `progress(name, results)` per op."""
    from hal.devices.loader import load_spec

    if isinstance(spec, str):
        spec = load_spec(spec)
    out: list[SampleResult] = []
    for op in ops:
        mine: list[SampleResult] = []
        try:
            for i, s in enumerate(samples(op, max_samples)):
                mine.append(run_sample(op, i, s, backend, spec))
        except Exception as e:  # noqa: BLE001 - torch's sample generator failed
            mine.append(SampleResult(opinfo_name(op), len(mine), "export_fail",
                                     f"sample_inputs: {type(e).__name__}: {e}"[:400]))
        if not mine:
            mine.append(SampleResult(opinfo_name(op), 0, "export_fail", "no samples"))
        out.extend(mine)
        if progress is not None:
            progress(opinfo_name(op), mine)
    return out


def opinfo_verdict(results: Iterable[SampleResult]) -> str:
    """The OpInfo's verdict: its worst exported sample, or export_fail if none exported."""
    exported = [r for r in results if r.verdict != "export_fail"]
    if not exported:
        return "export_fail"
    return max((r.verdict for r in exported), key=SEVERITY.__getitem__)


def summarize(results: Iterable[SampleResult]) -> OpInfoSummary:
    by_op: dict[str, list[SampleResult]] = {}
    for r in results:
        by_op.setdefault(r.opinfo, []).append(r)
    s = OpInfoSummary(total=len(by_op))
    for rs in by_op.values():
        v = opinfo_verdict(rs)
        s.by_verdict[v] += 1
        if v != "export_fail":
            s.exportable += 1
        for m in sorted({m for r in rs for m in r.missing}):
            s.missing_ops[m] += 1
    return s


def format_summary(s: OpInfoSummary, top: int = 25) -> str:
    d = s.to_dict()
    lines = [f"OpInfos: {d['opinfos']}, exportable: {d['exportable']}, fully passing: "
             f"{d['passing']} ({100 * d['pass_rate']:.1f}% of exportable)",
             "by verdict: " + ", ".join(f"{k} {v}" for k, v in sorted(s.by_verdict.items()))]
    if s.missing_ops:
        lines.append(f"missing converters ({len(s.missing_ops)}), by OpInfos blocked: " + ", ".join(
            f"{k} {v}" for k, v in s.missing_ops.most_common(top)))
    return "\n".join(lines)


def failing(results: Iterable[SampleResult], verdicts: tuple[str, ...] = ("crash", "mismatch",
                                                                          "rejected")) -> list:
    return [r for r in results if r.verdict in verdicts]


__all__ = ["SampleResult", "OpInfoSummary", "run_sample", "run_opinfos", "summarize",
           "format_summary", "select_opinfos", "opinfo_verdict", "failing", "judge"]

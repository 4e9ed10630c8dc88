"""hal's compute kernels on a real GPU against the framework's: GEMM, attention, a Llama block.

Cases (one run, one device, in this order so a run cut short keeps the most telling):

    gemm 4096^3 bf16          hal matmul      vs torch.matmul (cuBLAS)
    gemm 8192^3 bf16          hal matmul      vs torch.matmul
    gemm 8192^3 fp8 e4m3      hal matmul (B [N, K], bf16 out) vs torch._scaled_mm (unit
                              scales, cuBLASLt fp8)
    prefill attention s2048   hal attention   vs torch SDPA (causal, GQA 32/8 heads, D 128,
                              batch 4)                          flash / cuDNN / efficient)
    prefill attention s8192   as above, batch 1, s 8192 (32 query heads, d 128, causal)
    decode attention T=8192   hal attention   vs torch SDPA (1 query row, GQA 32/8, D 128,
                              batch 8: memory-bound, GB/s of the K/V cache)
    llama block s2048 d4096   hal's fused plan of examples/llama_block_d4096_s2048.hal vs
                              the same block in torch, eager and torch.compile

Timing is hal.bench.runner.run_case (what `hal bench` runs: hal launches only, device
events, L2 flushed by a device memset of 2 x the device's L2 between samples; baselines
timed with torch.cuda.Event under the same flush). Each case is also checked: hal's output
against torch eager's on the same inputs, relative L2 error, reported beside the times.
TFLOP/s use the fusion plan's flops (causal attention counts the full S x T square, as
torch's own counters do), so hal and torch are divided by the same number.

No GPU (the backend's probe fails): prints `SKIP: <reason>`, writes the reason to
OUT/gpu_kernels.md and exits 0. --time-budget S stops before a case that would not fit
(labelled "skipped: time budget") and drops torch.compile first when time runs short.

    python benchmarks/bench_gpu_kernels.py --out out/kernels --device h200
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LLAMA_BLOCK = ROOT / "examples" / "llama_block_d4096_s2048.hal"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Row:
    name: str
    shape: str
    what: str
    hal_s: float | None = None
    baselines: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    flops: float = 0.0
    bytes: int = 0
    kernels: int = 0
    rel_err: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.name, "shape": self.shape, "what": self.what,
                "hal_median_s": self.hal_s, "baselines_median_s": self.baselines,
                "baseline_reasons": self.reasons, "flops": self.flops,
                "compulsory_bytes": self.bytes, "kernels": self.kernels,
                "rel_err_vs_torch": self.rel_err, "notes": self.notes}


# --------------------------------------------------------------------------- cases


def gemm_case(n: int):
    from hal.bench.cases import make_case

    return make_case("matmul", [f"{n}x{n}", f"{n}x{n}"], "bf16", name=f"gemm {n}^3 bf16")


def fp8_gemm_case(n: int):
    """fp8 e4m3 GEMM with a bf16 result, B as [N, K] (what torch._scaled_mm wants
    column-major): the baseline is torch._scaled_mm with unit scales."""
    from hal.bench.cases import make_case

    case = make_case("matmul", [f"{n}x{n}", f"{n}x{n}"], "f8e4m3fn",
                     attrs={"transpose_b": True, "out_dtype": "bf16"},
                     name=f"gemm {n}^3 fp8 e4m3")
    case.recipe = ScaledMmRecipe()
    return case


class ScaledMmRecipe:
    """a [M, K] @ b[N, K]^T in fp8 with unit scales: torch._scaled_mm (cuBLASLt)."""

    def __call__(self, ops: Any, a: Any, b: Any) -> Any:
        torch = ops.t
        one = torch.ones((), device=a.device, dtype=torch.float32)
        return torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def attention_case(name: str, b: int, s: int, t: int):
    from hal.bench.cases import make_case

    return make_case("attention", [f"{b}x32x{s}x128", f"{b}x8x{t}x128"], "bf16",
                     attrs={"causal": s > 1}, name=name)


def llama_block_case():
    """The .hal block with a torch recipe computing the same function from its constants."""
    from hal.bench.cases import make_case

    case = make_case(str(LLAMA_BLOCK), [], name="llama block s2048 d4096 bf16")
    case.recipe = LlamaBlockRecipe(case.graph)
    return case


class LlamaBlockRecipe:
    """examples/llama_block_d4096_s2048.hal in torch: rms_norm, GQA attention with rotary
    (rotate_half), SwiGLU; weights are the graph's own constants, moved to x's device once."""

    def __init__(self, graph: Any):
        self.consts = graph.materialize_constants()
        self._dev: dict[str, Any] = {}

    def weights(self, torch: Any, device: Any) -> dict[str, Any]:
        key = str(device)
        if key not in self._dev:
            self._dev = {key: {n: to_torch(torch, a, device) for n, a in self.consts.items()}}
        return self._dev[key]

    def __call__(self, ops: Any, x: Any) -> Any:
        torch, F = ops.t, ops.F
        w = self.weights(torch, x.device)
        s, d = x.shape
        hd, hq, hkv = 128, 32, 8

        def rms(v, weight):
            vf = v.float()
            return (vf * torch.rsqrt(vf.pow(2).mean(-1, keepdim=True) + 1e-5)
                    * weight.float()).to(v.dtype)

        def rope(v, cos, sin):  # v [S, H, D], cos/sin [S, D]
            half = v.shape[-1] // 2
            rot = torch.cat((-v[..., half:], v[..., :half]), dim=-1)
            return (v.float() * cos[:, None].float() + rot.float() * sin[:, None].float()
                    ).to(v.dtype)

        pos = torch.arange(s, device=x.device, dtype=torch.float32)[:, None]
        angle = pos * w["rope.inv_freq"].float()[None, :]
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        h = rms(x, w["attn_norm.w"])
        q = rope((h @ w["wq"].T).view(s, hq, hd), cos, sin).transpose(0, 1)[None]
        k = rope((h @ w["wk"].T).view(s, hkv, hd), cos, sin).transpose(0, 1)[None]
        v = (h @ w["wv"].T).view(s, hkv, hd).transpose(0, 1)[None]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        resid = x + a[0].transpose(0, 1).reshape(s, d) @ w["wo"].T
        f = rms(resid, w["ffn_norm.w"])
        return resid + (F.silu(f @ w["w_gate"].T) * (f @ w["w_up"].T)) @ w["w_down"].T


def to_torch(torch: Any, a: Any, device: Any) -> Any:
    """A NumPy array (ml_dtypes bf16 included) as a torch tensor of the same dtype."""
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":  # exact: bf16 -> f32 -> bf16
        return torch.from_numpy(a.astype(np.float32)).to(device=device, dtype=torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


# key, shape, builder, the baselines that mean something for it (torch.compile of a lone
# matmul or SDPA calls the same cuBLAS / flash kernels as eager: only the block gains)
CASES = (
    ("gemm4096", "bf16 [4096x4096] @ [4096x4096]", lambda: gemm_case(4096), ("torch",)),
    ("gemm8192", "bf16 [8192x8192] @ [8192x8192]", lambda: gemm_case(8192), ("torch",)),
    ("gemm_fp8", "f8e4m3 [8192x8192] @ [8192x8192]^T -> bf16", lambda: fp8_gemm_case(8192),
     ("torch",)),
    ("prefill", "q 4x32x2048x128, k/v 4x8x2048x128, causal",
     lambda: attention_case("prefill attention s2048 bf16", 4, 2048, 2048), ("torch",)),
    ("prefill8192", "q 1x32x8192x128, k/v 1x8x8192x128, causal",
     lambda: attention_case("prefill attention s8192 bf16", 1, 8192, 8192), ("torch",)),
    ("decode", "q 8x32x1x128, k/v 8x8x8192x128",
     lambda: attention_case("decode attention T=8192 bf16", 8, 1, 8192), ("torch",)),
    ("llama", "x 2048x4096, d_ff 14336, GQA 32/8", llama_block_case,
     ("torch", "torch-compile")),
)


# --------------------------------------------------------------------------- running


def rel_err_vs_torch(case: Any, backend: Any, spec: Any, seed: int,
                     device: str = "cuda") -> float | None:
    """||hal - torch eager|| / ||torch eager|| on the same inputs (torch on `device`)."""
    import torch

    from hal.bench.baselines import TorchOps

    inputs = case.make_inputs(seed)
    pg = backend.prepare_graph(case.graph, inputs, spec)
    try:
        pg()
        backend.synchronize()
        out = next(iter(pg.read_outputs().values())).astype(np.float32)
    finally:
        pg.free()
    xs = [to_torch(torch, inputs[v.name], device) for v in case.graph.inputs]
    with torch.inference_mode():
        ref = case.recipe(TorchOps(), *xs).float().cpu().numpy().reshape(out.shape)
    denom = float(np.linalg.norm(ref.astype(np.float64)))
    return float(np.linalg.norm((out - ref).astype(np.float64))) / denom if denom else None


def run(args: argparse.Namespace) -> list[Row]:
    from hal.backends_registry import get_backend
    from hal.bench.runner import run_case, summarize_times
    from hal.devices.loader import load_spec

    spec = load_spec(args.device)
    backend = get_backend(args.backend)
    start = time.monotonic()
    rows: list[Row] = []
    for key, shape, build, meaningful in CASES:
        if key not in args.cases:
            continue
        left = args.time_budget - (time.monotonic() - start) if args.time_budget else None
        if left is not None and left < 20:
            rows.append(Row(key, shape, "", notes=[f"skipped: time budget ({left:.0f}s left)"]))
            log(f"[{key}] skipped: time budget")
            continue
        wanted = [b for b in args.baselines if b in meaningful]
        baselines = list(wanted)
        if left is not None and left < 60 and "torch-compile" in baselines:
            baselines.remove("torch-compile")
        log(f"[{key}] building")
        case = build()
        case.cache_inputs = True
        row = Row(key, shape, case.name)
        if "torch-compile" in wanted and "torch-compile" not in baselines:
            row.notes.append("torch.compile skipped: time budget")
        t0 = time.monotonic()
        try:
            r = run_case(case, args.backend, spec, repeat=args.repeat, warmup=args.warmup,
                         flush_l2=args.flush_l2, baselines=baselines)
            row.hal_s, row.flops, row.bytes, row.kernels = (r.median_s, r.flops,
                                                            r.compulsory_bytes, r.kernels)
            row.notes += [n for n in r.notes if "L2" in n or "timed" in n]
            for b in r.baselines:
                row.baselines[b.name] = summarize_times(b.times_s)["median_s"]
                if not b.available:
                    row.reasons[b.name] = b.reason
            if case.recipe is not None and "torch" in args.baselines:
                row.rel_err = rel_err_vs_torch(case, backend, spec, 0, args.torch_device)
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
            row.notes.append(f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        case.release_inputs()
        log(f"[{key}] {time.monotonic() - t0:.1f}s: hal {fmt_ms(row.hal_s)}, "
            + ", ".join(f"{k} {fmt_ms(v)}" for k, v in row.baselines.items()))
        rows.append(row)
        write(args, rows, spec.name)
    return rows


def fmt_ms(s: float | None) -> str:
    return f"{s * 1e3:.3f} ms" if s else "-"


def _rate(row: Row, s: float | None) -> str:
    if not s:
        return "-"
    if row.name == "decode":  # memory-bound: the K/V cache read
        return f"{row.bytes / s / 1e9:.0f} GB/s"
    return f"{row.flops / s / 1e12:.0f} TFLOP/s"


def write(args: argparse.Namespace, rows: list[Row], device: str) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ("case", "shape", "hal", "hal rate", "torch", "torch rate", "torch.compile",
            "hal / torch", "hal / compile", "rel err vs torch", "kernels", "notes")
    lines = [f"# hal kernels vs torch on {device} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "", f"command: `{shlex.join(sys.argv)}`", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        t, c = r.baselines.get("torch"), r.baselines.get("torch-compile")
        notes = r.notes + [f"{k}: {v}" for k, v in r.reasons.items()]
        lines.append("| " + " | ".join([
            r.what or r.name, r.shape, fmt_ms(r.hal_s), _rate(r, r.hal_s), fmt_ms(t),
            _rate(r, t), fmt_ms(c),
            f"{r.hal_s / t:.2f}x" if r.hal_s and t else "-",
            f"{r.hal_s / c:.2f}x" if r.hal_s and c else "-",
            f"{r.rel_err:.2e}" if r.rel_err is not None else "-",
            str(r.kernels or "-"), "; ".join(notes) or ""]) + " |")
    lines += ["", "hal / torch < 1: hal faster. Rates: TFLOP/s from the plan's flops (decode: "
              "GB/s of compulsory bytes)."]
    (out / "gpu_kernels.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_kernels.json").write_text(json.dumps(
        {"device": device, "command": sys.argv, "rows": [r.to_dict() for r in rows]},
        indent=1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--device", default="h200")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default=",".join(c[0] for c in CASES),
                    help="comma-separated, from " + ", ".join(c[0] for c in CASES))
    ap.add_argument("--baselines", default="torch,torch-compile",
                    help="torch (eager) for every case, torch-compile for the Llama block")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-flush-l2", dest="flush_l2", action="store_false")
    ap.add_argument("--torch-device", default="cuda",
                    help="where torch computes the reference for the error column")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds for the whole run (0: no limit)")
    args = ap.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = set(args.cases) - {c[0] for c in CASES}
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hal.backends_registry import get_backend

    why = get_backend(args.backend).probe()
    if not why:
        msg = f"SKIP: no GPU for backend {args.backend}: {why.reason}"
        print(msg)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_kernels.md").write_text(f"# hal kernels vs torch\n\n{msg}\n")
        return 0
    rows = run(args)
    print((Path(args.out) / "gpu_kernels.md").read_text())
    return 0 if all(r.hal_s for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

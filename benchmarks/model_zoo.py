"""Bring up the transformers model zoo (examples/models/hf_zoo.py) and tabulate it (issue 17).

    python benchmarks/model_zoo.py [--models llama,bert] [--attn sdpa,eager] \
        [--device h100-sxm,mi300x] [--backend cpu_sim] [--json out.json]

Per model, attention implementation and device: whether it imports, the kernel count
of hal's fusion plan, how many of the model's attentions became one fused attention
kernel (attention sites = the exported program's scaled_dot_product_attention and
softmax calls), and parity against eager torch on the backend (max abs error beside
the bound). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_zoo():
    spec = importlib.util.spec_from_file_location("hal_hf_zoo",
                                                  ROOT / "examples" / "models" / "hf_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def attention_sites(framework_ops: dict[str, int]) -> int:
    return sum(c for op, c in framework_ops.items()
               if "scaled_dot_product_attention" in op or op.startswith("aten._softmax"))


def measure(zoo, name: str, attn: str, device: str, backend: str) -> dict:
    from hal.devices.loader import load_spec
    from hal.frontends.bringup import bringup, torch_subject

    row = {"model": name, "attn": attn, "device": device, "backend": backend}
    t0 = time.time()
    module, inputs = zoo.ZOO[name](attn)
    subject = torch_subject(name, module, inputs)
    row["loads"] = subject.model is not None
    if subject.model is None:
        row["error"] = subject.error
        return row
    rep = bringup(subject, backend, load_spec(device))
    kinds = rep["fusion"]["kinds"]
    row.update(kernels=rep["fusion"]["totals"]["kernels"],
               attention_fused=int(kinds.get("attention", 0)),
               attention_sites=attention_sites(subject.framework_ops),
               kinds={str(getattr(k, "value", k)): v for k, v in kinds.items()},
               ok=rep["ok"],
               max_abs=max((p["max_abs"] for p in rep["parity"]), default=None),
               atol=min((p["atol"] for p in rep["parity"]), default=None),
               seconds=round(time.time() - t0, 1))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated (default: all)")
    ap.add_argument("--attn", default="sdpa", help="sdpa,eager")
    ap.add_argument("--device", default="h100-sxm", help="comma-separated spec names")
    ap.add_argument("--backend", default="cpu_sim")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    os.environ.setdefault("HAL_MEASURE", "off")
    warnings.filterwarnings("ignore")
    zoo = load_zoo()
    names = a.models.split(",") if a.models else list(zoo.ZOO)
    rows = []
    print("| model | attn | device | kernels | attention fused | parity (max abs / atol) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for attn in a.attn.split(","):
            for device in a.device.split(","):
                r = measure(zoo, name, attn, device, a.backend)
                rows.append(r)
                if not r["loads"]:
                    print(f"| {name} | {attn} | {device} | import failed: {r['error']} | | |")
                    continue
                print(f"| {name} | {attn} | {device} | {r['kernels']} | "
                      f"{r['attention_fused']}/{r['attention_sites']} | "
                      f"{'OK' if r['ok'] else 'FAIL'} ({r['max_abs']:.1e} / {r['atol']:.1e}) |",
                      flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str))
    bad = [r for r in rows if not r.get("ok")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

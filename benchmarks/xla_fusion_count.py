"""XLA's fusion of the Llama-style block, for comparison with hal's plan.

    python benchmarks/xla_fusion_count.py [--seq 2048] [--dim 4096]

Writes the block of hal.examples.build.llama_block (RMSNorm, q/k/v projections, rotary
embedding with rotate_half, grouped-query causal attention, output projection, residual,
RMSNorm, SwiGLU MLP) in jax.numpy, compiles it with `jax.jit(f).lower(...).compile()` and
counts in the optimised HLO text the fusion computations (`fusion` instructions of the
entry computation) and the other kernels the entry launches (custom calls such as GEMMs,
copies). Caveat: this runs XLA's CPU backend, whose fusion rules differ from GPU XLA
(no cuBLAS/Triton GEMM fusions, dots often stay unfused, different priority fusion
heuristics), so the counts are indicative only.
"""

from __future__ import annotations

import argparse
import re


def llama_block(x, w, *, heads=32, kv_heads=8, eps=1e-5):
    import jax
    import jax.numpy as jnp

    s, d = x.shape
    dh = d // heads

    def rms(t, g):
        t32 = t.astype(jnp.float32)
        r = jax.lax.rsqrt(jnp.mean(t32 * t32, axis=-1, keepdims=True) + eps)
        return (t32 * r * g.astype(jnp.float32)).astype(t.dtype)

    inv = 10000.0 ** (-jnp.arange(0, dh, 2) / dh)
    ang = jnp.arange(s, dtype=jnp.float32)[:, None] * jnp.concatenate([inv, inv])[None, :]
    cos, sin = jnp.cos(ang).astype(x.dtype), jnp.sin(ang).astype(x.dtype)

    def rope(t):  # [S, H, Dh]
        t32 = t.astype(jnp.float32)
        half = dh // 2
        rot = jnp.concatenate([-t32[..., half:], t32[..., :half]], axis=-1)
        c, sn = cos.astype(jnp.float32)[:, None, :], sin.astype(jnp.float32)[:, None, :]
        return (t32 * c + rot * sn).astype(t.dtype)

    h = rms(x, w["attn_norm"])
    q = rope((h @ w["wq"].T).reshape(s, heads, dh)).transpose(1, 0, 2)
    k = rope((h @ w["wk"].T).reshape(s, kv_heads, dh)).transpose(1, 0, 2)
    v = (h @ w["wv"].T).reshape(s, kv_heads, dh).transpose(1, 0, 2)
    g = heads // kv_heads
    qg = q.reshape(kv_heads, g * s, dh)
    sc = jnp.einsum("hmd,htd->hmt", qg, k, preferred_element_type=jnp.float32)
    sc = sc.reshape(heads, s, s) / jnp.sqrt(jnp.float32(dh))
    mask = jnp.arange(s)[:, None] >= jnp.arange(s)[None, :]
    sc = jnp.where(mask[None], sc, -jnp.inf)
    p = jax.nn.softmax(sc, axis=-1).astype(x.dtype).reshape(kv_heads, g * s, s)
    a = jnp.einsum("hmt,htd->hmd", p, v).reshape(heads, s, dh).transpose(1, 0, 2)
    x = x + a.reshape(s, d) @ w["wo"].T
    h = rms(x, w["ffn_norm"])
    f = jax.nn.silu(h @ w["w_gate"].T) * (h @ w["w_up"].T)
    return x + f @ w["w_down"].T


def count(hlo: str) -> dict[str, int]:
    entry = hlo[hlo.index("ENTRY"):]
    entry = entry[:entry.index("\n}") if "\n}" in entry else len(entry)]
    return {
        "fusion computations (whole module)": len(re.findall(r"^\s*%?fused_computation|"
                                                            r"^\s*%?[\w.]*fused[\w.]* ", hlo,
                                                            re.M)),
        "fusion instructions in ENTRY": len(re.findall(r"= [^=]*\bfusion\(", entry)),
        "custom calls in ENTRY": len(re.findall(r"custom-call\(", entry)),
        "dots in ENTRY (unfused)": len(re.findall(r"= [^=]* dot\(", entry)),
        "copies/transposes in ENTRY": len(re.findall(r"= [^=]* (?:copy|transpose)\(", entry)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--dump", help="write the optimised HLO here")
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp

    s, d, ffn, bf = a.seq, a.dim, a.ffn, jnp.bfloat16
    kvd = d // 4
    spec = jax.ShapeDtypeStruct
    w = {"attn_norm": spec((d,), bf), "ffn_norm": spec((d,), bf), "wq": spec((d, d), bf),
         "wk": spec((kvd, d), bf), "wv": spec((kvd, d), bf), "wo": spec((d, d), bf),
         "w_gate": spec((ffn, d), bf), "w_up": spec((ffn, d), bf), "w_down": spec((d, ffn), bf)}
    hlo = jax.jit(llama_block).lower(spec((s, d), bf), w).compile().as_text()
    if a.dump:
        with open(a.dump, "w") as f:
            f.write(hlo)
    print(f"XLA ({jax.default_backend()} backend, jax {jax.__version__}), llama block "
          f"d{d} s{s}:")
    for k, v in count(hlo).items():
        print(f"  {k}: {v}")
    print("  note: the CPU backend's fusion differs from GPU XLA (see the module docstring)")


if __name__ == "__main__":
    main()

"""Builders of the shipped example graphs (written to hal/examples/*.hal by `main`).

Every example is built from hal's composite ops (layer_norm, rms_norm,
rotary_embedding, scaled_dot_product_attention, gelu, silu, linear), so the
fusion pass has to rediscover the efficient kernels from primitives:

* gpt_block: LayerNorm, multi-head attention with a causal mask, GELU MLP
  (GPT-2 layout, fused QKV projection with bias);
* llama_block: RMSNorm, rotary embedding, grouped-query attention with a
  causal mask, SwiGLU MLP (Llama layout, no biases);
* tiny_gpt: a whole small model: token embedding + positions, two GPT blocks,
  final LayerNorm and the LM head;
* mlp: the small graph of the Quickstart.

Weights are `random` initializers (seeded normals, std 0.02), so a 4096-wide
block costs nothing on disk and is materialised only when a graph runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hal.dtypes import DType, dtype
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Graph, Initializer, Value

_seed = [0]


def _weight(b: GraphBuilder, name: str, dt: DType, shape, scale: float = 0.02,
            fill: float | None = None) -> Value:
    _seed[0] += 1
    init = (Initializer.make("fill", value=fill) if fill is not None else
            Initializer.make("random", dist="normal", scale=scale, seed=_seed[0]))
    return b.constant(name, dt, shape, init)


def _heads(b, x, s, h, dh, name):
    """[S, H*Dh] -> [1, H, S, Dh]."""
    x = b.op("reshape", x, shape=(s, h, dh), name=f"{name}.split")
    x = b.op("transpose", x, perm=(1, 0, 2), name=f"{name}.t")
    return b.op("reshape", x, shape=(1, h, s, dh), name=f"{name}.heads")


def _merge_heads(b, x, s, h, dh, name):
    x = b.op("reshape", x, shape=(h, s, dh), name=f"{name}.flat")
    x = b.op("transpose", x, perm=(1, 0, 2), name=f"{name}.t")
    return b.op("reshape", x, shape=(s, h * dh), name=f"{name}.merged")


def gpt_block(b: GraphBuilder, x: Value, p: str, d: int, s: int, heads: int, dt: DType) -> Value:
    dh = d // heads
    h = b.op("layer_norm", x, _weight(b, f"{p}ln1.w", dt, (d,), fill=1.0),
             _weight(b, f"{p}ln1.b", dt, (d,), fill=0.0), name=f"{p}ln1")
    qkv = b.op("linear_bias", h, _weight(b, f"{p}attn.wqkv", dt, (3 * d, d)),
               _weight(b, f"{p}attn.bqkv", dt, (3 * d,)), name=f"{p}qkv")
    q, k, v = (b.op("slice", qkv, starts=(0, i * d), stops=(s, (i + 1) * d), steps=(1, 1),
                    name=f"{p}{n}") for i, n in enumerate("qkv"))
    q, k, v = (_heads(b, t, s, heads, dh, f"{p}{n}") for t, n in zip((q, k, v), "qkv", strict=True))
    a = b.op("scaled_dot_product_attention", q, k, v, causal=True, name=f"{p}attn")
    a = _merge_heads(b, a, s, heads, dh, f"{p}attn")
    o = b.op("linear_bias", a, _weight(b, f"{p}attn.wo", dt, (d, d)),
             _weight(b, f"{p}attn.bo", dt, (d,)), name=f"{p}attn.out")
    x = b.op("add", x, o, name=f"{p}resid1")
    h = b.op("layer_norm", x, _weight(b, f"{p}ln2.w", dt, (d,), fill=1.0),
             _weight(b, f"{p}ln2.b", dt, (d,), fill=0.0), name=f"{p}ln2")
    f = b.op("linear_bias", h, _weight(b, f"{p}mlp.w1", dt, (4 * d, d)),
             _weight(b, f"{p}mlp.b1", dt, (4 * d,)), name=f"{p}mlp.up")
    f = b.op("gelu", f, approximate="tanh", name=f"{p}mlp.act")
    f = b.op("linear_bias", f, _weight(b, f"{p}mlp.w2", dt, (d, 4 * d)),
             _weight(b, f"{p}mlp.b2", dt, (d,)), name=f"{p}mlp.down")
    return b.op("add", x, f, name=f"{p}out")


def _rope_tables(b: GraphBuilder, s: int, dh: int, dt: DType, p: str) -> tuple[Value, Value]:
    """cos/sin [S, Dh] computed in the graph, as models do: positions x inverse frequencies."""
    inv = 10000.0 ** (-np.arange(0, dh, 2) / dh)
    inv_freq = b.constant(f"{p}rope.inv_freq", dtype("f32"), (dh,), Initializer.make(
        "inline", values=tuple(float(v) for v in np.concatenate([inv, inv]))))
    pos = b.op("iota", shape=(s, dh), dimension=0, dtype=dtype("f32"), name=f"{p}rope.pos")
    ang = b.op("mul", pos, b.op("broadcast_to", inv_freq, shape=(s, dh)), name=f"{p}rope.angle")
    cos = b.op("cast", b.op("cos", ang, name=f"{p}rope.cos32"), dtype=dt, name=f"{p}rope.cos")
    sin = b.op("cast", b.op("sin", ang, name=f"{p}rope.sin32"), dtype=dt, name=f"{p}rope.sin")
    return cos, sin


def llama_block(b: GraphBuilder, x: Value, p: str, d: int, s: int, heads: int, kv_heads: int,
                ffn: int, dt: DType, rope: tuple[Value, Value]) -> Value:
    dh = d // heads
    h = b.op("rms_norm", x, _weight(b, f"{p}attn_norm.w", dt, (d,), fill=1.0), eps=1e-5,
             name=f"{p}attn_norm")
    q = b.op("linear", h, _weight(b, f"{p}wq", dt, (heads * dh, d)), name=f"{p}q")
    k = b.op("linear", h, _weight(b, f"{p}wk", dt, (kv_heads * dh, d)), name=f"{p}k")
    v = b.op("linear", h, _weight(b, f"{p}wv", dt, (kv_heads * dh, d)), name=f"{p}v")
    cos, sin = rope
    q = b.op("reshape", q, shape=(s, heads, dh), name=f"{p}q.split")
    k = b.op("reshape", k, shape=(s, kv_heads, dh), name=f"{p}k.split")
    q = b.op("rotary_embedding", q, cos, sin, name=f"{p}q.rope")
    k = b.op("rotary_embedding", k, cos, sin, name=f"{p}k.rope")
    q = b.op("reshape", b.op("transpose", q, perm=(1, 0, 2), name=f"{p}q.t"),
             shape=(1, heads, s, dh), name=f"{p}q.heads")
    k = b.op("reshape", b.op("transpose", k, perm=(1, 0, 2), name=f"{p}k.t"),
             shape=(1, kv_heads, s, dh), name=f"{p}k.heads")
    v = _heads(b, v, s, kv_heads, dh, f"{p}v")
    a = b.op("scaled_dot_product_attention", q, k, v, causal=True, name=f"{p}attn")
    a = _merge_heads(b, a, s, heads, dh, f"{p}attn")
    o = b.op("linear", a, _weight(b, f"{p}wo", dt, (d, heads * dh)), name=f"{p}attn.out")
    x = b.op("add", x, o, name=f"{p}resid1")
    h = b.op("rms_norm", x, _weight(b, f"{p}ffn_norm.w", dt, (d,), fill=1.0), eps=1e-5,
             name=f"{p}ffn_norm")
    g = b.op("linear", h, _weight(b, f"{p}w_gate", dt, (ffn, d)), name=f"{p}gate")
    u = b.op("linear", h, _weight(b, f"{p}w_up", dt, (ffn, d)), name=f"{p}up")
    f = b.op("mul", b.op("silu", g, name=f"{p}gate.act"), u, name=f"{p}swiglu")
    f = b.op("linear", f, _weight(b, f"{p}w_down", dt, (d, ffn)), name=f"{p}down")
    return b.op("add", x, f, name=f"{p}out")


def make_gpt_block(d: int, s: int, dt: str = "f32") -> Graph:
    _seed[0] = 0
    b = GraphBuilder(f"gpt_block_d{d}_s{s}")
    x = b.input("x", dtype(dt), (s, d))
    b.output(gpt_block(b, x, "", d, s, d // 64, dtype(dt)))
    return b.build()


def make_llama_block(d: int, s: int, dt: str = "bf16", heads: int = 32, kv_heads: int = 8,
                     ffn: int | None = None) -> Graph:
    _seed[0] = 0
    ffn = ffn or int(math.ceil(8 * d / 3 / 256) * 256) if ffn is None else ffn
    b = GraphBuilder(f"llama_block_d{d}_s{s}")
    x = b.input("x", dtype(dt), (s, d))
    rope = _rope_tables(b, s, d // heads, dtype(dt), "")
    b.output(llama_block(b, x, "", d, s, heads, kv_heads, ffn, dtype(dt), rope))
    return b.build()


def make_llama_model(layers: int, d: int, s: int, dt: str = "bf16", heads: int = 32,
                     kv_heads: int = 8, ffn: int = 14336) -> Graph:
    _seed[0] = 0
    b = GraphBuilder(f"llama_{layers}l_d{d}_s{s}")
    x = b.input("x", dtype(dt), (s, d))
    rope = _rope_tables(b, s, d // heads, dtype(dt), "")
    for i in range(layers):
        x = llama_block(b, x, f"l{i}.", d, s, heads, kv_heads, ffn, dtype(dt), rope)
    b.output(x)
    return b.build()


def make_tiny_gpt(vocab: int = 512, d: int = 128, s: int = 32, layers: int = 2) -> Graph:
    _seed[0] = 0
    dt = dtype("f32")
    b = GraphBuilder("tiny_gpt")
    tokens = b.input("tokens", "i32", (s,))
    emb = _weight(b, "wte", dt, (vocab, d))
    pos = _weight(b, "wpe", dt, (s, d), scale=0.01)
    x = b.op("add", b.op("gather", emb, tokens, axis=0, name="tok_emb"), pos, name="emb")
    for i in range(layers):
        x = gpt_block(b, x, f"h{i}.", d, s, d // 32, dt)
    x = b.op("layer_norm", x, _weight(b, "ln_f.w", dt, (d,), fill=1.0),
             _weight(b, "ln_f.b", dt, (d,), fill=0.0), name="ln_f")
    logits = b.op("linear", x, emb, name="logits")  # tied embeddings
    b.output(logits)
    return b.build()


def make_mlp() -> Graph:
    _seed[0] = 0
    dt = dtype("f32")
    b = GraphBuilder("mlp")
    x = b.input("x", dt, (8, 64))
    h = b.op("linear_bias", x, _weight(b, "w1", dt, (256, 64), scale=0.1),
             _weight(b, "b1", dt, (256,), scale=0.1), name="up")
    h = b.op("gelu", h, name="act")
    y = b.op("linear_bias", h, _weight(b, "w2", dt, (64, 256), scale=0.1),
             _weight(b, "b2", dt, (64,), scale=0.1), name="down")
    y = b.op("softmax", y, axis=-1, name="probs")
    b.output(y)
    return b.build()


EXAMPLES = {
    "mlp": make_mlp,
    "tiny_gpt": make_tiny_gpt,
    "gpt_block_d768_s128": lambda: make_gpt_block(768, 128),
    "gpt_block_d768_s2048": lambda: make_gpt_block(768, 2048),
    "llama_block_d4096_s128": lambda: make_llama_block(4096, 128, ffn=14336),
    "llama_block_d4096_s2048": lambda: make_llama_block(4096, 2048, ffn=14336),
}


def main(out_dir: str | None = None) -> None:
    from hal.ir.text import save_graph

    out = Path(out_dir or "examples")
    for name, make in EXAMPLES.items():
        save_graph(make(), out / f"{name}.hal")
        print("wrote", out / f"{name}.hal")


if __name__ == "__main__":
    main()

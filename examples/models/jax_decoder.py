"""A small decoder-only transformer in JAX: embeddings, RMSNorm, causal attention, GELU MLP.

`make()` returns (fn, example_args): `fn(tokens) -> logits` closes over seeded
random weights (so they trace as constants), and example_args holds one batch
of int32 token ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class DecoderConfig:
    vocab: int = 256
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    seq: int = 16
    batch: int = 2
    eps: float = 1e-5


def init_params(cfg: DecoderConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> jnp.ndarray:
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32) / math.sqrt(shape[0]))

    layers = [{"norm1": jnp.asarray(1 + 0.1 * rng.standard_normal(cfg.d_model), jnp.float32),
               "wqkv": w(cfg.d_model, 3 * cfg.d_model), "wo": w(cfg.d_model, cfg.d_model),
               "norm2": jnp.ones(cfg.d_model, jnp.float32),
               "w1": w(cfg.d_model, cfg.d_ff), "b1": jnp.zeros(cfg.d_ff, jnp.float32),
               "w2": w(cfg.d_ff, cfg.d_model)} for _ in range(cfg.n_layers)]
    return {"embed": w(cfg.vocab, cfg.d_model) * math.sqrt(cfg.vocab), "layers": layers,
            "norm": jnp.ones(cfg.d_model, jnp.float32), "head": w(cfg.d_model, cfg.vocab)}


def rms_norm(x: jnp.ndarray, weight: jnp.ndarray, eps: float) -> jnp.ndarray:
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def forward(params: dict, tokens: jnp.ndarray, cfg: DecoderConfig) -> jnp.ndarray:
    b, s = tokens.shape
    h, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
    x = jnp.take(params["embed"], tokens, axis=0)
    mask = jnp.tril(jnp.ones((s, s), dtype=bool))
    for layer in params["layers"]:
        qkv = rms_norm(x, layer["norm1"], cfg.eps) @ layer["wqkv"]
        q, k, v = jnp.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(b, s, h, hd).transpose(0, 2, 1, 3) for t in (q, k, v))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(hd)
        scores = jnp.where(mask, scores, -1e9)
        att = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)
        x = x + att.transpose(0, 2, 1, 3).reshape(b, s, cfg.d_model) @ layer["wo"]
        y = rms_norm(x, layer["norm2"], cfg.eps)
        x = x + jax.nn.gelu(y @ layer["w1"] + layer["b1"]) @ layer["w2"]
    return rms_norm(x, params["norm"], cfg.eps) @ params["head"]


def make(cfg: DecoderConfig | None = None, seed: int = 0):
    cfg = cfg or DecoderConfig()
    params = init_params(cfg, seed)

    def decoder(tokens: jnp.ndarray) -> jnp.ndarray:
        return forward(params, tokens, cfg)

    tokens = jnp.asarray(np.random.default_rng(seed + 1).integers(0, cfg.vocab,
                                                                  (cfg.batch, cfg.seq)),
                         dtype=jnp.int32)
    return decoder, (tokens,)

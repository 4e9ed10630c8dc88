"""KV-cache decode steps (hal.frontends.decode, `hal bringup --decode`): the step is
exported once, the cache update (index_put) and decode attention run on hal, every
step's logits and cache are compared with eager torch, and hal's greedy tokens equal
torch's. A hand-written static-cache step (plain torch) and the transformers
StaticCache step of examples/models/hf_zoo.py (skipped without transformers)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hal.devices.loader import load_spec  # noqa: E402
from hal.frontends.bringup import ModelError  # noqa: E402
from hal.frontends.decode import decode, decode_subject  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

STEP_SOURCE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F


    class TinyStep(torch.nn.Module):
        """Embedding, one attention layer over a static cache [1, 2, T, 8], LM head."""

        def __init__(self, vocab=32, t=16, bad_cache=False):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.emb = torch.nn.Parameter(torch.randn(vocab, 16, generator=g))
            self.wq, self.wk, self.wv = (torch.nn.Parameter(torch.randn(16, 16, generator=g)
                                                           * 0.5) for _ in range(3))
            self.head = torch.nn.Parameter(torch.randn(16, vocab, generator=g))
            self.t, self.bad_cache = t, bad_cache

        def forward(self, ids, pos, k_cache, v_cache):
            x = self.emb[ids]                                    # [1, 1, 16]
            q = (x @ self.wq).view(1, 1, 2, 8).transpose(1, 2)   # [1, 2, 1, 8]
            k = (x @ self.wk).view(1, 1, 2, 8).transpose(1, 2)
            v = (x @ self.wv).view(1, 1, 2, 8).transpose(1, 2)
            k_cache = k_cache.index_copy(2, pos, k)
            v_cache = v_cache.index_copy(2, pos, v)
            visible = torch.arange(self.t)[None, None, None, :] <= pos
            o = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=visible)
            logits = (o.transpose(1, 2).reshape(1, 1, 16) + x) @ self.head
            if self.bad_cache:
                return logits, k_cache[:, :, :4]
            return logits, k_cache, v_cache


    def make(bad_cache=False):
        step = TinyStep(bad_cache=bad_cache)
        return step, (torch.tensor([[3, 7, 1]]), torch.zeros(1, 2, 16, 8),
                      torch.zeros(1, 2, 16, 8))


    def make_bad():
        return make(bad_cache=True)
''')


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("decode") / "tiny_step.py"
    path.write_text(STEP_SOURCE)
    spec = importlib.util.spec_from_file_location("hal_test_tiny_step", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return path, mod


def test_tiny_decode_matches_torch_greedy(tiny):
    _, mod = tiny
    step, (prompt, *cache) = mod.make()
    sub = decode_subject("tiny", step, prompt, tuple(cache))
    ops = {n.op for n in sub.model.graph.nodes}
    assert "sdpa_masked" in ops
    rep = decode(sub, 4, "reference", load_spec("h100-sxm"))
    assert rep["ok"], rep["steps"]
    assert len(rep["torch_tokens"]) == 4 and rep["hal_tokens"] == rep["torch_tokens"]
    assert len(rep["steps"]) == 3 + 4 - 1
    assert rep["fusion"]["kinds"].get("attention") == 1


def test_decode_rejects_a_cache_that_changes_shape(tiny):
    _, mod = tiny
    step, (prompt, *cache) = mod.make_bad()
    with pytest.raises(ModelError, match="cache"):
        decode_subject("tiny_bad", step, prompt, tuple(cache))


def test_decode_cli(tiny):
    from click.testing import CliRunner

    from hal.cli.main import main

    path, _ = tiny
    res = CliRunner().invoke(main, ["bringup", "--decode", "2", f"{path}:make",
                                   "--backend", "reference"])
    assert res.exit_code == 0, res.output
    assert "generated (hal)" in res.output and "decode: OK" in res.output


def test_transformers_static_cache_decode_on_cpu_sim():
    """transformers' Llama with its StaticCache: three greedy tokens equal eager torch's on
    cpu_sim; the cache update is an index_put and decode attention splits its keys."""
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("hal_hf_zoo_decode",
                                                  ROOT / "examples" / "models" / "hf_zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = zoo
    spec.loader.exec_module(zoo)
    step, (prompt, *cache) = zoo.llama_decode()
    sub = decode_subject("llama_decode", step, prompt, tuple(cache))
    rep = decode(sub, 3, "cpu_sim", load_spec("h100-sxm"))
    assert rep["ok"], rep["steps"]
    assert rep["hal_tokens"] == rep["torch_tokens"] and len(rep["hal_tokens"]) == 3
    assert len(rep["attention"]) == 2 and all(a["split_k"] > 1 for a in rep["attention"])

"""Models from the transformers library, built from small configs with random weights.

Nothing is downloaded: each function builds the library's own model class from a
small config (2 layers, hidden 64, 4 heads, vocabulary 128), seeds it, and returns
`(model, example_inputs)` for `hal bringup`:

    hal bringup examples/models/hf_zoo.py:llama --backend cpu_sim --device h100-sxm

The model is the library's code path as a user runs it: its attention implementation
(`sdpa` by default, `eager` with `attn="eager"`), its causal-mask builders, its rotary
embeddings, grouped-query attention (Mistral, Qwen2, Phi-3, Gemma) and Mistral's
sliding window. `Logits` wraps a model so that it returns one tensor (the logits or the
last hidden state) with the KV cache off. The decoders take token ids [1, 8]; BERT also
comes with a padding mask input (`bert_padded`); ViT takes 16x16 images.

Needs `pip install transformers` (the `zoo` extra); `ZOO` lists the models by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SEQ = 8
VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=128, max_position_embeddings=64)


class Logits(torch.nn.Module):
    """model(*inputs, **kwargs)[0]: the logits or last hidden state only."""

    def __init__(self, model: torch.nn.Module, **kwargs):
        super().__init__()
        self.model = model
        self.kwargs = kwargs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) == 2:   # ids and a padding mask
            return self.model(inputs[0], attention_mask=inputs[1], **self.kwargs)[0]
        return self.model(*inputs, **self.kwargs)[0]


def _make(model: torch.nn.Module, attn: str, inputs: tuple, **kwargs) -> tuple:
    model.config._attn_implementation = attn
    return Logits(model.eval(), **kwargs).eval(), inputs


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))


def _decoder(build: Callable[[], torch.nn.Module], attn: str) -> tuple:
    torch.manual_seed(0)
    return _make(build(), attn, (_ids(),), use_cache=False)


def gpt2(attn: str = "sdpa") -> tuple:
    import transformers as tf

    return _decoder(lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=0, eos_token_id=0)), attn)


def llama(attn: str = "sdpa") -> tuple:
    import transformers as tf

    return _decoder(lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**COMMON)), attn)


def mistral(attn: str = "sdpa") -> tuple:
    """Grouped-query attention (2 kv heads) and a sliding window of 4 keys."""
    import transformers as tf

    return _decoder(lambda: tf.MistralForCausalLM(tf.MistralConfig(
        **COMMON, num_key_value_heads=2, sliding_window=4)), attn)


def qwen2(attn: str = "sdpa") -> tuple:
    import transformers as tf

    return _decoder(lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(
        **COMMON, num_key_value_heads=2)), attn)


def phi3(attn: str = "sdpa") -> tuple:
    import transformers as tf

    return _decoder(lambda: tf.Phi3ForCausalLM(tf.Phi3Config(
        **COMMON, num_key_value_heads=2, pad_token_id=0)), attn)


def gemma(attn: str = "sdpa") -> tuple:
    """Multi-query attention (1 kv head)."""
    import transformers as tf

    return _decoder(lambda: tf.GemmaForCausalLM(tf.GemmaConfig(
        **COMMON, num_key_value_heads=1, head_dim=16)), attn)


def gpt_neox(attn: str = "sdpa") -> tuple:
    import transformers as tf

    return _decoder(lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**COMMON)), attn)


def bert(attn: str = "sdpa") -> tuple:
    import transformers as tf

    torch.manual_seed(0)
    return _make(tf.BertModel(tf.BertConfig(**COMMON), add_pooling_layer=False), attn,
                 (_ids(),))


def bert_padded(attn: str = "sdpa") -> tuple:
    """BERT with a padding mask input: the last 3 tokens of the second sequence are
    padding (the mask is computed from a model input, so it stays a graph value)."""
    import transformers as tf

    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, SEQ, dtype=torch.int64)
    mask[1, SEQ - 3:] = 0
    return _make(tf.BertModel(tf.BertConfig(**COMMON), add_pooling_layer=False), attn,
                 (ids, mask))


def vit(attn: str = "sdpa") -> tuple:
    """ViT: a 4x4 patch embedding (a strided convolution) of 16x16 images."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, image_size=16, patch_size=4, num_channels=3)
    images = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return _make(tf.ViTModel(cfg, add_pooling_layer=False), attn, (images,))


class StaticCacheStep(torch.nn.Module):
    """One decode step of a transformers decoder with its StaticCache, made functional:
    step(ids [1, 1], pos [1], k0, v0, k1, v1, ...) -> (logits, new k0, new v0, ...).
    The cache layers get the input tensors (copies), the library's own StaticLayer.update
    writes position `pos` (index_copy_, an index_put once exported) and its mask
    builder hides the slots not written yet; the updated layers are returned."""

    def __init__(self, model: torch.nn.Module, max_cache_len: int):
        from transformers.cache_utils import StaticCache

        super().__init__()
        cfg = model.config
        self.model = model.eval()
        self.cache = StaticCache(max_cache_len=max_cache_len, config=cfg)
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or \
            cfg.hidden_size // cfg.num_attention_heads
        self.cache.early_initialization(1, self.kv_heads, self.head_dim, torch.float32,
                                        torch.device("cpu"))

    def empty_cache(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros_like(t) for layer in self.cache.layers
                     for t in (layer.keys, layer.values))

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, *kv: torch.Tensor):
        for i, layer in enumerate(self.cache.layers):
            layer.keys, layer.values = kv[2 * i].clone(), kv[2 * i + 1].clone()
            layer.cumulative_length = pos[0].clone()
        out = self.model(input_ids=ids, cache=self.cache, use_cache=True)
        return (out.logits, *[t for layer in self.cache.layers
                              for t in (layer.keys, layer.values)])


def llama_decode(max_cache_len: int = 512) -> tuple:
    """The Llama model (grouped-query: 2 kv heads) as a decode step over a static cache of
    `max_cache_len` slots (512: enough keys that decode attention splits them, split-K),
    with a 4-token prompt: for `hal bringup --decode N`."""
    import transformers as tf

    torch.manual_seed(0)
    # a wider weight init than the library's 0.02 gives logits far enough apart that the
    # greedy tokens vary from step to step
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**COMMON, num_key_value_heads=2,
                                               initializer_range=0.3))
    step = StaticCacheStep(model, max_cache_len)
    prompt = torch.randint(0, VOCAB, (1, 4), generator=torch.Generator().manual_seed(2))
    return step, (prompt, *step.empty_cache())


# name -> builder; decoders first. Each LLM here has its attention fused (benchmarks/
# model_zoo.py measures it, tests/test_model_zoo.py holds it).
ZOO: dict[str, Callable[..., tuple]] = {
    "gpt2": gpt2, "llama": llama, "mistral": mistral, "qwen2": qwen2, "phi3": phi3,
    "gemma": gemma, "gpt_neox": gpt_neox, "bert": bert, "bert_padded": bert_padded,
    "vit": vit,
}
DECODERS = ("gpt2", "llama", "mistral", "qwen2", "phi3", "gemma", "gpt_neox")

"""Tiny transformers causal LMs built locally, for the tests that run the measurement kernels on
several architectures (test_architectures, test_window_eval)."""

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)


def tiny_causal_lm(arch: str, vocab: int = 96, hidden: int = 64, layers: int = 2, ctx: int = 64,
                   seed: int = 0):
    """``arch`` "llama" (RMSNorm, gated MLP, grouped-query attention, untied head), "gpt2"
    (Conv1D layers, learned positions, tied embeddings) or "gpt_neox" (rotary on a quarter of
    each head, untied head), in eval mode, weights from ``seed``."""
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                          max_position_embeddings=ctx, tie_word_embeddings=False)
        return LlamaForCausalLM(cfg).eval()
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4,
                         n_positions=ctx, bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg).eval()
    if arch != "gpt_neox":
        raise ValueError(f"unknown tiny architecture {arch!r}")
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=4 * hidden,
                        max_position_embeddings=ctx, rotary_pct=0.25, tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg).eval()

"""Small shared model helpers: a tiny Pythia-shaped GPTNeoX for tests and fixtures, and
device/dtype resolution.  Nothing here downloads anything."""

from __future__ import annotations

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


def tiny_gpt_neox(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    context: int = 64,
    seed: int = 0,
) -> GPTNeoXForCausalLM:
    """A randomly initialised GPTNeoX with Pythia's architecture choices (parallel residual,
    rotary on 25% of each head, untied input/output embeddings, 4x MLP), in float32 eval mode.
    The same arguments always give the same weights."""
    config = GPTNeoXConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(hidden),
        num_hidden_layers=int(layers),
        num_attention_heads=int(heads),
        intermediate_size=4 * int(hidden),
        max_position_embeddings=int(context),
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_act="gelu",
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = GPTNeoXForCausalLM(config)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.float().eval()


def resolve_device_dtype(
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[torch.device, torch.dtype]:
    """Concrete (device, dtype).  device None -> "cuda" when available, else "cpu";
    dtype None -> bfloat16 on a bf16-capable GPU, float32 otherwise.  Strings such as
    "bf16", "float16", "fp32" are accepted; anything else is a ValueError."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if dtype is None:
        bf16_ok = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return dev, (torch.bfloat16 if bf16_ok else torch.float32)
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"model dtype must be floating point, got {dtype}")
        return dev, dtype
    try:
        return dev, _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None

"""The split of a causal LM into its trunk and its LM head, verified on the model itself.

Both token evaluators run the LM head only where it is needed (measure/window_losses.py on
cache-sized chunks of target rows, measure/token_losses.py on the wanted rows).  That is exact
only when the model's forward is ``logits = head(trunk(...).last_hidden_state)`` with nothing
after the head (no soft-capping, logit scaling or bias).  ``split_head`` finds the candidate
split of any transformers causal LM (``model.base_model``: ``gpt_neox``, ``model``,
``transformer``, ...; ``model.get_output_embeddings()``) and keeps it only when a probe forward
shows it *is* the model's own split, bit for bit.  The verdict is kept per model object (the
probe costs two small forward passes, ~3 ms on the demo models) while its head and trunk
modules stay the same objects.
"""

from __future__ import annotations

import weakref

import torch

from genbound_assets.measure.model_device import model_device_dtype

__all__ = ["split_head"]

_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_head(model) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(trunk, head) such that ``head(trunk(input_ids=..., attention_mask=...,
    use_cache=False).last_hidden_state)`` is the model's logits; None when the model must run
    whole.  A probe forward of 5 tokens checks that the head's input equals the trunk's
    ``last_hidden_state`` and that the model's logits equal the head's output, bit for bit."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    trunk = getattr(model, "base_model", None)
    if head is None or trunk is None or trunk is model:
        return None
    try:
        cached = _VERDICTS.get(model)
    except TypeError:                       # not weak-referenceable: probe every time
        cached = None
    if cached is not None and cached[0] is trunk and cached[1] is head:
        return cached[2]
    verdict = _probe(model, trunk, head)
    try:
        _VERDICTS[model] = (trunk, head, verdict)
    except TypeError:
        pass
    return verdict


def _probe(model, trunk, head) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    dev, _ = model_device_dtype(model)
    vocab = int(getattr(model.config, "vocab_size", 2) or 2)
    ids = (torch.arange(5, device=dev)[None, :] * 7919) % max(vocab, 1)
    seen = {}

    def hook(_mod, inputs, output):
        seen["in"], seen["out"] = inputs[0], output

    handle = head.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids, use_cache=False).logits
            hid = trunk(input_ids=ids, use_cache=False).last_hidden_state
    except Exception:
        return None
    finally:
        handle.remove()
        model.train(was_training)
    if "out" not in seen or not isinstance(seen["out"], torch.Tensor):
        return None
    same_in = seen["in"].shape == hid.shape and torch.equal(seen["in"], hid)
    out = seen["out"].to(logits.dtype)
    same_out = out.shape == logits.shape and torch.equal(out, logits)
    return (trunk, head) if same_in and same_out else None

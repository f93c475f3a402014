"""window_losses' evaluation paths (measure/window_losses.py): the head run chunk by chunk on the
target rows gives the model's own forward's numbers, and the block-diagonal mask built per
document boundary is the general rule's mask."""

import numpy as np
import pytest
import torch

from genbound_assets.data.order import StreamWindows
from genbound_assets.data.stream import build_stream
from genbound_assets.measure import window_losses as wl
from genbound_assets_tests.tiny_models import tiny_causal_lm


def _order(vocab: int, T: int = 32, batch: int = 4, n_windows: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs, n = [], 0
    while n < (n_windows + 2) * T + 1:
        k = int(rng.integers(3, 2 * T))
        docs.append(rng.integers(0, vocab - 1, size=k))
        n += k + 1
    return StreamWindows(build_stream(docs, vocab - 1), T, batch)


def _assert_own_forward_losses(model, order, windows, res) -> None:
    """``res.loss`` within 1e-5 of the exact (float64) loss of the model's own forward."""
    b = order.batch(windows)
    keep = b.labels != -100
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(b.inputs),
                       attention_mask=wl.attention_mask(b.segments, torch.float32)).logits.double()
    tgt = torch.from_numpy(np.where(keep, b.labels, 0))[..., None]
    exact = -torch.log_softmax(logits, -1).gather(-1, tgt)[..., 0]
    gap = res.loss - exact.numpy()[keep]
    assert gap.min() > -1e-5 and gap.max() < 1e-5, (gap.min(), gap.max())


@pytest.mark.parametrize("kind", ["gpt_neox", "gpt2", "llama"])
def test_chunked_head_gives_the_models_own_losses(kind, monkeypatch):
    """The split path (trunk, then the head on L2-sized chunks of target rows; several chunks
    here) against the model's own forward with the full logits reduced: the same X to float32
    rounding of the logits, and both above the exact loss of the model's own logits."""
    vocab = 97
    model, order = tiny_causal_lm(kind, vocab), _order(vocab)
    assert wl._split_head(model, vocab) is not None
    monkeypatch.setattr(wl, "_CHUNK_ELEMS", 40 * vocab)            # 40-row chunks
    monkeypatch.setattr(wl, "_MIN_HEAD_ROWS", 16)
    windows = np.array([3, 0, 7, 3, 11])                            # unsorted, with a repeat
    split = wl.window_losses(model, order, windows, alphas=(0.05, 0.3), batch_size=3)
    monkeypatch.setattr(wl, "split_head", lambda m: None)           # the model's own forward
    assert wl._split_head(model, vocab) is None
    full = wl.window_losses(model, order, windows, alphas=(0.05, 0.3), batch_size=3)
    np.testing.assert_array_equal(split.window, full.window)
    np.testing.assert_array_equal(split.column, full.column)
    np.testing.assert_allclose(split.loss, full.loss, rtol=0, atol=2e-6)
    np.testing.assert_allclose(split.entropy, full.entropy, rtol=0, atol=2e-5)
    for a in (0.05, 0.3):
        np.testing.assert_allclose(split.smoothed_loss[a], full.smoothed_loss[a], rtol=0, atol=2e-6)
        np.testing.assert_allclose(split.smoothed_entropy[a], full.smoothed_entropy[a], rtol=0, atol=2e-5)
    _assert_own_forward_losses(model, order, windows, split)


def test_post_processed_logits_run_the_model_whole():
    """Gemma2 soft-caps its logits after the head: the probe rejects the split, and the losses
    are the model's own (the exact loss of its forward, as for the split models)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    vocab = 97
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64,
        final_logit_softcapping=1.0)).eval()
    assert wl._split_head(model, vocab) is None
    order = _order(vocab)
    _assert_own_forward_losses(model, order, [2, 5], wl.window_losses(model, order, [2, 5], alphas=(0.1,)))


def test_head_on_every_row_when_the_vocabulary_is_large():
    """Above V = _CHUNK_ELEMS / _MIN_HEAD_ROWS one chunk would hold too few rows for an efficient
    head matmul: the model's own forward runs, and the result is the same kind."""
    model = tiny_causal_lm("gpt_neox", 50_304)
    assert wl._split_head(model, 50_304) is None
    res = wl.window_losses(model, _order(50_304, T=16, batch=2, n_windows=3), [0, 1], alphas=(0.1,))
    assert len(res) > 0 and np.isfinite(res.loss).all()


def _segments(rng, n: int, T: int, monotone: bool = True) -> np.ndarray:
    seg = np.cumsum(rng.random((n, T)) < 0.08, axis=1) + rng.integers(0, 50, (n, 1))
    if not monotone:
        seg = rng.permutation(seg.T).T
    return seg


def test_block_mask_is_the_general_rule():
    """Rows whose document index never decreases take the per-boundary fill; the result is the
    general rule's (same segment and causal) entry for entry, also in a reused buffer."""
    rng = np.random.default_rng(1)
    T = 24
    seg = _segments(rng, 16, T)
    seg[0] = 7                                                        # a one-document row
    seg[1, :] = np.arange(T)                                          # a boundary at every column
    allowed = (seg[:, :, None] == seg[:, None, :]) & np.tril(np.ones((T, T), bool))
    want = np.where(allowed, 0.0, np.finfo(np.float32).min)[:, None]
    buf = torch.full((20, T, T), 123.0)
    for out in (None, buf):
        got = wl.attention_mask(seg, torch.float32, out)
        np.testing.assert_array_equal(got.numpy(), want)
    # a reused buffer holding a previous batch's mask is overwritten entirely
    wl.attention_mask(_segments(rng, 16, T), torch.float32, buf)
    np.testing.assert_array_equal(wl.attention_mask(seg, torch.float32, buf).numpy(), want)


def test_mask_rule_for_segments_that_decrease_and_for_one_document():
    rng = np.random.default_rng(2)
    T = 16
    seg = _segments(rng, 8, T, monotone=False)
    assert not np.all(seg[:, 1:] >= seg[:, :-1])
    allowed = (seg[:, :, None] == seg[:, None, :]) & np.tril(np.ones((T, T), bool))
    got = wl.attention_mask(seg, torch.float32).numpy()[:, 0]
    np.testing.assert_array_equal(got == 0, allowed)
    assert wl.attention_mask(np.full((3, T), 4), torch.float32) is None


def test_block_mask_rewritten_from_the_previous_batch_is_exact():
    """A sequence of batches of different sizes through one buffer and one state (what
    window_losses does): each mask equals a freshly built one; the control without the state
    shows that a stale buffer would differ (the state's clearing is doing work)."""
    rng = np.random.default_rng(3)
    T = 20
    buf, state = torch.empty(12, T, T), {}
    for n in (12, 5, 9, 12, 3, 12):
        seg = _segments(rng, n, T)
        want = wl.attention_mask(seg, torch.float32).numpy()
        got = wl.attention_mask(seg, torch.float32, buf, state).numpy()
        np.testing.assert_array_equal(got, want)
    # a non-monotone batch in between invalidates the state
    wl.attention_mask(_segments(rng, 12, T, monotone=False), torch.float32, buf, state)
    assert state == {}
    seg = _segments(rng, 12, T)
    np.testing.assert_array_equal(wl.attention_mask(seg, torch.float32, buf, state).numpy(),
                                  wl.attention_mask(seg, torch.float32).numpy())
    # control: fill only the new blocks over the previous mask (no clearing): wrong entries
    prev, nxt = _segments(rng, 12, T), _segments(rng, 12, T)
    wl.attention_mask(prev, torch.float32, buf)
    stale = buf.clone()
    for r, a, c in wl._blocks(nxt):
        stale[r, a:c, :a] = float(torch.finfo(torch.float32).min)
    assert not torch.equal(stale[:, None], wl.attention_mask(nxt, torch.float32))


def test_block_mask_state_does_not_carry_over_to_a_new_buffer():
    """A fresh buffer (even one the allocator places where a freed one was) gets a full build:
    the state holds the buffer it describes, so no other buffer can share its address."""
    rng = np.random.default_rng(4)
    T, state = 16, {}
    seg = _segments(rng, 6, T)
    wl.attention_mask(seg, torch.float32, torch.empty(6, T, T), state)
    for _ in range(5):
        fresh = torch.full((6, T, T), 7.0)
        assert fresh.data_ptr() != state["ident"][0]
        seg = _segments(rng, 6, T)
        np.testing.assert_array_equal(wl.attention_mask(seg, torch.float32, fresh, state).numpy(),
                                      wl.attention_mask(seg, torch.float32).numpy())


def test_split_verdict_is_probed_once_per_model_and_head():
    """The probe (two small forward passes) runs once per model object; replacing the head
    module makes it probe again."""
    from genbound_assets.measure.head_split import split_head

    model = tiny_causal_lm("gpt_neox", 97)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    first = split_head(model)
    assert first == (model.base_model, model.get_output_embeddings()) and len(calls) == 1
    assert split_head(model) is first and len(calls) == 1            # cached
    model.set_output_embeddings(torch.nn.Linear(64, 97, bias=False))
    again = split_head(model)
    assert again == (model.base_model, model.get_output_embeddings()) and len(calls) == 2

"""Loss-curve (eq. 5) inputs: the not-yet-trained-on window and its mean loss."""

import numpy as np
import pytest
import torch

from genbound_assets.data.stream import TokenStream
from genbound_assets.families.models import tiny_gpt_neox
from genbound_assets.measure.loss_curve import (
    HELD_SAMPLE,
    NEXT_TOKENS,
    held_sample_loss,
    next_token_positions,
    next_tokens_loss,
)

V = 101
T = 10
SEP = 0




@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(5)
    lens = rng.integers(2, 30, size=30)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    toks = rng.integers(1, V, size=int(lens.sum()))
    toks[starts] = SEP
    return TokenStream(toks, starts, SEP)


@pytest.fixture(scope="module")
def model():
    m = tiny_gpt_neox(V, seed=2)
    with torch.no_grad():
        m.lm_head.weight.mul_(15.0)
    return m


def direct_mean_loss(model, stream, positions):
    starts = stream.context_starts(positions, T)
    out = []
    with torch.no_grad():
        for p, s in zip(positions, starts, strict=True):
            lg = model(input_ids=torch.as_tensor(stream.tokens[s:p])[None]).logits[0, -1]
            out.append(-torch.log_softmax(lg.double(), -1)[stream.tokens[p]].item())
    return float(np.mean(out))


def test_window_positions_lie_at_or_after_tokens_seen(stream):
    seen, win = 101, 57
    pos = next_token_positions(stream, seen, n_tokens=win)
    expected = [p for p in range(seen, seen + win) if p not in set(stream.doc_starts.tolist())]
    np.testing.assert_array_equal(pos, expected)
    sub = next_token_positions(stream, seen, n_tokens=20, window=win, seed=3)
    assert len(sub) == 20 and len(set(sub)) == 20
    assert sub.min() >= seen and sub.max() < seen + win and np.all(np.diff(sub) > 0)
    assert set(sub) <= set(expected)
    np.testing.assert_array_equal(sub, next_token_positions(stream, seen, 20, win, seed=3))
    first = next_token_positions(stream, 0, 5)  # step0: the first update's targets start at 1
    np.testing.assert_array_equal(first, [p for p in range(1, 6) if p not in set(stream.doc_starts)])
    tail = next_token_positions(stream, len(stream) - 3, 50)
    assert tail.max() == len(stream) - 1  # clipped at the stream's end
    with pytest.raises(ValueError):
        next_token_positions(stream, len(stream), 5)


def test_next_tokens_mean_equals_direct_computation(model, stream):
    seen, n = 150, 40
    res = next_tokens_loss(model, stream, seen, n, T, step=7, batch_size=9)
    pos = [p for p in range(seen, seen + n) if p not in set(stream.doc_starts.tolist())]
    assert res.step == 7 and res.tokens_seen == seen and res.eval_kind == NEXT_TOKENS
    assert res.n_tokens == len(pos)
    assert res.mean_loss == pytest.approx(direct_mean_loss(model, stream, pos), abs=1e-5)


def test_next_tokens_reads_nothing_past_the_window(model, stream):
    """Out-of-vocabulary ids from the window's end on: untouched, so no error; one inside: error."""
    seen, n = 200, 30
    toks = stream.tokens.copy()
    starts = stream.doc_starts
    after = np.arange(seen + n, len(toks))
    toks[np.setdiff1d(after, starts)] = V + 1
    poisoned = TokenStream(toks, starts, SEP)
    clean = next_tokens_loss(model, stream, seen, n, T)
    assert next_tokens_loss(model, poisoned, seen, n, T).mean_loss == clean.mean_loss
    toks[seen + n - 1] = V + 1
    if seen + n - 1 in set(starts.tolist()):
        pytest.skip("window end fell on a separator")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        next_tokens_loss(model, TokenStream(toks, starts, SEP), seen, n, T)


def test_held_sample_loss(model, stream):
    pos = stream.target_positions()[::17]
    res = held_sample_loss(model, stream, pos, T, tokens_seen=64, step=3)
    assert res.eval_kind == HELD_SAMPLE and res.n_tokens == len(pos) and res.tokens_seen == 64
    assert res.mean_loss == pytest.approx(direct_mean_loss(model, stream, pos), abs=1e-5)
    with pytest.raises(ValueError):
        held_sample_loss(model, stream, [], T, tokens_seen=0)


def test_window_is_the_next_updates_targets(stream):
    """tokens_seen = suite.trained_prefix_len(step, B*T), window = B*T: the targets the update
    after checkpoint `step` trains on (suite.step_token_range), for step0 included."""
    from genbound_assets.families.suite import step_token_range, trained_prefix_len

    bt = 37
    seps = set(stream.doc_starts.tolist())
    for step in (0, 1, 4):
        start, stop = step_token_range(step, bt)
        update = [p for p in range(start + 1, stop) if p not in seps]
        got = next_token_positions(stream, trained_prefix_len(step, bt), bt, window=bt)
        np.testing.assert_array_equal(got, update)

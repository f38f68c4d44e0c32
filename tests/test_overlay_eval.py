"""overlay eval's parts that need no bundled LM: the LM fed through its KV cache in chunks gives every token
its full context (= one plain forward), windows give each token its window's context; the per-token view;
held-out document selections (SPEC%N / SPEC%-N) that never share a document."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_config

from glassbox.errors import BadInput
from glassbox.overlay import corpus
from glassbox.overlay.evaluate import CHUNK, context_length, lm_rows, lm_windows, per_token


@pytest.fixture(scope="module")
def tiny_lm():
    import transformers

    torch.manual_seed(0)
    cfg = tiny_config("llama")
    cfg.max_position_embeddings = 2048
    return transformers.LlamaForCausalLM(cfg).eval()


def _plain(model, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy()


def test_full_context_rows_equal_one_plain_forward(tiny_lm):
    """More than two chunks through the cache: every row is the plain forward's row over the whole text."""
    rng = np.random.default_rng(0)
    seq = rng.integers(3, 96, 2 * CHUNK + 77).tolist()
    assert context_length(tiny_lm) == 2048
    rows = list(lm_rows(tiny_lm, 1, seq, 2048, 1024))
    assert [p for p, _, _ in rows] == list(range(len(seq) - 1)) and {s for _, _, s in rows} == {0}
    plain = _plain(tiny_lm, [1] + seq)  # with a BOS in front: row p + 1 predicts seq[p + 1]
    got = np.stack([r for _, r, _ in rows])
    assert np.abs(got - plain[1:-1]).max() < 1e-4


def test_window_rows_see_their_window_only(tiny_lm):
    """With windows of W (stride W/2) each target is scored once, from the window that gives it the most
    context: its row is a plain forward over that window's tokens up to it."""
    rng = np.random.default_rng(1)
    seq = rng.integers(3, 96, 700).tolist()
    rows = list(lm_rows(tiny_lm, None, seq, 200, 100))
    assert [p for p, _, _ in rows] == list(range(len(seq) - 1))
    starts = {s for s, _, _ in lm_windows(len(seq), 200, 100)}
    for p, row, s in rows[::37]:
        assert s in starts and (p + 1) - s <= 199 and (s == 0 or (p + 1) - s >= 100)
        want = _plain(tiny_lm, seq[s : p + 1])[-1]
        assert np.abs(row - want).max() < 1e-4


def test_per_token_view():
    gain = np.array([0.0] * 80 + [1.0] * 10 + [-0.5] * 10)
    v = per_token(gain)
    assert v["better_share"] == pytest.approx(0.1) and v["worse_share"] == pytest.approx(0.1)
    assert v["best_decile_nats_per_token"] == pytest.approx(1.0) and v["worst_decile_nats_per_token"] == -0.5
    # the two deciles carry the whole mean here
    assert v["best_decile_share_of_total"] + v["worst_decile_share_of_total"] == pytest.approx(gain.mean())


def test_every_nth_document_and_the_rest_partition_the_corpus():
    every = corpus.load_documents(["pydoc:1-30%10"])
    rest = corpus.load_documents(["pydoc:1-30%-10"])
    whole = corpus.load_documents(["pydoc:1-30"])
    assert every == [whole[9], whole[19], whole[29]]
    assert rest == [d for i, d in enumerate(whole) if (i + 1) % 10]
    (spec, docs), = corpus.load_sources(["pydoc:1-30%-10"])
    assert spec == "pydoc:1-30%-10" and docs == rest
    for bad in ("pydoc:1-30%1", "pydoc:1-30%0", "nosuch%10"):
        with pytest.raises(BadInput):
            corpus.load_documents([bad])

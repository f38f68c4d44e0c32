"""overlay eval's parts that need no bundled LM: the LM fed through its KV cache in chunks gives every token
its full context (= one plain forward), windows give each token its window's context; the per-token view;
held-out document selections (SPEC%N / SPEC%-N) that never share a document; the session prior's text (an
equal share of each of the index's corpora, in segments) and its record (each segment from an empty session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_config

from glassbox.errors import BadInput
from glassbox.overlay import corpus, lm
from glassbox.overlay import index as ix
from glassbox.overlay.evaluate import (
    CHUNK,
    context_length,
    heldout_tokens,
    lm_rows,
    lm_windows,
    per_token,
    prior_text,
    session_record,
)
from glassbox.overlay.session import SESSION_FEATURES, online


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


def test_prior_text_is_an_equal_share_of_each_source_in_segments(tmp_path):
    tok = lm.load_tokenizer("smollm2-135m")
    sources = corpus.load_sources(["kjv:1-1", "kjv:2-2"])
    docs = [d for _, part in sources for d in part[:3]]
    path = ix.build(docs, tok, tmp_path / "two", ix.BuildOptions(k=8, window=4, cap=8),
                    parts=[(spec, 3) for spec, _ in sources])
    index = ix.Index(path)
    specs, segs = prior_text(index, tok, 600, 200)
    assert specs == ["kjv:1-1", "kjv:2-2"] and [len(s) for s in segs] == [200, 100, 200, 100]
    for k, spec in enumerate(specs):  # each source's first 300 tokens, as eval reads a held-out text
        assert segs[2 * k] + segs[2 * k + 1] == heldout_tokens(spec, tok, index.sep, 300)[:300]


def test_session_record_reads_each_segment_from_an_empty_session(tiny_lm):
    """Two segments, the second a copy of the first: had the session kept the first, it would know the second
    from its first token on; its rows are those of each segment read alone (LM and session both)."""
    rng = np.random.default_rng(2)
    first = rng.integers(3, 96, 150).tolist()
    p_lm, p_s, phi_s = session_record(tiny_lm, 1, [first, first], 96, 2048, 1024)
    assert len(p_lm) == len(p_s) == len(phi_s) == 2 * 149
    lm_one = np.array([np.exp(r[first[p + 1]]) for p, r, _ in lm_rows(tiny_lm, 1, first, 2048, 1024)])
    s_one = [(d.dense()[first[p + 1]], d.features(0.5)) for p, d in online(first, 96)]
    for half in (slice(0, 149), slice(149, 298)):
        assert np.allclose(p_lm[half], lm_one, atol=1e-5)
        assert np.allclose(p_s[half], [a for a, _ in s_one], atol=1e-12)
        assert [f[:4].tolist() for f in phi_s[half]] == [[f[k] for k in SESSION_FEATURES[:4]] for _, f in s_one]

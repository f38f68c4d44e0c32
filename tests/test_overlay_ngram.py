"""The overlay's table side against brute force: suffix intervals carried from step to step, continuation
counts (light, heavy and heavy-long contexts), the smoothed distribution, the packed suffix array, the local
arrays and sizes, shard-order builds, source ranges and source features, and the mixer's static fit and its
never-worse guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glassbox.overlay import index as ix
from glassbox.overlay import lm
from glassbox.overlay.accumulator import Accumulator
from glassbox.overlay.gate import FEATURES, features, names
from glassbox.overlay.mixer import Mixer, fit
from glassbox.overlay.ngram import SHORT, Chain, Packed


@pytest.fixture(scope="session")
def tok():
    return lm.load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def docs():
    from glassbox.overlay.corpus import load_documents

    return load_documents(["kjv:1-1"])[:20]


@pytest.fixture(scope="session", params=[4, 256], ids=["cap4", "cap256"])
def built(request, tmp_path_factory, tok, docs):
    """Genesis 1-20; cap 4 sends most lookups down the heavy paths (stored children, run walking)."""
    out = tmp_path_factory.mktemp("ngram") / f"gen-cap{request.param}"
    ix.build(docs, tok, out, ix.BuildOptions(k=8, window=4, cap=request.param), source="kjv:1-1")
    return ix.Index(out)


def _brute(toks: np.ndarray, pat: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Occurrences of pat and the (ids, counts) of the tokens that follow it."""
    n = len(pat)
    win = np.lib.stride_tricks.sliding_window_view(toks, n)
    hits = np.flatnonzero(np.all(win == pat, axis=1))
    nxt = hits + n
    ids, counts = np.unique(toks[nxt[nxt < len(toks)]], return_counts=True)
    return len(hits), ids, counts


def _spliced(index: ix.Index, seed: int) -> list[int]:
    toks = np.asarray(index.tokens, dtype=np.int64)
    rng = np.random.default_rng(seed)
    seq = toks[300:420].tolist()  # corpus runs: long matches
    for i in rng.integers(0, len(seq), 8).tolist():  # random tokens: matches that break and regrow
        seq[i] = int(rng.integers(0, index.vocab_size))
    return seq


def test_chain_intervals_and_counts_match_brute_force(built):
    index = built
    toks = np.asarray(index.tokens, dtype=np.int64)
    seq = _spliced(index, 1)
    chain = Chain(index.ngram)
    prev = 0
    heavy_used = long_walk = 0
    for i, w in enumerate(seq):
        levels = chain.step(w)
        # the recurrence: grow the previous longest by one token if the corpus has it, else the longest
        # of the short suffixes (1..SHORT tokens) that the corpus has
        ctx = np.array(seq[: i + 1])
        grown = prev + 1 if prev >= SHORT and _brute(toks, ctx[-(prev + 1):])[0] > 0 else 0
        short = max([k for k in range(1, min(SHORT, i + 1) + 1) if _brute(toks, ctx[-k:])[0] > 0], default=0)
        assert chain.match_length == max(grown, short)
        assert [lv.length for lv in levels][: min(short, SHORT)] == list(range(1, min(short, SHORT) + 1))
        for lv in levels:
            count, ids, counts = _brute(toks, ctx[-lv.length:])
            assert lv.hi - lv.lo == count
            index.ngram.read(lv)
            heavy_used += lv.count > index.ngram.cap
            if lv.sampled:  # a heavy long context: counts from cap evenly spaced rows, each run to 2·c/cap
                long_walk += 1
                assert lv.count > index.ngram.cap and lv.length > 4
                assert set(lv.ids.tolist()) <= set(ids.tolist())
                want = dict(zip(ids.tolist(), counts.tolist(), strict=True))
                slack = 2 * count / index.ngram.cap + 1
                assert all(abs(c - want[t]) <= slack for t, c in zip(lv.ids.tolist(), lv.counts.tolist(), strict=True))
                assert abs(lv.counts.sum() - counts.sum()) <= slack
            else:
                assert np.array_equal(lv.ids, ids) and np.array_equal(lv.counts, counts) and lv.unread == 0
        prev = chain.match_length
    if index.ngram.cap == 4:
        assert heavy_used > 50 and long_walk > 0  # the heavy paths were exercised


def test_table_distribution_is_the_interpolated_formula(built):
    index = built
    toks = np.asarray(index.tokens, dtype=np.int64)
    seq = _spliced(index, 2)
    acc = Accumulator(index)
    probe = np.array(sorted({*seq[:40], 0, 5, 1000, index.vocab_size - 1}))
    for i in range(len(seq)):
        acc.observe(seq[: i + 1])
        dist = acc.table()
        dense = dist.dense()
        assert dense.sum() == pytest.approx(1.0, abs=1e-9) and dense.min() > 0
        assert np.allclose(dist.prob(probe), dense[probe], rtol=1e-12, atol=0)
        if i % 10:
            continue
        # recompute from brute-force counts: P_k = max(c − D, 0)/c + D·N1+/c · P_{k−1}, lowest level first
        n, v = len(toks), index.vocab_size
        p = (np.bincount(toks, minlength=v) + 0.5) / (n + 0.5 * v)
        for lv in acc.levels:
            count, ids, counts = _brute(toks, np.array(seq[: i + 1][-lv.length:]))
            if lv.sampled:  # estimated counts (checked against brute force in the test above)
                ids, counts = lv.ids, lv.counts
            d = index.ngram.discount(lv.length)
            total = counts.sum()
            low = p * (d * len(ids) / total)
            low[ids] += np.maximum(counts - d, 0) / total
            p = low
        assert np.allclose(dense, p, rtol=1e-9, atol=1e-15)


def test_discounts_are_count_of_counts(built):
    toks = np.asarray(built.tokens, dtype=np.int64)
    for n in (2, 3):
        win = np.lib.stride_tricks.sliding_window_view(toks, n)
        _, c = np.unique(win, axis=0, return_counts=True)
        n1, n2 = int((c == 1).sum()), int((c == 2).sum())
        assert built.meta["discounts"][str(n)] == pytest.approx(n1 / (n1 + 2 * n2))


@pytest.mark.parametrize("width", [2, 3, 5])
def test_packed_integers_round_trip(width):
    rng = np.random.default_rng(width)
    values = rng.integers(0, 2 ** (8 * width), 1000, dtype=np.uint64).astype(np.int64) if width < 8 else None
    values = np.abs(values)
    packed = Packed(Packed.pack(values, width))
    assert len(packed) == 1000 and packed.raw.nbytes == 1000 * width
    assert [packed[i] for i in (0, 17, 999)] == values[[0, 17, 999]].tolist()
    assert np.array_equal(packed[10:50], values[10:50])
    assert np.array_equal(packed[np.array([3, 1, 4, 1, 5])], values[[3, 1, 4, 1, 5]])
    assert Packed.width_for(2**24 - 1) == 3 and Packed.width_for(2**24) == 4


def test_arrays_are_sized_by_the_tokens_used(built):
    toks = np.asarray(built.tokens, dtype=np.int64)
    used = np.unique(toks)
    assert np.array_equal(built.types, used)
    assert len(np.load(built.path / "next_off.npy")) == len(used) + 1
    assert np.load(built.path / "sa.npy").shape == (len(toks), Packed.width_for(len(toks) - 1))
    assert not list(built.path.glob("sem_*.npy"))  # semantic neighbours are opt-in
    sizes = built.sizes()
    assert sum(g["bytes"] for g in sizes.values()) == sum(f.stat().st_size for f in built.path.glob("*.npy"))
    header = sizes["suffix array"]["bytes"] - len(toks) * Packed.width_for(len(toks) - 1)
    assert 0 < header <= 256  # the .npy header only
    # the unigram view and the single-token suffix-array intervals agree with the corpus
    assert np.array_equal(built.unigram[used], np.bincount(toks)[used])


def test_shards_build_the_same_index(tmp_path, tok, docs):
    ids = ix.tokenize_documents(docs, tok)
    opts = ix.BuildOptions(k=8, window=4, cap=8)
    one = ix.build_from_shards([ids], tok, tmp_path / "one", opts)
    three = ix.build_from_shards([ids[:3], ids[3:11], ids[11:]], tok, tmp_path / "three", opts)
    for f in sorted(one.glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(three / f.name)), f.name


def _synthetic(n: int, informative: bool, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """True-token probabilities where the table is right on long matches (informative) or never (not)."""
    rng = np.random.default_rng(seed)
    match = rng.integers(1, 12, n)
    p_lm = rng.uniform(0.05, 0.4, n)
    long = match >= 6
    p_t = np.where(long & informative, rng.uniform(0.6, 0.95, n), rng.uniform(0.0005, 0.01, n))
    phi = [np.array([min(m, 16) / 4, math.log1p(20) / 4, 0.5, 0.0, pl]) for m, pl in zip(match, p_lm, strict=True)]
    return p_lm, p_t, phi


def _static(p_lm: np.ndarray, p_t: np.ndarray, phi: list) -> Mixer:
    """The mixer fitted with the static table alone (no session part)."""
    n = len(p_lm)
    return fit(p_lm, p_t, np.zeros(n), phi, [None] * n, session=False)["overlay"]


def test_gate_trusts_the_table_where_it_knows_and_ships_only_a_gain():
    p_lm, p_t, phi = _synthetic(2000, True, 0)
    gate = _static(p_lm, p_t, phi)
    assert gate.shipped and gate.report["oof_gain_ci95"][0] > 0
    as_dict = [dict(zip(FEATURES, f.tolist(), strict=True)) for f in phi]
    lam = np.array([gate.weights(f, None)[1] for f in as_dict])
    long = np.array([f[0] * 4 >= 6 for f in phi])
    assert lam[long].mean() > 0.5 > 0.1 > lam[~long].mean()
    mixed = np.log((1 - lam) * p_lm + lam * p_t).mean()
    assert mixed > np.log(p_lm).mean()
    assert gate.weights(None, None) == (1.0, 0.0, 0.0)  # the tables saw nothing: the LM alone
    # a table that is never right: not shipped, λ ≡ 0, so the mixture is exactly the LM
    p_lm, p_t, phi = _synthetic(2000, False, 1)
    off = _static(p_lm, p_t, phi)
    assert not off.shipped
    assert all(off.weights(dict(zip(FEATURES, f.tolist(), strict=True)), None) == (1.0, 0.0, 0.0) for f in phi)
    assert Mixer.from_json(gate.to_json()).weights(as_dict[0], None) == gate.weights(as_dict[0], None)


def test_sources_are_token_ranges_and_the_gate_reads_their_shares(tmp_path, tok):
    """An index of two corpora records each one's token range; the source features of a step are the shares
    of the longest match's occurrences in each range, counted by brute force over the corpus."""
    from glassbox.overlay.corpus import load_sources

    sources = load_sources(["kjv:1-1", "kjv:2-2"])
    docs = [d[:600] for _, part in sources for d in part[:6]]
    parts = [(spec, 6) for spec, _ in sources]
    path = ix.build(docs, tok, tmp_path / "two", ix.BuildOptions(k=8, window=4, cap=8), parts=parts)
    index = ix.Index(path)
    ranges = index.meta["sources"]
    assert [r["spec"] for r in ranges] == ["kjv:1-1", "kjv:2-2"] and ranges[0]["start"] == 0
    assert ranges[0]["end"] == ranges[1]["start"] and ranges[1]["end"] == index.n_tokens
    seps = np.flatnonzero(np.asarray(index.tokens) == index.sep)
    assert ranges[0]["end"] == seps[5] + 1  # the first source ends after its sixth document's separator
    assert names(index) == FEATURES + ("source:kjv:1-1", "source:kjv:2-2")
    toks = np.asarray(index.tokens, np.int64)
    acc = Accumulator(index)
    seen = 0
    for p in range(200):
        acc.observe(toks[max(0, p - 1) : p + 1].tolist())
        phi = features(acc.levels, 0.5, index)
        if phi is None:
            continue
        top = acc.levels[-1]
        if top.count > 64:
            continue  # sampled rows; the brute force below counts every occurrence
        ctx = toks[p + 1 - top.length : p + 1]
        starts = [i for i in range(len(toks) - top.length + 1) if np.array_equal(toks[i : i + top.length], ctx)]
        in_first = np.mean([i < ranges[0]["end"] for i in starts])
        assert phi["source:kjv:1-1"] == pytest.approx(in_first) and phi["source:kjv:2-2"] == pytest.approx(1 - in_first)
        seen += 1
    assert seen > 50

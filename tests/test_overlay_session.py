"""The session memory (overlay/session.py) against brute force: its counts at every step, no peeking at the
scored token or later, P_S and the 3-way mixture summing to 1, the gate shipping the session only on a
text that repeats itself, old gate.json files loading; one slow test with SmolLM2 on a cross-genre pair."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from glassbox.errors import BadInput
from glassbox.overlay.gate import FEATURES, Gate
from glassbox.overlay.gate import fit as gate_fit
from glassbox.overlay.session import ORDER, Mixer, Part, Session, fit, mixture, online

V = 40


def _text(n: int, seed: int) -> list[int]:
    """A small-alphabet text with a passage that comes back (so long contexts repeat)."""
    rng = np.random.default_rng(seed)
    passage = rng.integers(0, V, 30).tolist()
    out: list[int] = []
    while len(out) < n:
        out += passage if rng.random() < 0.5 else rng.integers(0, V, 12).tolist()
    return out[:n]


def _brute(hist: list[int]) -> tuple[dict[tuple[int, ...], Counter], dict[tuple[int, ...], int]]:
    """Every context of 1..ORDER tokens in hist with its continuation counts, and its last end position."""
    counts: dict[tuple[int, ...], Counter] = {}
    last: dict[tuple[int, ...], int] = {}
    for i in range(1, len(hist)):
        for k in range(1, min(ORDER, i) + 1):
            key = tuple(hist[i - k:i])
            counts.setdefault(key, Counter())[hist[i]] += 1
            last[key] = i - 1
    return counts, last


def _discount(counts: dict[tuple[int, ...], Counter], k: int, uni: Counter) -> float:
    vals = list(uni.values()) if k == 0 else [c for key, cs in counts.items() if len(key) == k for c in cs.values()]
    n1, n2 = vals.count(1), vals.count(2)
    return min(0.95, max(0.05, n1 / (n1 + 2 * n2))) if n1 + 2 * n2 > 0 else 0.5


def test_session_counts_equal_brute_force_at_every_step():
    seq = _text(160, 0)
    s = Session(V)
    for p, w in enumerate(seq):
        s.add(w)
        hist = seq[: p + 1]
        counts, last = _brute(hist)
        assert set(s.ctx) == set(counts)
        for key, cs in counts.items():
            assert s.ctx[key] == dict(cs) and s.total[key] == sum(cs.values()) and s.top[key] == max(cs.values())
            assert s.last[key] == last[key]
        uni = Counter(hist)
        assert np.array_equal(s.uni, np.bincount(hist, minlength=V).astype(float)) and s.distinct == len(uni)
        for k in range(ORDER + 1):
            assert s.discount(k) == pytest.approx(_discount(counts, k, uni))


def test_p_s_is_the_formula_and_sums_to_one():
    seq = _text(120, 1)
    for p, d in online(seq, V):
        hist = seq[: p + 1]
        counts, _ = _brute(hist)
        uni = Counter(hist)
        dense = d.dense()
        assert dense.sum() == pytest.approx(1.0, abs=1e-12) and (dense > 0).all()
        assert np.allclose(d.prob(np.arange(V)), dense, atol=1e-15)
        # recomputed from brute-force counts: uniform, session unigram, then every seen suffix context
        n, d0 = len(hist), _discount(counts, 0, uni)
        want = np.array([max(uni[w] - d0, 0) / n + d0 * len(uni) / n / V for w in range(V)])
        m = 0
        for k in range(1, ORDER + 1):
            key = tuple(hist[-k:])
            if key not in counts:
                break
            cs, dk = counts[key], _discount(counts, k, uni)
            tot = sum(cs.values())
            want = np.array([max(cs[w] - dk, 0) / tot for w in range(V)]) + dk * len(cs) / tot * want
            m = k
        if d.copy_len:  # a copy longer than ORDER: one more level, the token after it last time, count 1
            dk = _discount(counts, ORDER, uni)
            want = dk * want
            want[hist[d.copy_pos]] += 1 - dk
        assert np.allclose(dense, want, atol=1e-12) and d.match == (d.copy_len or m)


def _longest_previous(hist: list[int]) -> int:
    """The longest suffix of hist that also ends at an earlier position."""
    best = 0
    for e in range(len(hist) - 1):
        k = 0
        while k <= e and hist[e - k] == hist[len(hist) - 1 - k]:
            k += 1
        best = max(best, k)
    return best


def test_copy_pointer_is_a_real_match_never_longer_than_the_longest():
    seq = _text(300, 4)
    s = Session(V)
    copies = 0
    for p, w in enumerate(seq):
        s.add(w)
        hist = seq[: p + 1]
        true = _longest_previous(hist)
        if s.copy_len:
            n, q = s.copy_len, s.copy_pos
            assert q <= p and hist[q - n:q] == hist[-n:]  # the same tokens, ending just before q
            assert n <= true
        assert s.copy_len == min(true, ORDER) or s.copy_len > ORDER
        d = s.dist()
        assert d.match == (s.copy_len if s.copy_len > ORDER else min(true, ORDER))
        copies += s.copy_len > ORDER
    assert copies > 50  # the passage repeats: long copies were followed


def test_no_step_sees_the_scored_token_or_later():
    """A planted text: a passage, then the same passage with one token changed to one never seen before. If
    P_S peeked at the scored token (or later), that novel token would get more than the unseen-token mass."""
    passage = list(range(20))
    seq = passage + passage[:10] + [33] + passage[11:] + [34, 35]
    for p, d in online(seq, V):
        fresh = Session(V)  # rebuilt from the prefix alone: identical, so nothing later can have entered
        for w in seq[: p + 1]:
            fresh.add(w)
        assert np.array_equal(d.dense(), fresh.dist().dense())
        if seq[p + 1] in (33, 34, 35):  # first occurrences: only the uniform floor's share reaches them
            assert d.prob(np.array([seq[p + 1]]))[0] < 1.0 / V
    # and where the passage repeats the session does know the continuation
    _, d = list(online(seq[:26], V))[-1]  # after reading passage + passage[:5]
    assert d.match == ORDER and d.prob(np.array([5]))[0] > 0.5


def test_three_way_mixture_sums_to_one():
    seq = _text(80, 2)
    rng = np.random.default_rng(0)
    mixer = Mixer(table=Part([0.5, -1.0, 2.0, 0.3, -0.7], -1.0, FEATURES),
                  session=Part([1.0, 0.2, 0.4, -0.5, -1.0], -0.5, FEATURES), shipped=True, kind="both-gate")
    for p, d in online(seq, V):
        p_lm = rng.dirichlet(np.ones(V))
        p_t = rng.dirichlet(np.ones(V))
        phi_t = None if p % 7 == 0 else dict(zip(FEATURES, rng.uniform(0, 1, 5).tolist(), strict=True))
        w = mixer.weights(phi_t, d.features(float(p_lm.max())))
        assert sum(w) == pytest.approx(1.0) and min(w) >= 0 and (phi_t is not None or w[1] == 0.0)
        assert mixture(p_lm, p_t, d.dense(), w).sum() == pytest.approx(1.0, abs=1e-12)


def _dev_arrays(seq: list[int], seed: int) -> tuple:
    """True-token probabilities and features of a weak LM, a static table that is right on the first of every
    ten positions (a gain it can prove), and the session memory, at every position of seq."""
    rng = np.random.default_rng(seed)
    n = len(seq) - 1
    p_lm = rng.uniform(0.02, 0.08, n)
    knows = np.arange(n) % 10 == 0
    p_t = np.where(knows, 0.9, 0.002)
    phi_t = [np.array([2.0 if k else 0.25, 0.5, 0.5, 0.0, 0.3]) for k in knows]
    p_s, phi_s = np.zeros(n), []
    maxp = rng.uniform(0.1, 0.5, n)
    for p, d in online(seq, max(seq) + 1):
        p_s[p] = d.prob(np.array([seq[p + 1]]))[0]
        f = d.features(float(maxp[p]))
        phi_s.append(None if f is None else np.array([f[k] for k in FEATURES]))
    return p_lm, p_t, p_s, phi_t, phi_s


def test_gate_ships_the_session_only_where_the_text_repeats_itself():
    rng = np.random.default_rng(3)
    passage = rng.integers(0, 200, 100).tolist()
    repeating = passage * 16  # a text that repeats itself: the session knows every continuation after round 1
    fits = fit(*_dev_arrays(repeating, 0))
    assert fits["overlay"].uses_session and fits["session"].uses_session
    assert fits["overlay"].report["oof_gain_ci95"][0] > 0
    never = list(range(1600))  # never repeats a token: the session never knows the next one
    fits = fit(*_dev_arrays(never, 0))
    assert not fits["overlay"].uses_session and not fits["session"].shipped
    assert fits["static"].shipped  # the static table's gain is proven, so the overlay is exactly that gate
    p_lm, p_t, p_s, phi_t, phi_s = _dev_arrays(never, 0)
    for a, b in zip(phi_t, phi_s, strict=True):
        da = dict(zip(FEATURES, a.tolist(), strict=True))
        db = None if b is None else dict(zip(FEATURES, b.tolist(), strict=True))
        assert fits["overlay"].weights(da, db) == fits["static"].weights(da, db)
        assert fits["session"].weights(da, db) == (1.0, 0.0, 0.0)


def test_static_part_alone_is_the_old_gate():
    """With the session off, the fitter's static candidates are today's gate.fit, to the optimizer's precision."""
    p_lm, p_t, _, phi_t, _ = _dev_arrays(list(range(800)), 5)
    old = gate_fit(p_lm, p_t, phi_t)
    new = fit(p_lm, p_t, np.full(len(p_lm), 1e-6), phi_t, [None] * len(p_lm), session=False)
    by_kind = new["static"].report["candidates"]
    assert by_kind["table-constant"]["oof_gain_nats_per_token"] == pytest.approx(
        old.report["oof_gain_by_kind"]["constant"], abs=1e-6)
    assert by_kind["table-gate"]["oof_gain_nats_per_token"] == pytest.approx(old.report["oof_gain_by_kind"]["gate"],
                                                                              abs=1e-6)
    assert new["static"].shipped == old.shipped and new["overlay"].session is None


def test_old_gate_json_loads(tmp_path):
    old = Gate(w=[1.0, 0.5, 1.0, 0.5, -2.0], b=-2.0, shipped=True, report={"kind": "gate"})
    mixer = Mixer.from_json(json.loads(json.dumps(old.to_json())))
    rng = np.random.default_rng(0)
    for _ in range(20):
        phi = dict(zip(FEATURES, rng.uniform(0, 1, 5).tolist(), strict=True))
        w = mixer.weights(phi, {"match": 1.0, "log_count": 1.0, "concentration": 1.0, "sparse": 1.0, "lm_maxp": 0.1})
        lam = old.lam(phi)
        assert w[1] == pytest.approx(lam, rel=1e-12) and w[0] == pytest.approx(1 - lam) and w[2] == 0.0
    assert Mixer.from_json(Gate().to_json()).weights({f: 1.0 for f in FEATURES}, None) == (1.0, 0.0, 0.0)
    # and a version-2 file still gives the old reader its static gate
    v2 = Mixer(table=Part(old.w, old.b, FEATURES), session=Part([0.0] * 5, 1.0, FEATURES), shipped=True).to_json()
    assert Gate.from_json(v2).lam(phi) == pytest.approx(old.lam(phi))
    assert Mixer.from_json(json.loads(json.dumps(v2))).weights(phi, None)[1] == pytest.approx(old.lam(phi))
    with pytest.raises(ValueError):
        Mixer.from_json({"version": 2, "shipped": True, "table": {"w": [1.0], "b": 0.0}})


def test_index_reads_old_and_new_gate_files(tmp_path):
    from glassbox.overlay import index as ix
    from glassbox.overlay import lm
    from glassbox.overlay.corpus import load_documents

    folder = tmp_path / "idx"
    ix.build(load_documents(["kjv:1-1"])[:3], lm.load_tokenizer("smollm2-135m"), folder, ix.BuildOptions(k=4, window=4))
    idx = ix.Index(folder)
    assert idx.gate() is None
    old = Gate(w=[1.0, 0.5, 1.0, 0.5, -2.0], b=-2.0, shipped=True).to_json()
    ix.write_gate(folder, old | {"heldout": "x", "model": "m"})
    assert Mixer.from_json(idx.gate()).weights({f: 0.5 for f in FEATURES}, None)[1] == pytest.approx(
        Gate.from_json(old).lam({f: 0.5 for f in FEATURES}))
    (folder / "gate.json").write_text(json.dumps({"version": 2, "shipped": True, "table": {"b": 1}}))
    with pytest.raises(BadInput):
        idx.gate()



@pytest.mark.slow
def test_smollm2_cross_genre_never_worse_and_the_trace_reproduces_the_mixture(tmp_path, reuse_smollm2, monkeypatch):
    """Python's help topics as the index, Matthew 5-7 held out (another genre); then a generation
    with a session part in the gate, whose traced terms give back every candidate's logged score."""
    from glassbox.overlay import evaluate, explain, lm
    from glassbox.overlay import index as ix
    from glassbox.overlay.corpus import kjv_chapters, load_documents
    from glassbox.overlay.generate import GenerateConfig
    from glassbox.overlay.store import Store
    from glassbox.overlay.trace import run

    tok = lm.load_lm("smollm2-135m")[1]
    out = tmp_path / "pydoc"
    ix.build(load_documents(["pydoc:1-30"]), tok, out, ix.BuildOptions(k=16, window=6), source="pydoc:1-30")
    opts = evaluate.EvalOptions(max_tokens=800, scale_base=2000, gen_tokens=3, latency_runs=1, lookup_steps=50,
                                lookup_rounds=1)
    held = tmp_path / "matthew-5-7.txt"  # the Sermon on the Mount: prose of one kind from dev to test
    held.write_text("\n".join(kjv_chapters(40, 40)[4:7]))
    res = evaluate.evaluate(out, "smollm2-135m", str(held), opts)
    c, x = res["contract"], res["extra"]
    assert c["overlay"]["ppl"] <= c["lm"]["ppl"] * (1 + 1e-9)
    for part in ("static_only", "session_only"):
        assert x[part]["ppl"] <= c["lm"]["ppl"] * (1 + 1e-9)
        if not x[part]["gate"]["shipped"]:
            assert x[part]["ppl"] == pytest.approx(c["lm"]["ppl"], rel=1e-12)
    assert sum(v["share"] for v in x["gain_by_distance"].values()) == pytest.approx(1.0)
    w = x["weights_test"]
    assert w["lm"] + w["table"] + w["session"] == pytest.approx(1.0)

    monkeypatch.setenv("GLASSBOX_HOME", str(tmp_path / "home"))
    mixer = Mixer(table=Part([0.5, 0.5, 0.5, 0.2, -1.0], -2.0, FEATURES),
                  session=Part([1.0, 0.3, 0.8, 0.2, -1.0], -1.5, FEATURES), shipped=True, kind="both-gate")
    cfg = GenerateConfig(mode="mixture", max_tokens=8, gate=mixer.to_json())
    trace = run(out, "The list is sorted. The list is sorted. The list is", cfg, "smollm2-135m", Store())
    assert trace["steps"]
    for s in trace["steps"]:
        mix = s["mix"]
        wts = mixer.weights(mix["features"], mix["session_features"])
        assert [mix["weights"][k] for k in ("lm", "table", "session")] == pytest.approx(list(wts))
        assert mix["session_features"]["lm_maxp"] == pytest.approx(
            math.exp(max(c["lm_logprob"] for c in s["candidates"])), rel=1e-5)
        for cand in s["candidates"]:
            p = wts[0] * math.exp(cand["lm_logprob"]) + wts[1] * cand["p_inf"] + wts[2] * cand["p_session"]
            assert cand["final"] == pytest.approx(math.log(p) + cfg.feedback_nats * cand["feedback"], abs=1e-5)
    assert any(s["mix"]["session_match"] >= 3 for s in trace["steps"])  # the prompt repeats itself
    view = explain.step_view(trace, 0)  # `explain --step 0` prints the three weights and the session's terms
    w0 = trace["steps"][0]["mix"]["weights"]
    assert "p_session" in view and "p_sess" in view and f"{w0['session']:.4f} * p_session" in view

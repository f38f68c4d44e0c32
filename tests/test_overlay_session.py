"""The session memory (overlay/session.py) against brute force: its counts at every step, no peeking at the
scored token or later, P_S and the 3-way mixture summing to 1, the mixer (overlay/mixer.py) shipping the
session only on a text that repeats itself, a fixed λ as a mixer, the oracle against a grid, old gate.json
files loading; one slow test with SmolLM2 on a cross-genre pair."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from glassbox.errors import BadInput
from glassbox.overlay.gate import FEATURES
from glassbox.overlay.mixer import Mixer, Part, fit, mix, oracle
from glassbox.overlay.session import ORDER, Session, online

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
        assert mix(w, p_lm, p_t, d.dense()).sum() == pytest.approx(1.0, abs=1e-12)


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


def _sigmoid_lam(w: list[float], b: float, phi: dict[str, float]) -> float:
    """The version-1 gate's λ, written out: σ(b + w·φ)."""
    return 1.0 / (1.0 + math.exp(-(b + sum(wi * phi[f] for wi, f in zip(w, FEATURES, strict=True)))))


def test_a_fixed_lambda_is_a_mixer():
    """One fixed table weight is the mixer with constant logits: (1 − λ, λ, 0) where the tables saw something,
    the LM alone where they did not, and λ = 0 is the LM everywhere."""
    phi = dict.fromkeys(FEATURES, 0.7)
    for lam in (0.01, 0.1, 0.5, 0.9):
        assert Mixer.fixed(lam).weights(phi, phi) == pytest.approx((1 - lam, lam, 0.0), rel=1e-12)
        assert Mixer.fixed(lam).weights(None, phi) == (1.0, 0.0, 0.0)
    assert Mixer.fixed(0.0).weights(phi, phi) == (1.0, 0.0, 0.0)
    p_lm, p_t = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.3, 0.1])
    assert mix(Mixer.fixed(0.25).weights(phi, None), p_lm, p_t, None) == pytest.approx(0.75 * p_lm + 0.25 * p_t)


def test_oracle_is_the_best_constant_weights_and_never_below_the_lm():
    """On the positions it is chosen on, the oracle's gain is at least that of every constant (π_T, π_S) on a
    grid, and where no constant weights help (a table that is never right) it is the LM."""
    p_lm, p_t, p_s, phi_t, phi_s = _dev_arrays(_text(1200, 2), 4)
    mt = np.array([f is not None for f in phi_t])
    ms = np.array([f is not None for f in phi_s])
    best = oracle(p_lm, p_t, p_s, phi_t, phi_s)
    assert best.shipped
    gain = best.report["gain_nats_per_token"]
    base = np.log(p_lm).mean()
    for a in np.linspace(0.0, 0.9, 10):
        for b in np.linspace(0.0, 0.9 - a, 6):
            wt, ws = np.where(mt, a, 0.0), np.where(ms, b, 0.0)
            grid = np.log((1 - wt - ws) * p_lm + wt * p_t + ws * p_s).mean() - base
            assert gain >= grid - 1e-6
    never = oracle(p_lm, np.full(len(p_lm), 1e-9), np.full(len(p_lm), 1e-9), phi_t, phi_s)
    assert not never.shipped and never.weights(dict.fromkeys(FEATURES, 1.0), None) == (1.0, 0.0, 0.0)


def test_old_gate_json_loads(tmp_path):
    w_old, b_old = [1.0, 0.5, 1.0, 0.5, -2.0], -2.0
    old = {"w": w_old, "b": b_old, "shipped": True, "features": list(FEATURES), "report": {"kind": "gate"}}
    mixer = Mixer.from_json(json.loads(json.dumps(old)))
    rng = np.random.default_rng(0)
    for _ in range(20):
        phi = dict(zip(FEATURES, rng.uniform(0, 1, 5).tolist(), strict=True))
        w = mixer.weights(phi, {"match": 1.0, "log_count": 1.0, "concentration": 1.0, "sparse": 1.0, "lm_maxp": 0.1})
        lam = _sigmoid_lam(w_old, b_old, phi)
        assert w[1] == pytest.approx(lam, rel=1e-12) and w[0] == pytest.approx(1 - lam) and w[2] == 0.0
    unfitted = {"w": [0.0] * 5, "b": -30.0, "shipped": False, "features": list(FEATURES), "report": {}}
    assert Mixer.from_json(unfitted).weights(dict.fromkeys(FEATURES, 1.0), None) == (1.0, 0.0, 0.0)
    # and a version-2 file still gives an old reader its static gate under the version-1 keys
    v2 = Mixer(table=Part(w_old, b_old, FEATURES), session=Part([0.0] * 5, 1.0, FEATURES), shipped=True).to_json()
    assert v2["w"] == w_old and v2["b"] == b_old and v2["features"] == list(FEATURES)
    assert Mixer.from_json(json.loads(json.dumps(v2))).weights(phi, None)[1] == pytest.approx(
        _sigmoid_lam(w_old, b_old, phi))
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
    w_old = [1.0, 0.5, 1.0, 0.5, -2.0]
    old = {"w": w_old, "b": -2.0, "shipped": True, "features": list(FEATURES), "report": {}}
    ix.write_gate(folder, old | {"heldout": "x", "model": "m"})
    phi = dict.fromkeys(FEATURES, 0.5)
    assert Mixer.from_json(idx.gate()).weights(phi, None)[1] == pytest.approx(_sigmoid_lam(w_old, -2.0, phi))
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
    # no session prior: this checks the dev-proven guard (a prior shipped on a positive dev gain is not a
    # never-worse guarantee; benchmarks/overlay_pairs.py measures it, test_overlay_lm.py runs it end to end)
    opts = evaluate.EvalOptions(max_tokens=800, scale_base=2000, gen_tokens=3, latency_runs=1, lookup_steps=50,
                                lookup_rounds=1, prior_tokens=0)
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


def test_a_session_prior_ships_where_the_dev_text_carries_it_over_and_not_elsewhere():
    """A session part fitted and proven on other text (the prior) ships on a dev text whose own evidence is too
    thin to prove it (one passage that comes back once) when its dev gain there is positive, and not on a dev
    text that never repeats itself (where it can only cost); a prior text that never repeats proves nothing."""
    rng = np.random.default_rng(5)
    passage = rng.integers(0, 200, 100).tolist()
    p_lm, _, p_s, _, phi_s = _dev_arrays(passage * 16, 0)
    proven = fit(p_lm, np.zeros(len(p_lm)), p_s, [None] * len(p_lm), phi_s)["session"]
    assert proven.uses_session  # the prior: fitted on the repeating text, proven there
    p_lm, _, p_s, _, phi_s = _dev_arrays(list(range(1600)), 0)
    assert not fit(p_lm, np.zeros(len(p_lm)), p_s, [None] * len(p_lm), phi_s)["session"].shipped

    once = rng.integers(200, 400, 60).tolist()
    thin = list(range(400, 520)) + once + list(range(520, 640)) + once + list(range(640, 700))  # repeats once
    dev = _dev_arrays(thin, 1)
    alone = fit(*dev)
    assert not alone["overlay"].uses_session and not alone["session"].shipped  # its own evidence is too thin
    with_prior = fit(*dev, prior=proven.session)
    assert with_prior["overlay"].uses_session and with_prior["overlay"].session.w == proven.session.w
    assert with_prior["overlay"].report["prior_checked"] and with_prior["overlay"].report["oof_gain_over_static"] > 0
    never = fit(*_dev_arrays(list(range(1000, 1400)), 1), prior=proven.session)
    assert not never["overlay"].uses_session and not never["session"].shipped

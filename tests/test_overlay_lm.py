"""Overlay generator with the bundled SmolLM2 as the selector: the score formulas in the trace, the faithful
select mode, beam search, feedback that flips one step and nothing else, and the eval JSON contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from glassbox.cli import main
from glassbox.overlay import index as ix
from glassbox.overlay import lm
from glassbox.overlay.feedback import record
from glassbox.overlay.gate import FEATURES
from glassbox.overlay.generate import GenerateConfig
from glassbox.overlay.mixer import Mixer, Part
from glassbox.overlay.store import Store
from glassbox.overlay.trace import replay, run

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def smol():
    return lm.load_lm(MODEL)


@pytest.fixture(scope="session")
def built(tmp_path_factory, smol):
    from glassbox.overlay.corpus import load_documents

    out = tmp_path_factory.mktemp("overlay_lm") / "exodus"
    opts = ix.BuildOptions(k=16, window=6, semantic_from=MODEL)
    ix.build(load_documents(["kjv:2-2"]), smol[1], out, opts, source="kjv:2-2")
    return out


def test_semantic_neighbours_are_nearest_by_cosine(built, smol):
    index = ix.Index(built)
    emb = smol[0].get_input_embeddings().weight.detach().numpy()
    present = np.flatnonzero(index.unigram > 0)
    e = emb[present] / np.linalg.norm(emb[present], axis=1, keepdims=True)
    for a in present[::211][:8].tolist():
        ids, w = index.links("semantic", a)
        sims = e @ (emb[a] / np.linalg.norm(emb[a]))
        sims[present == a] = -np.inf
        best = present[np.argsort(-sims)[: len(ids)]]
        assert len(ids) == 16 and set(ids.tolist()) == set(best.tolist())
        assert np.allclose(w, np.sort(sims)[::-1][: len(ids)], atol=2e-3)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSBOX_HOME", str(tmp_path / "home"))
    return Store()


@pytest.mark.parametrize("gated", [False, True], ids=["fixed-lam", "gate"])
def test_mixture_trace_terms_and_replay(built, store, smol, gated):
    gate = Mixer(table=Part([1.0, 0.5, 1.0, 0.5, -2.0], -2.0, FEATURES), shipped=True) if gated else None
    cfg = GenerateConfig(mode="mixture", max_tokens=6, lam=0.2, gate=gate.to_json() if gate else None)
    trace = run(built, "And Moses said unto the LORD", cfg, MODEL, store)
    assert len(trace["steps"]) >= 1
    for s in trace["steps"]:
        mix_info = s["mix"]  # the mixing weight and the features that set it are in the trace
        phi = mix_info["features"]
        lam = (gate.weights(phi, mix_info["session_features"])[1] if gate else (cfg.lam if phi else 0.0))
        assert mix_info["lam"] == pytest.approx(lam) and (phi is None or set(phi) == set(FEATURES))
        assert phi is None or phi["lm_maxp"] == pytest.approx(math.exp(max(c["lm_logprob"] for c in s["candidates"])),
                                                               rel=1e-5)
        for c in s["candidates"]:
            assert 0 < c["p_inf"] <= 1
            mix = math.log((1 - lam) * math.exp(c["lm_logprob"]) + lam * c["p_inf"])
            assert c["final"] == pytest.approx(mix + cfg.feedback_nats * c["feedback"], abs=1e-5)
        assert s["candidates"][0]["token"] == s["chosen"]
        lm_top = max(s["candidates"], key=lambda c: c["lm_logprob"])
        assert lm_top["token"] == s["lm_top"]  # the LM's top-k joined the candidates
    assert replay(trace, store)["identical"]


def test_select_mode_only_picks_table_candidates(built, store):
    cfg = GenerateConfig(mode="select", max_tokens=6, beta=0.3)
    trace = run(built, "And the LORD spake unto Moses", cfg, MODEL, store)
    for s in trace["steps"]:
        assert all(c["table"] > 0 and "lm" not in c["sources"] for c in s["candidates"])
        lc = np.array([c["lm_logprob"] for c in s["candidates"]])
        restricted = lc - np.log(np.exp(lc - lc.max()).sum()) - lc.max()
        for c, r in zip(s["candidates"], restricted, strict=True):
            assert c["final"] == pytest.approx(r + cfg.beta * math.log(c["p_table"]), abs=1e-4)


def test_beam_search_scores_its_path(built, store):
    cfg = GenerateConfig(mode="mixture", max_tokens=4, beam=2)
    trace = run(built, "Then Moses", cfg, MODEL, store)
    assert 1 <= len(trace["output_ids"]) <= 4
    assert trace["beam_score"] == pytest.approx(sum(
        next(c["final"] for c in s["candidates"] if c["token"] == s["chosen"]) for s in trace["steps"]))


def test_prefer_flips_that_step_and_leaves_other_prompts_alone(built, store, smol):
    cfg = GenerateConfig(mode="mixture", max_tokens=6)
    first = run(built, "And Moses went up unto", cfg, MODEL, store)
    other = run(built, "Thou shalt not", cfg, MODEL, store)
    step = min(2, len(first["steps"]) - 1)
    want = next(c for c in first["steps"][step]["candidates"][1:] if c["text"].strip())
    record(store, first, step, want["text"], True, smol[1])
    again = run(built, "And Moses went up unto", cfg, MODEL, store)
    assert again["output_ids"][:step] == first["output_ids"][:step]
    assert again["steps"][step]["chosen"] == want["token"] != first["steps"][step]["chosen"]
    assert run(built, "Thou shalt not", cfg, MODEL, store)["output_ids"] == other["output_ids"]


def test_eval_json_contract(built, tmp_path, capsys, smol):
    held = tmp_path / "heldout.txt"
    held.write_text(" ".join(__import__("glassbox.overlay.corpus", fromlist=["x"]).kjv_chapters(40, 40)[:2]))
    with pytest.raises(SystemExit) as exc:
        main(["overlay", "eval", str(built), "--model", MODEL, "--heldout", str(held), "--max-tokens", "200",
              "--scale-base", "2000", "--gen-tokens", "3", "--json"])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    assert "warning" not in out.err  # Matthew is not in the Exodus index
    doc = json.loads(out.out)
    assert set(doc) == {"tokens", "n_candidates", "lm", "table", "overlay", "recall_at_n", "latency_ratio",
                        "bytes_per_token", "lookup_p99_ms", "lm_context"}
    assert set(doc["lookup_p99_ms"]) == {"1x", "10x", "100x"}
    # the LM at its full context by default: SmolLM2 reads 8,192 tokens, so all 200 are one window
    assert doc["lm_context"] == {"mode": "full", "window": 8192, "stride": 4096, "model_context": 8192,
                                 "longest_context_tokens": 200}
    for key in ("lm", "table", "overlay"):
        assert set(doc[key]) == {"top1", "ppl"} and 0 <= doc[key]["top1"] <= 1 and doc[key]["ppl"] >= 1
    # 200 held-out targets: half fit the gate (dev), half are scored (test)
    assert doc["tokens"] == 100 and doc["n_candidates"] == 32 and 0 <= doc["recall_at_n"] <= 1
    assert doc["latency_ratio"] >= 1.0 and doc["bytes_per_token"] > 2  # an overlay run includes its LM forwards
    assert doc["overlay"]["ppl"] < doc["table"]["ppl"]
    # never worse than the LM: the gate ships only with an out-of-fold gain on dev, else λ ≡ 0
    assert doc["overlay"]["ppl"] <= doc["lm"]["ppl"] * (1 + 1e-9)
    # --lm-window 8192 (SmolLM2's context) is the same LM: same perplexity, recorded as a window
    with pytest.raises(SystemExit) as exc:
        main(["overlay", "eval", str(built), "--model", MODEL, "--heldout", str(held), "--max-tokens", "200",
              "--scale-base", "2000", "--gen-tokens", "2", "--lm-window", "8192", "--json"])
    win = json.loads(capsys.readouterr().out)
    assert win["lm"] == doc["lm"] and win["lm_context"]["mode"] == "window" and win["lm_context"]["window"] == 8192


def test_eval_warns_when_the_heldout_text_is_in_the_index(built, capsys, smol):
    with pytest.raises(SystemExit) as exc:
        main(["overlay", "eval", str(built), "--model", MODEL, "--heldout", "kjv:2-2", "--max-tokens", "200",
              "--scale-base", "2000", "--gen-tokens", "2", "--json"])
    out = capsys.readouterr()
    assert exc.value.code == 0 and json.loads(out.out)["tokens"] == 100
    warning = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "kjv:2-2" in warning[0] and "part of the index's corpus" in warning[0]


def test_cross_genre_pydoc_index_on_scripture_is_never_worse(tmp_path, smol):
    """Our own cross-genre pair: an index of Python's help topics, held-out text from the New Testament."""
    from glassbox.overlay import evaluate
    from glassbox.overlay.corpus import load_documents

    out = tmp_path / "pydoc"
    ix.build(load_documents(["pydoc:1-30"]), smol[1], out, ix.BuildOptions(k=16, window=6), source="pydoc:1-30")
    opts = evaluate.EvalOptions(max_tokens=600, scale_base=2000, gen_tokens=3, latency_runs=1, lookup_steps=50,
                                lookup_rounds=1, prior_tokens=0)  # the dev-proven guard alone (no session prior)
    res = evaluate.evaluate(out, MODEL, "kjv:40-40", opts)
    c, x = res["contract"], res["extra"]
    assert c["overlay"]["ppl"] <= c["lm"]["ppl"] * (1 + 1e-9)
    assert c["table"]["ppl"] > c["lm"]["ppl"]  # the table alone is far off on another genre
    rep = x["gate"]["report"]
    assert x["gate"]["shipped"] == (rep.get("oof_gain_ci95", [0])[0] > 0)
    if not x["gate"]["shipped"]:
        assert c["overlay"]["ppl"] == pytest.approx(c["lm"]["ppl"], rel=1e-12)


def test_brown_news_index_on_fiction_through_the_cli(tmp_path, capsys, smol):
    """A second cross-genre pair, through the CLI and the Brown corpus: press reportage indexed, adventure
    fiction held out; --details adds the breakdown without touching the contract's keys."""
    from glassbox import corpora

    out = tmp_path / "news"
    ix.build(corpora.documents("brown:a"), smol[1], out, ix.BuildOptions(k=16, window=6), source="brown:a")
    with pytest.raises(SystemExit) as exc:
        main(["overlay", "eval", str(out), "--model", MODEL, "--heldout", "brown:n", "--max-tokens", "600",
              "--scale-base", "2000", "--gen-tokens", "3", "--json", "--details"])
    got = capsys.readouterr()
    assert exc.value.code == 0, got.err
    doc = json.loads(got.out)
    x = doc.pop("details")
    assert set(doc) == {"tokens", "n_candidates", "lm", "table", "overlay", "recall_at_n", "latency_ratio",
                        "bytes_per_token", "lookup_p99_ms", "lm_context"}
    assert x["heldout"] == "brown:n" and x["index_tokens"] > 50_000 and doc["bytes_per_token"] <= 12
    prior = x["session_prior"]  # fitted on the index's own text (Brown A), by the same fitter
    assert prior["text"] == ["brown:a"] and prior["tokens"] > 8000 and prior["mixer"]["report"]["dev_positions"] > 8000
    for key in (None, "static_only", "session_only"):  # the overlay, then each part alone
        gate = x["gate"] if key is None else x[key]["gate"]
        ppl = doc["overlay"]["ppl"] if key is None else x[key]["ppl"]
        rep = gate["report"]
        if gate["shipped"] and rep.get("prior_checked"):  # shipped on the prior: checked on dev, not proven there
            assert prior["shipped"] and gate["session"] == prior["mixer"]["session"]
            assert rep["oof_gain_over_static"] >= rep["min_gain_over_static"]
        else:  # proven on dev (or off): never worse than the LM
            assert ppl <= doc["lm"]["ppl"] * (1 + 1e-9)
    assert doc["table"]["ppl"] > doc["lm"]["ppl"]
    g = x["test_gain"]  # the ratio the contract implies, with an interval that contains it
    assert g["ppl_ratio"] == pytest.approx(doc["overlay"]["ppl"] / doc["lm"]["ppl"], rel=1e-9)
    assert g["ci95"][0] <= g["nats_per_token"] <= g["ci95"][1]
    assert g["ppl_ratio_ci95"][0] <= g["ppl_ratio"] <= g["ppl_ratio_ci95"][1]
    # the per-token view: shares of a partition, deciles bracketing the mean; the oracle never below the LM
    v = x["per_token"]
    assert 0 <= v["better_share"] + v["worse_share"] <= 1
    assert v["worst_decile_nats_per_token"] <= g["nats_per_token"] <= v["best_decile_nats_per_token"]
    assert x["oracle"]["ppl"] <= doc["lm"]["ppl"] * (1 + 1e-9) and x["oracle"]["ppl_ratio"] <= 1 + 1e-9

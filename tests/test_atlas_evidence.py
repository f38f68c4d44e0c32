"""Issue 11: the atlas's `validated` means a positive, significant effect against a null that could reject it.

Checked on models where the truth is known by construction (tests/planted.py: a hand-set previous-token head
feeding a hand-set induction head, a head that attends but writes nothing, a dead head, a harmful head), on
the trained induction-2l preset (two redundant induction heads), and on the statistics themselves."""

from __future__ import annotations

import glob
import math
import random

import pytest
import torch
from planted import planted_induction

from glassbox.heads import probe_inputs, probes, validate
from glassbox.heads.atlas import THRESHOLDS, Settings, build_atlas, threshold
from glassbox.run import load_model


def _roles(atlas):
    return {(h["layer"], h["head"]): {r["role"]: r for r in h["roles"]} for h in atlas["heads"]}


def _check_contract(atlas):
    """Every role carries its evidence; a validated role has a positive, significant lead effect."""
    for h in atlas["heads"]:
        for r in h["roles"]:
            assert set(r) >= {"role", "score", "ablation_effect", "validated", "evidence", "ci", "p", "null_mean",
                              "null_sd", "kinds"}, r
            assert set(r["evidence"]) <= {"total", "direct", "group"}
            if r["validated"]:
                assert r["evidence"], r
                assert r["effect"] > 0 and r["ci"][0] > 0 and r["p"] < validate.ALPHA, r
                assert all(k["significant"] != "negative" for k in r["kinds"].values()), r
            assert r["score"] >= threshold(r["role"])


@pytest.fixture(scope="module")
def planted_atlas(tmp_path_factory):
    return build_atlas(load_model(planted_induction(tmp_path_factory.mktemp("planted"))), Settings(seed=0))


def test_planted_circuit_is_validated(planted_atlas):
    roles = _roles(planted_atlas)
    _check_contract(planted_atlas)
    prev = roles[(0, 0)]["previous_token"]
    assert prev["validated"] and "total" in prev["evidence"]  # needed: the induction head reads what it writes
    assert prev["ablation_effect"] > 1.0  # removing it breaks induction: the repeated half's loss rises by nats
    ind = roles[(1, 0)]["induction"]
    assert ind["validated"] and {"total", "direct"} <= set(ind["evidence"])


def test_head_that_writes_nothing_is_found_but_never_validated(planted_atlas):
    silent = _roles(planted_atlas)[(0, 1)]  # the previous-token pattern, W_O = 0
    assert silent["previous_token"]["score"] >= THRESHOLDS["previous_token"]
    assert not any(r["validated"] for r in silent.values()), silent
    assert silent["previous_token"]["ablation_effect"] == 0.0
    group = silent["previous_token"]["kinds"]["group"]
    assert group["credited"] is False  # the group with its twin loses nothing without it


def test_group_entry_effect_and_ci_are_the_members_drop(planted_atlas):
    """One quantity per pair: `effect`/`ci` are the member's own drop; the group's are under group_*."""
    groups = [r["kinds"]["group"] for roles in _roles(planted_atlas).values() for r in roles.values()
              if "group" in r["kinds"]]
    assert groups, "the planted model has roles with two checked heads"
    for g in groups:
        assert g["effect"] == g["drop"]
        assert g["ci"][0] <= g["effect"] <= g["ci"][1]
        assert g["group_ci"][0] <= g["group_effect"] <= g["group_ci"][1]
        assert g["credited"] == (g["ci"][0] > 0 and g["drop"] > validate.FLOOR)
    assert any(g["group_effect"] != g["effect"] for g in groups)  # two quantities, two keys


def test_dead_head_holds_no_role(planted_atlas):
    assert _roles(planted_atlas)[(1, 3)] == {}


def test_head_whose_removal_helps_is_never_validated(tmp_path):
    atlas = build_atlas(load_model(planted_induction(tmp_path / "m", harmful=True)), Settings(seed=0))
    _check_contract(atlas)
    harmful = _roles(atlas)[(1, 1)]["induction"]  # attends like an induction head, writes the answer's negative
    assert harmful["score"] >= THRESHOLDS["induction"]
    assert harmful["ablation_effect"] < 0 and not harmful["validated"]
    assert harmful["kinds"]["direct"]["significant"] == "negative"
    assert _roles(atlas)[(1, 0)]["induction"]["validated"]


def test_decide_rejects_negative_or_insignificant_kinds():
    pos = {"effect": 1.0, "ci": [0.5, 1.5], "p": 0.001, "p_down": 1.0}
    neg = {"effect": -1.0, "ci": [-1.5, -0.5], "p": 1.0, "p_down": 0.001}
    weak = {"effect": 0.2, "ci": [-0.1, 0.5], "p": 0.3, "p_down": 0.9}
    assert validate.decide({"total": dict(pos)})[:2] == (True, ["total"])
    assert validate.decide({"total": dict(pos), "direct": dict(neg)})[0] is False
    assert validate.decide({"total": dict(weak), "direct": dict(weak)})[0] is False
    assert validate.decide({"total": dict(neg)})[0] is False
    assert validate.decide({"group": dict(pos, credited=False)})[0] is False


def test_holm_and_null_test():
    ps = [0.01, 0.04, 0.03, 0.005]
    # by hand: sorted 0.005×4 = 0.02, 0.01×3 = 0.03, 0.03×2 = 0.06, 0.04×1 = 0.04 → monotone 0.06
    assert validate.holm(ps) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = random.Random(0)
    null = [rng.gauss(1.0, 0.1) for _ in range(20)]
    inside = validate.evidence(torch.tensor([1.05, 0.95, 1.0, 1.02]), null, seed=0)
    assert inside["p_up"] > 0.05 and inside["p_down"] > 0.05  # a draw like the null's is no finding
    far = validate.evidence(torch.tensor([2.0, 2.1, 1.9, 2.05]), null, seed=0)
    assert far["p_up"] < 1e-4 and far["ci"][0] > 1.8
    assert math.isclose(far["null_mean"], sum(null) / 20)


def test_syntax_scores_are_net_of_the_fixed_offset_baseline(tiny_folder):
    loaded = load_model(tiny_folder("gpt2"))
    words = 6
    spans = [(i, i) for i in range(words)]
    # every "amod" arc joins a word to the one right before it: "attend to the previous word" gets them all
    sentences = [probe_inputs.Parsed(torch.randint(0, 96, (1, words)), spans, [(i, i + 1, "amod") for i in range(0, 4)])
                 for _ in range(3)]
    base = probes.syntax_baselines(loaded, sentences)
    assert base["amod"] == {"offset": -1, "accuracy": 1.0, "arcs": 12}
    n = words
    prev = torch.zeros(len(sentences), loaded.n_heads, n, n)
    prev[:, :, torch.arange(1, n), torch.arange(0, n - 1)] = 1.0  # every head: previous token
    prev[:, :, 0, 0] = 1.0
    cache = {f"blocks.{layer}.attn.pattern": prev for layer in range(loaded.n_layers)}
    raw = probes.syntax_scores(loaded, sentences, cache, net=False)["syntax:amod"]
    net = probes.syntax_scores(loaded, sentences, cache)["syntax:amod"]
    assert float(raw.min()) == 1.0 and float(net.max()) == 0.0  # right on every arc, and no better than position


def test_byte_level_probe_tokens_come_from_the_training_corpus(tmp_path):
    import json

    from glassbox.train.model import PRESETS, build_model

    cfg = dict(PRESETS["text-2l"]["config"], n_layer=1, n_embd=32, n_head=2)
    model = build_model(cfg)
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    model.save_pretrained(folder / "checkpoints")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"abcab cabba " * 50)
    (folder / "config.json").write_text(json.dumps({"glassbox_train": {"data": {"kind": "text", "path": str(corpus)}}}))
    loaded = load_model(folder / "checkpoints")
    pool, where = probe_inputs.token_pool(loaded)
    assert set(pool.tolist()) == set(b"abc ") and "training corpus" in where
    rep = probe_inputs.repeats(loaded, 2, 3, seed=0)
    assert set(rep.tokens.flatten().tolist()) <= set(b"abc ")
    text = probe_inputs.passages(loaded, 2, 8, seed=0)
    assert text is not None and torch.equal(text.tokens[:, 1:9], text.tokens[:, 9:17])


@pytest.mark.slow
def test_trained_induction_preset_validates_both_redundant_heads(tmp_path):
    from glassbox.train.loop import declare, train

    train(tmp_path, declare(preset="induction-2l", seed=0))
    last = sorted(glob.glob(str(tmp_path / "checkpoints" / "step-*.safetensors")))[-1]
    atlas = build_atlas(load_model(last), Settings(seed=0))
    _check_contract(atlas)
    roles = _roles(atlas)
    for head in (0, 1):
        ind = roles[(1, head)].get("induction")
        assert ind is not None and ind["validated"], roles[(1, head)]

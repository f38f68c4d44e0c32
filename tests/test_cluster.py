"""Attention-pattern clustering: planted previous-token and self heads must come out as their own clusters
(k chosen by silhouette), line up with the roles, and the CLI must run on the bundled SmolLM2."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from lens_models import planted_gpt2

from glassbox.cli import main
from glassbox.lens import cluster
from glassbox.run import load_model

PREVIOUS = [(0, 1), (1, 3)]
SELF = [(0, 2), (1, 0)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = planted_gpt2(tmp_path_factory.mktemp("cluster-gpt2"), previous=PREVIOUS, self_heads=SELF, writes=False)
    return load_model(folder)


def _rows():
    return torch.randint(0, 96, (6, 40), generator=torch.Generator().manual_seed(3))


def test_features_measure_where_heads_look(planted):
    feats = cluster.features(planted, _rows())
    assert feats.shape == (planted.n_layers * planted.n_heads, len(cluster.FEATURES))
    col = {name: i for i, name in enumerate(cluster.FEATURES)}
    for layer, head in PREVIOUS:
        assert feats[layer * 4 + head, col["offset:1"]] > 0.9
    for layer, head in SELF:
        assert feats[layer * 4 + head, col["offset:0"]] > 0.9
    # the offset bins partition the attention not on the sink
    total = feats[:, 1 : 1 + len(cluster.OFFSET_BINS)].sum(1)
    assert np.allclose(total, 1.0, atol=1e-4)
    assert (feats[:, col["entropy"]] <= 1 + 1e-6).all()


def test_planted_groups_are_the_clusters(planted):
    feats = cluster.features(planted, _rows())
    roles = ["none"] * 8
    for layer, head in PREVIOUS:
        roles[layer * 4 + head] = "previous_token"
    for layer, head in SELF:
        roles[layer * 4 + head] = "self"
    doc = {"heads": [{"layer": i // 4, "head": i % 4,
                      "roles": [] if r == "none" else [{"role": r, "score": 0.9, "validated": True}]}
                     for i, r in enumerate(roles)]}
    assert cluster.roles_from_atlas(doc, 2, 4) == roles
    report = cluster.analyze(feats, roles, 4, "auto", roles_source="test")
    assert report["k"] == 3
    assert report["agreement"]["adjusted_rand"] == pytest.approx(1.0)
    assert sorted(c["purity"] for c in report["clusters"]) == [1.0, 1.0, 1.0]
    # the only remark: the random heads form a cluster no role names (they attend nearly uniformly)
    assert len(report["disagreements"]) == 1 and "probes do not name" in report["disagreements"][0]
    assert "entropy 1.00" in report["disagreements"][0]
    assert report["agreement"]["adjusted_rand_named"] == pytest.approx(1.0)
    assert report["agreement"]["roles"]["self"] == {"heads": 2, "cluster": report["heads"][2]["cluster"],
                                                   "recall": 1.0, "precision": 1.0}
    # a deliberately wrong label is reported as a disagreement and lowers the agreement
    wrong = list(roles)
    wrong[0 * 4 + 1] = "self"
    bad = cluster.analyze(feats, wrong, 4, 3, roles_source="test")
    assert bad["agreement"]["adjusted_rand"] < 1.0
    assert any("head 0.1 (self)" in line for line in bad["disagreements"])


def test_silhouette_and_rand_on_known_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.1, (10, 2)) for c in ((0, 0), (5, 0), (0, 5), (5, 5))])
    k, scores = cluster.choose_k(x, "auto")
    assert k == 4 and scores[4] > 0.8 and scores[4] == max(scores.values())
    truth = [i // 10 for i in range(40)]
    assert cluster.adjusted_rand(truth, [(t + 1) % 4 for t in truth]) == pytest.approx(1.0)
    shuffled = rng.permutation(truth)
    assert abs(cluster.adjusted_rand(truth, shuffled.tolist())) < 0.2


@pytest.mark.skipif(importlib.util.find_spec("glassbox.heads.probes") is None, reason="heads probes not present")
def test_probe_roles_find_the_planted_heads(planted):
    roles = cluster.roles_from_probes(planted)
    for layer, head in PREVIOUS:
        assert roles[layer * 4 + head] == "previous_token"
    for layer, head in SELF:
        assert roles[layer * 4 + head] == "self"


@pytest.mark.slow
def test_cluster_cli_on_smollm2(reuse_smollm2, capsys, tmp_path):
    from glassbox import corpora

    texts = tmp_path / "texts.txt"
    texts.write_text(corpora.read_spec("pydoc")[:30000])
    png = tmp_path / "clusters.png"
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "smollm2-135m", "--texts", str(texts), "--k", "auto", "--n-texts", "8", "--seq-len", "48",
              "--json", "--png", str(png)])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert 2 <= doc["k"] <= 12 and len(doc["heads"]) == reuse_smollm2.n_layers * reuse_smollm2.n_heads
    assert sum(c["size"] for c in doc["clusters"]) == len(doc["heads"])
    assert doc["silhouette_by_k"][str(doc["k"])] == max(doc["silhouette_by_k"].values())
    if "contingency" in doc:
        assert sum(map(sum, doc["contingency"]["table"])) == len(doc["heads"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "smollm2-135m", "--texts", str(tmp_path / "missing.txt")])
    assert exc.value.code == 2

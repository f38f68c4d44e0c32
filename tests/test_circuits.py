"""Circuits: composition scores, the attention-logit decomposition and path patching, checked on a model whose
wiring is known by construction (a layer-0 previous-token head whose output the layer-1 induction head's keys
read), on tiny random models of every family, and against the dense computation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from tiny import tiny_model

from glassbox import weights
from glassbox.circuits import compose, path, why
from glassbox.run.load import ARCHITECTURES, Loaded

V, N, D, H = 12, 24, 64, 2  # vocab, positions, d_model, heads (d_head 32)
DH = D // H


def _basis(seed: int = 0) -> torch.Tensor:
    """Orthonormal directions ⟂ the all-ones vector, so GPT-2's LayerNorm centring leaves them alone."""
    g = torch.Generator().manual_seed(seed)
    a = torch.cat([torch.ones(D, 1), torch.randn(D, D - 1, generator=g)], 1)
    q, _ = torch.linalg.qr(a)
    return q[:, 1:]  # [D, D-1]


def induction_model() -> transformers.GPT2LMHeadModel:
    """GPT-2, 2 layers × 2 heads, attention only. Residual coordinates: T (token), P (position), S (previous
    token), J (junk). L0H0 attends to i−1 and copies its token T→S; L0H1 attends evenly and writes J; L1H0 reads
    its query from T and its key from S (induction), and copies the attended token into T; L1H1 is silent."""
    cfg = transformers.GPT2Config(vocab_size=V, n_layer=2, n_embd=D, n_head=H, n_positions=N,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    E = _basis()
    T, P, S, J = (list(range(o, o + n)) for o, n in ((0, V), (V, N), (V + N, V), (2 * V + N, 8)))
    zero = lambda: torch.zeros(DH, D)  # noqa: E731
    wq, wk, wv, wo = ([[zero() for _ in range(H)] for _ in range(2)] for _ in range(4))
    wo = [[torch.zeros(D, DH) for _ in range(H)] for _ in range(2)]
    g = 2.5
    for p in range(N):  # L0H0: query position i, key position j+1: peaks at j = i − 1
        wq[0][0][p] = g * E[:, P[p]]
        if p + 1 < DH:
            wk[0][0][p + 1] = g * E[:, P[p]]
    for t in range(V):
        wv[0][0][t] = E[:, T[t]]
        wo[0][0][:, t] = 2 * E[:, S[t]]  # T_t at i−1 → S_t at i
        wv[0][1][t] = E[:, T[t]]
        wo[0][1][:, t % 8] += 0.5 * E[:, J[t % 8]]
        wq[1][0][t] = 1.6 * g * E[:, T[t]]  # induction: query token t, key "previous token was t"
        wk[1][0][t] = g * E[:, S[t]]
        wv[1][0][t] = E[:, T[t]]
        wo[1][0][:, t] = 12 * E[:, T[t]]
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.stack([E[:, T[t]] for t in range(V)]))
        model.transformer.wpe.weight.copy_(torch.stack([E[:, P[p]] for p in range(N)]))
        for lyr, block in enumerate(model.transformer.h):
            for h in range(H):
                cols = slice(h * DH, (h + 1) * DH)
                block.attn.c_attn.weight[:, cols] = wq[lyr][h].T
                block.attn.c_attn.weight[:, D:][:, cols] = wk[lyr][h].T
                block.attn.c_attn.weight[:, 2 * D :][:, cols] = wv[lyr][h].T
                block.attn.c_proj.weight[cols, :] = wo[lyr][h].T
            block.attn.c_attn.bias.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    model.config._attn_implementation = "eager"
    return model


def _loaded(model, name="hand-built") -> Loaded:
    return Loaded(model, None, ARCHITECTURES[model.config.model_type], name, False, Path(name))


@pytest.fixture(scope="module")
def hand():
    return _loaded(induction_model())


def _repeated(seed=0, half=10):
    g = torch.Generator().manual_seed(seed)
    block = torch.randperm(V, generator=g)[:half]
    return torch.cat([block, block]).tolist()


def test_hand_built_model_does_induction(hand):
    """The construction works: the model predicts the second copy (so the checks below test a real circuit)."""
    out = path.run_paths(hand, [path.parse_path("0.1:1.0.v")], n_seq=4, half=10)
    assert out["paths"][0]["clean_induction_score"] > 0.8
    assert out["paths"][0]["clean_loss_second_copy"] < 0.5


def test_top_k_sender_is_the_previous_token_head(hand):
    comp = compose.composition(weights.all_heads(hand.model), dtype=torch.float64)
    top = comp.top(1, 0, kind="k", n=2)
    assert top[0]["from"] == [0, 0]
    k = comp.score[compose.KINDS.index("k"), 1, 0]
    assert k[0, 0] > 0.2 and k[0, 1] < 0.02  # the junk head writes J, which no key reads
    assert comp.score[compose.KINDS.index("q"), 1, 0, 0, 0] < 0.02  # the query reads T, not S
    assert comp.z[compose.KINDS.index("k"), 1, 0, 0, 0] > 5
    assert comp.pairs()[0]["score"] >= comp.pairs()[-1]["score"]


def test_path_patching_the_k_path_alone_removes_induction(hand):
    specs = [path.parse_path(s) for s in ("0.0:1.0.k", "0.0:1.0.q", "0.1:1.0.k")]
    out = {r["path"]: r for r in path.run_paths(hand, specs, n_seq=4, half=10, batch_size=4)["paths"]}
    k, q, junk = out["0.0:1.0.k"], out["0.0:1.0.q"], out["0.1:1.0.k"]
    assert k["induction_score"] < 0.3 * k["clean_induction_score"]
    assert k["loss_effect"] > 1.0
    assert abs(q["induction_effect"]) < 0.05 and abs(junk["induction_effect"]) < 0.05


def test_heads_why_names_the_previous_token_head(hand):
    ids = _repeated()
    doc = why.decompose(hand, ids, 1, 0, keys=1, queries=[15])
    pos = doc["positions"][0]
    assert pos["key"] == 6  # token 15 = token 5; the token after the earlier occurrence is at 6
    assert pos["parts"][0]["component"] == "L0.H0"
    assert pos["query_parts"][0]["component"] == "embed"  # the query reads the current token
    for side in ("parts", "query_parts"):
        assert abs(sum(p["value"] for p in pos[side]) - pos["logit"]) <= 1e-4 * abs(pos["logit"])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3", "qwen2"])
def test_parts_add_up_to_the_logit(arch):
    model = tiny_model(arch, random_norms=True)
    loaded = _loaded(model, arch)
    ids = torch.randint(0, 96, (14,), generator=torch.Generator().manual_seed(1)).tolist()
    doc = why.decompose(loaded, ids, 1, 1, keys=3)
    assert doc["checks"]["pattern"] < 1e-5  # softmax of the logits we decompose is the model's own pattern
    for pos in doc["positions"]:
        scale = max(abs(p["logit"]) for p in doc["positions"] if p["query"] == pos["query"])
        for side in ("parts", "query_parts"):
            assert abs(sum(p["value"] for p in pos[side]) - pos["logit"]) <= 1e-4 * max(scale, 1e-6)
    names = {p["component"] for p in doc["positions"][0]["parts"]}
    assert {"embed", "L0.H0", "L0.H3", "L0.mlp"} <= names


def test_bert_is_refused():
    loaded = _loaded(tiny_model("bert"), "bert")
    with pytest.raises(why.BadInput):
        why.decompose(loaded, [1, 2, 3], 1, 0)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma3", "qwen2"])
def test_gram_scores_match_the_dense_computation(arch):
    aw = weights.all_heads(tiny_model(arch, random_norms=True))
    comp = compose.composition(aw, dtype=torch.float64)
    for k, kind in enumerate(compose.KINDS):
        for s in [(0, 0), (0, 3)]:
            for r in [(1, 1), (1, 2)]:
                dense = compose.dense_score(aw, kind, s, r)
                assert comp.score[k, r[0], r[1], s[0], s[1]].item() == pytest.approx(dense, rel=1e-6)
    assert torch.isnan(comp.score[:, 0]).all()  # nothing sends into layer 0


def test_scores_invariant_to_rescaling_inside_a_head():
    aw = weights.all_heads(tiny_model("llama", random_norms=True))
    before = compose.composition(aw, dtype=torch.float64).score
    aw.W_Q = aw.W_Q * 3.0
    aw.W_K = aw.W_K / 3.0
    aw.W_O = aw.W_O * 7.0
    after = compose.composition(aw, dtype=torch.float64).score
    assert torch.allclose(before.nan_to_num(), after.nan_to_num(), atol=1e-5)


def test_null_spread_matches_sampled_rotations():
    """z's denominator: the analytic sd of score² under a Haar rotation of the sender vs 400 sampled ones."""
    aw = weights.all_heads(tiny_model("llama", random_norms=True, hidden=64))
    comp = compose.composition(aw, dtype=torch.float64)
    recv, send = compose.factors(aw)
    d = send.shape[-2]
    g = torch.Generator().manual_seed(0)
    u, s = recv[1, 1, 2], send[0, 1]  # K-composition 0.1 → 1.2
    samples = []
    for _ in range(400):
        rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        samples.append((torch.linalg.norm(u @ rot @ s) / (torch.linalg.norm(u) * torch.linalg.norm(s))) ** 2)
    samples = torch.stack(samples)
    assert samples.mean().item() == pytest.approx(1 / d, rel=0.1)
    analytic_sd2 = (comp.null_sd[1, 1, 2, 0, 1].item() * 2 / math.sqrt(d))
    assert samples.std().item() == pytest.approx(analytic_sd2, rel=0.3)


def test_path_spec_is_validated():
    assert path.parse_path("16.0,16.3:18.6.k").senders == ((16, 0), (16, 3))
    for bad in ("16.0:18.6", "18.0:16.6.k", "16.0,16.0:18.6.v", "a:b.c.k"):
        with pytest.raises(path.BadInput):
            path.parse_path(bad)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_circuits_why_and_path(tmp_path):
    folder = tmp_path / "hand"
    induction_model().save_pretrained(folder)
    r = _cli("circuits", str(folder), "--json", "--out", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["n_layers"] == 2 and doc["n_heads"] == 2
    assert doc["top"]["1.0"][0]["from"] == [0, 0] and doc["top"]["1.0"][0]["kind"] == "k"
    first = doc["pairs"][0]
    assert first["bytes"]["receiver"]["k"] and first["bytes"]["sender"]["o"]
    assert (tmp_path / "c" / "circuits.png").stat().st_size > 1000
    r = _cli("heads", "why", str(folder), "1.0", "--text", " ".join(map(str, _repeated())), "--json",
             "--png", str(tmp_path / "why.png"))
    assert r.returncode == 0, r.stderr
    why_doc = json.loads(r.stdout)
    assert {"layer", "head", "tokens", "positions"} <= set(why_doc)
    assert (tmp_path / "why.png").is_file()
    r = _cli("patch", str(folder), "--path", "0.0:1.0.k", "--random", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["paths"][0]["induction_effect"] < -0.5


def test_cli_tables(tmp_path, capsys):
    """Without --json both commands print their table (in-process): the JSON's first pair, the why rows."""
    from glassbox.cli import main

    def cli(*args: str) -> str:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        assert exc.value.code == 0, err
        return out

    folder = tmp_path / "hand"
    induction_model().save_pretrained(folder)
    out = cli("circuits", str(folder), "--out", str(tmp_path / "c"))
    pairs = json.loads((tmp_path / "c" / "circuits.json").read_text())["pairs"]
    first = pairs[0]
    lines = [ln for ln in out.splitlines() if ln.startswith("│")]
    cells = [c.strip() for c in lines[0].strip("│").split("│")]
    assert "strongest composition" in out and len(lines) == min(20, len(pairs)) > 0
    assert cells[:4] == ["{}.{}".format(*first["from"]), "{}.{}".format(*first["to"]), first["kind"],
                         f"{first['score']:.3f}"]
    out = cli("heads", "why", str(folder), "1.0", "--text", " ".join(map(str, _repeated())), "--png",
              str(tmp_path / "why.png"))
    rows = [[c.strip() for c in ln.strip("│").split("│")] for ln in out.splitlines() if ln.startswith("│")]
    assert "head 1.0: what makes each logit" in out and 0 < len(rows) <= 15
    assert all(len(row) == 6 and float(row[2]) > 0 for row in rows)


def test_cli_bad_path_fails_before_loading(tmp_path):
    r = _cli("patch", str(tmp_path / "missing"), "--path", "3.0:1.0.k")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "earlier layer" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The induction-2l preset (seed 0; 200 of its 350 steps: the phase change is at ~steps 60-105) and its
    timeline (no ablations: composition needs none)."""
    from glassbox.timeline.analyze import analyze
    from glassbox.train.loop import declare, train

    run = tmp_path_factory.mktemp("circuits-run") / "s0"
    train(run, declare(preset="induction-2l", seed=0, steps=200))
    return run, analyze(run, ablate=False)


def test_trained_induction_heads_k_compose_with_the_previous_token_head(trained):
    """At the last checkpoint each induction head's top K sender is the layer-0 previous-token head, and that
    score rises across the induction phase change the timeline finds."""
    run, doc = trained
    last = doc["checkpoints"][-1]
    scores = {(h["layer"], h["head"]): h["scores"] for h in last["heads"]}
    prev = max((k for k in scores if k[0] == 0), key=lambda k: scores[k]["previous_token"])
    inductors = [k for k in scores if k[0] == 1 and scores[k]["induction"] >= 0.4]
    assert inductors, "the preset grew no induction head"
    from glassbox.train import checkpoints as ck
    from glassbox.train.model import build_model

    decl = json.loads((run / "config.json").read_text())["glassbox_train"]
    model = build_model(decl["model_config"], decl["attention_only"]).eval()
    ck.load_weights(model, ck.list_checkpoints(run)[-1][1])
    comp = compose.composition(weights.all_heads(model), dtype=torch.float64)
    changes = [c for c in doc["phase_changes"] if c["role"] == "induction"]
    assert changes
    step = min(c["step"] for c in changes)
    steps = [c["step"] for c in doc["checkpoints"]]
    for lr, hr in inductors:
        assert comp.top(lr, hr, kind="k", n=1)[0]["from"] == list(prev)
        tracked = [i for i, p in enumerate(last["composition"])
                   if p["kind"] == "k" and p["from"] == list(prev) and p["to"] == [lr, hr]]
        assert tracked, "the timeline does not track the induction head's top K pair"
        series = [c["composition"][tracked[0]]["score"] for c in doc["checkpoints"]]
        before = [s for s, st in zip(series, steps, strict=True) if st < step]
        after = [s for s, st in zip(series, steps, strict=True) if st > step]
        assert max(after) > max(before) + 0.03  # rises across the phase change


def test_timeline_png_has_the_composition_panel(trained, tmp_path):
    from glassbox.timeline.plots import plot_runs
    from glassbox.train.store import read_table

    run, doc = trained
    png = plot_runs([doc], [read_table(run, "metrics")], tmp_path / "t.png")
    assert png.stat().st_size > 5000
    assert all(len(c["composition"]) == len(doc["checkpoints"][-1]["composition"]) for c in doc["checkpoints"])


@pytest.mark.slow
def test_heads_why_on_smollm2(smollm2):
    """The real model: GQA, RMSNorm, RoPE; the parts reproduce the logits and the pattern."""
    ids = smollm2.tokenizer(" one two three four five six one two three four five six",
                            add_special_tokens=False)["input_ids"]
    ids = [smollm2.bos_id, *ids]
    doc = why.decompose(smollm2, ids, 4, 0, keys=1)
    assert doc["checks"]["pattern"] < 1e-4 and doc["checks"]["parts_sum"] <= why.TOLERANCE
    assert len(doc["positions"][0]["parts"]) == 1 + 4 * (9 + 1)  # embed, 4 layers × (9 heads + mlp)

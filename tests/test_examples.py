"""`writes --examples`: exact replay, per-example contributions checked by brute force, and the token data kind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from glassbox.timeline import examples  # noqa: E402
from glassbox.train import replay  # noqa: E402
from glassbox.train.loop import declare, train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ex") / "run"
    train(out, declare(preset="induction-2l", seed=3, steps=8, save_every=4))
    return out


def test_replay_reproduces_the_saved_checkpoints(tiny_run: Path):
    state = replay.setup(tiny_run)
    replay.advance(state, 8)
    diff = replay.check_against_checkpoint(state)
    assert diff is not None and diff < 1e-6


def test_head_slices_are_the_heads_own(tiny_run: Path):
    state = replay.setup(tiny_run)
    decl, model = state["decl"], state["model"]
    h0 = examples.head_params(model, decl["architecture"], decl["model_config"], 1, 0)
    h1 = examples.head_params(model, decl["architecture"], decl["model_config"], 1, 1)
    assert set(h0) == set(h1) and all(".h.1." in n for n in h0)
    w = dict(model.named_parameters())
    size0 = examples._flat({n: w[n] for n in h0}, h0).numel()
    # Q, K, V columns (+ their biases) and O rows of one head of width 32 in a 64-wide model
    assert size0 == 4 * 32 * 64 + 3 * 32
    mark = {n: torch.zeros_like(w[n]) for n in h0}
    for n, idx in h0.items():
        for index in idx:
            mark[n][index] += 1
    for n, idx in h1.items():
        for index in idx:
            assert float(mark[n][index].abs().sum()) == 0.0  # disjoint from head 0's blocks


def test_contributions_match_brute_force_and_sum_to_the_batch(tiny_run: Path):
    got = examples.contributions(tiny_run, 1, 0, (4, 5), quiet=True)
    rows = got["rows"]
    assert len(rows) == 2 * 64
    # brute force: one backward per row at the replayed weights, projected on the replayed update
    state = replay.setup(tiny_run)
    decl, model = state["decl"], state["model"]
    slices = examples.head_params(model, decl["architecture"], decl["model_config"], 1, 0)
    named = dict(model.named_parameters())
    replay.advance(state, 3)
    for step in (4, 5):
        w0 = examples._flat({n: named[n].detach() for n in slices}, slices).clone()
        batch = state["data"].batch(step)
        grads = []
        for i in range(batch.tokens.shape[0]):
            model.zero_grad(set_to_none=True)
            replay.lm_loss(model, batch.tokens[i : i + 1]).backward()
            grads.append(examples._flat({n: named[n].grad for n in slices}, slices).clone())
        replay.advance(state, step)
        u = examples._flat({n: named[n].detach() for n in slices}, slices) - w0
        brute = [float(-(g @ u) / u.norm() / len(grads)) for g in grads]
        mine = [r["contribution"] for r in rows if r["step"] == step]
        assert mine == pytest.approx(brute, rel=1e-4, abs=1e-7)
        total = next(r["batch_total"] for r in rows if r["step"] == step)
        assert sum(mine) == pytest.approx(total, rel=1e-4, abs=1e-7)  # Σ_i c_i = −⟨∇L_batch, û⟩
        assert abs(total) > 1e-6


def test_writes_examples_cli(tiny_run: Path):
    proc = subprocess.run([sys.executable, "-m", "glassbox.cli", "writes", str(tiny_run), "--examples", "--head",
                           "1.0", "--steps", "2-3", "--top", "3", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["top"]) == 3 and doc["steps"] == [2, 3]
    c = [r["contribution"] for r in doc["top"]]
    assert c == sorted(c, reverse=True)
    bad = subprocess.run([sys.executable, "-m", "glassbox.cli", "writes", str(tiny_run), "--examples", "--head",
                          "7.0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
    for opt in (["--random-sets", "0"], ["--replace-share", "1.5"]):  # refused before any replay, in one line
        bad = subprocess.run([sys.executable, "-m", "glassbox.cli", "writes", str(tiny_run), "--examples", "--head",
                              "1.0", "--retrain", *opt], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and opt[0] in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_token_data_repeats_heldout_and_map(tmp_path: Path):
    from glassbox.train.batches import TokenData, decoder

    corpus = tmp_path / "c.txt"
    words = ["alpha", "beta", "gamma", "delta", "the", "king", "said", "unto", "him", "and"]
    g = torch.Generator().manual_seed(0)
    corpus.write_text(" ".join(words[int(i)] for i in torch.randint(0, len(words), (6000,), generator=g)))
    try:
        d = TokenData(str(corpus), 32, 8, 0, 64, repeat_rate=1.0)
    except Exception as exc:  # the bundled tokenizer is an installed package; without it there is nothing to test
        pytest.skip(f"bundled tokenizer unavailable: {exc}")
    b1, b2 = d.batch(7), d.batch(7)
    assert torch.equal(b1.tokens, b2.tokens) and not torch.equal(b1.tokens, d.batch(8).tokens)
    for r in range(8):  # every row carries one span whose second copy is marked and equals the first
        pos = b1.repeated[r].nonzero().flatten()
        span = len(pos)
        assert 8 <= span <= 16
        first, second = pos[0] + 1 - span, pos[0] + 1
        assert torch.equal(b1.tokens[r, first : first + span], b1.tokens[r, second : second + span])
    probe = d.probe(n=4)
    assert torch.equal(probe[:, :16], probe[:, 16:])
    # the map turns classes back into the corpus's text
    run = tmp_path / "run"
    run.mkdir()
    (run / "vocab.json").write_text(json.dumps(d.vocab_map()))
    text = decoder(run)(d.stream[:40].tolist())
    assert "<rare>" not in text and text.strip().split()[1] in words


def test_retrain_replaces_the_rows_it_says(tiny_run: Path):
    ranked = examples.rank(tiny_run, 1, 0, (3, 4), top=2, quiet=True)
    assert sorted(map(tuple, ranked["ranked_rows"])) == [(s, r) for s in (3, 4) for r in range(64)]
    whole = examples.retrain(tiny_run, 1, 0, ranked, until=6, every=1, quiet=True, share=1.0)
    # every row of the window replaced, by the ranking or at random: the same set, the same training
    assert whole["replaced_rows"] == 128
    assert whole["top_replaced"]["scores"] == whole["random_replaced"]["scores"]
    assert whole["top_replaced"]["scores"][-1] != whole["baseline"]["scores"][-1]
    assert whole["baseline"]["steps"] == [2, 3, 4, 5, 6]
    part = examples.retrain(tiny_run, 1, 0, ranked, until=6, every=1, quiet=True, share=0.25, n_random=2)
    assert part["replaced_rows"] == 32 and part["baseline"]["scores"] == whole["baseline"]["scores"]
    # two different random sets of 32 rows: the first is the one under the old key, and they train differently
    first, second = part["random_sets"]
    assert first == part["random_replaced"] and first["scores"] != second["scores"]


def test_midpoint_crossing_is_the_last_rise_through_the_level():
    steps = [0, 10, 20, 30, 40]
    assert examples.midpoint_crossing(steps, [0.2, 0.4, 0.2, 0.6, 0.7], 0.3) == 22.5  # dipped again at 20: the last rise
    assert examples.midpoint_crossing(steps, [0.35, 0.4, 0.5, 0.6, 0.7], 0.3) == 0.0  # above it from the start
    assert examples.midpoint_crossing(steps, [0.1, 0.2, 0.4, 0.5, 0.2], 0.3) is None  # ends below it


def test_text_induction_preset_on_another_corpus_trains_and_probes_held_out_text(tmp_path: Path):
    from glassbox.timeline.analyze import analyze

    corpus = tmp_path / "c.txt"
    words = ["and", "the", "king", "of", "Judah", "went", "down", "to", "see", "Joram", "son", "Ahab"]
    g = torch.Generator().manual_seed(1)
    corpus.write_text(" ".join(words[int(i)] for i in torch.randint(0, len(words), (5000,), generator=g)))
    try:
        decl = declare(preset="text-induction", corpus=str(corpus), steps=3, batch_size=4)
    except Exception as exc:
        pytest.skip(f"bundled tokenizer unavailable: {exc}")
    assert decl["data"]["kind"] == "tokens" and decl["data"]["repeat_rate"] == 0.5
    out = tmp_path / "run"
    train(out, decl)
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["rare"] == 1023 and len(vocab["ids"]) <= 1023
    doc = analyze(out, ablate=False)
    assert len(doc["checkpoints"]) >= 2
    assert all(0.0 <= h["scores"]["induction"] <= 1.0 for c in doc["checkpoints"] for h in c["heads"])

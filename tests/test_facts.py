"""glassbox facts: causal tracing (partial runs equal full forwards; the Colosseum against an independent
tracing written from the paper), the writing neurons (zeroing vs random sets, their bytes), the rank-one edit
(ΔW k* = δ, a loadable new folder, a diff naming one tensor), and the command line's bad input."""

from __future__ import annotations

import json

import pytest
import torch
from facts_reference import mlp_window_column
from webkit import tiny_with_tokenizer

from glassbox import cli
from glassbox.facts import edit as fe
from glassbox.facts.neurons import neuron_bytes, peak_layer, writing_neurons
from glassbox.facts.trace import Settings, subject_tokens, trace, window_layers
from glassbox.run import hooks, load_model, partial

PROMPT = "the big red dog sat on the mat and then it"
SUBJECT = "big red dog"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(tiny_with_tokenizer("llama", tmp_path_factory.mktemp("facts-tiny")))


def _full(loaded, ids, subj, noise, target, edits):
    """The same restoration by full forwards through glassbox.run.hooks (no partial runs)."""
    x = torch.tensor([ids]).repeat(noise.shape[0], 1)
    _, clean = hooks.run_with_cache(loaded, torch.tensor([ids]), names="blocks.0.resid_pre")
    corrupt = hooks.ResidEdit(0, "resid_pre", clean["blocks.0.resid_pre"][0, subj] + noise, positions=subj)
    logits = hooks.run(loaded, x, edits=[corrupt, *edits])
    return float(logits[:, -1].softmax(-1)[:, target].mean())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_run_from_equals_full_forward(tmp_path, arch):
    loaded = load_model(tiny_with_tokenizer(arch, tmp_path))
    x = torch.randint(1, 60, (2, 9))
    logits, cache, past = partial.run_recording(loaded, x, "blocks.*.resid_pre")
    for layer, t in [(0, 0), (1, 4), (1, 8)]:
        out = partial.run_from(loaded, layer, cache[f"blocks.{layer}.resid_pre"][:, t:].repeat(2, 1, 1),
                               partial.expand_past(loaded, past, t, 2))
        assert torch.allclose(out[:, -1], logits[:, -1].repeat(2, 1), atol=1e-5)


def test_trace_cells_equal_full_forwards(tiny):
    s = Settings(samples=3, min_p=0.0, window=2)
    doc = trace(tiny, PROMPT, SUBJECT, None, s)
    ids, subj = subject_tokens(tiny, PROMPT, SUBJECT)
    assert doc["subject"]["tokens"] == subj == [1, 2, 3]
    target = doc["answer"]["id"]
    noise = torch.randn(3, len(subj), 32, generator=torch.Generator().manual_seed(0)) * doc["noise"]["scale"]
    assert doc["answer"]["p_corrupt"] == pytest.approx(_full(tiny, ids, subj, noise, target, []), abs=1e-5)
    _, clean = hooks.run_with_cache(tiny, torch.tensor([ids]))
    for layer, t in [(0, 3), (1, 2), (1, 7)]:
        z = clean[f"blocks.{layer}.attn.z"][0, t]
        cases = {
            "resid": [hooks.ResidEdit(layer, "resid_post", clean[f"blocks.{layer}.resid_post"][0, t], [t])],
            "mlp": [hooks.MlpEdit(layer, clean[f"blocks.{layer}.mlp.out"][0, t], [t])],
            "attn": [hooks.HeadEdit(layer, h, z[h], [t]) for h in range(z.shape[0])],
            "mlp_window": [hooks.MlpEdit(w, clean[f"blocks.{w}.mlp.out"][0, t], [t])
                           for w in window_layers(layer, 2, 2)],
        }
        for kind, edits in cases.items():
            want = _full(tiny, ids, subj, noise, target, edits)
            assert doc["restore"][kind][layer][t] == pytest.approx(want, abs=1e-5), (kind, layer, t)
    # before the subject nothing differs from the corrupted run
    assert doc["restore"]["resid"][1][0] == doc["answer"]["p_corrupt"]
    # cells shared among forked worker processes: every number and the forward count are the same
    split = trace(tiny, PROMPT, SUBJECT, None, Settings(samples=3, min_p=0.0, window=2, workers=3))
    assert split["restore"] == doc["restore"] and split["peak"] == doc["peak"]
    assert split["cost"]["forwards"] == doc["cost"]["forwards"]


def test_neuron_bytes_point_at_the_weights(tiny):
    from glassbox.checkpoint import open_checkpoint

    where = neuron_bytes(tiny, 1, [5])[5]
    assert set(where) == {"gate", "in", "out"}
    with open_checkpoint(tiny.source) as ckpt:
        for part, loc in where.items():
            w = ckpt.tensor(loc["tensor"])
            raw = open(ckpt.tensors[loc["tensor"]].file, "rb").read()
            runs = [raw[loc["offset"] + i * (loc["stride"] or 0):][:loc["length"]] for i in range(loc["count"])]
            values = torch.frombuffer(bytearray(b"".join(runs)), dtype=torch.float32)
            expect = w[5] if part in ("gate", "in") else w[:, 5]
            assert torch.equal(values, expect.float()), part


def test_rank_one_update_installs_delta():
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(200, 12, generator=g)
    C = keys.T @ keys / 200
    k, delta = torch.randn(12, generator=g), torch.randn(5, generator=g)
    dW = fe.rank_one(C, k, delta, ridge=0.0)
    assert torch.allclose(dW @ k, delta, atol=1e-4)
    assert torch.linalg.matrix_rank(dW) == 1


def test_edit_writes_new_folder_and_diff(tiny, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(["the cat sat on the mat and then it ran to the store"] * 60))
    settings = fe.EditSettings(corpus=str(corpus), cov_tokens=256, steps=30, stop_p=0.5,
                               fluency_corpus=str(corpus), fluency_tokens=64)
    out = tmp_path / "edited model é"
    # layer 0: a write at the subject's token reaches the last position only through a later layer's attention
    doc = fe.edit(tiny, PROMPT, SUBJECT, " store", out, 0, ["big red dog went to the"], [("one two", " three")],
                  settings)
    assert doc["tensor"] == "model.layers.0.mlp.down_proj.weight"
    assert [d["tensor"] for d in doc["diff"]] == [doc["tensor"]]
    assert doc["diff"][0]["bytes_changed"] > 0
    edited = load_model(out)
    ids = subject_tokens(tiny, PROMPT, SUBJECT)[0]
    probs = hooks.run(edited, torch.tensor([ids]))[0, -1].softmax(-1)
    assert probs[edited.tokenizer(" store")["input_ids"][0]].item() == pytest.approx(doc["efficacy"]["p_new"],
                                                                                   abs=1e-5)
    # the source model in memory is unchanged
    assert fe.byte_diff(tiny, out)[0]["tensor"] == doc["tensor"]
    with pytest.raises(Exception, match="in place"):
        fe.check_out(tiny.source.parent / "sub", tiny.source)


def test_bad_input_exits_2(tmp_path, capsys):
    cases = [
        ["facts", "smollm2-135m", "--prompt", "The Colosseum is in", "--subject", "Eiffel"],
        ["facts", "smollm2-135m", "--prompt", "x is y", "--samples", "0"],
        ["facts", "smollm2-135m", "--prompt", "x is y", "--workers", "0"],
        ["facts", "smollm2-135m", "--prompt", "x is y", "--kinds", "mlp,neurons"],
        ["facts", "smollm2-135m", "--prompt", "x is y", "--png", str(tmp_path / "a.txt")],
        ["facts", "edit", "smollm2-135m", "--prompt", "x is y", "--subject", "x", "--new", " z", "--out",
         str(tmp_path / "f.txt")],
        ["facts", "edit", "smollm2-135m", "--prompt", "x is y", "--subject", "q", "--new", " z", "--out",
         str(tmp_path / "o")],
        ["facts", "edit", "smollm2-135m", "--prompt", "x is y", "--subject", "x", "--new", " z", "--out",
         str(tmp_path / "o"), "--corpus", "brown:"],
    ]
    (tmp_path / "f.txt").write_text("a file")
    for argv in cases:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), argv


@pytest.mark.slow
def test_colosseum_peak_matches_independent_tracing(smollm2):
    prompt, subject = "The Colosseum is located in the city of", "The Colosseum"
    ids, subj = subject_tokens(smollm2, prompt, subject)
    doc = trace(smollm2, prompt, subject, None, Settings(kinds=("mlp_window",), tokens=(subj[-1],)))
    assert doc["answer"]["token"] == " Rome"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small forwards: one thread is faster, much faster on a busy machine
    try:
        p_clean, p_corrupt, column = mlp_window_column(smollm2.model, ids, subj, doc["answer"]["id"], subj[-1],
                                                       doc["window"], samples=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert doc["answer"]["p_clean"] == pytest.approx(p_clean, abs=1e-4)
    assert doc["answer"]["p_corrupt"] == pytest.approx(p_corrupt, abs=1e-3)
    mine = [row[subj[-1]] for row in doc["restore"]["mlp_window"]]
    ref_peak = max(range(len(column)), key=column.__getitem__)
    assert abs(peak_layer(doc) - ref_peak) <= 2
    assert max(abs(a - b) for a, b in zip(mine, column, strict=True)) < 1e-3
    assert column[ref_peak] - p_corrupt > 0.3 * (p_clean - p_corrupt)  # the restoration is a real effect

    found = writing_neurons(smollm2, ids, subj[-1], doc["answer"]["id"], peak_layer(doc))
    assert found["zeroing"]["beats"] >= 19
    assert found["neurons"][0]["bytes"]["out"]["tensor"] == f"model.layers.{peak_layer(doc)}.mlp.down_proj.weight"


@pytest.mark.slow
def test_cli_trace_json(reuse_smollm2, capsys, tmp_path):
    png = tmp_path / "trace é.png"
    with pytest.raises(SystemExit) as e:
        cli.main(["facts", "smollm2-135m", "--prompt", "The Eiffel Tower is located in the city of", "--subject",
                  "The Eiffel Tower", "--samples", "2", "--kinds", "mlp_window,resid", "--json", "--png", str(png)])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"]["token"] == " Paris" and doc["answer"]["p_clean"] > doc["answer"]["p_corrupt"]
    assert len(doc["restore"]["resid"]) == 30 and len(doc["restore"]["resid"][0]) == len(doc["tokens"])
    # restoring the whole residual stream at the last token of the last layer gives back the clean run
    assert doc["restore"]["resid"][29][-1] == pytest.approx(doc["answer"]["p_clean"], abs=1e-4)
    assert doc["neurons"] and png.stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        cli.main(["facts", "smollm2-135m", "--prompt", "The Eiffel Tower is located in the city of", "--answer",
                  " Berlin"])
    assert e.value.code == 2


@pytest.mark.slow
def test_edit_colosseum_to_paris(smollm2, tmp_path):
    from glassbox.facts.factset import candidates, find

    fact = find("The Colosseum is located in the city of")
    others = [(f.prompt, f.answer) for f in candidates() if f.subject != fact.subject][:5]
    doc = fe.edit(smollm2, fact.prompt, fact.subject, " Paris", tmp_path / "edited", 6, list(fact.paraphrases),
                  others, fe.EditSettings(cov_tokens=4096))
    assert doc["efficacy"]["success"] and doc["efficacy"]["top1"] == " Paris"
    assert [d["tensor"] for d in doc["diff"]] == ["model.layers.6.mlp.down_proj.weight"]
    assert sum(s["kept"] for s in doc["specificity"]) >= 4
    assert doc["fluency"]["ratio"] < 1.05
    # the unedited model in memory answers as before
    assert fe.top1(smollm2, [fact.prompt])[0][0] == smollm2.tokenizer(" Rome")["input_ids"][0]

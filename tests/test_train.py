"""glassbox train: real HF models, the write ledger checked against the checkpoints, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from glassbox.train import checkpoints as ck  # noqa: E402
from glassbox.train.batches import PeriodicData  # noqa: E402
from glassbox.train.loop import declare, train  # noqa: E402
from glassbox.train.model import PRESETS, build_model, initialize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def glassbox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    train(out, declare(preset="induction-2l", seed=3, steps=200, save_every=75))
    return out


def test_run_directory_layout(short_run: Path):
    decl = json.loads((short_run / "config.json").read_text())
    assert decl["model_type"] == "gpt2" and decl["glassbox_train"]["init"] == "wide"
    assert decl["init"]["scheme"] == "wide" and decl["glassbox_train"]["seed"] == 3
    steps = [s for s, _ in ck.list_checkpoints(short_run)]
    assert steps[0] == 0 and steps[-1] == 200
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    assert gaps[0] < gaps[-1], "checkpoints should be denser early"
    assert (short_run / "ledger.parquet").is_file() and (short_run / "metrics.parquet").is_file()
    assert not (short_run / "parts").exists()
    metrics = pq.read_table(short_run / "metrics.parquet").to_pydict()
    assert metrics["step"] == list(range(1, 201))


def test_checkpoint_metadata_and_reload(short_run: Path):
    path = ck.checkpoint_path(short_run, 200)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert int(meta["step"]) == 200 and int(meta["seed"]) == 3
    assert int(meta["data_position"]) == 200 * PRESETS["induction-2l"]["train"]["batch_size"]
    metrics = pq.read_table(short_run / "metrics.parquet").to_pydict()
    assert float(meta["loss"]) == pytest.approx(metrics["loss"][-1])
    # a plain HF model built from the config beside the checkpoints reproduces the trained model:
    # the zeroed MLPs are in the file, so nothing random is left to the loader
    import transformers

    cfg = transformers.GPT2Config.from_dict(json.loads((short_run / "checkpoints" / "config.json").read_text()))
    plain = transformers.GPT2LMHeadModel(cfg).eval()
    missing, unexpected = plain.load_state_dict(load_file(str(path)), strict=False)
    assert not unexpected and all(m.endswith("attn.bias") for m in missing)
    ours = build_model(PRESETS["induction-2l"]["config"], attention_only=True).eval()
    ck.load_weights(ours, path)
    x = torch.randint(0, 32, (2, 32))
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, ours(x).logits, atol=1e-5)


def test_checkpoint_opens_with_the_project_reader(short_run: Path):
    from glassbox.checkpoint import open_checkpoint

    with open_checkpoint(ck.checkpoint_path(short_run, 10)) as c:
        assert c.config is not None and c.config["n_layer"] == 2
        assert "transformer.h.1.attn.c_attn.weight" in c.tensors
        assert c.metadata["step"] == "10"


def test_ledger_matches_the_checkpoints(short_run: Path):
    """update_norm at step 1 must be |w1 - w0| as read back from the two checkpoint files, per tensor and per
    head slice; the head slices of a tensor must add up (in squares) to the whole tensor."""
    ledger = pq.read_table(short_run / "ledger.parquet").to_pydict()
    rows = [dict(zip(ledger, vals, strict=True)) for vals in zip(*ledger.values(), strict=True)]
    w0 = load_file(str(ck.checkpoint_path(short_run, 0)))
    w1 = load_file(str(ck.checkpoint_path(short_run, 1)))
    at1 = [r for r in rows if r["step"] == 1]
    whole = {r["tensor"]: r for r in at1 if r["head"] is None}
    assert "transformer.h.0.mlp.c_fc.weight" not in whole  # frozen: no writes, no rows
    for name, r in whole.items():
        assert r["update_norm"] == pytest.approx((w1[name] - w0[name]).norm().item(), rel=1e-4, abs=1e-7)
        assert r["weight_norm"] == pytest.approx(w1[name].norm().item(), rel=1e-5)
    d, hd = 64, 32
    qkv = "transformer.h.1.attn.c_attn.weight"
    heads = [r for r in at1 if r["tensor"] == qkv and r["head"] is not None]
    assert sorted((r["kind"], r["head"]) for r in heads) == [(k, h) for k in "kqv" for h in (0, 1)]
    for r in heads:
        base = {"q": 0, "k": d, "v": 2 * d}[r["kind"]] + r["head"] * hd
        diff = (w1[qkv] - w0[qkv])[:, base : base + hd]  # Conv1D: [in, out], heads are column blocks
        assert r["update_norm"] == pytest.approx(diff.norm().item(), rel=1e-4)
    assert sum(r["update_norm"] ** 2 for r in heads) == pytest.approx(whole[qkv]["update_norm"] ** 2, rel=1e-4)
    o_heads = [r for r in at1 if r["tensor"] == "transformer.h.0.attn.c_proj.weight" and r["head"] is not None]
    assert {r["kind"] for r in o_heads} == {"o"} and len(o_heads) == 2
    last = [r for r in rows if r["step"] == 200 and r["head"] is None]
    w200 = load_file(str(ck.checkpoint_path(short_run, 200)))
    for r in last:
        assert r["change_since_init"] == pytest.approx((w200[r["tensor"]] - w0[r["tensor"]]).norm().item(), rel=1e-4)


def test_periodic_data_is_a_function_of_seed_and_step():
    data = PeriodicData(32, 32, 8, seed=5)
    a, b = data.batch(7), data.batch(7)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, data.batch(8).tokens)
    t, rep = a.tokens, a.repeated
    for row in range(8):
        # a repeated position's next token equals the token one period back; find the period from the mask
        period = int((~rep[row]).sum()) + 1
        assert torch.equal(t[row, period:], t[row, :-period])


def test_init_schemes_differ_and_are_recorded():
    model = build_model(PRESETS["induction-2l"]["config"], attention_only=True)
    stds = {}
    for scheme in ("hf-default", "wide", "normal:0.05", "xavier"):
        record = initialize(model, scheme, seed=0, attention_only=True)
        assert record["scheme"] == scheme
        stds[scheme] = (model.transformer.wte.weight.std().item(), model.transformer.h[0].attn.c_attn.weight.std().item())
        assert model.transformer.h[0].mlp.c_proj.weight.abs().sum() == 0
    assert stds["hf-default"][1] == pytest.approx(0.02, rel=0.1)
    assert stds["wide"][0] == pytest.approx(1.0, rel=0.1) and stds["wide"][1] == pytest.approx(0.125, rel=0.1)
    assert stds["normal:0.05"][1] == pytest.approx(0.05, rel=0.1)
    a = build_model(PRESETS["induction-2l"]["config"], True)
    initialize(a, "wide", seed=1)
    b = build_model(PRESETS["induction-2l"]["config"], True)
    initialize(b, "wide", seed=1)
    assert torch.equal(a.transformer.wte.weight, b.transformer.wte.weight)


def test_text_corpus_with_a_config(tmp_path: Path):
    import pydoc_data.topics

    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(list(pydoc_data.topics.topics.values())[:20]))
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32,
                                  "vocab_size": 256, "n_positions": 64}))
    r = glassbox("-q", "train", "--config", str(config), "--corpus", str(corpus), "--steps", "12",
                 "--seq-len", "32", "--batch-size", "4", "--ledger-every", "3", "--out", str(tmp_path / "x"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 12 and summary["final_loss"] < 6.0
    ledger = pq.read_table(tmp_path / "x" / "ledger.parquet").to_pydict()
    assert sorted(set(ledger["step"])) == [3, 6, 9, 12]
    assert {"mlp.in", "mlp.out", "attention.qkv", "attention.o", "embedding"} <= set(ledger["level"])


@pytest.mark.parametrize("args, needle", [
    (["--preset", "nope"], "unknown preset"),
    (["--preset", "induction-2l", "--steer", "1.9=induction"], "2 layers × 2 heads"),
    (["--preset", "induction-2l", "--steer", "1.0=telepathy"], "unknown role"),
    (["--preset", "induction-2l", "--init", "magic"], "unknown init"),
    (["--resume"], "not a training run"),
])
def test_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str):
    r = glassbox("train", "--out", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_refuses_to_overwrite_a_run(short_run: Path):
    r = glassbox("train", "--preset", "induction-2l", "--out", str(short_run))
    assert r.returncode == 2 and "--resume" in r.stderr


# Runs `glassbox train` in a child that SIGKILLs itself as training reaches step KILL_AT: a fixed point (after the
# save at 20, mid-way to the next), whatever the machine's speed, where a timed kill could land anywhere.
_KILL_AT_STEP = """
import os, signal, sys
import glassbox.progress as progress
inner = progress.track
def track(iterable, *args, **kwargs):
    for step in inner(iterable, *args, **kwargs):
        if step == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
        yield step
progress.track = track
from glassbox.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path):
    """A run killed by SIGKILL mid-way and resumed ends with the same loss as an uninterrupted one."""
    steps, every = "40", "10"
    ref = tmp_path / "ref"
    r = glassbox("-q", "train", "--preset", "induction-2l", "--seed", "4", "--steps", steps, "--save-every", every,
                 "--out", str(ref), "--json")
    assert r.returncode == 0, r.stderr
    reference = json.loads(r.stdout)["final_loss"]

    run = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILL_AT_STEP, "-q", "train", "--preset", "induction-2l", "--seed",
                             "4", "--steps", steps, "--save-every", every, "--out", str(run)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "KILL_AT": "25"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "parts" / "metrics-000020.parquet").exists()
    assert not (run / "summary.json").exists(), "killed too late: the run had finished"
    r = glassbox("-q", "train", "--resume", "--out", str(run), "--json")
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert resumed["resumed_from"] == 20  # the last save point before the kill
    assert resumed["final_loss"] == pytest.approx(reference, abs=1e-4)
    # nothing double-counted and nothing lost in the tables
    assert pq.read_table(run / "metrics.parquet").column("step").to_pylist() == list(range(1, 41))
    ledger_steps = sorted(set(pq.read_table(run / "ledger.parquet").column("step").to_pylist()))
    assert ledger_steps == list(range(1, 41))
    a = load_file(str(ck.checkpoint_path(run, 40)))
    b = load_file(str(ck.checkpoint_path(ref, 40)))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_llama_with_gqa_trains_and_its_writes_add_up(tmp_path: Path):
    from glassbox.timeline.writes import write_table

    config = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "hidden_size": 32, "intermediate_size": 64, "vocab_size": 256, "max_position_embeddings": 32,
              "tie_word_embeddings": False}
    out = tmp_path / "llama"
    summary = train(out, declare(config=config, corpus="pydoc", steps=6, seq_len=16, batch_size=4))
    assert summary["steps"] == 6
    ledger = pq.read_table(out / "ledger.parquet").to_pydict()
    k_heads = {h for t, h in zip(ledger["tensor"], ledger["head"], strict=True) if t.endswith("layers.0.self_attn.k_proj.weight")}
    q_heads = {h for t, h in zip(ledger["tensor"], ledger["head"], strict=True) if t.endswith("layers.0.self_attn.q_proj.weight")}
    assert k_heads == {None, 0, 1} and q_heads == {None, 0, 1, 2, 3}
    doc = write_table(out, top=8)
    everything = doc["windows"][-1]
    assert len(everything["top_heads"]) == 8
    assert sum(t["share"] for t in everything["top_heads"]) == pytest.approx(1.0, abs=1e-6)
    assert {"mlp.gate", "mlp.in", "mlp.out", "attention.k"} <= {lv["level"] for lv in everything["levels"]}

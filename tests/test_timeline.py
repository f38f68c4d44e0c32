"""glassbox timeline / writes: probes, phase changes on a real training run, steering, the JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from glassbox.heads import masks  # noqa: E402
from glassbox.heads.masks import TRAINING_ROLES as ROLES  # noqa: E402
from glassbox.timeline import phases  # noqa: E402
from glassbox.timeline.analyze import analyze, read_declaration  # noqa: E402
from glassbox.timeline.probes import probe_batch  # noqa: E402
from glassbox.timeline.writes import write_table  # noqa: E402
from glassbox.train.loop import declare, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def glassbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glassbox", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The preset, spontaneous and steered (L1H1, the head that loses without steering on this seed)."""
    root = tmp_path_factory.mktemp("timeline")
    train(root / "plain", declare(preset="induction-2l", seed=0))
    # steered, the change comes at ~step 40-55 (spontaneous: ~90-115), so a shorter run shows it
    train(root / "steered", declare(preset="induction-2l", seed=0, steps=200, steer=["1.1=induction"]))
    return {"plain": root / "plain", "steered": root / "steered"}


def test_probe_scores_on_hand_made_patterns():
    tokens = probe_batch(32, 32, n=4)
    n = tokens.shape[1]
    assert torch.equal(tokens[:, : n // 2], tokens[:, n // 2 :])
    induction = masks.role_mask(tokens, "induction").float()
    ideal = induction / induction.sum(-1, keepdim=True).clamp(min=1)
    ideal[ideal.sum(-1) == 0] = torch.eye(n).expand(4, n, n)[ideal.sum(-1) == 0]
    previous = torch.zeros(4, n, n)
    previous[:, 0, 0] = 1
    previous[:, torch.arange(1, n), torch.arange(n - 1)] = 1
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1).view(n, 1)
    attentions = (torch.stack([previous, uniform.expand(4, n, n)], 1), torch.stack([ideal, uniform.expand(4, n, n)], 1))
    s = {role: score.tolist() for role, score in masks.pattern_scores(attentions, masks.masks(tokens, ROLES)).items()}
    assert s["induction"][1][0] == pytest.approx(1.0)
    assert s["previous_token"][0][0] == pytest.approx(1.0)
    assert s["induction"][0][0] == pytest.approx(0.0)
    assert s["induction"][1][1] < 0.2 and s["previous_token"][1][1] < 0.2
    assert s["first_token"][1][1] < 0.2


@pytest.mark.parametrize("causal", [True, False])
def test_sink_mass_counts_only_for_the_sink_roles(causal: bool):
    """A head parked on position 0 is a first-token head and nothing else, even where 0 is the previous token
    or an earlier copy of the current one."""
    tokens = torch.tensor([[5, 1, 2, 3, 5, 1, 2, 3, 9]])
    n = tokens.shape[1]
    sink = torch.zeros(1, 1, n, n)
    sink[..., 0] = 1
    roles = masks.CAUSAL_ROLES if causal else masks.ENCODER_ROLES
    s = masks.pattern_scores([sink], masks.masks(tokens, roles, causal))
    assert float(s["first_token"][0, 0]) == pytest.approx(1.0)
    assert all(float(s[r][0, 0]) == 0.0 for r in roles if r != "first_token")


def test_timeline_and_atlas_score_alike(runs):
    """One definition: the atlas's probes, run on the timeline's batch through glassbox.run, give the
    timeline's numbers for the last checkpoint."""
    from glassbox.heads import probe_inputs, probes
    from glassbox.run import hooks, load_model

    doc = analyze(runs["plain"])
    last = doc["checkpoints"][-1]
    loaded = load_model(str(runs["plain"] / "checkpoints" / f"step-{last['step']:06d}.safetensors"))
    tokens = probe_batch(loaded.config.vocab_size, read_declaration(runs["plain"])["train"]["seq_len"])
    _, cache = hooks.run_with_cache(loaded, tokens, names="blocks.*.attn.pattern")
    atlas = probes.pattern_scores(loaded, probe_inputs.Repeats(tokens, tokens.shape[1] // 2), cache)
    for h in last["heads"]:
        for role in ROLES:
            assert float(atlas[role][h["layer"], h["head"]]) == pytest.approx(h["scores"][role], abs=1e-5), role
    assert max(h["scores"]["induction"] for h in last["heads"]) > 0.5


def test_phase_detection_on_series():
    steps = list(range(0, 200, 10))
    rise = [0.05] * 8 + [0.2, 0.45, 0.7] + [0.85] * 9
    found = phases.score_change(steps, rise)
    assert found is not None and 80 <= found["step"] <= 100 and found["window"] == [70, 100]
    assert phases.score_change(steps, [0.05] * 20) is None
    assert phases.score_change(steps, [0.6] * 20) is None  # never below 0.1: a role held from the start
    assert phases.score_change(steps, rise[:-3] + [0.2, 0.1, 0.05]) is None  # rose and fell again
    loss = [3.5] * 80 + [3.5 - 3 * k / 20 for k in range(20)] + [0.5] * 100
    drop = phases.loss_drop(list(range(1, 201)), loss)
    assert drop is not None and 85 <= drop["step"] <= 95


def test_spontaneous_phase_change(runs):
    doc = analyze(runs["plain"])
    ind = [c for c in doc["phase_changes"] if c["role"] == "induction"]
    assert ind, "no induction phase change on the preset"
    assert all(c["layer"] == 1 and c["before"] < 0.1 and c["after"] > 0.5 for c in ind)
    assert any(c["coincides_with_loss_drop"] for c in ind)
    drop = next(lc for lc in doc["loss_changes"] if lc["metric"] == "loss_repeated")
    assert drop["before"] - drop["after"] > 1.0
    first, last = doc["checkpoints"][0], doc["checkpoints"][-1]
    assert first["step"] == 0 and last["icl_score"] > first["icl_score"] + 1.0
    # the induction head it found is causally needed on the probe task
    winner = next(w for w in doc["why"] if w["role"] == "induction")
    wh = next(h for h in winner["heads"] if h["head"] == winner["winner"])
    assert wh["final_ablation_effect"] > 0.1 and wh["score"]["after"] > wh["score"]["start"]
    assert sum(h["write_share"]["during"] for h in winner["heads"]) == pytest.approx(1.0)


def test_steering_makes_the_chosen_head_win(runs):
    plain, steered = analyze(runs["plain"]), analyze(runs["steered"])
    top = steered["final"]["top_heads"]["induction"]
    assert (top["layer"], top["head"]) == (1, 1)
    assert steered["steer"] == [{"layer": 1, "head": 1, "role": "induction", "weight": 0.3}]
    l1h1 = next(h for h in steered["checkpoints"][-1]["heads"] if (h["layer"], h["head"]) == (1, 1))
    l1h1_plain = next(h for h in plain["checkpoints"][-1]["heads"] if (h["layer"], h["head"]) == (1, 1))
    assert l1h1["scores"]["induction"] > l1h1_plain["scores"]["induction"]


def test_timeline_cli_json_contract(runs):
    r = glassbox("-q", "timeline", str(runs["plain"]), "--json", "--no-ablation")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) >= {"checkpoints", "phase_changes"}
    c = doc["checkpoints"][1]
    assert isinstance(c["step"], int) and isinstance(c["loss"], float) and isinstance(c["icl_score"], float)
    h = c["heads"][0]
    assert {"layer", "head", "scores", "roles"} <= set(h) and "induction" in h["scores"]
    for p in doc["phase_changes"]:
        assert {"role", "layer", "head", "step"} <= set(p) and isinstance(p["step"], int)
    png = Path(doc["plots"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_compare_and_writes(runs, tmp_path: Path):
    plot = tmp_path / "cmp.png"
    r = glassbox("-q", "timeline", str(runs["plain"]), str(runs["steered"]), "--compare", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    assert "seed" in r.stdout and plot.read_bytes()[:4] == b"\x89PNG"
    r = glassbox("-q", "writes", str(runs["plain"]), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == json.loads(json.dumps(write_table(runs["plain"])))
    for w in doc["windows"]:
        assert sum(lv["update_share"] for lv in w["levels"]) == pytest.approx(1.0, abs=1e-6)
        assert sum(t["share"] for t in w["top_heads"]) == pytest.approx(1.0, abs=1e-6)  # 4 heads, top 5
    levels = {lv["level"] for lv in doc["windows"][-1]["levels"]}
    assert {"attention.q", "attention.k", "attention.v", "attention.o", "embedding", "unembedding"} <= levels
    assert "attention.qkv" not in levels  # the fused tensor is split into Q, K and V by its head rows
    human = glassbox("-q", "writes", str(runs["plain"]))
    assert human.returncode == 0 and "attention.q" in human.stdout


@pytest.mark.parametrize("cmd", [["timeline"], ["writes"]])
def test_not_a_run_exits_2(tmp_path: Path, cmd: list[str]):
    r = glassbox(*cmd, str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_demo_summary_names_the_phase_change(runs):
    from glassbox.demo import training_summary

    text = training_summary(runs["plain"])  # the run is there already: only the timeline is computed
    assert "phase change" in text and "induction head at step" in text
    assert (runs["plain"] / "timeline.png").is_file()

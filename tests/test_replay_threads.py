"""A run records the torch thread count it was trained with, and replay (writes --examples, --retrain) uses it:
the floats of a training step depend on the count (1 vs 2 threads differ here), so a replay on another count
would not be exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from glassbox.train import replay  # noqa: E402
from glassbox.train.loop import declare, recorded_threads, train  # noqa: E402


def test_a_run_trained_on_two_threads_replays_exactly_without_the_variable(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("GLASSBOX_THREADS", "2")
    summary = train(run, declare(preset="induction-2l", seed=2, steps=12, save_every=4))
    assert summary["threads"] == 2 and recorded_threads(run) == 2
    assert json.loads((run / "config.json").read_text())["train_threads"] == 2
    monkeypatch.delenv("GLASSBOX_THREADS")  # the preset alone would pick one thread (a model under 10 M)
    state = replay.advance(replay.setup(run), 12)
    assert state["threads"] == 2 and "trained with" in state["threads_source"]
    assert replay.check_against_checkpoint(state) == 0.0
    # the contrast that makes the above mean something: the same replay on one thread
    one = replay.advance(replay.setup(run, threads=1), 12)
    diff = replay.check_against_checkpoint(one)
    if diff == 0.0:
        pytest.skip("torch gives the same floats on 1 and 2 threads on this machine: nothing to contrast")
    assert diff > 0.0


def test_resume_uses_the_recorded_count(tmp_path: Path, monkeypatch):
    import torch

    run = tmp_path / "run"
    monkeypatch.setenv("GLASSBOX_THREADS", "2")
    train(run, declare(preset="induction-2l", seed=2, steps=4, save_every=2))
    monkeypatch.delenv("GLASSBOX_THREADS")
    cfg = json.loads((run / "config.json").read_text())
    cfg["glassbox_train"]["train"]["steps"] = 6  # continue the same run two more steps
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "summary.json").unlink()
    assert train(run, resume=True)["threads"] == 2 and torch.get_num_threads() == 2


def test_old_runs_without_a_record_replay_on_the_current_choice(tmp_path: Path):
    run = tmp_path / "run"
    train(run, declare(preset="induction-2l", seed=2, steps=2, save_every=2))
    cfg = json.loads((run / "config.json").read_text())
    del cfg["train_threads"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert recorded_threads(run) is None
    from glassbox.run.load import set_threads

    state = replay.setup(run)
    assert state["threads"] == set_threads(state["model"]) and "not recorded" in state["threads_source"]

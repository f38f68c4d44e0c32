"""Replaying a run's training exactly: batches are a pure function of (seed, step) and the initialization of
the seed, so the model and the Adam state at any step are recomputed from step 0 rather than stored.

Checkpoints hold weights only (no optimizer state), so a replay starts at step 0; every replay is checked
against the saved checkpoints it passes (`max_abs_diff`). `edit(step, batch)` may change a step's batch (the
causal retraining of glassbox.timeline.examples); `before`/`after` see the model around each optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.progress import track
from glassbox.run.load import set_threads
from glassbox.train import batches
from glassbox.train import checkpoints as ck
from glassbox.train import model as declared_model
from glassbox.train.loop import _read_declaration, recorded_threads


def setup(run: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Model (initialized as the run was), optimizer, data and the declaration of a run directory.

    Torch runs on the thread count the run was trained with (config.json `train_threads`): the floats of a
    step depend on it (measured: 1 vs 2 threads differ by 3e-4 after 30 induction-2l steps). `threads`
    overrides it (the tests' contrast); a run from before the count was recorded gets set_threads' choice."""
    import torch

    run = Path(run)
    decl = _read_declaration(run)
    if decl.get("steer"):
        raise BadInput("replaying a steered run is not supported (the auxiliary loss is not replayed)", run)
    tr = decl["train"]
    model = declared_model.build_model(decl["model_config"], decl["attention_only"])
    recorded = recorded_threads(run)
    if threads is not None:
        source = "given"
    elif recorded is not None:
        threads, source = recorded, "the count the run was trained with (config.json train_threads)"
    else:
        threads = set_threads(model)
        source = "not recorded in this run (trained before glassbox recorded it): set_threads' choice now"
    torch.set_num_threads(threads)
    declared_model.initialize(model, decl["init"], decl["seed"], decl["attention_only"])
    model.train()
    data = batches.make_data(decl["data"], model.config.vocab_size, tr["seq_len"], tr["batch_size"], decl["seed"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tr["lr"])
    return {"run": run, "decl": decl, "model": model, "data": data, "params": params, "optimizer": optimizer,
            "step": 0, "threads": threads, "threads_source": source}


def lm_loss(model, tokens):
    import torch

    logits = model(tokens).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


def advance(state: dict[str, Any], until: int, edit: Callable | None = None, before: Callable | None = None,
            after: Callable | None = None, progress: str | None = None) -> dict[str, Any]:
    """Step `state` (from setup) on to step `until`, exactly as glassbox.train.loop does."""
    import torch

    model, data, params, opt = state["model"], state["data"], state["params"], state["optimizer"]
    clip = state["decl"]["train"]["grad_clip"]
    steps = range(state["step"] + 1, until + 1)
    for step in track(steps, progress, total=len(steps)) if progress else steps:
        batch = data.batch(step)
        if edit is not None:
            batch = edit(step, batch)
        loss = lm_loss(model, batch.tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if before is not None:
            before(step, batch)
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if after is not None:
            after(step, batch)
        state["step"] = step
    return state


def check_against_checkpoint(state: dict[str, Any]) -> float | None:
    """Largest |replayed − saved| weight at the state's step, when a checkpoint of that step exists."""
    path = ck.checkpoint_path(state["run"], state["step"])
    if not Path(path).is_file():
        return None
    saved = declared_model.build_model(state["decl"]["model_config"], state["decl"]["attention_only"])
    ck.load_weights(saved, path)
    mine = dict(state["model"].named_parameters())
    return max(float((p.detach() - mine[n].detach()).abs().max()) for n, p in saved.named_parameters())

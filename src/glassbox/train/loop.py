"""The training loop: model from a declaration, deterministic data, the write ledger, checkpoints, resume.

A run directory holds:
  config.json                 the HF model config + `glassbox_train` (the whole declaration: preset, init, seed, ...)
                              + `train_threads` (the torch thread count: replay and resume use it again)
  checkpoints/step-NNNNNN.safetensors (+ checkpoints/config.json)
  ledger.parquet, metrics.parquet   (while running: parts/ledger-NNNNNN.parquet ... up to the last save point)
  resume.safetensors          the state at the last save point
  summary.json                written when the run finishes
Step s means "after s optimizer steps"; step 0 is the initialized, untrained model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from glassbox.anatomy import roles
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.progress import track
from glassbox.run.load import set_threads
from glassbox.train import batches
from glassbox.train import checkpoints as ck
from glassbox.train import model as declared_model
from glassbox.train import steer as steering
from glassbox.train.ledger import Ledger
from glassbox.train.store import drop_parts_after, finish_tables, write_part

DEFAULT_TRAIN = {"steps": 1000, "batch_size": 32, "seq_len": 128, "lr": 1e-3, "grad_clip": 1.0}


def declare(preset: str | None = None, config: dict | None = None, corpus: str | None = None,
            seed: int = 0, init: str | None = None, steps: int | None = None, steer: list[str] | None = None,
            ledger_every: int = 1, save_every: int = 50, batch_size: int | None = None,
            seq_len: int | None = None, lr: float | None = None) -> dict[str, Any]:
    """Everything a run is, as one JSON-able dict (stored in config.json under `glassbox_train`)."""
    if (preset is None) == (config is None):
        raise BadInput("give exactly one of --preset or --config")
    if preset is not None:
        if preset not in declared_model.PRESETS:
            raise BadInput(f"unknown preset {preset!r}; known: {', '.join(declared_model.PRESETS)}")
        p = declared_model.PRESETS[preset]
        model_config, attention_only = dict(p["config"]), p["attention_only"]
        train, data, default_init = dict(p["train"]), dict(p["data"]), p["init"]
    else:
        model_config = dict(config)
        # not an HF key: a request to zero and freeze the MLPs, as the preset does
        attention_only = bool(model_config.pop("attention_only", False))
        train, data, default_init = dict(DEFAULT_TRAIN), {}, "hf-default"
    if corpus is not None:
        from glassbox import corpora

        spec = corpora.parse_spec(corpus)  # a bad spec fails here, before any model is built
        path = spec.text if spec.named else str(Path(corpus).resolve())
        # a token-data preset keeps its tokenizer and repeats on another corpus
        data = dict(data, path=path) if data.get("kind") == "tokens" else {"kind": "text", "path": path}
    elif not data:
        raise BadInput("--config needs --corpus (a text file or folder, or kjv / pydoc[:A-B]); the synthetic task "
                       "comes with --preset")
    for key, value in (("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len), ("lr", lr)):
        if value is not None:
            train[key] = value
    if train["steps"] < 1 or train["batch_size"] < 1 or train["seq_len"] < 2 or not train["lr"] > 0:
        raise BadInput("steps and batch size must be >= 1, seq_len >= 2, lr > 0")
    if ledger_every < 0 or save_every < 1:
        raise BadInput("--ledger-every must be >= 0 (0: off) and --save-every >= 1")
    init = init or default_init
    declared_model.parse_init(init)

    architecture = roles.detect_from_config(model_config) or "unknown"
    dims = roles.Dims.from_config(architecture, model_config)
    n_layers = dims.n_layers if dims else 0
    n_heads = dims.n_heads if dims else 0
    steers = [steering.parse(s, n_layers, n_heads).to_json() for s in steer or []]
    return {"preset": preset, "model_config": model_config, "architecture": architecture,
            "attention_only": attention_only, "init": init, "seed": seed, "data": data, "train": train,
            "steer": steers, "ledger_every": ledger_every, "save_every": save_every,
            "checkpoint_steps": ck.schedule(train["steps"])}


def _read_declaration(out: Path) -> dict[str, Any]:
    path = out / "config.json"
    if not path.is_file():
        raise BadInput("not a training run (no config.json)", out)
    try:
        decl = json.loads(path.read_text())["glassbox_train"]
    except (ValueError, KeyError, TypeError):
        raise BadInput("config.json has no glassbox_train section", path) from None
    return decl


def recorded_threads(out: str | Path) -> int | None:
    """The torch thread count the run was trained with (config.json `train_threads`); None for runs from
    before it was recorded."""
    try:
        n = json.loads((Path(out) / "config.json").read_text()).get("train_threads")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and n >= 1 else None


def train(out: str | Path, decl: dict[str, Any] | None = None, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the declared training into `out`; returns the summary."""
    import torch

    out = Path(out)
    if resume:
        decl = _read_declaration(out)
        if not (out / "resume.safetensors").is_file():
            raise BadInput("nothing to resume (no resume.safetensors)", out)
    elif decl is None:
        raise BadInput("no declaration to train")
    elif (out / "config.json").exists() or (out / "checkpoints").exists():
        raise BadInput("already holds a run; use --resume to continue it, or another --out", out)

    tr, seed = decl["train"], decl["seed"]
    model = declared_model.build_model(decl["model_config"], decl["attention_only"])
    threads = set_threads(model)  # by model size (a preset: one thread), unless GLASSBOX_THREADS says otherwise
    recorded = recorded_threads(out) if resume else None
    if recorded is not None and recorded != threads:  # the floats depend on the count: resume as it was trained
        torch.set_num_threads(recorded)
        threads = recorded
    init_record = declared_model.initialize(model, decl["init"], seed, decl["attention_only"])
    model.train()
    vocab = model.config.vocab_size
    data = batches.make_data(decl["data"], vocab, tr["seq_len"], tr["batch_size"], seed)
    steers = [steering.Steer(**s) for s in decl["steer"]]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=tr["lr"])
    ledger = Ledger(model, decl["architecture"], decl["model_config"]) if decl["ledger_every"] else None
    hf_config = model.config.to_dict()
    hf_config.pop("_attn_implementation_autoset", None)
    base_meta = {"seed": seed, "init": decl["init"], "architecture": decl["architecture"],
                 "config": json.dumps(hf_config), "glassbox": "train"}

    start = 0
    if resume:
        if ledger is not None:  # change_since_init is measured from step 0's weights
            ledger.init = _flat_of_checkpoint(out, model, ledger)
        meta = ck.load_resume(out, model, optimizer)
        start = int(meta["step"])
        if start >= tr["steps"] and (out / "summary.json").is_file():
            return dict(json.loads((out / "summary.json").read_text()), resumed_from=start)  # already finished
        drop_parts_after(out, start)
    else:
        # train_threads: the torch thread count, which the floats depend on; replay and resume use it again
        write_json(out / "config.json", dict(hf_config, glassbox_train=decl, init=init_record, train_threads=threads))
        write_json(out / "checkpoints" / "config.json", hf_config)
        if hasattr(data, "vocab_map"):  # token data: how class ids turn back into text (writes --examples, report)
            write_json(out / "vocab.json", data.vocab_map())
        with torch.no_grad():  # the untrained model's loss on the first batch, so step 0 has a loss too
            first = data.batch(1).tokens
            loss0 = torch.nn.functional.cross_entropy(model(first).logits[:, :-1].flatten(0, 1).float(),
                                                      first[:, 1:].flatten()).item()
        ck.save_checkpoint(out, model, 0, dict(base_meta, step=0, loss=loss0, data_position=0))

    checkpoint_steps = set(decl["checkpoint_steps"])
    save_every, ledger_every = decl["save_every"], decl["ledger_every"]
    metrics: list[dict[str, float]] = []
    wall0 = time.perf_counter()
    loss_value = float("nan")
    for step in track(range(start + 1, tr["steps"] + 1), "training", total=tr["steps"] - start):
        batch = data.batch(step)
        t0 = time.perf_counter()
        outputs = model(batch.tokens, output_attentions=bool(steers))
        logits = outputs.logits[:, :-1].float()
        per_tok = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.tokens[:, 1:].flatten(), reduction="none").view(logits.shape[:2])
        loss = per_tok.mean()
        total = loss
        aux = torch.zeros(())
        if steers:
            aux = steering.aux_loss(steers, outputs.attentions, batch.tokens)
            total = loss + aux
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        record = ledger is not None and step % ledger_every == 0
        if record:
            ledger.before_step()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tr["grad_clip"])
        optimizer.step()
        if record:
            ledger.after_step(step)
        loss_value = loss.item()
        rep = batch.repeated[:, :-1]
        row = {"step": step, "loss": loss_value, "aux_loss": aux.item(), "grad_norm": grad_norm.item(),
               "loss_repeated": per_tok[rep].mean().item() if rep.any() else float("nan"),
               "loss_first": per_tok[~rep].mean().item() if (~rep).any() else float("nan"),
               "step_seconds": time.perf_counter() - t0}
        metrics.append(row)
        meta = dict(base_meta, step=step, loss=loss_value, data_position=step * tr["batch_size"])
        if step in checkpoint_steps:
            ck.save_checkpoint(out, model, step, meta)
        if step % save_every == 0 or step == tr["steps"]:
            write_part(out, "metrics", step, _metrics_table(metrics))
            metrics = []
            if ledger is not None:
                write_part(out, "ledger", step, ledger.take_table())
            ck.save_resume(out, model, optimizer, step, meta)
    finish_tables(out)
    summary = {"steps": tr["steps"], "final_loss": loss_value, "seed": seed, "init": decl["init"],
               "resumed_from": start if resume else None, "train_seconds": time.perf_counter() - wall0,
               "parameters": declared_model.count_parameters(model), "threads": threads}
    write_json(out / "summary.json", summary)
    return summary


def _flat_of_checkpoint(out: Path, model, ledger) -> list:
    """The step-0 weights as the ledger's reference (the model is reloaded from the resume state afterwards)."""
    ck.load_weights(model, ck.checkpoint_path(out, 0))
    return ledger._weights_copy()


def _metrics_table(rows: list[dict[str, float]]):
    import pyarrow as pa

    cols = {k: [r[k] for r in rows] for k in rows[0]} if rows else {"step": []}
    table = pa.table(cols)
    return table.set_column(0, "step", table.column("step").cast(pa.int64()))


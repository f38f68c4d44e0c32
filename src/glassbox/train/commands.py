"""`glassbox train`: a real HF model from a preset or a config, trained with the write ledger and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from glassbox.errors import BadInput


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
        preset: str | None = typer.Option(None, "--preset", help="Named preset: induction-2l (the synthetic task), text-2l (byte-level KJV), text-induction (KJV in SmolLM2 tokens, quoted repeats)."),
        config: Path | None = typer.Option(None, "--config", help="A transformers config JSON (with model_type)."),
        corpus: str | None = typer.Option(None, "--corpus", help="A text file or folder, or kjv[:A-B] / pydoc[:A-B] "
                                           "(byte-level tokens)."),
        steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (preset: 350)."),
        seed: int = typer.Option(0, "--seed"),
        init: str | None = typer.Option(None, "--init", help="hf-default | wide[:STD] | normal[:STD] | xavier "
                                        "(preset default: wide, the induction recipe)."),
        steer: list[str] = typer.Option([], "--steer", help="L.H=ROLE[:WEIGHT], e.g. 1.0=induction "
                                        "(auxiliary attention loss; repeatable)."),
        ledger_every: int = typer.Option(1, "--ledger-every", help="Record the write ledger every k steps (0: off)."),
        save_every: int = typer.Option(50, "--save-every", help="Resume-state interval in steps."),
        batch_size: int | None = typer.Option(None, "--batch-size"),
        seq_len: int | None = typer.Option(None, "--seq-len"),
        lr: float | None = typer.Option(None, "--lr"),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last save point."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Train a model and record how every step writes into every tensor and head."""
        from glassbox.train.loop import declare
        from glassbox.train.loop import train as run_training
        from glassbox.train.model import read_config

        if resume:
            if preset or config or corpus or steer:
                raise BadInput("--resume takes the declaration from the run's config.json; "
                               "give only --out", out)
            summary = run_training(out, resume=True)
        else:
            config_dict = read_config(config)
            decl = declare(preset=preset, config=config_dict, corpus=str(corpus) if corpus else None, seed=seed,
                           init=init, steps=steps, steer=steer, ledger_every=ledger_every, save_every=save_every,
                           batch_size=batch_size, seq_len=seq_len, lr=lr)
            summary = run_training(out, decl)
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            typer.echo(f"{out}: {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
                       f"{summary['train_seconds']:.1f} s"
                       + (f" (resumed from step {summary['resumed_from']})" if summary["resumed_from"] is not None
                          else ""))
            typer.echo(f"next: glassbox timeline {out}    glassbox writes {out}")

"""`glassbox facts MODEL --prompt P` (causal tracing, the writing neurons and their bytes) and
`glassbox facts edit MODEL --prompt P --subject S --new N --out DIR` (a rank-one edit written as a new model).

`facts` is a group whose default command is `trace`: a first argument that is not a subcommand's name is the
MODEL of `facts trace`. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup

from glassbox.errors import BadInput
from glassbox.run import options


class _TraceByDefault(TyperGroup):
    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201 (click's signature)
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["trace", *args]
        return super().parse_args(ctx, args)


facts = typer.Typer(cls=_TraceByDefault, no_args_is_help=True,
                    help="Where a fact is written: causal tracing to the MLP neurons and their bytes, and a "
                         "rank-one edit written as a new model. `glassbox facts MODEL --prompt P` traces.")

MODEL = typer.Argument(..., help="A causal LM: a checkpoint (.safetensors + config.json, folder, .gguf) or a "
                       "bundled name (smollm2-135m).")


def register(app: typer.Typer) -> None:
    app.add_typer(facts, name="facts")


def _keep(model: str, part: str, doc: dict) -> None:
    """Store the document in the cache, where `glassbox serve` and `glassbox report` show it (the Facts view)."""
    from glassbox.bundled import resolve
    from glassbox.web.documents import store_facts

    store_facts(resolve(model), part, doc)


def _check_png(png: Path | None) -> None:
    if png is not None and png.suffix.lower() != ".png":
        raise BadInput("--png must name a .png file", png)
    if png is not None and png.is_dir():
        raise BadInput("--png is a folder", png)


@facts.command("trace")
def trace_cmd(
    model: str = MODEL,
    prompt: str = typer.Option(..., "--prompt", help="A prompt whose next token is the fact's answer."),
    subject: str | None = typer.Option(None, "--subject", help="The subject's text, as it appears in the prompt "
                                       "(default: the words before the first 'is'/'was'/...)."),
    answer: str | None = typer.Option(None, "--answer", help="The answer (its first token is traced; default: "
                                      "the model's top-1)."),
    samples: int = typer.Option(10, "--samples", help="Noise samples per restored state (the paper: 10)."),
    noise: float = typer.Option(3.0, "--noise", help="Noise level, × the embeddings' standard deviation."),
    window: int | None = typer.Option(None, "--window", help="Layers per MLP window (default: 10/48 of the "
                                      "model's layers, the paper's ratio)."),
    kinds: str = typer.Option("resid,mlp,attn,mlp_window", "--kinds", help="Which states to restore."),
    min_p: float = typer.Option(0.1, "--min-p", help="Refuse an answer whose clean probability is below this."),
    neurons: int = typer.Option(10, "--neurons", help="Writing neurons to list and check (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise (and of the random neuron sets)."),
    workers: int | None = typer.Option(None, "--workers", help="Processes sharing the restored cells (the same "
                                       "numbers; default: the usable CPUs, at most 4)."),
    png: Path | None = typer.Option(None, "--png", help="Write the heatmaps here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a .bin/.pt (weights only)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Trace where the model recalls the answer: restore clean states into a run with a noised subject."""
    from glassbox.facts.trace import KINDS

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not chosen or any(k not in KINDS for k in chosen):
        raise BadInput(f"--kinds: a comma list of {', '.join(KINDS)}")
    if samples < 1 or samples > 256:
        raise BadInput("--samples must lie in 1..256")
    if noise <= 0:
        raise BadInput("--noise must be > 0")
    if window is not None and window < 1:
        raise BadInput("--window must be >= 1")
    if not 0 <= min_p < 1:
        raise BadInput("--min-p must lie in [0, 1)")
    if neurons < 0:
        raise BadInput("--neurons must be >= 0")
    if workers is not None and not 1 <= workers <= 64:
        raise BadInput("--workers must lie in 1..64")
    if subject is not None and subject not in prompt:
        raise BadInput(f"the subject {subject!r} is not in the prompt", "--subject")
    _check_png(png)
    from glassbox.facts.trace import Settings, trace
    from glassbox.run import load_model

    loaded = load_model(model, allow_pickle=allow_pickle)
    if window is not None and window > loaded.n_layers:
        raise BadInput(f"--window must be at most the model's {loaded.n_layers} layers")
    doc = trace(loaded, prompt, subject, answer,
                Settings(samples=samples, noise=noise, window=window, seed=seed, min_p=min_p, kinds=chosen,
                         workers=workers))
    doc.update(loaded.placement)
    doc["neurons"] = []
    if neurons and "mlp_window" in doc["restore"]:
        from glassbox.facts.neurons import peak_layer, writing_neurons
        from glassbox.run.text import encode

        found = writing_neurons(loaded, encode(loaded, prompt), doc["subject"]["tokens"][-1], doc["answer"]["id"],
                                peak_layer(doc), k=neurons, seed=seed)
        doc["neurons"] = found["neurons"]
        doc["zeroing"] = {**found["zeroing"], "token": found["token"]}
    _keep(model, "trace", doc)
    if png is not None:
        from glassbox.facts.render import draw

        draw(doc, png)
    if as_json:
        print(json.dumps(doc))
        return
    from glassbox.facts.render import trace_lines

    print("\n".join(trace_lines(doc)))
    if png is not None:
        print(f"heatmaps written to {png}")


@facts.command("edit")
def edit_cmd(
    model: str = MODEL,
    prompt: str = typer.Option(..., "--prompt", help="The fact's prompt (e.g. 'The Colosseum is located in the "
                               "city of')."),
    subject: str = typer.Option(..., "--subject", help="The subject's text, as it appears in the prompt."),
    new: str = typer.Option(..., "--new", help="The new answer (e.g. ' Paris'; its first token is installed)."),
    out: Path = typer.Option(..., "--out", help="Folder for the edited model (config, safetensors, tokenizer); "
                             "never the source's own folder."),
    layer: int | None = typer.Option(None, "--layer", help="Which layer's W_down (default: the traced peak of "
                                     "the MLP window at the subject's last token)."),
    corpus: str = typer.Option("pydoc", "--corpus", help="Text for the keys' covariance (kjv, pydoc, brown:..., "
                               "a file, a folder)."),
    cov_tokens: int = typer.Option(16384, "--cov-tokens", help="Tokens of --corpus for the covariance."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", help="A reworded prompt to check (repeatable; "
                                         "facts of the built-in set bring their own)."),
    steps: int = typer.Option(40, "--steps", help="At most this many optimization steps for the value."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a .bin/.pt (weights only)."),
) -> None:
    """Install a new answer with a rank-one update of one MLP's W_down (r-ROME) and write the edited model."""
    from glassbox.corpora import parse_spec
    from glassbox.facts.edit import EditSettings, check_out, edit
    from glassbox.facts.factset import candidates, find

    if subject not in prompt:
        raise BadInput(f"the subject {subject!r} is not in the prompt", "--subject")
    if not new.strip():
        raise BadInput("--new is empty")
    if cov_tokens < 256 or steps < 1:
        raise BadInput("--cov-tokens must be >= 256 and --steps >= 1")
    parse_spec(corpus)
    from glassbox.bundled import is_bundled_name

    check_out(out, None if is_bundled_name(model) else Path(model))
    from glassbox.run import load_model

    loaded = load_model(model, allow_pickle=allow_pickle)
    if layer is None:
        from glassbox.facts.neurons import peak_layer
        from glassbox.facts.trace import Settings, subject_tokens, trace

        _, subj = subject_tokens(loaded, prompt, subject)
        layer = peak_layer(trace(loaded, prompt, subject, None,
                                 Settings(kinds=("mlp_window",), tokens=(subj[-1],), min_p=0.0)))
    known = find(prompt)
    paraphrases = list(paraphrase) or (list(known.paraphrases) if known else [])
    others = [(f.prompt, f.answer) for f in candidates() if f.subject != subject][:10]
    doc = edit(loaded, prompt, subject, new, out, layer, paraphrases, others,
               EditSettings(corpus=corpus, cov_tokens=cov_tokens, steps=steps))
    _keep(model, "edit", doc)
    if as_json:
        print(json.dumps(doc))
        return
    from glassbox.facts.render import edit_lines

    print("\n".join(edit_lines(doc)))

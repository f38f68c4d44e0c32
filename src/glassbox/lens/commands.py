"""`glassbox lens`, `glassbox lens train`, `glassbox patch`, `glassbox cluster`.

`lens` is both a command (`glassbox lens MODEL --text T`) and the head of `glassbox lens train MODEL ...`:
Typer cannot nest a group under a command of the same name, so `lens` takes an optional second argument
and treats a first argument of exactly `train` as the sub-command (a model folder named `train` still
works when it is the only argument, or as ./train).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from glassbox.errors import BadInput
from glassbox.run import options


def register(app: typer.Typer) -> None:
    app.command("lens")(lens)
    app.command("patch")(patch)
    app.command("cluster")(cluster)


def _console():
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)


def lens(
    model: str = typer.Argument(..., metavar="MODEL|train", help="A checkpoint path or bundled name, or the word "
                                "`train` followed by the model: `glassbox lens train MODEL --corpus F --out F`."),
    train_model: str | None = typer.Argument(None, metavar="MODEL", help="With `lens train`: the model."),
    text: str | None = typer.Option(None, "--text", help="Text to read through the lens."),
    as_json: bool = typer.Option(False, "--json", help="Print the contract's JSON document on stdout."),
    tuned: Path | None = typer.Option(None, "--tuned", help="A tuned lens (.safetensors from `lens train`)."),
    top_k: int = typer.Option(3, "--top-k", help="Tokens shown per layer in the table."),
    target: str | None = typer.Option(None, "--target", help="Also show this token's rank and probability."),
    png: Path | None = typer.Option(None, "--png", help="Write a layers × positions heatmap (KL, top token)."),
    corpus: str | None = typer.Option(None, "--corpus", help="`lens train`: a text or .jsonl file, a folder, "
                                       "kjv[:A-B] or pydoc[:A-B]."),
    out: Path | None = typer.Option(None, "--out", help="`lens train`: where to write the translators."),
    tokens: int = typer.Option(4096, "--tokens", help="`lens train`: corpus tokens to use."),
    steps: int = typer.Option(40, "--steps", help="`lens train`: KL optimizer steps after the closed-form fit."),
    seq_len: int = typer.Option(128, "--seq-len", help="`lens train`: tokens per training sequence."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle checkpoint (weights only)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Logit lens (or tuned lens) per layer and position; `glassbox lens train MODEL --corpus F --out F`."""
    if model == "train" and train_model is None and text is None:
        raise BadInput("usage: glassbox lens train MODEL --corpus FILE --out FILE.safetensors")
    if model == "train" and train_model is not None:
        return _lens_train(train_model, corpus, out, tokens, steps, seq_len, as_json, allow_pickle)
    if train_model is not None:
        raise BadInput(f"unexpected extra argument {train_model!r} (did you mean `glassbox lens train MODEL`?)")
    if text is None:
        raise BadInput("--text is required (the text to read through the lens)")
    if corpus is not None or out is not None:
        raise BadInput("--corpus/--out belong to `glassbox lens train MODEL`")
    if top_k < 1:
        raise BadInput(f"--top-k {top_k}: must be at least 1")
    if tuned is not None and not tuned.is_file():  # before the model loads: a typo costs milliseconds
        raise BadInput("no such tuned lens file", tuned)
    from glassbox.lens import logit
    from glassbox.lens import tuned as tuned_lens
    from glassbox.run import load_model

    loaded = load_model(model, allow_pickle=allow_pickle)
    logit.check_lm(loaded)
    translators = tuned_lens.load(tuned, loaded) if tuned is not None else None
    ids = logit.encode(loaded, text)
    result = logit.apply(loaded, ids, translators)
    if png is not None:
        _lens_png(png, loaded, result, tuned is not None)
    if as_json:
        print(json.dumps({**logit.to_json(loaded, result), **loaded.placement}))
        return
    _lens_table(loaded, result, top_k, target, "tuned lens" if tuned else "logit lens", png)


def _lens_png(path: Path, loaded, result, is_tuned: bool) -> None:
    from glassbox.lens import logit
    from glassbox.lens.plots import heatmap

    probs, ids = result.top(1)
    cells = [[logit.token_str(loaded, i[0])[:8] for i in ids[layer]] for layer in range(ids.shape[0])]
    heatmap(path, result.kl_to_final.numpy(), [str(r) for r in range(ids.shape[0])],
            [logit.token_str(loaded, t)[:10] for t in result.tokens],
            f"{'tuned' if is_tuned else 'logit'} lens: KL to final (nats), top token", "position", "layer",
            cells=cells)


def _lens_table(loaded, result, top_k: int, target: str | None, kind: str, png: Path | None) -> None:
    from rich.table import Table

    from glassbox.lens import logit
    from glassbox.lens.patching import _single_token

    console = _console()
    probs, ids = result.top(top_k)
    target_id = _single_token(loaded, target) if target else None
    ranks = result.rank_of(target_id) if target_id is not None else None
    toks = [logit.token_str(loaded, t) for t in result.tokens]
    table = Table(title=f"{kind}: top-{top_k} per layer, last position ({toks[-1]!r}); KL = KL(final ‖ lens)")
    table.add_column("layer", justify="right")
    table.add_column("KL (last)", justify="right")
    table.add_column("KL (mean)", justify="right")
    table.add_column("top tokens, last position")
    if target_id is not None:
        table.add_column(f"{target!r} rank / p", justify="right")
    n = ids.shape[0] - 1
    for layer in range(n + 1):
        name = "emb" if layer == 0 else ("out" if layer == n else str(layer))
        top = "  ".join(f"{logit.token_str(loaded, i)!r} {float(p):.2f}" for p, i in zip(probs[layer, -1], ids[layer, -1], strict=True))
        row = [name, f"{float(result.kl_to_final[layer, -1]):.2f}", f"{float(result.kl_to_final[layer].mean()):.2f}", top]
        if ranks is not None:
            p = float(result.logprobs[layer, -1, target_id].exp())
            row.append(f"{int(ranks[layer, -1])} / {p:.3f}")
        table.add_row(*row)
    console.print(table)
    console.print("tokens: " + " ".join(repr(t) for t in toks))
    if png is not None:
        console.print(f"heatmap (layer × position): {png}")


def _lens_train(model: str, corpus: str | None, out: Path | None, tokens: int, steps: int, seq_len: int,
                as_json: bool, allow_pickle: bool) -> None:
    if corpus is None or out is None:
        raise BadInput("`glassbox lens train MODEL` needs --corpus FILE and --out FILE.safetensors")
    if steps < 0 or tokens < 16 or seq_len < 8:
        raise BadInput("--steps must be ≥ 0, --tokens ≥ 16 and --seq-len ≥ 8")
    from glassbox.lens import corpus as corpora
    from glassbox.lens import tuned
    from glassbox.progress import track
    from glassbox.run import load_model

    text = corpora.read_text(corpus)  # a bad corpus fails before the model loads
    loaded = load_model(model, allow_pickle=allow_pickle)
    from glassbox.lens import logit

    logit.check_lm(loaded)
    ids = corpora.token_ids(loaded, text, tokens)
    lens_ = tuned.train(loaded, ids, steps=steps, seq_len=seq_len, progress=track)
    tuned.save(lens_, out, loaded, {"corpus": str(corpus), "tokens": str(len(ids)), "steps": str(steps)})
    report = {"out": str(out), "layers": lens_.n_layers, "tokens": len(ids), "steps": steps,
              "train_kl": {"logit": lens_.history.get("logit_kl", []), "tuned": lens_.history.get("tuned_kl", [])},
              **loaded.placement}
    if as_json:
        print(json.dumps(report))
        return
    console = _console()
    console.print(f"tuned lens: {lens_.n_layers} translators trained on {len(ids)} tokens, {steps} steps → {out}")
    logit_kl, tuned_kl = report["train_kl"]["logit"], report["train_kl"]["tuned"]
    if logit_kl:
        console.print("training-set KL per layer (logit → tuned): " +
                      ", ".join(f"{i}: {a:.2f}→{b:.2f}" for i, (a, b) in enumerate(zip(logit_kl, tuned_kl, strict=True))))


def patch(
    model: str = typer.Argument(..., help="A checkpoint path or bundled name."),
    clean: str | None = typer.Option(None, "--clean", help="The clean prompt."),
    corrupt: str | None = typer.Option(None, "--corrupt", help="The corrupted prompt (same number of tokens)."),
    metric: str = typer.Option("kl", "--metric",
                               help="'logit_diff: A - B', 'prob: T', 'logprob: T' or 'kl' (at the last position)."),
    over: str = typer.Option("heads", "--over", help="heads (layer × head) | resid | mlp (layer × position)."),
    direction: str = typer.Option("denoise", "--direction",
                                  help="denoise: corrupt run, clean patches; noise: clean run, corrupt patches."),
    batch_size: int = typer.Option(32, "--batch-size", help="Patched runs per forward pass."),
    png: Path | None = typer.Option(None, "--png", help="Write the heatmap here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle checkpoint (weights only)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
    path: list[str] | None = typer.Option(None, "--path", help="Path patching: SENDER[,SENDER]:RECEIVER.KIND, "
                                          "e.g. 16.0:18.6.k (repeatable; see glassbox.circuits.path)."),
    n_random: int = typer.Option(10, "--random", help="--path: random sender sets of the same size to compare."),
    n_seq: int = typer.Option(8, "--sequences", help="--path: repeated random blocks in the probe batch."),
    block: int = typer.Option(20, "--block", help="--path: tokens per block (each is repeated once)."),
    seed: int = typer.Option(0, "--seed", help="--path: seed of the probe batch and the random senders."),
) -> None:
    """Activation patching: which heads / residual positions / MLPs carry the clean-vs-corrupt difference.
    With --path: path patching of one sender → receiver input (q, k or v), on the receiver's induction metric."""
    from glassbox.lens import logit, patching
    from glassbox.progress import track
    from glassbox.run import load_model

    if path:
        from glassbox.circuits.path import run_cli

        return run_cli(model, path, n_random, n_seq, block, seed, batch_size, as_json, allow_pickle)
    if clean is None or corrupt is None:
        raise BadInput("glassbox patch needs --clean and --corrupt (or --path SENDER:RECEIVER.KIND)")
    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    if over not in patching.SITES:  # every option checked before the model loads
        raise BadInput(f"--over {over!r}: choose one of {', '.join(patching.SITES)}")
    if direction not in patching.DIRECTIONS:
        raise BadInput(f"--direction {direction!r}: choose one of {', '.join(patching.DIRECTIONS)}")
    patching.parse_metric(None, metric)
    loaded = load_model(model, allow_pickle=allow_pickle)
    m = patching.parse_metric(loaded, metric)
    clean_ids, corrupt_ids = logit.encode(loaded, clean), logit.encode(loaded, corrupt)
    result = patching.patch(loaded, clean_ids, corrupt_ids, m, over, direction, batch_size, progress=track)
    result.tokens = [logit.token_str(loaded, t) for t in clean_ids]
    if over != "heads":
        result.cols = [f"{i}:{t}" for i, t in enumerate(result.tokens)]
    if png is not None:
        from glassbox.lens.plots import heatmap

        heatmap(png, result.effect.numpy(), result.rows, result.cols,
                f"{direction} patching over {over}, {metric} (1 = full effect)",
                "head" if over == "heads" else "position", "layer", diverging=True)
    if as_json:
        print(json.dumps({**result.to_json(), **loaded.placement}))
        return
    console = _console()
    console.print(f"{metric}: clean {result.clean:.3f}, corrupt {result.corrupt:.3f} "
                  f"({result.forwards} forward passes, {batch_size} patches per pass)")
    col = "head" if over == "heads" else "position"
    from rich.table import Table

    table = Table(title=f"top cells, {direction} patching over {over} (effect: 0 = unpatched, 1 = full)")
    for name in ("layer", col, "effect", "metric"):
        table.add_column(name, justify="right")
    for r, c, e in result.top(10):
        table.add_row(str(r), result.cols[c], f"{e:+.3f}", f"{float(result.value[r, c]):.3f}")
    console.print(table)
    if png is not None:
        console.print(f"heatmap (layer × {col}): {png}")


def cluster(
    model: str = typer.Argument(..., help="A checkpoint path or bundled name."),
    texts: str = typer.Option(..., "--texts", help="A text or .jsonl file, a folder, kjv[:A-B] or pydoc[:A-B]; "
                              "heads are described over it."),
    k: str = typer.Option("auto", "--k", help="Number of clusters, or 'auto' (best silhouette, k = 2..12)."),
    n_texts: int = typer.Option(32, "--n-texts", help="How many text windows to read."),
    seq_len: int = typer.Option(64, "--seq-len", help="Tokens per window."),
    atlas: Path | None = typer.Option(None, "--atlas", help="An `atlas --json` document to compare with "
                                      "(default: the attention probes are run here)."),
    png: Path | None = typer.Option(None, "--png", help="Write the cluster centroids' offset profiles here."),
    seed: int = typer.Option(0, "--seed", help="k-means seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle checkpoint (weights only)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Cluster heads by their attention patterns over texts; compare the clusters with the atlas roles."""
    from glassbox.heads.annotate import load_atlas
    from glassbox.lens import cluster as clustering
    from glassbox.lens import corpus
    from glassbox.run import load_model

    if n_texts < 1 or seq_len < 8:
        raise BadInput("--n-texts must be ≥ 1 and --seq-len ≥ 8")
    if k != "auto" and not (k.isdigit() and int(k) >= 1):  # the head count is checked once the model is known
        raise BadInput(f"--k {k!r}: give a number of clusters or 'auto'")
    text = corpus.read_text(texts)
    doc = load_atlas(atlas) if atlas is not None else None  # a bad file fails before the model loads
    loaded = load_model(model, allow_pickle=allow_pickle)
    rows = corpus.windows(loaded, corpus.token_ids(loaded, text, n_texts * seq_len), seq_len)
    feats = clustering.features(loaded, rows)
    if doc is not None:
        roles, source = clustering.roles_from_atlas(doc, loaded.n_layers, loaded.n_heads), f"atlas file {atlas}"
    else:
        roles, source = clustering.roles_from_probes(loaded, seed), "atlas attention probes (no ablation check)"
    report = clustering.analyze(feats, roles, loaded.n_heads, k, seed, source)
    report = {"model": loaded.name, "n_layers": loaded.n_layers, "n_heads": loaded.n_heads,
              "texts": {"file": str(texts), "windows": int(rows.shape[0]), "seq_len": int(rows.shape[1])}, **report,
              **loaded.placement}
    if png is not None:
        from glassbox.lens.plots import heatmap

        values = [[c["centroid"][f] for f in clustering.FEATURES] for c in report["clusters"]]
        labels = [f"{c['cluster']}: {c.get('dominant_role', '')} ({c['size']})" for c in report["clusters"]]
        heatmap(png, values, labels, clustering.FEATURES, "cluster centroids: where the heads look", "feature",
                "cluster")
    if as_json:
        print(json.dumps(report))
        return
    _render_cluster(report, _console())


def _render_cluster(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    ks = report["silhouette_by_k"]
    chosen = f"k = {report['k']}" + (f" (best silhouette {ks[str(report['k'])]:.3f} over k = 2..{max(map(int, ks))})"
                                     if ks else "")
    console.print(f"{report['model']}: {report['n_heads_total']} heads, {chosen}")
    table = Table(title="clusters: centroid pattern and atlas roles")
    for col in ("cluster", "size", "first", "self", "prev", "offset 2-3", "far (8+)", "entropy", "dup", "induct",
                "roles (atlas)"):
        table.add_column(col, justify="right" if col != "roles (atlas)" else "left")
    for c in report["clusters"]:
        f = c["centroid"]
        far = f["offset:8-15"] + f["offset:16+"]
        roles = ", ".join(f"{r} {v}" for r, v in sorted(c.get("roles", {}).items(), key=lambda kv: -kv[1]))
        table.add_row(str(c["cluster"]), str(c["size"]), f"{f['first']:.2f}", f"{f['offset:0']:.2f}",
                      f"{f['offset:1']:.2f}", f"{f['offset:2'] + f['offset:3']:.2f}", f"{far:.2f}",
                      f"{f['entropy']:.2f}", f"{f['duplicate']:.2f}", f"{f['induction']:.2f}", roles)
    console.print(table)
    if "agreement" in report:
        agreement = report["agreement"]
        named = agreement["adjusted_rand_named"]
        console.print(f"agreement with roles from {agreement['roles_from']}: adjusted Rand "
                      f"{agreement['adjusted_rand']:.3f} (all heads), "
                      + (f"{named:.3f} (heads with a role)" if named is not None else "n/a (no named heads)"))
        for role, m in agreement["roles"].items():
            console.print(f"  {role}: {m['heads']} heads, {m['recall']:.0%} in cluster {m['cluster']} "
                          f"(which is {m['precision']:.0%} {role})")
        for line in report["disagreements"][:20]:
            console.print(f"  · {line}")
        if len(report["disagreements"]) > 20:
            console.print(f"  … {len(report['disagreements']) - 20} more (see --json)")
    else:
        console.print("no atlas roles available (pass --atlas FILE from `glassbox atlas MODEL --json`)")

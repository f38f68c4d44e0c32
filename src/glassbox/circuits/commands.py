"""`glassbox circuits` and `glassbox heads why` (the `--path` mode of `glassbox patch` is `circuits.path.run_cli`,
called from lens/commands.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from glassbox.errors import BadInput
from glassbox.run import options


def register(app: typer.Typer) -> None:
    app.command("circuits")(circuits)
    # `heads why` joins the `heads` group that glassbox.heads.commands registered (cli.py loads it first);
    # found on the app, since no module imports another area's commands.py
    heads = next((g.typer_instance for g in app.registered_groups if g.name == "heads"), None)
    if heads is not None:
        heads.command("why")(heads_why)


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[str]], justify: str = "left") -> Any:
    """A rich table of already formatted cells (the composition pairs and `heads why`)."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify=justify)
    for cells in rows:
        table.add_row(*cells)
    return table


def circuits_doc(model: str, n_pairs: int = 200, n_top: int = 5, progress: Any = None) -> tuple[dict, Any]:
    """The circuits JSON document (pairs sorted by score, the first `n_pairs` with their bytes) and the scores."""
    from glassbox import weights
    from glassbox.circuits import compose
    from glassbox.run.load import set_threads

    set_threads()
    try:
        aw = weights.all_heads(model)
    except (TypeError, ValueError, KeyError) as exc:
        raise BadInput(f"cannot read per-head weights: {exc}", model) from None
    start = time.perf_counter()
    comp = compose.composition(aw, progress=progress)
    seconds = time.perf_counter() - start
    pairs = comp.pairs()
    total = len(pairs)
    if n_pairs > 0:
        pairs = pairs[:n_pairs]
    byte_cache: dict[tuple[int, int], Any] = {}

    def head_bytes(lyr: int, h: int) -> Any:
        if (lyr, h) not in byte_cache:
            byte_cache[(lyr, h)] = aw.bytes(lyr, h) or {}
        return byte_cache[(lyr, h)]

    reads = {"q": ("q", "k"), "k": ("k", "q"), "v": ("v", "o")}  # the receiver matrices each kind involves
    for p in pairs:
        r, s = head_bytes(*p["to"]), head_bytes(*p["from"])
        p["bytes"] = {"receiver": {m: r.get(m, []) for m in reads[p["kind"]]},
                      "sender": {m: s.get(m, []) for m in ("o", "v")}}
    top = {f"{lyr}.{h}": comp.top(lyr, h, n=n_top) for lyr in range(1, comp.n_layers) for h in range(comp.n_heads)}
    doc = {"model": str(model), "n_layers": comp.n_layers, "n_heads": comp.n_heads, "d_model": comp.d_model,
           "family": aw.family, "pairs": pairs, "pairs_total": total, "top": top,
           "baseline": comp.baseline,
           "convention": "HF layout, column vectors: W_Q,W_K,W_V [d_head,d_model], W_O [d_model,d_head]; "
                         "W_QK = W_Qᵀ W_K, W_OV = W_O W_V; score = ‖M W_OV^s‖/(‖M‖‖W_OV^s‖) with M = W_QK^r (k), "
                         "W_QK^rᵀ (q), W_OV^r (v)",
           "null": "baseline = 1/√d_model, the RMS score when the sender's output is rotated by a Haar-random "
                   "rotation (exact for any spectra); null_sd from the two factors' spectra; z = (score² − 1/d)/sd",
           "approximations": comp.approximations, "seconds": seconds}
    return doc, comp


def circuits(
    model: str = typer.Argument(..., help="A checkpoint (.safetensors/.gguf/folder) or a bundled model's name."),
    as_json: bool = typer.Option(False, "--json", help="Print the circuits JSON document on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Folder for circuits.json and circuits.png (default "
                                    "glassbox-circuits/<model>; with --json, files are written only when given)."),
    pairs: int = typer.Option(200, "--pairs", help="Pairs listed (highest score first, with bytes); 0 = all."),
    top: int = typer.Option(5, "--top", help="Top senders per receiver head."),
) -> None:
    """Q/K/V composition scores of every head pair from the weights alone, top senders, bytes, heatmap."""
    from glassbox.fileio import write_json
    from glassbox.progress import track

    if pairs < 0 or top < 1:
        raise BadInput("--pairs must be ≥ 0 and --top ≥ 1")
    doc, comp = circuits_doc(model, pairs, top, progress=track)
    folder = out if out is not None else (None if as_json else Path("glassbox-circuits") / Path(model).stem)
    if folder is not None:
        doc["png"] = str(heatmap(comp, folder / "circuits.png", model))
        write_json(folder / "circuits.json", doc)
    if as_json:
        print(json.dumps(doc))
        return
    def row(p: dict) -> list[str]:
        rb = next(iter(p["bytes"]["receiver"].values()), [])
        where = f"{rb[0]['tensor']}{rb[0]['slice']}" if rb else "-"
        return [f"{p['from'][0]}.{p['from'][1]}", f"{p['to'][0]}.{p['to'][1]}", p["kind"], f"{p['score']:.3f}",
                f"{p['z']:.1f}", where]

    console = _console()
    console.print(_table(f"strongest composition, {model} (baseline {doc['baseline']:.3f} = null RMS)",
                         ["sender", "receiver", "kind", "score", "z", "receiver bytes"],
                         [row(p) for p in doc["pairs"][:20]], justify="right"))
    console.print(f"{doc['pairs_total']} scores in {doc['seconds']:.1f} s; " + "; ".join(doc["approximations"]))
    if folder is not None:
        console.print(f"written: {folder / 'circuits.json'}, {doc['png']}")


def heatmap(comp: Any, path: Path, title: str) -> Path:
    """Receivers × senders, one panel per kind (scores; empty above the diagonal: no later senders)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glassbox.circuits.compose import KINDS
    from glassbox.fileio import save_png

    n = comp.n_layers * comp.n_heads
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for k, ax in enumerate(axes):
        m = comp.score[k].reshape(n, n).numpy()
        im = ax.imshow(m, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{KINDS[k].upper()}-composition", fontsize=10)
        ax.set_xlabel("sender (layer·heads + head)")
        ax.set_ylabel("receiver")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{title}: composition scores (null RMS {comp.baseline:.3f})", fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def _parse_head(spec: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    layer, head = (int(x) for x in spec.split("."))
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise BadInput(f"head {spec!r}: this model has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
    return layer, head


def heads_why(
    model: str = typer.Argument(..., help="A checkpoint or bundled model name."),
    head_spec: str = typer.Argument(..., metavar="LAYER.HEAD", help="Which head, e.g. 18.6."),
    text: str = typer.Option(..., "--text", help="Text to run (token ids when the checkpoint has no tokenizer)."),
    keys: int = typer.Option(2, "--keys", help="Most-attended keys decomposed per query."),
    query: list[int] | None = typer.Option(None, "--query", help="Query positions (default: all but 0)."),
    png: Path | None = typer.Option(None, "--png", help="Write the picture here (default: why-L.H.png with "
                                    "the table; none with --json unless given)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a .bin/.pt with torch.load(weights_only=True)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Why a head attends where it does: its attention logits split over the components of the residual."""
    from glassbox.circuits import why
    from glassbox.run import load_model
    from glassbox.run.text import encode, token_str

    if keys < 1:
        raise BadInput("--keys must be at least 1")
    parts = head_spec.split(".")
    if len(parts) != 2 or not all(x.isdigit() for x in parts):
        raise BadInput(f"head {head_spec!r}: expected LAYER.HEAD, e.g. 18.6")
    loaded = load_model(model, allow_pickle=allow_pickle)
    layer, head = _parse_head(head_spec, loaded.n_layers, loaded.n_heads)
    ids = encode(loaded, text, ids_without_tokenizer=True)
    doc = why.decompose(loaded, ids, layer, head, keys=keys, queries=list(query) if query else None)
    doc["tokens"] = [token_str(loaded, i) for i in ids]
    doc.update(loaded.placement)
    target = png if png is not None else (None if as_json else Path(f"why-{layer}.{head}.png"))
    if target is not None:
        doc["png"] = str(why.picture(doc, target))
    if as_json:
        print(json.dumps(doc))
        return
    toks = doc["tokens"]

    def row(p: dict) -> list[str]:
        fmt = lambda parts: ", ".join(f"{x['component']} {x['value']:+.2f}" for x in parts[:3])  # noqa: E731
        return [f"{p['query']} {toks[p['query']]!r}", f"{p['key']} {toks[p['key']]!r}", f"{p['attention']:.2f}",
                f"{p['logit']:.2f}", fmt(p["parts"]), fmt(p["query_parts"])]

    best = sorted(doc["positions"], key=lambda p: -p["attention"])[:15]
    console = _console()
    console.print(_table(f"head {layer}.{head}: what makes each logit (largest parts; key side | query side)",
                         ["query", "key", "attn", "logit", "key side", "query side"],
                         [row(p) for p in sorted(best, key=lambda p: (p["query"], p["key"]))]))
    console.print(f"checks (relative errors): {', '.join(f'{k} {v:.1e}' for k, v in doc['checks'].items())}; "
                  + doc["approximations"][0])
    if target is not None:
        console.print(f"picture: {doc['png']}")

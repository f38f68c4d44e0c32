"""One head up close: probe scores, its attention on a text, and what ablating it changes there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.heads.atlas import Settings, compute_scores
from glassbox.logprob import kl_logp
from glassbox.run import hooks
from glassbox.run.load import Loaded
from glassbox.run.text import encode

TOP_KEYS = 3


def _scores(loaded: Loaded, layer: int, head: int, atlas_path: Path | None) -> tuple[dict, list]:
    if atlas_path is not None:
        from glassbox.heads.annotate import load_atlas

        atlas = load_atlas(atlas_path)
        if (atlas["n_layers"], atlas["n_heads"]) != (loaded.n_layers, loaded.n_heads):
            raise BadInput("this atlas is for a model of another shape", atlas_path)
        entry = next(h for h in atlas["heads"] if (h["layer"], h["head"]) == (layer, head))
        return entry["scores"], entry["roles"]

    scores, _ = compute_scores(loaded, Settings())
    return {name: round(float(s[layer, head]), 4) for name, s in scores.items()}, []


def describe_head(loaded: Loaded, layer: int, head: int, text: str, atlas_path: Path | None = None) -> dict[str, Any]:
    import torch

    if loaded.tokenizer is None:
        raise BadInput("this checkpoint has no tokenizer, so it cannot read --text", loaded.source)
    ids = encode(loaded, text)
    if len(ids) < 2:
        raise BadInput("--text needs at least one token")
    tokens = torch.tensor([ids])
    names = [f"blocks.{layer}.attn.pattern", f"blocks.{layer}.attn.z"]
    clean, cache = hooks.run_with_cache(loaded, tokens, names=names)
    pattern = cache[f"blocks.{layer}.attn.pattern"][0, head]  # [q, k]
    words = [loaded.tokenizer.decode([t]) for t in ids]
    attention = []
    for q in range(len(ids)):
        w, k = pattern[q].topk(min(TOP_KEYS, q + 1 if not loaded.is_encoder else len(ids)))
        attention.append([[int(ki), words[int(ki)], round(float(wi), 4)] for wi, ki in zip(w, k, strict=True)])
    mean = cache[f"blocks.{layer}.attn.z"][0, :, head].mean(0)
    ablated = hooks.run(loaded, tokens, [hooks.HeadEdit(layer, head, mean)])
    effect = _effect(loaded, tokens, clean, ablated, words)
    scores, roles = _scores(loaded, layer, head, atlas_path)
    return {"model": loaded.name, "layer": layer, "head": head, "scores": scores, "roles": roles,
            "tokens": words, "attention": attention, "ablation": effect}


def _effect(loaded: Loaded, tokens: Any, clean: Any, ablated: Any, words: list[str]) -> dict[str, Any]:
    import torch

    if loaded.is_encoder:
        change = 1 - torch.nn.functional.cosine_similarity(clean[0], ablated[0], dim=-1)
        return {"kind": "mean", "metric": "1 - cos(last hidden state)",
                "per_position": [round(float(c), 5) for c in change]}
    p, q = torch.log_softmax(clean[0].float(), -1), torch.log_softmax(ablated[0].float(), -1)
    kl = kl_logp(p, q)
    nxt = tokens[0, 1:]
    loss_clean = float(-p[:-1].gather(-1, nxt[:, None]).mean())
    loss_ablated = float(-q[:-1].gather(-1, nxt[:, None]).mean())
    tok = loaded.tokenizer
    changed = []
    for i in range(len(words)):
        a, b = int(p[i].argmax()), int(q[i].argmax())
        if a != b:
            changed.append({"position": i, "token": words[i], "clean_top": tok.decode([a]),
                            "ablated_top": tok.decode([b]), "kl": round(float(kl[i]), 5)})
    return {"kind": "mean", "loss_clean": round(loss_clean, 5), "loss_ablated": round(loss_ablated, 5),
            "kl_per_position": [round(float(k), 5) for k in kl], "top_changed": changed}


def render_head(doc: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    console.print(f"[bold]{doc['model']} head {doc['layer']}.{doc['head']}[/bold]")
    scores = Table(title="probe scores (0..1)")
    scores.add_column("probe")
    scores.add_column("score", justify="right")
    scores.add_column("role")
    roles = {r["role"]: r for r in doc["roles"]}
    for name, value in sorted(doc["scores"].items(), key=lambda kv: -kv[1]):
        r = roles.get(name)
        note = "" if r is None else ("✓ validated" if r["validated"] else "✗ not validated") + \
            f" (ablation effect {r['ablation_effect']:+.3g})"
        scores.add_row(name, f"{value:.3f}", note)
    console.print(scores)
    att = Table(title="attention on the text (top keys per query token)")
    att.add_column("#", justify="right")
    att.add_column("token")
    att.add_column("attends to")
    for i, (word, top) in enumerate(zip(doc["tokens"], doc["attention"], strict=True)):
        att.add_row(str(i), repr(word), ", ".join(f"{k}:{w!r} {a:.2f}" for k, w, a in top))
    console.print(att)
    eff = doc["ablation"]
    if "loss_clean" in eff:
        console.print(f"mean-ablating the head: loss {eff['loss_clean']:.4f} → {eff['loss_ablated']:.4f}; "
                      f"max KL {max(eff['kl_per_position']):.4g}; top prediction changed at "
                      f"{len(eff['top_changed'])} of {len(doc['tokens'])} positions")
        for c in eff["top_changed"][:10]:
            console.print(f"  after {c['token']!r}: {c['clean_top']!r} → {c['ablated_top']!r} (KL {c['kl']:.3g})")
    else:
        console.print(f"mean-ablating the head: max representation change {max(eff['per_position']):.4g}")

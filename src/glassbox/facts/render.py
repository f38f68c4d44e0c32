"""The tracing heatmaps (the paper's Figure 1 layout: tokens down, layers across, one panel per kind), and the
terminal summaries of a trace and an edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TITLES = {"resid": "residual stream", "mlp": "MLP output", "attn": "attention output",
          "mlp_window": "MLP outputs, window of {w}"}


def draw(doc: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from glassbox.fileio import save_png

    kinds = list(doc["restore"])
    subj = set(doc["subject"]["tokens"])
    labels = [f"{t!r}*" if i in subj else repr(t) for i, t in enumerate(doc["tokens"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 0.35 * len(labels) + 1.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        grid = np.array(doc["restore"][kind]).T  # [token, layer]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=doc["answer"]["p_corrupt"],
                       vmax=max(doc["answer"]["p_clean"], float(grid.max())))
        ax.set_title(TITLES[kind].format(w=doc["window"]), fontsize=10)
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if ax is axes[0][0] else [], fontsize=8)
        pk = doc["peak"][kind]
        ax.plot(pk["layer"], pk["token"], marker="o", mfc="none", mec="red", ms=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(f"p({doc['answer']['token']!r})", fontsize=8)
    a = doc["answer"]
    fig.suptitle(f"{doc['prompt']!r} → {a['token']!r}: clean {a['p_clean']:.3f}, corrupted {a['p_corrupt']:.3f} "
                 f"(subject tokens *; {doc['noise']['samples']} noise samples)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def trace_lines(doc: dict[str, Any]) -> list[str]:
    a = doc["answer"]
    toks = doc["tokens"]
    lines = [f"prompt: {doc['prompt']!r}; subject {doc['subject']['text']!r} = tokens {doc['subject']['tokens']}",
             f"answer {a['token']!r}: p clean {a['p_clean']:.3f}, corrupted {a['p_corrupt']:.3f} "
             f"(noise {doc['noise']['scale']:.4f}, {doc['noise']['samples']} samples)"]
    for kind, pk in doc["peak"].items():
        lines.append(f"  peak {kind:<10} layer {pk['layer']:>2}, token {pk['token']} ({toks[pk['token']]!r}): "
                     f"p {pk['p']:.3f}")
    if doc.get("neurons"):
        z = doc["zeroing"]
        lines.append(f"writing neurons at layer {doc['neurons'][0]['layer']} (token {z['token']}): zeroing the top "
                     f"{z['k']} gives p {z['p_zeroed']:.4f} (clean {z['p_clean']:.4f}); larger drop than "
                     f"{z['beats']} of {z['of']} random sets of {z['k']}")
        for n in doc["neurons"]:
            out = n["bytes"].get("out", {})
            lines.append(f"  neuron {n['index']:>5}  write {n['write']:+.4f}  W_down column at byte "
                         f"{out.get('offset')} (run {out.get('length')} B, stride {out.get('stride')}, "
                         f"{out.get('count')} runs)")
    c = doc["cost"]
    lines.append(f"cost: {c['forwards']} forwards, {c['tokens']} tokens, {c['seconds']:.1f} s")
    return lines


def edit_lines(doc: dict[str, Any]) -> list[str]:
    e = doc["efficacy"]
    lines = [f"edited {doc['tensor']} (layer {doc['layer']}): {doc['old']!r} → {doc['new']!r}",
             f"efficacy: p_new {e['p_new']:.3f} vs p_old {e['p_old']:.3f} ({'ok' if e['success'] else 'FAILED'})"]
    for p in doc["paraphrase"]:
        lines.append(f"  paraphrase {p['prompt']!r}: top-1 {p['top1']!r}, p_new {p['p_new']:.3f} "
                     f"({'ok' if p['success'] else 'no'})")
    kept = sum(s["kept"] for s in doc["specificity"])
    lines.append(f"specificity: {kept}/{len(doc['specificity'])} other facts keep their top-1")
    f = doc["fluency"]
    lines.append(f"fluency: perplexity {f['ppl_before']:.2f} → {f['ppl_after']:.2f} (×{f['ratio']:.4f})")
    for d in doc["diff"]:
        lines.append(f"diff: {d['tensor']}: {d['bytes_changed']} bytes changed in {len(d['ranges'])} range(s), "
                     f"first {d['ranges'][0]}")
    if doc.get("out"):
        lines.append(f"edited model written to {doc['out']}")
    return lines

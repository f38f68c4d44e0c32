"""The human view of an anatomy: the declaration, the seed's "level → where it is written" table with real
counts, each level's formula bound to this file's tensors, and every tensor with its head split."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from glassbox.anatomy import Anatomy, TensorRole, head_bytes
from glassbox.registry import FAMILIES

# What each level computes, in the seed's terms. {W} is replaced by the bound tensor (and head slice).
FORMULAS: dict[str, str] = {
    "embedding": "x₀ = W_E[token]",
    "position_embedding": "x₀ += W_pos[position]",
    "attention.norm": "x̂ = norm(x) ⊙ γ   (γ = {W})",
    "attention.q": "q_h = W_q[h] · x̂   then rotary(q_h) where the model uses RoPE",
    "attention.k": "k_g = W_k[g] · x̂   (g = kv group of h)",
    "attention.v": "v_g = W_v[g] · x̂",
    "attention.qkv": "[q_h | k_h | v_h] = W_qkv[h] · x̂   (fused)",
    "attention.qk_norm": "q_h ← norm(q_h) ⊙ γ_q ;  k_g ← norm(k_g) ⊙ γ_k",
    "attention.o": "x ← x + Σ_h W_o[:, h] · (A_h · v_g),   A_h = softmax(q_h · k_gᵀ / √d_head + mask)",
    "mlp.norm": "x̂ = norm(x) ⊙ γ",
    "mlp.in": "u = W_in · x̂",
    "mlp.gate": "g = act(W_gate · x̂)   (gated MLP: u ⊙ g)",
    "mlp.gate_up": "[g | u] = W_gate_up · x̂   (fused; gated MLP: u ⊙ act(g))",
    "mlp.out": "x ← x + W_out · act(u)",
    "final_norm": "x̂_L = norm(x_L) ⊙ γ",
    "unembedding": "logits = W_U · x̂_L",
    "buffer": "not learned: a constant the module keeps (positions, masks, rotary frequencies)",
    "unknown": "no role in this architecture's map",
}


def render(anatomy: Anatomy, console: Console, layer: int = 0, all_heads: bool = False, brief: bool = False) -> None:
    """The tables; `brief` leaves out the per-tensor and per-head tables (the demo's summary)."""
    ck = anatomy.checkpoint
    console.print(f"[bold]{escape(str(ck.path))}[/]  format [cyan]{ck.format}[/]  architecture [cyan]{anatomy.architecture}"
                  f"[/] (from {anatomy.architecture_source})  parameters [cyan]{anatomy.n_parameters:,}[/]")
    _declaration(anatomy, console)
    _levels(anatomy, console)
    _formulas(anatomy, console, layer)
    if not brief:
        _tensors(anatomy, console, layer, all_heads)
    if anatomy.labels:
        _labels(anatomy, console)
    for w in anatomy.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def _declaration(anatomy: Anatomy, console: Console) -> None:
    """Step 1 of the seed: the architecture is a declaration, and this is it."""
    config = anatomy.checkpoint.config or {}
    keys = [k for k in ("model_type", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
                        "num_key_value_heads", "hidden_size", "n_embd", "head_dim", "intermediate_size",
                        "vocab_size", "max_position_embeddings", "rope_theta", "hidden_act",
                        "tie_word_embeddings", "sliding_window") if k in config]
    if not keys:
        return
    table = Table(title=f"The declaration ({anatomy.checkpoint.config_source})", title_justify="left")
    table.add_column("config key")
    table.add_column("value")
    for k in keys:
        table.add_row(k, str(config[k]))
    console.print(table)


def _levels(anatomy: Anatomy, console: Console) -> None:
    total = max(anatomy.n_parameters, 1)
    table = Table(title="Level → where it is written in this file", title_justify="left")
    for col in ("level", "tensors", "parameters", "share", "example tensor"):
        table.add_column(col, justify="right" if col in ("tensors", "parameters", "share") else "left")
    first: dict[str, str] = {}
    for t in anatomy.tensors:
        first.setdefault(t.level, t.entry.name)
    for row in anatomy.levels():
        table.add_row(row["level"], str(row["tensors"]), f"{row['n_parameters']:,}",
                      f"{100 * row['n_parameters'] / total:.1f}%", first[row["level"]])
    config = anatomy.checkpoint.config or {}
    causal = anatomy.architecture not in FAMILIES or FAMILIES[anatomy.architecture].causal
    if "unembedding" not in first and config.get("tie_word_embeddings", causal):
        table.add_row("unembedding", "0", "tied", "", f"W_U = W_Eᵀ: shares {first.get('embedding', 'the embedding')}")
    table.add_row("purpose of each head", "", "", "", "[italic]nowhere: born during training (see glassbox atlas)")
    console.print(table)


def _formulas(anatomy: Anatomy, console: Console, layer: int) -> None:
    """The mathematics → the bytes: each level's formula with its symbols bound to this file's tensors."""
    tree = Tree(f"[bold]Layer {layer} as mathematics, bound to this file[/] (head 0 shown for split tensors)")
    largest: dict[str, TensorRole] = {}
    for t in anatomy.tensors:
        if t.layer not in (None, layer) or t.level in ("buffer", "unknown"):
            continue
        if t.level not in largest or _weight_first(t) > _weight_first(largest[t.level]):
            largest[t.level] = t
    for t in largest.values():
        node = tree.add(f"[cyan]{t.level}[/]: {escape(FORMULAS[t.level].replace('{W}', t.entry.name))}")
        if t.heads:
            h = t.heads[0]
            b = head_bytes(t.entry, h)
            where = f"bytes {b['offset']:,}+{b['length']:,}" + (
                f" every {b['stride']:,} × {b['count']}" if b["stride"] else "")
            node.add(escape(f"head {h.head} ({h.kind}) = {t.entry.name}{h.slice_str(len(t.entry.shape))}") + f"  [dim]{where}[/]")
        else:
            node.add(escape(f"{t.entry.name}  {list(t.entry.shape)} {t.entry.dtype}"))
    console.print(tree)


def _head_summary(t: TensorRole) -> str:
    if not t.heads:
        return ""
    kinds: dict[str, int] = {}
    for h in t.heads:
        kinds[h.kind] = kinds.get(h.kind, 0) + 1
    size = t.heads[0].stop - t.heads[0].start
    axis = "rows" if t.heads[0].axis == 0 else "cols"
    groups = {h.kv_group for h in t.heads if h.kind == "q"}
    gqa = f", {len(groups)} kv groups" if t.heads[0].kind == "q" and 1 < len(groups) < kinds["q"] else ""
    return " + ".join(f"{n} {k}" for k, n in kinds.items()) + f" × {size} {axis}{gqa}"


def _tensors(anatomy: Anatomy, console: Console, layer: int, all_heads: bool) -> None:
    table = Table(title="Tensors", title_justify="left")
    for col in ("name", "dtype", "shape", "level", "layer", "heads"):
        table.add_column(col)
    for t in anatomy.tensors:
        table.add_row(t.entry.name, t.entry.dtype, "×".join(map(str, t.entry.shape)) or "scalar", t.level,
                      "" if t.layer is None else str(t.layer), _head_summary(t))
    console.print(table)
    heads = Table(title=f"Heads of layer {layer}: which slice, which bytes", title_justify="left")
    for col in ("tensor", "head", "kind", "kv group", "slice", "offset", "length", "stride", "count"):
        heads.add_column(col)
    for t in anatomy.tensors:
        if t.layer != layer and not all_heads:
            continue
        for h in t.heads:
            b = head_bytes(t.entry, h)
            heads.add_row(t.entry.name, str(h.head), h.kind, str(h.kv_group), escape(h.slice_str(len(t.entry.shape))),
                          f"{b['offset']:,}", f"{b['length']:,}", "" if b["stride"] is None else f"{b['stride']:,}",
                          str(b["count"]))
    if heads.row_count:
        console.print(heads)


def _labels(anatomy: Anatomy, console: Console) -> None:
    table = Table(title="Head labels written into this file (glassbox annotate)", title_justify="left")
    for col in ("head", "roles"):
        table.add_column(col)
    for entry in anatomy.labels.get("heads", []):
        roles = [f"{r.get('role')} {r.get('score', 0):.2f}{' ✓' if r.get('validated') else ''}"
                 for r in entry.get("roles", [])]
        if roles:
            table.add_row(f"L{entry.get('layer')}.H{entry.get('head')}", ", ".join(roles))
    console.print(table)


def _weight_first(t: TensorRole) -> tuple[int, bool]:
    """The tensor that best stands for its level: the largest, and a weight rather than a same-size bias."""
    return (t.entry.numel, t.entry.name.endswith("weight"))

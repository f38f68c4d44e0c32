"""Where each uniform hook point lives inside each architecture's HF modules (each family's `Layout` in
glassbox.registry), and the helpers that walk there.

Paths are relative to one decoder/encoder layer. `o_proj` is the attention output projection: its
input is z, the per-head attention outputs concatenated ([batch, seq, heads·head_dim]), so a forward
pre-hook there sees and can edit every head separately at no extra cost. `attn` returns
(output, weights) in every family, so the attention pattern is taken from its return value.
"""

from __future__ import annotations

from typing import Any

from glassbox.registry import FAMILIES, Layout

# family → where its hook points sit; declared with the rest of each family in glassbox.registry
LAYOUTS: dict[str, Layout] = {name: f.layout for name, f in FAMILIES.items()}


def submodule(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def layers(model: Any, architecture: str) -> list[Any]:
    return list(submodule(model.base_model, LAYOUTS[architecture].layers))


def o_weight(model: Any, architecture: str, layer: int) -> Any:
    """W_O as [d_model, heads·head_dim] (the nn.Linear layout), whatever the storage, in float32 (a float32
    model's own parameter, so an in-place edit reaches the model)."""
    lay = LAYOUTS[architecture]
    w = submodule(layers(model, architecture)[layer], lay.o_proj).weight.float()
    return w.t() if lay.conv1d else w


def head_dim(model: Any) -> int:
    cfg = model.config
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def final_norm(model: Any, architecture: str) -> Any | None:
    """The norm applied to the last residual before the unembedding (None for BERT: post-LN already)."""
    path = FAMILIES[architecture].final_norm
    return submodule(model.base_model, path) if path else None

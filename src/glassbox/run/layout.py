"""Where each uniform hook point lives inside each architecture's HF modules: one table row per family.

Paths are relative to one decoder/encoder layer. `o_proj` is the attention output projection: its
input is z, the per-head attention outputs concatenated ([batch, seq, heads·head_dim]), so a forward
pre-hook there sees and can edit every head separately at no extra cost. `attn` returns
(output, weights) in every family, so the attention pattern is taken from its return value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    layers: str  # the ModuleList of layers, relative to model.base_model
    attn: str  # module returning (attn_output, attn_weights)
    o_proj: str  # output projection; its input is z
    mid_input: str | None  # module whose input is resid_mid
    mlp_out: str  # module whose output is the MLP's write to the residual stream
    conv1d: bool = False  # GPT-2 Conv1D stores weights [in, out]
    mid_output: str | None = None  # else: module whose output[0] is resid_mid; neither: resid_pre + attn.out


LAYOUTS = {
    "llama": Layout("layers", "self_attn", "self_attn.o_proj", "post_attention_layernorm", "mlp"),
    # Gemma 3 norms the attention output before adding it, so resid_mid is the pre-MLP norm's input and
    # the MLP's write is the post-feed-forward norm's output.
    "gemma3": Layout("layers", "self_attn", "self_attn.o_proj", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"),
    "gpt2": Layout("h", "attn", "attn.c_proj", "ln_2", "mlp", conv1d=True),
    # NeoX defaults to the parallel residual: there is no point in the code that holds resid_mid, so it
    # is defined as resid_pre + attention output (exactly the MLP norm's input in the sequential variant).
    "gpt_neox": Layout("layers", "attention", "attention.dense", None, "mlp"),
    # BERT is post-LN: resid_mid is BertAttention's output (after its LayerNorm); mlp.out is the dense
    # write before the residual add and LayerNorm.
    "bert": Layout("encoder.layer", "attention.self", "attention.output.dense", None, "output.dense",
                   mid_output="attention"),
}


def submodule(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def layers(model: Any, architecture: str) -> list[Any]:
    return list(submodule(model.base_model, LAYOUTS[architecture].layers))


def o_weight(model: Any, architecture: str, layer: int) -> Any:
    """W_O as [d_model, heads·head_dim] (the nn.Linear layout), whatever the storage."""
    lay = LAYOUTS[architecture]
    w = submodule(layers(model, architecture)[layer], lay.o_proj).weight
    return w.t() if lay.conv1d else w


def head_dim(model: Any) -> int:
    cfg = model.config
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


_FINAL_NORM = {"llama": "norm", "gemma3": "norm", "gpt2": "ln_f", "gpt_neox": "final_layer_norm", "bert": None}


def final_norm(model: Any, architecture: str) -> Any | None:
    """The norm applied to the last residual before the unembedding (None for BERT: post-LN already)."""
    path = _FINAL_NORM[architecture]
    return submodule(model.base_model, path) if path else None

"""Per-head weights: W_Q, W_K, W_V, W_O of any head of any supported family, in one layout.

Every later analysis (composition scores, OV/QK circuits, the web app's head view) needs each head's four
matrices, and each family stores them differently: separate projections (Llama, Qwen, Gemma, BERT), GPT-2's
fused Conv1D columns [Q | K | V] stored [in, out], Phi-3's fused rows, GPT-NeoX's per-head interleave, GQA's
shared key/value groups. This module resolves all of it once, from the same head slices `glassbox anatomy`
reports, so a matrix here is the bytes that anatomy points at.

    hw = weights.head(src, layer, head)   # src: a Checkpoint, a run.Loaded, an HF model, or a path / bundled name
    hw.W_Q, hw.W_K, hw.W_V                # float32 [d_head, d_model] (out × in); K and V are the head's kv group
    hw.W_O                                # float32 [d_model, d_head]
    hw.b_Q, hw.b_K, hw.b_V                # [d_head] or None
    hw.bytes                              # {"q"|"k"|"v"|"o": [{"tensor", "slice", "offset", ...}]} (files only)
    aw = weights.all_heads(src)           # stacked [L, H, ...], plus norm_in, q_norm/k_norm, rotary, aw.bytes(l, h)

Norm scales are the *effective* ones: Gemma's RMSNorm multiplies by 1 + w, so its 1 + w is what comes back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from glassbox import registry
from glassbox.anatomy import head_bytes, roles
from glassbox.checkpoint import Checkpoint, open_checkpoint
from glassbox.errors import BadInput

__all__ = ["AllHeads", "HeadWeights", "all_heads", "head"]


@dataclass
class HeadWeights:
    layer: int
    head: int
    kv_group: int
    W_Q: Any  # [d_head, d_model]
    W_K: Any
    W_V: Any
    W_O: Any  # [d_model, d_head]
    b_Q: Any | None = None
    b_K: Any | None = None
    b_V: Any | None = None
    bytes: dict[str, list[dict[str, Any]]] | None = None  # only when the source is a file


@dataclass
class AllHeads:
    family: str
    dims: roles.Dims
    W_Q: Any  # [L, H, d_head, d_model]; K and V repeated over each kv group's query heads
    W_K: Any
    W_V: Any
    W_O: Any  # [L, H, d_model, d_head]
    b_Q: Any | None  # [L, H, d_head] or None
    b_K: Any | None
    b_V: Any | None
    b_O: Any | None  # [L, d_model] or None
    norm_in: Any | None  # [L, d_model]: effective scale of each layer's attention input norm (None: no input norm)
    norm_in_bias: Any | None  # [L, d_model]: a LayerNorm's bias, None for RMSNorm
    q_norm: Any | None  # [L, d_head] effective scale of a per-head query norm (Qwen3, Gemma 3) or None
    k_norm: Any | None
    rotary: bool
    causal: bool
    layers: list[int] = field(default_factory=list)  # the model layer of each stacked index
    _source: _Source | None = field(default=None, repr=False)

    def bytes(self, layer: int, head: int) -> dict[str, list[dict[str, Any]]] | None:
        """Where head `head` of model layer `layer` lies in the file (None when the source is a model in memory)."""
        return _head_bytes(self._source, layer, head) if self._source is not None else None

    @property
    def kv_group(self) -> list[int]:
        return [h // self.dims.group_size for h in range(self.dims.n_heads)]


# ---------------------------------------------------------------------------------------------------------
# Sources: a checkpoint file or a model in memory, both seen as named tensors in Hugging Face layout


@dataclass
class _Source:
    family: str
    dims: roles.Dims
    shapes: dict[str, tuple[int, ...]]
    by_layer: dict[int, list[tuple[str, str]]]  # layer → [(tensor name, level)]
    read: Any  # name → tensor
    entries: dict[str, Any] | None = None  # TensorEntry per name, for byte ranges (files only)
    path: Any = None  # the file, for error messages


def _source(src: Any) -> tuple[_Source, Any]:
    """(source, checkpoint to close or None)."""
    if isinstance(src, (str, os.PathLike)):
        ckpt = open_checkpoint(src)
        return _from_checkpoint(ckpt), ckpt
    if isinstance(src, Checkpoint):
        return _from_checkpoint(src), None
    model = getattr(src, "model", src)  # a run.Loaded, or a bare HF model
    if hasattr(model, "state_dict") and hasattr(model, "config"):
        return _from_model(model), None
    raise TypeError(f"weights: cannot read heads from {type(src).__name__}")


def _from_checkpoint(ckpt: Any) -> _Source:
    family = roles.detect_from_config(ckpt.config) or roles.detect_from_names(list(ckpt.tensors))
    if family is None or not ckpt.config:
        raise BadInput("per-head weights need a known architecture and its config", ckpt.path)
    dims = roles.Dims.from_config(family, ckpt.config)
    if dims is None:
        raise BadInput("per-head weights need layers, heads and hidden size in the config", ckpt.path)
    shapes = {n: tuple(e.shape) for n, e in ckpt.tensors.items()}
    return _Source(family, dims, shapes, _group(family, shapes), ckpt.tensor, dict(ckpt.tensors), ckpt.path)


def _from_model(model: Any) -> _Source:
    config = model.config.to_dict()
    family = roles.detect_from_config(config)
    dims = roles.Dims.from_config(family, config) if family else None
    if family is None or dims is None:
        raise TypeError(f"weights: unsupported model type {config.get('model_type')!r}")
    state = model.state_dict()
    shapes = {n: tuple(t.shape) for n, t in state.items()}
    return _Source(family, dims, shapes, _group(family, shapes), state.__getitem__)


def _group(family: str, shapes: dict[str, tuple[int, ...]]) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for name in shapes:
        level, layer = roles.classify(family, name)
        if layer is not None and level.startswith("attention."):
            out.setdefault(layer, []).append((name, level))
    return out


# ---------------------------------------------------------------------------------------------------------
# One layer's heads from the slices


def _block(values: Any, s: roles.HeadSlice, kind: str) -> Any:
    """Head s's block in HF layout: Q/K/V as [d_head, d_model] (out × in), O as [d_model, d_head]."""
    block = values[s.index(values.ndim)]
    if block.ndim == 1:
        return block
    if kind == "o":
        return block if s.axis == values.ndim - 1 else block.T
    return block if s.axis == 0 else block.T  # GPT-2 Conv1D stores [in, out]: its heads are column blocks


def _layer(src: _Source, layer: int) -> dict[str, Any]:
    """{"q"|"k"|"v"|"o": {head: weight block}, "bq"|"bk"|"bv": {head: bias block}, "bo": bias or None}."""
    import torch

    if layer not in src.by_layer:
        raise IndexError(f"layer {layer} out of range (the model has {src.dims.n_layers})")
    out: dict[str, Any] = {k: {} for k in ("q", "k", "v", "o", "bq", "bk", "bv")}
    out["bo"] = None
    for name, level in src.by_layer[layer]:
        slices = roles.head_slices(src.family, name, src.shapes[name], src.dims)
        if not slices:
            if level == "attention.o" and len(src.shapes[name]) == 1:
                out["bo"] = src.read(name).to(torch.float32)
            continue
        values = src.read(name).to(torch.float32)
        bias = values.ndim == 1
        for s in slices:
            out[("b" if bias else "") + s.kind][s.head] = _block(values, s, s.kind)
    return out


def _check(src: _Source, parts: dict[str, Any], layer: int) -> None:
    """Every head found: a file whose tensor shapes do not tile into the config's heads is bad input."""
    d = src.dims
    for kind, count in (("q", d.n_heads), ("k", d.n_kv_heads), ("v", d.n_kv_heads), ("o", d.n_heads)):
        if len(parts[kind]) != count:
            raise BadInput(f"layer {layer}: found {len(parts[kind])} {kind} heads of {count}; the tensor shapes "
                           "do not fit the config's heads", src.path)


def head(src: Any, layer: int, head: int) -> HeadWeights:
    """One head's W_Q, W_K, W_V (its kv group's), W_O and biases, float32 copies in HF layout."""
    source, opened = _source(src)
    try:
        d = source.dims
        if not 0 <= head < d.n_heads:
            raise IndexError(f"head {head} out of range (the model has {d.n_heads} per layer)")
        parts = _layer(source, layer)
        _check(source, parts, layer)
        g = head // d.group_size

        def take(key: str, index: int) -> Any | None:
            block = parts[key].get(index)
            return None if block is None else block.detach().clone().contiguous()

        return HeadWeights(
            layer, head, g, take("q", head), take("k", g), take("v", g), take("o", head),
            take("bq", head), take("bk", g), take("bv", g),
            _head_bytes(source, layer, head) if source.entries is not None else None)
    finally:
        if opened is not None:
            opened.close()


def all_heads(src: Any, layers: Sequence[int] | None = None) -> AllHeads:
    """Every head of every layer (or of `layers`, in that order: index 0 is layers[0]), stacked; K/V repeated
    so index [l, h] is query head h's kv group."""
    source, opened = _source(src)
    try:
        d = source.dims
        spec = registry.get(source.family)
        chosen = list(range(d.n_layers)) if layers is None else list(layers)
        idx = [h // d.group_size for h in range(d.n_heads)]
        rows: dict[str, list[Any]] = {k: [] for k in ("q", "k", "v", "o", "bq", "bk", "bv")}
        b_o: list[Any] = []
        for layer in chosen:
            parts = _layer(source, layer)
            _check(source, parts, layer)
            for key in ("q", "o", "bq"):
                rows[key].append([parts[key].get(h) for h in range(d.n_heads)])
            for key in ("k", "v", "bk", "bv"):
                rows[key].append([parts[key].get(g) for g in idx])
            b_o.append(parts["bo"])
        final = {k: _fill(v) for k, v in rows.items()}
        final["bo"] = _fill([[b] for b in b_o])
        if final["bo"] is not None:
            final["bo"] = final["bo"][:, 0]
        norm_in, norm_bias = _norms(source, spec.attn_input_norm, chosen, spec.norm_plus_one)
        q_norm, _ = _norms(source, spec.q_norm, chosen, spec.norm_plus_one)
        k_norm, _ = _norms(source, spec.k_norm, chosen, spec.norm_plus_one)
        return AllHeads(
            source.family, d, final["q"], final["k"], final["v"], final["o"], final["bq"], final["bk"],
            final["bv"], final["bo"], norm_in, norm_bias, q_norm, k_norm, spec.rotary, spec.causal, chosen,
            _source=_detach_source(source))
    finally:
        if opened is not None:
            opened.close()


def _fill(rows: list[list[Any]]) -> Any | None:
    """[layer][head] blocks → one float32 tensor [layers, heads, ...], each block copied once (the blocks are
    views into the checkpoint's or the model's memory); None when any block is missing (e.g. no biases).
    The copies go through numpy: single-threaded, they do not wait on torch's intra-op threads, which on a
    busy machine made the same copies 6× slower on 2 threads than on 1 (docs/notes/issue-9-registry.md)."""
    import torch

    if not rows or any(b is None for r in rows for b in r):
        return None
    out = torch.empty((len(rows), len(rows[0]), *rows[0][0].shape), dtype=torch.float32)
    dst = out.numpy()
    for i, r in enumerate(rows):
        for j, b in enumerate(r):
            dst[i, j] = b.detach().numpy()
    return out


def _norms(src: _Source, module: str | None, layers: list[int], plus_one: bool) -> tuple[Any | None, Any | None]:
    """Each layer's norm scale (and bias) for the norm module `module` (relative to the layer), or None."""
    import torch

    if module is None:
        return None, None
    scales, biases = [], []
    for layer in layers:
        names = {n.rsplit(".", 1)[1]: n for n, _ in src.by_layer.get(layer, ())
                 if n.rsplit(".", 1)[0].endswith(f".{layer}.{module}")}
        if "weight" not in names:
            return None, None
        w = src.read(names["weight"]).to(torch.float32)
        scales.append(w + 1 if plus_one else w)
        biases.append(src.read(names["bias"]).to(torch.float32) if "bias" in names else None)
    bias = torch.stack(biases).clone() if all(b is not None for b in biases) else None
    return torch.stack(scales).clone(), bias


def _detach_source(src: _Source) -> _Source:
    """Byte ranges need only names, shapes and entries: drop the reader (the file may be closed)."""
    return _Source(src.family, src.dims, src.shapes, src.by_layer, None, src.entries, src.path)


def _head_bytes(src: _Source, layer: int, head: int) -> dict[str, list[dict[str, Any]]] | None:
    if src.entries is None:
        return None
    g = head // src.dims.group_size
    out: dict[str, list[dict[str, Any]]] = {"q": [], "k": [], "v": [], "o": []}
    for name, _ in src.by_layer.get(layer, ()):
        entry = src.entries[name]
        for s in roles.head_slices(src.family, name, src.shapes[name], src.dims):
            if s.head == (head if s.kind in ("q", "o") else g):
                run = head_bytes(entry, s)
                out[s.kind].append({"tensor": name, "slice": s.slice_str(len(entry.shape)), **run})
    return out

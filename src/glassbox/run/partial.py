"""Run the model's own forward from block L on, and from token t on: what causal tracing needs.

A state restored at (layer L, token t) cannot change any block before L nor any position before t (causal
attention), so the restored run only has to compute blocks L.. at positions t..: the residual stream entering
block L comes from a recorded run, and the keys/values of positions < t from that run's cache. The blocks,
rotary embeddings, masks, final norm and unembedding are the model's own modules; only the list of blocks the
HF forward walks is cut for the call (hooks installed by `hooks.hooked` sit on the block objects themselves, so
edits keep their full-model layer numbers). Tracing a 10-token prompt this way costs about a quarter of
full forwards.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

from glassbox.run import hooks
from glassbox.run.layout import LAYOUTS, submodule
from glassbox.run.load import Loaded


def run_recording(loaded: Loaded, tokens: Any, names: Any, edits: Sequence[hooks.Edit] = (),
                  logits_at: Any = None) -> tuple[Any, hooks.Cache, Any]:
    """Forward recording `names` and keeping the key/value cache → (logits, Cache, past_key_values)."""
    import torch

    tokens = hooks._tokens(tokens)
    _count(tokens.shape[0], tokens.shape[1])
    kwargs = {} if logits_at is None else {"logits_to_keep": torch.as_tensor(logits_at, dtype=torch.long)}
    with hooks.hooked(loaded, names=names, edits=edits) as cache, torch.inference_mode():
        out = loaded.model(input_ids=tokens, use_cache=True, **kwargs)
    past = getattr(out, "cache", None)
    return out.logits, cache, past if past is not None else out.past_key_values


def expand_past(loaded: Loaded, past: Any, length: int, repeats: int) -> Any:
    """A fresh cache holding the first `length` positions of `past`, each batch row repeated `repeats` times
    (row r of the result is row r % rows of `past`), or None when length is 0."""
    if length <= 0:
        return None
    from transformers import DynamicCache

    out = DynamicCache(config=loaded.model.config)
    for i, layer in enumerate(past.layers):
        k = layer.keys[:, :, :length].repeat(repeats, 1, 1, 1)
        v = layer.values[:, :, :length].repeat(repeats, 1, 1, 1)
        out.update(k, v, i)
    return out


@contextlib.contextmanager
def _blocks_from(loaded: Loaded, layer: int) -> Iterator[None]:
    """Let the HF forward walk blocks `layer`.. only (the ModuleList is swapped back afterwards)."""
    path = LAYOUTS[loaded.architecture].layers
    parent_path, _, attr = path.rpartition(".")
    parent = submodule(loaded.model.base_model, parent_path) if parent_path else loaded.model.base_model
    blocks = getattr(parent, attr)
    setattr(parent, attr, blocks[layer:])
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


def run_from(loaded: Loaded, layer: int, hidden: Any, past: Any = None, edits: Sequence[hooks.Edit] = (),
             last_only: bool = True) -> Any:
    """Logits of the model run from block `layer` on, `hidden` [batch, seq, d_model] being the residual stream
    entering it at the positions after those held in `past` (a cache from `expand_past`, or None).
    `layer` may be n_layers (only the final norm and unembedding). Edits use full-model layer numbers and
    positions relative to `hidden`. last_only: unembed the last position only."""
    import torch

    if loaded.is_encoder:
        raise ValueError("run_from needs a causal model")
    base = loaded.model.base_model
    start = 0 if past is None else past.get_seq_length()
    x = hidden
    wpe = getattr(base, "wpe", None)  # GPT-2 adds learned positions to inputs_embeds: take them out first
    if wpe is not None:
        x = x - wpe(torch.arange(start, start + x.shape[1]))[None]
    _count(x.shape[0], x.shape[1])
    kwargs: dict[str, Any] = {"logits_to_keep": 1} if last_only else {}
    with hooks.hooked(loaded, names=[], edits=edits), _blocks_from(loaded, layer), torch.inference_mode():
        out = loaded.model(inputs_embeds=x, use_cache=past is not None, **{_cache_kwarg(loaded.model): past},
                           **kwargs)
    return out.logits


@functools.cache
def _cache_kwarg_of(cls: type) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns until it is removed)
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _cache_kwarg(model: Any) -> str:
    return _cache_kwarg_of(type(model))


def _count(rows: int, seq: int) -> None:
    hooks.stats["forwards"] += 1
    hooks.stats["tokens"] += int(rows * seq)

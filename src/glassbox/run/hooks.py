"""Activation cache under uniform names, and the two interventions every later analysis is built from.

Names (l = layer index, all tensors batch-first):
    blocks.{l}.resid_pre      [batch, seq, d_model]  the layer's input (blocks.0.resid_pre = embeddings)
    blocks.{l}.attn.pattern   [batch, head, q, k]    softmax attention weights (GQA: per query head)
    blocks.{l}.attn.z         [batch, seq, head, d_head]  per-head attention output, before the output projection
    blocks.{l}.attn.head_out  [batch, seq, head, d_model] each head's contribution through the output
                              projection: z_h · W_O[:, h]ᵀ (no bias); sums over heads to attn.out − bias.
                              Derived from attn.z when first read, so caching it costs nothing in the forward.
    blocks.{l}.attn.out       [batch, seq, d_model]  the output projection's output
    blocks.{l}.resid_mid      [batch, seq, d_model]  after the attention write, before the MLP (see layout.py)
    blocks.{l}.mlp.out        [batch, seq, d_model]  the MLP's write
    blocks.{l}.resid_post     [batch, seq, d_model]  the layer's output

Interventions (a list of edits passed to `hooked`, `run` or `run_with_cache`):
    HeadEdit(layer, head, value=None, positions=None, batch=None)
        replaces head `head`'s z at `positions` (all when None) in batch row(s) `batch` (all when None)
        with `value` (broadcast to [..., d_head]); value None is zero ablation. Mean ablation and head
        patching are HeadEdits with a stored value: see `zero_ablation`, `mean_ablation`, `patch_heads`.
    ResidEdit(layer, point, value, positions=None, batch=None)
        replaces blocks.{layer}.{point} (resid_pre or resid_post) the same way: residual patching.
    PatternEdit(layer, head, mode="no_sink", positions=None, batch=None)
        changes head `head`'s attention pattern before it multiplies V, at query `positions` in rows `batch`:
        "no_sink" zeroes the attention to position 0 and renormalizes each row over the other keys;
        "uniform" spreads each row evenly over its visible keys other than position 0; a callable gets the
        head's pattern [rows, q, k] and returns the new one. A query that sees only position 0 (a causal
        model's first token) keeps its row: there is nowhere else to attend.
Edits apply before the cache records, so the cache shows the run as it actually happened. Editing z
(the o_proj input) rather than the output leaves every other head untouched by construction.

Pattern edits run inside attention: while a PatternEdit is active the model's attention implementation is
switched to "glassbox_eager", registered with transformers' AttentionInterface. It calls the model's own
eager function, edits the returned weights and recomputes only the edited heads' pattern · V. Without
pattern edits the model runs its plain eager kernel, so caching and other edits cost nothing extra.
"""

from __future__ import annotations

import contextlib
import fnmatch
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from glassbox.run.layout import LAYOUTS, head_dim, layers, o_weight, submodule
from glassbox.run.load import Loaded

POINTS = ("resid_pre", "attn.pattern", "attn.z", "attn.head_out", "attn.out", "resid_mid", "mlp.out",
          "resid_post")
Index = int | Sequence[int] | None


@dataclass(frozen=True)
class HeadEdit:
    layer: int
    head: int
    value: Any = None  # torch.Tensor broadcastable to [..., d_head]; None means zero
    positions: Index = None
    batch: Index = None


@dataclass(frozen=True)
class ResidEdit:
    layer: int
    point: str  # "resid_pre" | "resid_post"
    value: Any  # torch.Tensor broadcastable to [..., d_model]
    positions: Index = None
    batch: Index = None


@dataclass(frozen=True)
class MlpEdit:
    """Replace the MLP's write (blocks.{layer}.mlp.out) with `value`."""

    layer: int
    value: Any  # torch.Tensor broadcastable to [..., d_model]
    positions: Index = None
    batch: Index = None


@dataclass(frozen=True)
class PatternEdit:
    layer: int
    head: int
    mode: Any = "no_sink"  # "no_sink" | "uniform" | callable(pattern [rows, q, k]) -> new pattern
    positions: Index = None  # query positions (all when None)
    batch: Index = None


Edit = HeadEdit | ResidEdit | MlpEdit | PatternEdit
PATTERN_MODES = ("no_sink", "uniform")
ATTENTION_NAME = "glassbox_eager"
_pending: dict[int, list[PatternEdit]] = {}  # id(attention module) → its pattern edits, while hooked


def hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{layer}.{point}" for layer in range(n_layers) for point in POINTS]


class Cache(Mapping):
    """Recorded activations by uniform name; `attn.head_out` is computed from `attn.z` on first read."""

    def __init__(self, loaded: Loaded, wanted: set[str]):
        self._loaded = loaded
        self._wanted = wanted
        self.store: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        # read in float32 on the CPU whatever the model's dtype and device: the analyses mix activations with
        # float32 weights (glassbox.weights) and CPU masks; a float32 CPU model's tensors come back as they are
        if name in self.store:
            value = self.store[name]
            return value.float().cpu() if hasattr(value, "float") else value  # (a `reduce`d record: as it is)
        if name.endswith(".attn.head_out") and name in self._wanted:
            # computed on each read and not kept: d_model per head per position is the largest record there
            # is, and a reader walking the layers then holds one layer's at a time
            layer = int(name.split(".")[1])
            z = self.store[f"blocks.{layer}.attn.z"].float().cpu()
            w = o_weight(self._loaded.model, self._loaded.architecture, layer).cpu()
            w = w.reshape(w.shape[0], z.shape[2], z.shape[3])  # [d_model, head, d_head]
            return _einsum("bshd,mhd->bshm", z, w)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        have = {n for n in self._wanted if n in self.store or n.endswith("head_out")}
        return iter(sorted(have, key=_name_order))

    def __len__(self) -> int:
        return len(list(iter(self)))


def _name_order(name: str) -> tuple[int, int]:
    parts = name.split(".", 2)
    return int(parts[1]), POINTS.index(parts[2])


def _einsum(spec: str, *ops: Any) -> Any:
    import torch

    with torch.inference_mode():
        return torch.einsum(spec, *ops)


def select(names: Iterable[str] | str | None, n_layers: int) -> set[str]:
    """Names or glob patterns (e.g. 'blocks.*.attn.pattern') → the set of hook names they match."""
    every = hook_names(n_layers)
    if names is None:
        return set(every)
    if isinstance(names, str):
        names = [names]
    chosen: set[str] = set()
    for pattern in names:
        hits = [n for n in every if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise KeyError(f"no hook point matches {pattern!r} (e.g. blocks.0.attn.pattern)")
        chosen.update(hits)
    return chosen


def _rows_positions(edit: Edit) -> tuple[Any, Any]:
    rows = slice(None) if edit.batch is None else edit.batch
    pos = slice(None) if edit.positions is None else edit.positions
    if not isinstance(rows, (int, slice)) and not isinstance(pos, (int, slice)):
        # two index lists would pair up element-wise; we want their cross product
        import torch

        rows = torch.as_tensor(rows)[:, None]
        pos = torch.as_tensor(pos)[None, :]
    return rows, pos


def _edit_z(z: Any, n_heads: int, edits: list[HeadEdit]) -> Any:
    z = z.clone()
    z4 = z.view(*z.shape[:-1], n_heads, -1)
    for e in edits:
        rows, pos = _rows_positions(e)
        if e.value is None:
            z4[rows, pos, e.head] = 0.0
        else:
            z4[rows, pos, e.head] = e.value.to(z4)
    return z


def _edit_resid(x: Any, edits: list[ResidEdit] | list[MlpEdit]) -> Any:
    x = x.clone()
    for e in edits:
        rows, pos = _rows_positions(e)
        x[rows, pos] = e.value.to(x)
    return x


def _new_pattern(w: Any, visible: Any, e: PatternEdit) -> Any:
    """One head's edited pattern: w and visible are [rows, q, k] (visible: keys the mask lets it see)."""
    import torch

    if callable(e.mode):
        return e.mode(w)
    if e.mode not in PATTERN_MODES:
        raise ValueError(f"PatternEdit mode must be one of {PATTERN_MODES} or a callable, not {e.mode!r}")
    others = visible.clone()
    others[..., 0] = False
    if e.mode == "no_sink":
        new = torch.where(others, w, torch.zeros_like(w))
    else:
        new = others.to(w.dtype)
    total = new.sum(-1, keepdim=True)
    # a row with nothing else to see (causal query 0; all mass underflowed) keeps its pattern
    keep = total <= 0
    return torch.where(keep, w, new / torch.where(keep, torch.ones_like(total), total))


def _eager_function(module: Any) -> Any:
    """The eager attention function of the module's own modeling file (what 'eager' would have called)."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(f"pattern edits: no eager_attention_forward beside {type(module).__name__}")
    return fn


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """The "glassbox_eager" attention: the model's eager attention, then this module's pattern edits."""
    import torch

    if getattr(module, "reorder_and_upcast_attn", False):  # GPT-2's other eager path
        out, w = module._upcast_and_reordered_attn(query, key, value, attention_mask)
    else:
        out, w = _eager_function(module)(module, query, key, value, attention_mask, **kwargs)
    edits = _pending.get(id(module))
    if not edits:
        return out, w
    if attention_mask is None:
        visible = torch.ones(w.shape, dtype=torch.bool, device=w.device)
    else:  # additive mask: 0 where visible, the dtype's minimum where not
        visible = (attention_mask > torch.finfo(attention_mask.dtype).min / 2).expand(w.shape)
    w = w.clone()
    for e in edits:
        rows, pos = _rows_positions(e)
        head_w, head_v = w[:, e.head], visible[:, e.head]
        head_w[rows, pos] = _new_pattern(head_w[rows, pos], head_v[rows, pos], e).to(w.dtype)
    heads = sorted({e.head for e in edits})
    group = w.shape[1] // value.shape[1]  # grouped-query attention: query head h reads kv head h // group
    v = value[:, [h // group for h in heads]]
    out = out.clone()
    out[:, :, heads] = torch.matmul(w[:, heads].to(v.dtype), v).transpose(1, 2).to(out.dtype)
    return out, w


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if ATTENTION_NAME not in AttentionMaskInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, _attention)
        AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


@contextlib.contextmanager
def _pattern_edits(attn_modules: list[Any], edits: list[PatternEdit]) -> Iterator[None]:
    """Route the attention modules through "glassbox_eager" with their pending edits, then restore."""
    if not edits:
        yield
        return
    for e in edits:
        if not (0 <= e.layer < len(attn_modules)):
            raise ValueError(f"PatternEdit layer {e.layer} out of range (0..{len(attn_modules) - 1})")
    _register_attention()
    configs = {id(m.config): m.config for m in attn_modules}
    before = {k: c._attn_implementation for k, c in configs.items()}
    for layer, module in enumerate(attn_modules):
        mine = [e for e in edits if e.layer == layer]
        if mine:
            _pending[id(module)] = mine
    try:
        for c in configs.values():
            c._attn_implementation = ATTENTION_NAME
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]
        for module in attn_modules:
            _pending.pop(id(module), None)


@contextlib.contextmanager
def hooked(loaded: Loaded, names: Iterable[str] | str | None = None,
           edits: Sequence[Edit] = (), reduce: Callable[[str, Any], Any] | None = None) -> Iterator[Cache]:
    """Install hooks that record `names` (all when None; [] for none) and apply `edits` while inside.
    `reduce(name, tensor)`: what to keep of each attention pattern as it is recorded (its statistics), so the
    patterns of every layer are never held at once."""
    model, arch = loaded.model, loaded.architecture
    lay = LAYOUTS[arch]
    blocks = layers(model, arch)
    n_heads = loaded.n_heads
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
    wanted = select(names, len(blocks)) if names is None or names else set()
    cache = Cache(loaded, wanted)
    store = cache.store
    handles: list[Any] = []

    def want(layer: int, point: str) -> bool:
        return f"blocks.{layer}.{point}" in wanted

    for layer, block in enumerate(blocks):
        head_edits = [e for e in edits if isinstance(e, HeadEdit) and e.layer == layer]
        pre_edits = [e for e in edits if isinstance(e, ResidEdit) and e.layer == layer and e.point == "resid_pre"]
        post_edits = [e for e in edits if isinstance(e, ResidEdit) and e.layer == layer and e.point == "resid_post"]
        keep_pre = want(layer, "resid_pre") or (want(layer, "resid_mid") and lay.mid_input is None
                                                 and lay.mid_output is None)
        keep_z = want(layer, "attn.z") or want(layer, "attn.head_out")
        keep_out = want(layer, "attn.out") or (want(layer, "resid_mid") and lay.mid_input is None
                                                and lay.mid_output is None)

        if keep_pre or pre_edits:
            def on_block_in(mod, args, kwargs, layer=layer, pre_edits=pre_edits, keep=keep_pre):
                x = args[0] if args else kwargs["hidden_states"]
                if pre_edits:
                    x = _edit_resid(x, pre_edits)
                if keep:
                    store[f"blocks.{layer}.resid_pre"] = x
                if pre_edits:
                    if args:
                        return (x, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": x}
                return None
            handles.append(block.register_forward_pre_hook(on_block_in, with_kwargs=True))

        if want(layer, "resid_post") or post_edits:
            def on_block_out(mod, args, output, layer=layer, post_edits=post_edits):
                x = output[0] if isinstance(output, tuple) else output
                if post_edits:
                    x = _edit_resid(x, post_edits)
                store[f"blocks.{layer}.resid_post"] = x
                if post_edits:
                    return (x, *output[1:]) if isinstance(output, tuple) else x
                return None
            handles.append(block.register_forward_hook(on_block_out))

        if want(layer, "attn.pattern"):
            def on_attn(mod, args, output, layer=layer):
                if output[1] is None:
                    raise RuntimeError("attention weights are None: load the model with attn_implementation='eager'")
                name = f"blocks.{layer}.attn.pattern"
                store[name] = output[1] if reduce is None else reduce(name, output[1])
            handles.append(submodule(block, lay.attn).register_forward_hook(on_attn))

        o_proj = submodule(block, lay.o_proj)
        if keep_z or head_edits:
            def on_z(mod, args, layer=layer, head_edits=head_edits, keep=keep_z):
                z = args[0]
                if head_edits:
                    z = _edit_z(z, n_heads, head_edits)
                if keep:
                    store[f"blocks.{layer}.attn.z"] = z.view(*z.shape[:-1], n_heads, -1)
                return (z, *args[1:]) if head_edits else None
            handles.append(o_proj.register_forward_pre_hook(on_z))

        if keep_out:
            def on_out(mod, args, output, layer=layer):
                store[f"blocks.{layer}.attn.out"] = output
            handles.append(o_proj.register_forward_hook(on_out))

        if want(layer, "resid_mid") and lay.mid_input is not None:
            def on_mid_in(mod, args, layer=layer):
                store[f"blocks.{layer}.resid_mid"] = args[0]
            handles.append(submodule(block, lay.mid_input).register_forward_pre_hook(on_mid_in))
        elif want(layer, "resid_mid") and lay.mid_output is not None:
            def on_mid_out(mod, args, output, layer=layer):
                store[f"blocks.{layer}.resid_mid"] = output[0] if isinstance(output, tuple) else output
            handles.append(submodule(block, lay.mid_output).register_forward_hook(on_mid_out))

        mlp_edits = [e for e in edits if isinstance(e, MlpEdit) and e.layer == layer]
        if want(layer, "mlp.out") or mlp_edits:
            def on_mlp(mod, args, output, layer=layer, mlp_edits=mlp_edits):
                if mlp_edits:
                    output = _edit_resid(output, mlp_edits)
                store[f"blocks.{layer}.mlp.out"] = output
                return output if mlp_edits else None
            handles.append(submodule(block, lay.mlp_out).register_forward_hook(on_mlp))

    attn_modules = [submodule(block, lay.attn) for block in blocks]
    try:
        with _pattern_edits(attn_modules, [e for e in edits if isinstance(e, PatternEdit)]):
            yield cache
    finally:
        for h in handles:
            h.remove()
        _finish(cache, wanted, len(blocks))


def _finish(cache: Cache, wanted: set[str], n_layers: int) -> None:
    """Derive what no module holds (NeoX resid_mid) and drop what was kept only to derive it."""
    store = cache.store
    for layer in range(n_layers):
        mid = f"blocks.{layer}.resid_mid"
        pre, out = f"blocks.{layer}.resid_pre", f"blocks.{layer}.attn.out"
        if mid in wanted and mid not in store and pre in store and out in store:
            store[mid] = store[pre] + store[out]
    for name in [n for n in store if n not in wanted]:
        if not (name.endswith("attn.z") and name.replace("attn.z", "attn.head_out") in wanted):
            del store[name]


def _tokens(tokens: Any) -> Any:
    import torch

    t = torch.as_tensor(tokens, dtype=torch.long)
    return t[None] if t.dim() == 1 else t


# Every forward through this module is counted, so callers can state their cost in forward passes.
stats = {"forwards": 0, "tokens": 0}


def _forward(loaded: Loaded, tokens: Any, attention_mask: Any = None, logits_at: Any = None,
             native: bool = False) -> Any:
    import torch

    device = next(loaded.model.parameters()).device
    tokens = _tokens(tokens).to(device)  # inputs are built on the CPU; the model may live on a GPU
    stats["forwards"] += 1
    stats["tokens"] += int(tokens.numel())
    kwargs: dict[str, Any] = {"attention_mask": None if attention_mask is None else attention_mask.to(device)}
    if not loaded.is_encoder:
        kwargs["use_cache"] = False
        if logits_at is not None:  # the unembedding is ~20% of a small LM's forward: skip unused positions
            kwargs["logits_to_keep"] = torch.as_tensor(logits_at, dtype=torch.long).to(device)
    with torch.inference_mode():
        out = loaded.model(input_ids=tokens, **kwargs)
    logits = getattr(out, "logits", None)
    logits = logits if logits is not None else out.last_hidden_state
    if native:  # the caller reads slices in float32 itself: a half model's logits stay half their float32 size
        return logits.cpu()
    return logits.float().cpu()  # read in float32 on the CPU (a float32 CPU model's: the same tensor)


def run(loaded: Loaded, tokens: Any, edits: Sequence[Edit] = (),
        attention_mask: Any = None, logits_at: Any = None) -> Any:
    """Forward with edits and no cache → logits [batch, seq, vocab] (encoders: last hidden state).

    logits_at: sequence positions to unembed (then logits are [batch, len(logits_at), vocab])."""
    with hooked(loaded, names=[], edits=edits):
        return _forward(loaded, tokens, attention_mask, logits_at)


def run_with_cache(loaded: Loaded, tokens: Any, names: Iterable[str] | str | None = None,
                   edits: Sequence[Edit] = (), attention_mask: Any = None,
                   logits_at: Any = None, reduce: Callable[[str, Any], Any] | None = None,
                   native: bool = False) -> tuple[Any, Cache]:
    """Forward recording `names` (all when None) → (logits, Cache); `reduce`: see `hooked`. native: the logits
    in the model's dtype (on the CPU) instead of float32, for a caller that converts only what it reads."""
    with hooked(loaded, names=names, edits=edits, reduce=reduce) as cache:
        logits = _forward(loaded, tokens, attention_mask, logits_at, native)
    return logits, cache


class _StopForward(Exception):
    """Raised by the hook that ends a forward after the last block a caller needs."""


def run_with_cache_until(loaded: Loaded, tokens: Any, layer: int, names: Iterable[str] | str | None = None,
                         edits: Sequence[Edit] = ()) -> Cache:
    """Forward through block `layer` only, recording `names` → Cache. Later blocks cannot change what block
    `layer` or earlier ones record, so a caller that needs one layer's activations skips the rest of the model
    (the web app's pattern view: block 18 of SmolLM2's 30 costs ~60% of a forward)."""

    def stop(*_: Any) -> None:
        raise _StopForward

    with hooked(loaded, names=names, edits=edits) as cache:
        handle = layers(loaded.model, loaded.architecture)[layer].register_forward_hook(stop)
        try:
            _forward(loaded, tokens)
        except _StopForward:
            pass
        finally:
            handle.remove()
    return cache


def zero_ablation(heads: Iterable[tuple[int, int]], batch: Index = None) -> list[HeadEdit]:
    return [HeadEdit(layer, head, None, batch=batch) for layer, head in heads]


def head_means(loaded: Loaded, tokens: Any) -> Any:
    """Mean z per head over batch and positions of a reference run → [layer, head, d_head]."""
    import torch

    _, cache = run_with_cache(loaded, tokens, names="blocks.*.attn.z")
    return torch.stack([cache[f"blocks.{layer}.attn.z"].mean(dim=(0, 1)) for layer in range(loaded.n_layers)])


def mean_ablation(heads: Iterable[tuple[int, int]], means: Any, batch: Index = None) -> list[HeadEdit]:
    """Replace each head's z by its mean from `head_means` (mean ablation keeps the typical offset)."""
    return [HeadEdit(layer, head, means[layer, head], batch=batch) for layer, head in heads]


def patch_heads(heads: Iterable[tuple[int, int]], source: Mapping[str, Any], positions: Index = None,
                batch: Index = None, source_batch: Index = None) -> list[HeadEdit]:
    """Put each head's z from a source run (a Cache holding blocks.{l}.attn.z) into this run.

    `source_batch` picks the source rows (default: row-aligned with the target); positions apply to both.
    """
    edits = []
    for layer, head in heads:
        z = source[f"blocks.{layer}.attn.z"][:, :, head]  # [batch, seq, d_head]
        if source_batch is not None:
            z = z[source_batch]
        if positions is not None:
            z = z[..., positions, :]
        edits.append(HeadEdit(layer, head, z, positions=positions, batch=batch))
    return edits


__all__ = ["POINTS", "Cache", "Edit", "HeadEdit", "PatternEdit", "ResidEdit", "head_dim", "head_means", "hook_names", "hooked",
           "mean_ablation", "patch_heads", "run", "run_with_cache", "select", "zero_ablation"]

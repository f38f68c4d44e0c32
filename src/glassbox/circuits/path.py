"""Path patching: a sender head's output changed only on its way into one receiver's q, k or v input.

Direct paths (Wang et al. 2022, the direct variant): on the original input x, the receiver's query (or key, or
value) input becomes norm(x + Σ_s Δ_s) with Δ_s = head_out_s(x_new) − head_out_s(x_orig), the change in the
sender's write when the input is replaced by x_new. Every other path is clean: the senders themselves are not
patched, so no other head or MLP sees the change, and the receiver's other inputs read the original residual.
The norm is recomputed from the patched residual (the real norm module), so nothing is linearised; only head
r's columns of the projection's output are replaced (for k and v: its kv group's, which under GQA its sibling
query heads share: their patterns do not enter the receiver's metric, the loss may).

Every configuration (a sender set → receiver.kind) is one block of batch rows, so P configurations on B probe
sequences cost ceil(P·B / batch_size) forwards, as in lens/patching.py.

Metric (the receiver's role, induction): on random token blocks repeated twice, the receiver's attention mass on
the induction target (the token after the earlier occurrence; heads/masks.py) over the second copy, and the
second-copy loss of the model's next-token prediction.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from glassbox import registry
from glassbox.anatomy import roles
from glassbox.errors import BadInput
from glassbox.heads import masks
from glassbox.progress import track
from glassbox.run import hooks
from glassbox.run.layout import layers, submodule
from glassbox.run.text import start_ids

KINDS = ("q", "k", "v")
_SPEC = re.compile(r"^(\d+\.\d+(?:,\d+\.\d+)*):(\d+)\.(\d+)\.([qkv])$")


@dataclass(frozen=True)
class PathSpec:
    senders: tuple[tuple[int, int], ...]
    receiver: tuple[int, int]
    kind: str

    def label(self) -> str:
        s = ",".join(f"{lyr}.{h}" for lyr, h in self.senders)
        return f"{s}:{self.receiver[0]}.{self.receiver[1]}.{self.kind}"


def parse_path(spec: str) -> PathSpec:
    """'16.0:18.6.k' or '16.0,17.2:18.6.k' → PathSpec (syntax and order only; ranges need the model)."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise BadInput(f"--path {spec!r}: write SENDER[,SENDER...]:RECEIVER.KIND, e.g. 16.0:18.6.k "
                       "(heads as LAYER.HEAD, KIND one of q, k, v)")
    senders = tuple(tuple(int(x) for x in s.split(".")) for s in m.group(1).split(","))
    receiver = (int(m.group(2)), int(m.group(3)))
    for lyr, _ in senders:
        if lyr >= receiver[0]:
            raise BadInput(f"--path {spec!r}: a sender must sit in an earlier layer than the receiver "
                           f"(layer {lyr} ≥ {receiver[0]})")
    if len(set(senders)) != len(senders):
        raise BadInput(f"--path {spec!r}: a sender is listed twice")
    return PathSpec(senders, receiver, m.group(4))  # type: ignore[arg-type]


def check_ranges(spec: PathSpec, n_layers: int, n_heads: int) -> None:
    for lyr, h in (*spec.senders, spec.receiver):
        if not (0 <= lyr < n_layers and 0 <= h < n_heads):
            raise BadInput(f"--path {spec.label()}: head {lyr}.{h} is not in this model "
                           f"(layers 0..{n_layers - 1}, heads 0..{n_heads - 1})")


@dataclass(frozen=True)
class PathEdit:
    """Replace `kind` input of receiver (layer, head) in batch `rows` by its value on resid_pre + delta."""

    layer: int
    head: int
    kind: str
    delta: Any  # [len(rows), seq, d_model]
    rows: Sequence[int]


def _projection(loaded: Any, layer: int, kind: str, head: int) -> tuple[Any, slice]:
    """(module computing the receiver's `kind`, the output columns of head / kv group) from the role maps."""
    model = loaded.model
    family = roles.detect_from_config(model.config.to_dict())
    dims = roles.Dims.from_config(family, model.config.to_dict())
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        level, lyr = roles.classify(family, name)
        if lyr != layer or not name.endswith(".weight") or level not in (f"attention.{kind}", "attention.qkv"):
            continue
        want = head if kind == "q" else head // dims.group_size
        for s in roles.head_slices(family, name, tuple(p.shape), dims):
            if s.kind == kind and s.head == want:
                module = modules[name[: -len(".weight")]]
                # nn.Linear [out, in]: heads on axis 0 are output columns; Conv1D [in, out]: axis 1 is
                return module, slice(s.start, s.stop)
    raise BadInput(f"cannot find the {kind} projection of head {layer}.{head} in this model")


@contextlib.contextmanager
def path_edits(loaded: Any, edits: Sequence[PathEdit]) -> Iterator[None]:
    """Install the receivers' input patches (see the module docstring) for one forward."""
    fam = registry.family_of(loaded.config.model_type)
    if fam is None or fam.attn_input_norm is None:
        raise BadInput("path patching needs a pre-norm decoder of a known family", loaded.source)
    blocks = layers(loaded.model, loaded.architecture)
    handles = []
    seen: dict[int, dict[str, Any]] = {}
    for layer in sorted({e.layer for e in edits}):
        slot: dict[str, Any] = {}
        seen[layer] = slot
        block = blocks[layer]
        norm = submodule(block, fam.attn_input_norm)

        def on_block(mod, args, kwargs, slot=slot):
            slot["x"] = args[0] if args else kwargs["hidden_states"]
        handles.append(block.register_forward_pre_hook(on_block, with_kwargs=True))
        for e in [e for e in edits if e.layer == layer]:
            module, cols = _projection(loaded, layer, e.kind, e.head)

            def on_proj(mod, args, output, e=e, cols=cols, slot=slot, norm=norm):
                rows = list(e.rows)
                x = slot["x"][rows] + e.delta.to(slot["x"].dtype)
                patched = mod.forward(norm(x))  # the norm recomputed on the patched residual; .forward: no hooks
                out = output.clone()
                out[rows, :, cols] = patched[:, :, cols]
                return out
            handles.append(module.register_forward_hook(on_proj))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def induction_batch(vocab: int, n: int, half: int, seed: int, bos: int | None) -> Any:
    """[n, (1) + 2·half] tokens: a random block repeated twice (distinct tokens), a BOS first when given."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lo = 0 if bos is None else 1
    rows = []
    for _ in range(n):
        block = torch.randperm(vocab - lo, generator=g)[:half] + lo
        if bos is not None:
            block = torch.where(block == bos, torch.full_like(block, lo), block)
        rows.append(torch.cat([block, block]))
    ids = torch.stack(rows)
    if bos is not None:
        ids = torch.cat([torch.full((n, 1), bos), ids], 1)
    return ids


def _metrics(logits: Any, pattern: Any, ids: Any, head: int, half: int) -> tuple[Any, Any]:
    """Per row: (receiver's induction score over the second copy, second-copy loss)."""
    import torch.nn.functional as F

    mask = masks.role_mask(ids, "induction")
    mass, valid = masks.mask_attention(pattern[:, head : head + 1].float(), mask)
    score = (mass[:, 0] * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    n = ids.shape[1]
    start = n - half  # predicting the second copy's tokens 2..half from the positions before them
    lp = F.cross_entropy(logits[:, start:-1].flatten(0, 1).float(), ids[:, start + 1 :].flatten(),
                         reduction="none").view(ids.shape[0], -1)
    return score, lp.mean(-1)


def run_paths(loaded: Any, specs: Sequence[PathSpec], n_seq: int = 8, half: int = 20, seed: int = 0,
              batch_size: int = 32, progress: Any = None) -> dict[str, Any]:
    """Patch each configuration's path on the same probe batch; effects on each receiver's metric."""

    if loaded.is_encoder:
        raise BadInput("path patching measures a causal receiver; this model is an encoder", loaded.source)
    for spec in specs:
        check_ranges(spec, loaded.n_layers, loaded.n_heads)
    vocab = int(loaded.config.vocab_size)
    half = min(half, vocab - 1)
    bos = next(iter(start_ids(loaded)), None)
    orig = induction_batch(vocab, n_seq, half, seed, bos)
    new = induction_batch(vocab, n_seq, half, seed + 1, bos)
    sender_layers = sorted({lyr for s in specs for lyr, _ in s.senders})
    recv_layers = sorted({s.receiver[0] for s in specs})
    names = [f"blocks.{lyr}.attn.head_out" for lyr in sender_layers]
    names += [f"blocks.{lyr}.attn.pattern" for lyr in recv_layers]
    if loaded.architecture == "gemma3":
        names += [f"blocks.{lyr}.attn.out" for lyr in sender_layers]
    logits, clean = hooks.run_with_cache(loaded, orig, names=names)
    _, corrupt = hooks.run_with_cache(loaded, new, names=[n for n in names if "head_out" in n])
    base = {}
    for lyr, h in {s.receiver for s in specs}:
        score, loss = _metrics(logits, clean[f"blocks.{lyr}.attn.pattern"], orig, h, half)
        base[(lyr, h)] = (float(score.mean()), float(loss.mean()))

    def delta(spec: PathSpec) -> Any:
        total = 0
        for lyr, h in spec.senders:
            d = corrupt[f"blocks.{lyr}.attn.head_out"][:, :, h] - clean[f"blocks.{lyr}.attn.head_out"][:, :, h]
            if loaded.architecture == "gemma3":  # its post-attention norm, scale frozen at the original run
                d = d * _gemma_post_scale(loaded, lyr, clean[f"blocks.{lyr}.attn.out"])
            total = total + d
        return total

    per_fwd = max(1, batch_size // n_seq)
    results = []
    starts = range(0, len(specs), per_fwd)
    chunks = progress(starts, "path patching", len(starts)) if progress is not None else starts
    for start in chunks:
        chunk = specs[start : start + per_fwd]
        edits = [PathEdit(s.receiver[0], s.receiver[1], s.kind, delta(s), list(range(i * n_seq, (i + 1) * n_seq)))
                 for i, s in enumerate(chunk)]
        ids = orig.repeat(len(chunk), 1)
        with path_edits(loaded, edits):
            lg, cache = hooks.run_with_cache(loaded, ids, names=[f"blocks.{lyr}.attn.pattern" for lyr in
                                                                  sorted({s.receiver[0] for s in chunk})])
        for i, s in enumerate(chunk):
            rows = slice(i * n_seq, (i + 1) * n_seq)
            score, loss = _metrics(lg[rows], cache[f"blocks.{s.receiver[0]}.attn.pattern"][rows], orig,
                                   s.receiver[1], half)
            b_score, b_loss = base[s.receiver]
            results.append({"path": s.label(), "senders": [list(x) for x in s.senders],
                            "receiver": list(s.receiver), "kind": s.kind,
                            "induction_score": float(score.mean()), "clean_induction_score": b_score,
                            "induction_effect": float(score.mean()) - b_score,
                            "loss_second_copy": float(loss.mean()), "clean_loss_second_copy": b_loss,
                            "loss_effect": float(loss.mean()) - b_loss})
    return {"model": loaded.name, "probe": {"sequences": n_seq, "block": half, "seed": seed,
                                            "corrupt": "an independent random repeated block per sequence"},
            "paths": results, "forwards": 2 + len(starts)}


def _gemma_post_scale(loaded: Any, layer: int, attn_out: Any) -> Any:
    import torch

    norm = layers(loaded.model, loaded.architecture)[layer].post_attention_layernorm
    eps = float(getattr(norm, "eps", 1e-6))
    return (norm.weight.detach().float() + 1) * torch.rsqrt(attn_out.float().pow(2).mean(-1, keepdim=True) + eps)


def random_senders(spec: PathSpec, n_heads: int, count: int, seed: int) -> list[PathSpec]:
    """`count` sender sets of the same size drawn from the receiver's earlier layers, excluding spec's own."""
    rng = random.Random(seed)
    pool = [(lyr, h) for lyr in range(spec.receiver[0]) for h in range(n_heads) if (lyr, h) not in spec.senders]
    k = len(spec.senders)
    if len(pool) < k:
        return []
    return [PathSpec(tuple(sorted(rng.sample(pool, k))), spec.receiver, spec.kind) for _ in range(count)]


def with_null(loaded: Any, specs: Sequence[PathSpec], n_random: int, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """run_paths on the given paths and, for each, `n_random` random sender sets of the same size."""
    import statistics

    nulls = {s: random_senders(s, loaded.n_heads, n_random, seed + i) for i, s in enumerate(specs)}
    everything = list(specs) + [r for s in specs for r in nulls[s]]
    doc = run_paths(loaded, everything, seed=seed, **kw)
    rows = doc["paths"]
    mine, rest = rows[: len(specs)], rows[len(specs) :]
    for i, (s, row) in enumerate(zip(specs, mine, strict=True)):
        null = rest[i * n_random : (i + 1) * n_random] if nulls[s] else []
        effects = [r["induction_effect"] for r in null]
        if effects:
            row["random_senders"] = {
                "n": len(effects), "induction_effect_mean": statistics.fmean(effects),
                "induction_effect_sd": statistics.pstdev(effects), "induction_effects": effects,
                "loss_effect_mean": statistics.fmean(r["loss_effect"] for r in null),
                "lower_than_all": all(row["induction_effect"] < e for e in effects),
                "rank": 1 + sum(e <= row["induction_effect"] for e in effects)}
    doc["paths"] = mine
    return doc


def run_cli(model: str, paths: list[str], n_random: int, n_seq: int, block: int, seed: int,
            batch_size: int, as_json: bool, allow_pickle: bool) -> None:
    """`glassbox patch MODEL --path S:R.kind`: validated before the model loads."""
    import json
    import sys

    specs = [parse_path(p) for p in paths]
    if n_random < 0 or n_seq < 1 or block < 2 or batch_size < 1:
        raise BadInput("--random must be ≥ 0, --sequences ≥ 1, --block ≥ 2 and --batch-size ≥ 1")
    from glassbox.run import load_model

    loaded = load_model(model, allow_pickle=allow_pickle)
    for s in specs:
        check_ranges(s, loaded.n_layers, loaded.n_heads)
    doc = with_null(loaded, specs, n_random, seed=seed, n_seq=n_seq, half=block, batch_size=batch_size,
                    progress=track)
    doc.update(loaded.placement)
    if as_json:
        print(json.dumps(doc))
        return
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160, soft_wrap=True)
    for r in doc["paths"]:
        line = (f"{r['path']}: receiver induction score {r['clean_induction_score']:.3f} → "
                f"{r['induction_score']:.3f} ({r['induction_effect']:+.3f}); second-copy loss "
                f"{r['clean_loss_second_copy']:.3f} → {r['loss_second_copy']:.3f}")
        null = r.get("random_senders")
        if null:
            line += (f"; {null['n']} random sender sets: {null['induction_effect_mean']:+.3f} ± "
                     f"{null['induction_effect_sd']:.3f} (rank {null['rank']} of {null['n'] + 1})")
        console.print(line)
    console.print(f"{doc['forwards']} forward passes")

"""Specialization probes: each gives one score per head in [0, 1] (arrays [layer, head]).

Attention probes read the patterns of one cached forward over random repeated sequences
[first] + r + r (Olsson et al. 2022): previous_token (attention i → i−1), induction (second copy,
i → the token after i's earlier occurrence), duplicate_token (i → its earlier occurrence),
first_token (mass on position 0: the attention sink), self (i → i), local (mass on the window
i−3..i, excluding position 0). Encoders get next_token and last_token (the [SEP] sink) instead of
the causal-only ones (induction, copying, successor, which need a left-to-right model with an
unembedding).

copying: Elhage et al. 2021's positive-eigenvalue score of the OV circuit W_U·W_O^h·W_V^h·W_E, computed
on the d_head × d_head matrix with the same non-zero eigenvalues (norm gains folded in, means ignored),
clipped to [0, 1]; copying_act cross-checks it on activations (how the head's direct logit for the
token it attends to ranks against 64 random tokens, 0.5 = chance).
successor (Gould et al. 2023): each ordinal item's residual at the head's layer, sent through the head's
OV circuit and the unembedding, restricted to the items of its list: share of items whose top item
is the next one.
syntax:<rel> (Clark et al. 2019): share of arcs of relation rel where the later word's maximum
word-level attention (from its last token, summed over the other word's tokens) lands on the other
word; encoders use dependent → head. The score is NET of the best fixed-offset baseline for that relation
(Clark et al.: "always attend to the word k before/after", k = 1..MAX_OFFSET): accuracy − baseline, clipped
at 0, so a previous-token head gets no credit for adjacent relations (amod, det) that position alone solves.
coreference: share of pronouns whose maximum word attention
among the earlier words lands on the antecedent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from glassbox import registry, weights
from glassbox.heads import masks, probe_inputs
from glassbox.run import hooks
from glassbox.run.layout import LAYOUTS, final_norm, layers, o_weight, submodule
from glassbox.run.load import Loaded

MIN_ARCS = 8  # relations with fewer instances in the built-in sentences are not scored
MAX_RELATIONS = 6  # the most frequent relations only: each one is a role to check
MAX_OFFSET = 5  # fixed-offset baselines: the word 1..5 before (encoders: also after)


def pad(rows: list[Any], pad_id: int = 0) -> tuple[Any, Any]:
    """Right-pad [1, seq] token tensors into one batch; the mask marks real tokens."""
    import torch

    width = max(r.shape[1] for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : r.shape[1]] = r[0]
        mask[i, : r.shape[1]] = 1
    return tokens, mask


def _role_masks(loaded: Loaded, rep: probe_inputs.Repeats) -> dict[str, Any]:
    roles = masks.ENCODER_ROLES if loaded.is_encoder else masks.CAUSAL_ROLES
    return masks.masks(rep.tokens, roles, causal=not loaded.is_encoder)


def pattern_reducer(loaded: Loaded, rep: probe_inputs.Repeats) -> Any:
    """`reduce` for hooks.run_with_cache over the repeated sequences: each layer's pattern becomes, as it is
    recorded, its role scores per head and, per second-half query, the key each head attends most (what
    copying_activation reads), so the patterns of all layers are never held at once."""
    import torch

    role_masks = _role_masks(loaded, rep)
    q = torch.arange(rep.half + 1, 1 + 2 * rep.half)

    def reduce(name: str, pattern: Any) -> dict[str, Any]:
        p = pattern.detach().float().cpu()
        return {"scores": {r: masks.head_scores(p, m) for r, m in role_masks.items()},
                "attended": p[:, :, q].argmax(-1)}

    return reduce


def pattern_scores(loaded: Loaded, rep: probe_inputs.Repeats, cache: Any) -> dict[str, Any]:
    """The attention probes from one cached forward over the repeated sequences → name → [layer, head]; the
    cache holds the patterns, or their reductions by `pattern_reducer`.

    Masks and scores are glassbox.heads.masks, the same definition the training timeline uses."""
    import torch

    records = [cache[f"blocks.{layer}.attn.pattern"] for layer in range(loaded.n_layers)]
    if records and isinstance(records[0], dict):
        return {role: torch.stack([r["scores"][role] for r in records]) for role in records[0]["scores"]}
    return masks.pattern_scores(records, _role_masks(loaded, rep))


def _gain(norm: Any, width: int) -> Any:
    """A norm's per-channel gain: LayerNorm's weight; for RMSNorm variants (Gemma's 1 + w) its output on ones."""
    import torch

    if norm is None:
        return torch.ones(width)
    if isinstance(norm, torch.nn.LayerNorm):
        return norm.weight.detach().float() if norm.weight is not None else torch.ones(width)
    with torch.inference_mode():
        return norm(torch.ones(1, 1, width)).reshape(width).detach().float()


def input_norm(loaded: Loaded, layer: int) -> Any | None:
    """The norm module whose output feeds the layer's Q/K/V (None for post-norm BERT): the registry's entry."""
    name = registry.get(loaded.architecture).attn_input_norm
    return submodule(layers(loaded.model, loaded.architecture)[layer], name) if name else None


def value_weight(loaded: Loaded, layer: int) -> Any:
    """W_V per query head as [head, d_head, d_model] (GQA: each head gets its kv group's rows)."""
    return weights.all_heads(loaded, layers=[layer]).W_V[0]


def ov_readout(loaded: Loaded) -> tuple[Any, Any]:
    """(W_U with the final norm's gain folded in [vocab, d_model], the final norm module or None)."""
    norm = final_norm(loaded.model, loaded.architecture)
    w_u = loaded.model.get_output_embeddings().weight.detach()
    # times the float32 gain: float32 whatever the model's dtype (the analyses' type), and a half model's W_U is
    # read into the product directly, without a float32 copy of it first
    return w_u * _gain(norm, w_u.shape[1]), norm


def _embed_unembed(loaded: Loaded, w_e: Any, rows: int = 4096) -> Any:
    """E^T U in float32 → [d_model, d_model]. A float32 model's in one product (its tensors as they are); a half
    model's summed over blocks of `rows` vocabulary rows, so neither E nor U is ever copied whole to float32."""
    import torch

    if w_e.dtype == torch.float32:
        return w_e.t() @ ov_readout(loaded)[0]
    norm = final_norm(loaded.model, loaded.architecture)
    w_u = loaded.model.get_output_embeddings().weight.detach()
    gain = _gain(norm, w_u.shape[1])
    eu = w_e.new_zeros(w_e.shape[1], w_u.shape[1], dtype=gain.dtype)
    for start in range(0, w_e.shape[0], rows):
        eu += w_e[start: start + rows].float().t() @ (w_u[start: start + rows] * gain)
    return eu


def copying_scores(loaded: Loaded) -> Any:
    """Elhage's copying score per head from the weights alone → [layer, head] in [0, 1]."""
    import torch

    w_e = loaded.model.get_input_embeddings().weight.detach()
    with torch.inference_mode():
        eu = _embed_unembed(loaded, w_e)  # [d_model, d_model]: E^T U, shared by every head
        out = torch.zeros(loaded.n_layers, loaded.n_heads)
        for layer in range(loaded.n_layers):
            v = value_weight(loaded, layer) * _gain(input_norm(loaded, layer), w_e.shape[1])  # [h, d, m]
            o = o_weight(loaded.model, loaded.architecture, layer)  # [m, h*d]
            o = o.reshape(o.shape[0], loaded.n_heads, -1).permute(1, 0, 2)  # [h, m, d]
            small = v @ eu @ o  # [h, d, d]: same non-zero eigenvalues as the vocab × vocab circuit
            eig = torch.linalg.eigvals(small.double())
            out[layer] = (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-12)).clamp(0, 1).float()
    return out


def copying_activation(loaded: Loaded, rep: probe_inputs.Repeats, cache: Any, seed: int) -> Any:
    """Rank of the attended token's direct logit among 64 random in-distribution tokens, second half,
    → [layer, head] (0.5 = chance)."""
    import torch

    w_u, _ = ov_readout(loaded)
    g = torch.Generator().manual_seed(seed + 7)
    pool, _ = probe_inputs.token_pool(loaded)
    others = pool[torch.randint(0, len(pool), (64,), generator=g)]
    t = rep.half
    q = torch.arange(t + 1, 1 + 2 * t)
    out = torch.zeros(loaded.n_layers, loaded.n_heads)
    with torch.inference_mode():
        for layer in range(loaded.n_layers):
            record = cache[f"blocks.{layer}.attn.pattern"]
            top = record["attended"] if isinstance(record, dict) else record[:, :, q].argmax(-1)  # [b, h, q]
            attended = rep.tokens.gather(1, top.flatten(1)).reshape(top.shape)  # [b, h, q]
            ho = cache[f"blocks.{layer}.attn.head_out"][:, q]  # [b, q, h, m]
            target = torch.einsum("bqhm,bhqm->bhq", ho, w_u[attended])
            rand = torch.einsum("bqhm,rm->bhqr", ho, w_u[others])
            out[layer] = (rand < target[..., None]).float().mean(dim=(0, 2, 3))
    return out


def successor_scores(loaded: Loaded, lists: list[probe_inputs.Ordinal]) -> tuple[Any, int]:
    """Gould et al.'s succession score per head (see module docstring) → ([layer, head], items scored)."""
    import torch

    w_u, _ = ov_readout(loaded)
    out = torch.zeros(loaded.n_layers, loaded.n_heads)
    total = sum(len(o.positions) - 1 for o in lists)
    if not lists:
        return out, 0
    with torch.inference_mode():
        caches = [hooks.run_with_cache(loaded, o.tokens, names="blocks.*.resid_pre")[1] for o in lists]
        for layer in range(loaded.n_layers):
            v = value_weight(loaded, layer)  # [h, d, m]
            o_w = o_weight(loaded.model, loaded.architecture, layer)
            o_w = o_w.reshape(o_w.shape[0], loaded.n_heads, -1).permute(1, 0, 2)  # [h, m, d]
            norm = input_norm(loaded, layer)
            hits = torch.zeros(loaded.n_heads)
            for ordinal, cache in zip(lists, caches, strict=True):
                x = cache[f"blocks.{layer}.resid_pre"][0, ordinal.positions]  # [n, m]
                x = norm(x) if norm is not None else x
                written = torch.einsum("hmd,hdk,nk->hnm", o_w, v, x)
                logits = written @ w_u[ordinal.item_ids].t()  # [h, n, n]
                best = logits[:, :-1].argmax(-1)  # the last item has no successor
                hits += (best == torch.arange(1, len(ordinal.positions))).float().sum(-1)
            out[layer] = hits / total
    return out, total


def _word_attention(p: Any, spans: list[tuple[int, int]], word: int) -> Any:
    """Attention from a word's last token to every word (summed over its tokens) → [head, words]."""
    import torch

    row = p[:, spans[word][1]]  # [head, k]
    return torch.stack([row[:, a:b + 1].sum(-1) for a, b in spans], dim=-1)


def _relations(sentences: list[probe_inputs.Parsed]) -> tuple[list[str], dict[str, int]]:
    counts: dict[str, int] = defaultdict(int)
    for s in sentences:
        for _, _, rel in s.arcs:
            counts[rel] += 1
    frequent = sorted((r for r, c in counts.items() if c >= MIN_ARCS), key=lambda r: (-counts[r], r))
    return sorted(frequent[:MAX_RELATIONS]), counts


def _arc_ends(dep: int, head: int, is_encoder: bool) -> tuple[int, int]:
    """(the word that attends, the word it should find): causal models look back from the later word."""
    return (dep, head) if is_encoder or dep > head else (head, dep)


def syntax_baselines(loaded: Loaded, sentences: list[probe_inputs.Parsed]) -> dict[str, dict[str, Any]]:
    """Per relation, the best fixed-offset baseline: {rel: {"offset": k, "accuracy": share, "arcs": n}}.

    offset −k = "the word k before", +k = "the word k after" (encoders only: causal heads cannot look ahead)."""
    rels, counts = _relations(sentences)
    offsets = [-k for k in range(1, MAX_OFFSET + 1)]
    if loaded.is_encoder:
        offsets += list(range(1, MAX_OFFSET + 1))
    hits: dict[str, dict[int, int]] = {r: defaultdict(int) for r in rels}
    for s in sentences:
        for dep, head, rel in s.arcs:
            if rel in hits:
                src, dst = _arc_ends(dep, head, loaded.is_encoder)
                hits[rel][dst - src] += 1
    out = {}
    for r in rels:
        best = max(offsets, key=lambda k: (hits[r][k], -abs(k)))
        out[r] = {"offset": best, "accuracy": round(hits[r][best] / counts[r], 4), "arcs": counts[r]}
    return out


def syntax_scores(loaded: Loaded, sentences: list[probe_inputs.Parsed], cache: Any, net: bool = True) -> dict[str, Any]:
    """Clark et al.'s per-relation head accuracy, net of the best fixed-offset baseline (net=False: raw)
    → 'syntax:<rel>' → [layer, head]."""
    import torch

    rels, counts = _relations(sentences)
    out = {f"syntax:{r}": torch.zeros(loaded.n_layers, loaded.n_heads) for r in rels}
    for layer in range(loaded.n_layers):
        p_all = cache[f"blocks.{layer}.attn.pattern"]
        for i, s in enumerate(sentences):
            p = p_all[i]
            for dep, head, rel in s.arcs:
                if f"syntax:{rel}" not in out:
                    continue
                src, dst = _arc_ends(dep, head, loaded.is_encoder)
                w = _word_attention(p, s.spans, src)  # [head, words]
                w[:, src] = -1.0  # the word itself does not count
                if not loaded.is_encoder:
                    w[:, src + 1:] = -1.0
                out[f"syntax:{rel}"][layer] += (w.argmax(-1) == dst).float()
    base = syntax_baselines(loaded, sentences) if net else {}
    for r in rels:
        out[f"syntax:{r}"] /= counts[r]
        if net:
            out[f"syntax:{r}"] = (out[f"syntax:{r}"] - base[r]["accuracy"]).clamp(0, 1)
    return out


def coreference_scores(loaded: Loaded, sentences: list[probe_inputs.Parsed], cache: Any) -> Any:
    import torch

    out = torch.zeros(loaded.n_layers, loaded.n_heads)
    n = sum(len(s.pronouns) for s in sentences)
    for layer in range(loaded.n_layers):
        p_all = cache[f"blocks.{layer}.attn.pattern"]
        for i, s in enumerate(sentences):
            for pron, ante, _ in s.pronouns:
                w = _word_attention(p_all[i], s.spans, pron)
                w[:, pron:] = -1.0  # earlier words only (also for encoders: an antecedent precedes)
                out[layer] += (w.argmax(-1) == ante).float()
    return out / max(n, 1)


def text_cache(loaded: Loaded, sentences: list[probe_inputs.Parsed]) -> tuple[Any, Any, Any]:
    """One padded forward over sentences, caching the patterns → (tokens, mask, cache)."""
    tokens, mask = pad([s.tokens for s in sentences])
    _, cache = hooks.run_with_cache(loaded, tokens, names="blocks.*.attn.pattern", attention_mask=mask)
    return tokens, mask, cache


__all__ = ["LAYOUTS", "copying_activation", "copying_scores", "coreference_scores", "pad", "pattern_reducer",
           "pattern_scores",
           "successor_scores", "syntax_scores", "text_cache", "value_weight"]

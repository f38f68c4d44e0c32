"""Why a head attends where it does: its attention logit q_i·k_j split over what wrote the residual stream.

The receiver layer's input is a sum of components: the embedding (GPT-2: token and position embeddings apart),
every earlier head's output (attn.head_out), each earlier layer's output bias and MLP write. With every norm scale
frozen at its value in this run (the input norm's 1/σ per position, a per-head q/k norm's 1/rms per position and
head), the path from a component to the head's query or key is linear: norm (scale, LayerNorm's centring), W_Q or
W_K, q/k norm scale, then the rotary rotation of its own position. So

    logit_ij = s · q_i · k_j = Σ_c s · q_i · k_{c,j}   (key side)   = Σ_c s · q_{c,i} · k_j   (query side)

where q_i, k_j are the model's own (recorded inside its attention call), and the norm bias and the projection
bias are components of their own. Both sums are checked against the model's logit (and its softmax against the
recorded pattern) before anything is reported; a model where they disagree is refused, not printed. Softcapped
logits are not linear in q and are refused too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from glassbox import registry, weights
from glassbox.errors import BadInput
from glassbox.fileio import save_png
from glassbox.run import hooks
from glassbox.run.hooks import _eager_function
from glassbox.run.layout import layers, submodule
from glassbox.run.load import Loaded

TOLERANCE = 1e-4  # parts must sum to the logit within this, relative to the row's largest |logit| (see decompose)
RECORD = "glassbox_record"
APPROXIMATION = "norm scales frozen at their values in this run (exact for this text; the parts are linear given them)"
_recording: dict[int, dict[str, Any]] = {}  # id(attention module) → what its attention call received


def _record(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """An attention function that keeps the exact q and k the model used, then runs the model's eager one."""
    slot = _recording.get(id(module))
    if slot is not None:
        slot.update(query=query.detach(), key=key.detach(), scaling=kwargs.get("scaling"))
    return _eager_function(module)(module, query, key, value, attention_mask, **kwargs)


@contextlib.contextmanager
def _recorded(loaded: Loaded, attn: Any) -> Iterator[dict[str, Any]]:
    """Inside: the model's attention runs through `_record`; `attn`'s inputs and q/k land in the yielded dict."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if RECORD not in AttentionMaskInterface._global_mapping:
        AttentionInterface.register(RECORD, _record)
        AttentionMaskInterface.register(RECORD, eager_mask)
    slot: dict[str, Any] = {}

    def on_in(mod, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        slot.update(hidden=x.detach(), position_embeddings=kwargs.get("position_embeddings"))

    handle = attn.register_forward_pre_hook(on_in, with_kwargs=True)
    configs = {id(m.config): m.config for m in loaded.model.modules() if hasattr(m, "config")}
    before = {k: c._attn_implementation for k, c in configs.items()}
    _recording[id(attn)] = slot
    try:
        for c in configs.values():
            c._attn_implementation = RECORD
        yield slot
    finally:
        handle.remove()
        _recording.pop(id(attn), None)
        for k, c in configs.items():
            c._attn_implementation = before[k]


def _components(loaded: Loaded, cache: Any, layer: int) -> list[tuple[str, Any]]:
    """(name, [seq, d_model]) components whose sum is blocks.{layer}.resid_pre (batch row 0)."""
    import torch

    model = loaded.model
    embed = cache["blocks.0.resid_pre"][0]
    comps: list[tuple[str, Any]] = []
    wpe = getattr(model.base_model, "wpe", None)  # GPT-2: learned positions, a component of their own
    if wpe is not None:
        pos = wpe.weight[: embed.shape[0]].detach()
        comps += [("embed", embed - pos), ("pos_embed", pos)]
    else:
        comps.append(("embed", embed))
    fam = registry.family_of(model.config.model_type)
    lay = registry.get(fam.name).layout
    blocks = layers(model, loaded.architecture)
    for lyr in range(layer):
        heads = cache[f"blocks.{lyr}.attn.head_out"][0]  # [seq, H, d]
        out = cache[f"blocks.{lyr}.attn.out"][0]
        scale = None
        if loaded.architecture == "gemma3":  # Gemma norms the attention output before adding it
            norm = submodule(blocks[lyr], "post_attention_layernorm")
            eps = _eps(norm)
            scale = (_effective_weight(norm, fam)
                     * torch.rsqrt(out.double().pow(2).mean(-1, keepdim=True) + eps))
        for h in range(heads.shape[1]):
            part = heads[:, h] if scale is None else heads[:, h] * scale
            comps.append((f"L{lyr}.H{h}", part))
        if scale is None and getattr(submodule(blocks[lyr], lay.o_proj), "bias", None) is not None:
            comps.append((f"L{lyr}.attn_bias", out - heads.sum(1)))  # the output projection's bias
        comps.append((f"L{lyr}.mlp", cache[f"blocks.{lyr}.mlp.out"][0]))
    return comps


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6))


def _effective_weight(norm: Any, fam: Any) -> Any:
    w = norm.weight.detach().double()
    return w + 1 if fam is not None and fam.norm_plus_one else w


def _close(a: Any, b: Any, what: str) -> float:
    """Relative max difference; refuse the model when the linearisation does not reproduce it."""
    err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
    if err > TOLERANCE:
        raise BadInput(f"cannot decompose this head exactly: {what} differs from the model's by {err:.2g} "
                       "(relative); refusing rather than printing wrong numbers")
    return err


def _norm_parts(norm: Any, fam: Any, x_total: Any, comps: Any) -> tuple[Any, Any | None]:
    """The input norm applied to each component [C, seq, d] with the total's scale frozen; (parts, bias)."""
    import torch

    eps = _eps(norm)
    if isinstance(norm, torch.nn.LayerNorm):
        inv = torch.rsqrt(x_total.double().var(-1, unbiased=False, keepdim=True) + eps)
        parts = (comps - comps.mean(-1, keepdim=True)) * inv * norm.weight.detach().double()
        return parts, None if norm.bias is None else norm.bias.detach().double().expand_as(x_total)
    inv = torch.rsqrt(x_total.double().pow(2).mean(-1, keepdim=True) + eps)
    return comps * inv * _effective_weight(norm, fam), None


def _per_head_norm(norm: Any, fam: Any, total: Any, parts: Any) -> Any:
    """A q/k RMSNorm over d_head, with the scale of the total (per position) frozen; parts [C, seq, dh]."""
    import torch

    inv = torch.rsqrt(total.double().pow(2).mean(-1, keepdim=True) + _eps(norm))
    return parts * inv * _effective_weight(norm, fam)


def decompose(loaded: Loaded, ids: list[int], layer: int, head: int, keys: int = 2,
              queries: list[int] | None = None) -> dict[str, Any]:
    """The `heads why --json` document: for each query (all but position 0 unless given) and its `keys`
    most-attended keys, the logit and its parts on the key side (`parts`) and the query side (`query_parts`)."""
    import torch

    if loaded.is_encoder:
        raise BadInput("heads why decomposes causal self-attention of a pre-norm decoder; this is an encoder "
                       "(post-LN)", loaded.source)
    if getattr(loaded.config, "attn_logit_softcapping", None):
        raise BadInput("this model soft-caps its attention logits, which is not linear in q; refusing",
                       loaded.source)
    fam = registry.family_of(loaded.config.model_type)
    if fam is None or fam.attn_input_norm is None:
        raise BadInput("heads why needs a pre-norm decoder of a known family", loaded.source)
    n = len(ids)
    if queries is not None and any(not 0 <= q < n for q in queries):
        raise BadInput(f"--query must lie in 0..{n - 1} (the text has {n} tokens)")
    block = layers(loaded.model, loaded.architecture)[layer]
    lay = registry.get(fam.name).layout
    attn = submodule(block, lay.attn)
    names = [f"blocks.{layer}.resid_pre", f"blocks.{layer}.attn.pattern", "blocks.0.resid_pre"]
    names += [f"blocks.{lyr}.{p}" for lyr in range(layer) for p in ("attn.head_out", "attn.out", "mlp.out")]
    with _recorded(loaded, attn) as rec:
        _, cache = hooks.run_with_cache(loaded, torch.tensor([ids]), names=names)
    if "query" not in rec:
        raise BadInput("this model's attention does not run through transformers' attention interface")
    x_total = cache[f"blocks.{layer}.resid_pre"][0]
    comps = _components(loaded, cache, layer)
    stack = torch.stack([c.double() for _, c in comps])  # float64: the parts cancel
    checks = {"residual": _close(stack.sum(0), x_total, "the sum of the residual components")}

    norm = submodule(block, fam.attn_input_norm)
    normed, norm_bias = _norm_parts(norm, fam, x_total, stack)
    checks["input_norm"] = _close(normed.sum(0) + (0 if norm_bias is None else norm_bias), rec["hidden"][0],
                                  "the linearised input norm")
    hw = weights.head(loaded, layer, head)
    side_names = [name for name, _ in comps] + (["norm_bias"] if norm_bias is not None else [])
    if norm_bias is not None:
        normed = torch.cat([normed, norm_bias[None]])
    sides: dict[str, tuple[list[str], Any]] = {}
    for side, w, b in (("q", hw.W_Q, hw.b_Q), ("k", hw.W_K, hw.b_K)):
        parts = normed @ w.double().T  # [C, seq, dh]
        labels = list(side_names)
        if b is not None:
            parts = torch.cat([parts, b.double().expand(1, n, -1)])
            labels.append(f"{side}_bias")
        qk_norm = getattr(attn, f"{side}_norm", None)
        if qk_norm is not None:
            parts = _per_head_norm(qk_norm, fam, parts.sum(0), parts)
        if rec.get("position_embeddings") is not None:
            cos, sin = rec["position_embeddings"]
            rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
            parts = rotate(parts[:, None], parts[:, None], cos, sin)[0][:, 0]
        sides[side] = (labels, parts)
    group = loaded.n_heads // rec["key"].shape[1]
    q_act, k_act = rec["query"][0, head].double(), rec["key"][0, head // group].double()  # [seq, dh]
    checks["query"] = _close(sides["q"][1].sum(0), q_act, "the sum of the query parts")
    checks["key"] = _close(sides["k"][1].sum(0), k_act, "the sum of the key parts")
    scale = rec["scaling"] if rec["scaling"] is not None else q_act.shape[-1] ** -0.5
    logits = scale * q_act @ k_act.T  # [q, k]
    pattern = cache[f"blocks.{layer}.attn.pattern"][0, head].double()
    visible = pattern > 0
    mine = torch.softmax(logits.masked_fill(~torch.tril(torch.ones(n, n, dtype=torch.bool)), float("-inf")), -1)
    checks["pattern"] = float((mine - pattern).abs().where(visible, torch.zeros(())).max())
    if checks["pattern"] > 1e-3 and bool(visible.tril().eq(torch.tril(torch.ones(n, n, dtype=torch.bool))).all()):
        raise BadInput(f"cannot reproduce this head's attention from q·k (max difference {checks['pattern']:.2g})")
    key_parts = scale * torch.einsum("id,cjd->cij", q_act, sides["k"][1])  # [C_k, q, k]
    query_parts = scale * torch.einsum("cid,jd->cij", sides["q"][1], k_act)  # [C_q, q, k]
    rows = queries if queries is not None else list(range(1, n)) or [0]
    positions = []
    worst = 0.0
    for i in rows:
        top = torch.argsort(pattern[i], descending=True)[: max(1, keys)]
        row_max = float(logits[i, : i + 1].abs().max())
        for j in top.tolist():
            if j > i:
                continue
            # relative to the row's largest |logit|, floored at 1e-2 of the Cauchy–Schwarz bound s‖q_i‖‖k_j‖: the
            # model's own float32 q and k carry ~1e-7 of that bound in rounding, so a row of near-zero logits
            # (orthogonal q and k) would otherwise be judged on the model's float noise, not on the decomposition
            bound = float(scale * q_act[i].norm() * k_act[j].norm())
            row_scale = max(row_max, 1e-2 * bound, 1e-12)
            logit = float(logits[i, j])
            kp, qp = key_parts[:, i, j], query_parts[:, i, j]
            worst = max(worst, abs(float(kp.sum()) - logit) / row_scale, abs(float(qp.sum()) - logit) / row_scale)
            positions.append({
                "query": i, "key": j, "attention": float(pattern[i, j]), "logit": logit,
                "parts": _sorted(sides["k"][0], kp), "query_parts": _sorted(sides["q"][0], qp)})
    checks["parts_sum"] = worst
    if worst > TOLERANCE:
        raise BadInput(f"the parts miss the logit by {worst:.2g} (relative); refusing")
    return {"model": loaded.name, "layer": layer, "head": head, "tokens": [], "token_ids": list(ids),
            "positions": positions, "scaling": float(scale), "checks": checks,
            "approximations": [APPROXIMATION],
            "convention": "logit_ij = scaling · q_i · k_j; parts: key-side components (with the model's q_i), "
                          "query_parts: query-side components (with the model's k_j); each list sums to logit"}


def _sorted(labels: list[str], values: Any) -> list[dict[str, Any]]:
    pairs = sorted(zip(labels, values.tolist(), strict=True), key=lambda kv: -abs(kv[1]))
    return [{"component": name, "value": v} for name, v in pairs]


def picture(doc: dict[str, Any], path: Any, n_positions: int = 4, n_parts: int = 8) -> Any:
    """Bars of the largest key-side and query-side parts of the most attended (query, key) pairs → PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the most attended pairs, those off position 0 first: a sink's logit is the same story at every query
    chosen = sorted(doc["positions"], key=lambda p: (p["key"] == 0, -p["attention"]))[:n_positions] or []
    fig, axes = plt.subplots(max(1, len(chosen)), 2, figsize=(11, 2.4 * max(1, len(chosen))), squeeze=False)
    toks = doc.get("tokens") or []
    for row, pos in enumerate(chosen):
        for col, key in enumerate(("parts", "query_parts")):
            ax = axes[row][col]
            parts = pos[key][:n_parts][::-1]
            vals = [p["value"] for p in parts]
            ax.barh([p["component"] for p in parts], vals, color=["#c44" if v < 0 else "#48c" for v in vals])
            qt = toks[pos["query"]] if pos["query"] < len(toks) else ""
            kt = toks[pos["key"]] if pos["key"] < len(toks) else ""
            side = "key side" if key == "parts" else "query side"
            ax.set_title(f"q{pos['query']} {qt!r} → k{pos['key']} {kt!r}: logit {pos['logit']:.2f}, "
                         f"attn {pos['attention']:.2f} ({side})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"why head {doc['layer']}.{doc['head']} attends where it does", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)

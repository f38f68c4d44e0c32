"""Composition scores from the weights alone: which earlier head's output each later head reads, and how.

Matrix convention (column vectors, Hugging Face layout out × in; Elhage et al. 2021's):
    W_Q, W_K, W_V ∈ ℝ^{d_head × d_model}, W_O ∈ ℝ^{d_model × d_head}
    W_QK = W_Qᵀ W_K  (logit_ij = x_iᵀ W_QK x_j: rows read the query, columns the key)
    W_OV = W_O W_V   (a head writes W_OV x into the residual stream)
From sender s (earlier layer) to receiver r, each score is ‖M W_OV^s‖_F / (‖M‖_F ‖W_OV^s‖_F) with
    K-composition  M = W_QK^r      (the sender's output feeds the receiver's keys)
    Q-composition  M = W_QK^rᵀ     (... its queries)
    V-composition  M = W_OV^r      (... its values)
The receiver reads through its own input norm: the norm's scale is folded in as a diagonal (and a LayerNorm's
centering as the projection I − 11ᵀ/d); a per-head q/k norm's scale is folded into the rows of W_Q / W_K. The
input-dependent 1/σ of every norm is a per-position scalar, so it cancels in a score. GQA: the receiver's K and V
are its kv group's. RoPE is ignored: scores are computed on the un-rotated projections (relative offset 0), an
approximation stated in every output.

Cost: never a d_model² matrix. With W_Q'ᵀ = Q R (thin QR), ‖W_QK X‖ = ‖R W_K X‖, and likewise for every other
factor, so each head reduces to a [d_head, d_model] receiver factor per kind and a [d_model, d_head] sender
factor U_r, S_s; then ‖U_r S_s‖²_F = ⟨U_rᵀU_r, S_s S_sᵀ⟩, one d_model² Gram per head (never per pair), and all
pairs of a receiver layer are one product of the packed Grams (benchmarks/circuits.py times it against the dense
computation).

Null: rotate the sender's output space by a Haar-random rotation. Then E[score²] = 1/d_model exactly, whatever
the spectra (so `baseline` = 1/√d_model, the null's RMS), and the spread follows from the two factors' spectra:
Var(score²) ≈ Σ_j w_j² · 2(Σ_i λ_i² − 1/d)/(d(d+2)) with λ, w the receiver's and sender's normalised squared
singular values (the sender's directions treated as independent: checked against sampled rotations in the tests).
`z` = (score² − 1/d) / sd(score²).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("q", "k", "v")
LAYERNORM_FAMILIES = {"gpt2", "gpt_neox", "bert", "phi"}
APPROXIMATIONS = [
    "RoPE ignored: scores use the un-rotated W_Q/W_K (relative offset 0)",
    "norm scales folded in as diagonals; the input-dependent 1/σ is a per-position scalar and cancels",
]


@dataclass
class Composition:
    """Scores of every (receiver, sender) pair: tensors [kind, L_r, H, L_s, H], NaN where L_s ≥ L_r."""

    n_layers: int
    n_heads: int
    d_model: int
    score: Any
    z: Any
    null_sd: Any  # sd of the score under the null (delta method from sd(score²))
    baseline: float  # 1/√d_model: the null's RMS score
    approximations: list[str] = field(default_factory=lambda: list(APPROXIMATIONS))

    def pairs(self) -> list[dict[str, Any]]:
        """Every pair, sorted by score (highest first): {from, to, kind, score, baseline, null_sd, z}."""
        import torch

        s = self.score
        idx = torch.nonzero(~torch.isnan(s), as_tuple=False)
        vals = s[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3], idx[:, 4]]
        order = torch.argsort(vals, descending=True)
        out = []
        for i in order.tolist():
            k, lr, hr, ls, hs = (int(x) for x in idx[i])
            out.append({"from": [ls, hs], "to": [lr, hr], "kind": KINDS[k], "score": float(vals[i]),
                        "baseline": self.baseline, "null_sd": float(self.null_sd[k, lr, hr, ls, hs]),
                        "z": float(self.z[k, lr, hr, ls, hs])})
        return out

    def top(self, layer: int, head: int, kind: str | None = None, n: int = 5) -> list[dict[str, Any]]:
        """A receiver's strongest senders (of one kind, or all kinds), highest score first."""
        kinds = range(len(KINDS)) if kind is None else [KINDS.index(kind)]
        rows = []
        for k in kinds:
            s = self.score[k, layer, head]  # [L_s, H]
            for ls in range(layer):
                for hs in range(self.n_heads):
                    rows.append((float(s[ls, hs]), k, ls, hs))
        rows.sort(reverse=True)
        return [{"from": [ls, hs], "kind": KINDS[k], "score": v, "z": float(self.z[k, layer, head, ls, hs])}
                for v, k, ls, hs in rows[:n]]


def _fold(aw: Any, dtype: Any = None, head: tuple[int, int] | None = None) -> tuple[Any, Any, Any, Any]:
    """W_Q, W_K, W_V as the receiver reads them (norms folded in), W_O as written (float64 by default); all
    heads [L, H, ...], or one head's matrices when `head` = (layer, head) is given."""
    import torch

    dtype = dtype or torch.float64
    mats = (aw.W_Q, aw.W_K, aw.W_V, aw.W_O)
    norm, qn, kn = aw.norm_in, aw.q_norm, aw.k_norm
    if head is not None:
        layer, h = head
        mats = tuple(m[layer, h] for m in mats)
        norm, qn, kn = (None if t is None else t[layer] for t in (norm, qn, kn))
    wq, wk, wv, wo = (t.to(dtype) for t in mats)
    if norm is not None:  # x → diag(γ) x: scale the input columns
        g = norm.to(dtype)[:, None, None, :] if head is None else norm.to(dtype)[None, :]
        wq, wk, wv = wq * g, wk * g, wv * g
    if aw.family in LAYERNORM_FAMILIES:  # LayerNorm centres first: W (I − 11ᵀ/d) removes each row's mean
        wq, wk, wv = (w - w.mean(-1, keepdim=True) for w in (wq, wk, wv))
    if qn is not None:  # a per-head norm on q scales its rows (its 1/σ is per position)
        wq = wq * (qn.to(dtype)[:, None, :, None] if head is None else qn.to(dtype)[:, None])
    if kn is not None:
        wk = wk * (kn.to(dtype)[:, None, :, None] if head is None else kn.to(dtype)[:, None])
    return wq, wk, wv, wo


def _r(a: Any) -> Any:
    """R with RᵀR = aᵀa for a [..., m, n] (m ≥ n), so ‖a X‖_F = ‖R X‖_F for any X (eigh of the small Gram:
    as exact as a QR, robust to rank deficiency, and far cheaper batched)."""
    import torch

    lam, vec = torch.linalg.eigh(a.transpose(-1, -2) @ a)
    return lam.clamp(min=0).sqrt()[..., :, None] * vec.transpose(-1, -2)


def factors(aw: Any, dtype: Any = None) -> tuple[Any, Any]:
    """(receiver factors [3, L, H, d_head, d_model] for kinds q, k, v; sender factors [L, H, d_model, d_head])."""
    import torch

    wq, wk, wv, wo = _fold(aw, dtype)
    t = lambda w: w.transpose(-1, -2)  # noqa: E731
    u_q = _r(t(wk)) @ wq  # ‖W_QKᵀ X‖ = ‖W_Kᵀ W_Q X‖ = ‖R_K W_Q X‖
    u_k = _r(t(wq)) @ wk  # ‖W_QK X‖ = ‖W_Qᵀ W_K X‖ = ‖R_Q W_K X‖
    u_v = _r(wo) @ wv  # ‖W_OV X‖ = ‖W_O W_V X‖ = ‖R_O W_V X‖
    send = wo @ t(_r(t(wv)))  # ‖X W_O W_V‖ = ‖X W_O R_Vᵀ‖
    return torch.stack([u_q, u_k, u_v]), send


def _spread(mat: Any, rows: bool) -> Any:
    """Σ λ² of the normalised squared singular values of each [..., a, b] matrix (1 = rank one)."""
    import torch

    gram = mat @ mat.transpose(-1, -2) if rows else mat.transpose(-1, -2) @ mat  # the small side
    lam = torch.linalg.eigvalsh(gram).clamp(min=0)
    lam = lam / lam.sum(-1, keepdim=True).clamp(min=1e-300)
    return (lam * lam).sum(-1)


def _packed(mats: Any, weight: Any, iu: Any) -> Any:
    """Symmetric [..., d, d] → their upper triangles [..., d(d+1)/2], off-diagonal entries times `weight`,
    so that ⟨A, B⟩_F = packed(A, 2) · packed(B, 1)."""
    return mats[..., iu[0], iu[1]] * weight


def composition(aw: Any, dtype: Any = None, progress: Any = None) -> Composition:
    """All Q/K/V composition scores of a model's heads (a `weights.all_heads` result).

    ‖U_r S_s‖²_F = ⟨U_rᵀU_r, S_s S_sᵀ⟩: one d_model² Gram per head (not per pair), packed to its upper
    triangle, and every pair of a receiver layer is one matrix product of the packed Grams."""
    import torch

    dtype = dtype or torch.float32
    L, H, dh, d = aw.W_Q.shape
    recv, send = factors(aw, dtype)
    recv_norm = recv.pow(2).sum((-1, -2)).sqrt().double()  # [3, L, H]: ‖M‖_F
    send_norm = send.pow(2).sum((-1, -2)).sqrt().double()  # [L, H]: ‖W_OV‖_F
    s2 = _spread(recv, rows=True).double()  # [3, L, H]
    w2 = _spread(send, rows=False).double()  # [L, H]
    iu = torch.triu_indices(d, d)
    off = torch.where(iu[0] == iu[1], 1.0, 2.0).to(dtype)
    ones = torch.ones((), dtype=dtype)
    sf = send
    send_gram = torch.stack([_packed(sf[ls] @ sf[ls].transpose(-1, -2), ones, iu) for ls in range(L - 1)])
    send_gram = send_gram.reshape((L - 1) * H, -1)  # [(L_s H), d(d+1)/2]
    score = torch.full((3, L, H, L, H), float("nan"), dtype=torch.float64)
    layers = range(1, L)
    if progress is not None:
        layers = progress(layers, "composition scores", L - 1)
    for lr in layers:
        u = recv[:, lr]  # [3, H, dh, d]
        g = _packed(u.transpose(-1, -2) @ u, off, iu).reshape(3 * H, -1)
        num2 = (g @ send_gram[: lr * H].T).reshape(3, H, lr, H).to(torch.float64).clamp(min=0)
        den = recv_norm[:, lr][:, :, None, None] * send_norm[:lr][None, None]
        score[:, lr, :, :lr] = num2.sqrt() / den.clamp(min=1e-300)
    var2 = w2[None, None, None] * (2 * (s2[:, :, :, None, None] - 1 / d) / (d * (d + 2)))  # [3, L, H, L, H]
    sd2 = var2.clamp(min=1e-300).sqrt()
    z = (score.pow(2) - 1 / d) / sd2
    null_sd = sd2 / (2 / d**0.5)  # delta method: d(score) = d(score²) / (2 · score), at score = 1/√d
    return Composition(L, H, d, score.float(), z.float(), null_sd.float(), 1 / d**0.5)


def dense_score(aw: Any, kind: str, sender: tuple[int, int], receiver: tuple[int, int]) -> float:
    """One score the naive way, forming the d_model² matrices (reference for tests and the benchmark)."""
    import torch

    _, _, wv_s, wo_s = _fold(aw, head=sender)
    wq, wk, wv, wo = _fold(aw, head=receiver)
    ov_s = wo_s @ wv_s
    if kind == "k":
        m = wq.T @ wk
    elif kind == "q":
        m = (wq.T @ wk).T
    else:
        m = wo @ wv
    return float(torch.linalg.norm(m @ ov_s) / (torch.linalg.norm(m) * torch.linalg.norm(ov_s)))

"""Attention-pattern clustering: describe every head by where it looks over many texts, cluster the heads,
and set the clusters beside the atlas roles (the unsupervised check of the atlas).

Features per head (means over all queries q ≥ 1 of all text windows):
    first          attention on position 0 (the sink)
    offset:0..16+  where the rest of the attention goes, by relative offset q − k in bins 0 (self), 1, 2, 3,
                   4–7, 8–15, 16+, as shares of the attention not on position 0 (so a head that parks most of
                   its attention on the sink but looks one token back with the rest still reads as
                   previous-token: on SmolLM2 this split the probes' roles apart far better than raw shares)
    entropy        the pattern's entropy over its q + 1 keys, divided by log(q + 1) (1 = uniform)
    duplicate      mass on earlier occurrences of the query's own token (queries that have one)
    induction      mass on tokens that followed an earlier occurrence of the query's token (queries that have one)
Each feature is z-scored across heads, then k-means (k-means++ seeding, 10 restarts). `k auto` picks the k in
2..12 with the highest mean silhouette (Rousseeuw 1987): how much closer each head is to its own cluster than
to the next one, averaged; it needs no labels and penalises both merged and split groups.
Roles come from an `atlas --json` file, or else from the atlas's attention probes run here (one forward over
random repeated sequences): a head's role is its highest score above the atlas threshold, or `none`.
"""

from __future__ import annotations

from typing import Any

from glassbox.errors import BadInput
from glassbox.heads import atlas, probe_inputs, probes
from glassbox.run import hooks
from glassbox.run.load import Loaded

OFFSET_BINS = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 7), (8, 15), (16, 1 << 30)]
FEATURES = (["first"] + [f"offset:{a}" if a == b else (f"offset:{a}-{b}" if b < 1 << 30 else f"offset:{a}+")
                         for a, b in OFFSET_BINS] + ["entropy", "duplicate", "induction"])


def features(loaded: Loaded, rows: Any, batch: int = 8) -> Any:
    """Token rows [n, seq] → head features [n_layers · n_heads, len(FEATURES)] (numpy, layer-major)."""
    import numpy as np
    import torch

    n, s = rows.shape
    q_idx = torch.arange(s)[:, None]
    k_idx = torch.arange(s)[None, :]
    offset = q_idx - k_idx
    bins = torch.stack([((offset >= a) & (offset <= b) & (k_idx >= 1)).float() for a, b in OFFSET_BINS], -1)
    sums = torch.zeros(loaded.n_layers, loaded.n_heads, len(FEATURES), dtype=torch.float64)
    counts = torch.zeros(len(FEATURES), dtype=torch.float64)
    log_keys = torch.log(torch.arange(s, dtype=torch.float32) + 1).clamp_min(1e-6)  # log(q + 1)
    for start in range(0, n, batch):
        tok = rows[start : start + batch]
        b = tok.shape[0]
        causal = (k_idx < q_idx)[None]
        dup = (tok[:, :, None] == tok[:, None, :]) & causal  # [b, q, k]
        ind = torch.zeros_like(dup)
        ind[:, :, 1:] = (tok[:, :, None] == tok[:, None, :-1]) & causal[:, :, 1:]
        has_dup, has_ind = dup.any(-1), ind.any(-1)  # [b, q]
        has_dup[:, 0] = has_ind[:, 0] = False
        counts[0:len(OFFSET_BINS) + 2] += b * (s - 1)
        counts[-2] += float(has_dup.sum())
        counts[-1] += float(has_ind.sum())

        def add(name: str, pattern: Any, dup: Any = dup, ind: Any = ind, has_dup: Any = has_dup,
                has_ind: Any = has_ind) -> None:
            """Each layer's pattern into the sums as it is recorded: one layer's pattern alive at a time."""
            p = pattern.detach().float().cpu()[:, :, 1:]  # queries 1..s-1: [b, h, q, k]
            f = sums[int(name.split(".")[1])]
            f[:, 0] += p[..., 0].sum(dim=(0, 2)).double()
            f[:, 1 : 1 + len(OFFSET_BINS)] += torch.einsum("bhqk,qkn->hn", p, bins[1:]).double()
            ent = -(p * torch.log(p.clamp_min(1e-12))).sum(-1) / log_keys[1:]
            f[:, 1 + len(OFFSET_BINS)] += ent.sum(dim=(0, 2)).double()
            f[:, -2] += ((p * dup[:, None, 1:]).sum(-1) * has_dup[:, None, 1:]).sum(dim=(0, 2)).double()
            f[:, -1] += ((p * ind[:, None, 1:]).sum(-1) * has_ind[:, None, 1:]).sum(dim=(0, 2)).double()

        # the logits of the last position only: the features read the patterns, the unembedding is wasted work
        hooks.run_with_cache(loaded, tok, names="blocks.*.attn.pattern", reduce=add,
                             logits_at=None if loaded.is_encoder else [s - 1])
    counts = counts.clamp_min(1)
    out = (sums / counts).reshape(-1, len(FEATURES)).numpy().astype(np.float64)
    rest = np.maximum(1.0 - out[:, :1], 1e-3)
    out[:, 1 : 1 + len(OFFSET_BINS)] /= rest  # shares of the non-sink attention
    return out


def kmeans(x: Any, k: int, seed: int = 0, restarts: int = 10, iterations: int = 100) -> tuple[Any, Any, float]:
    """Lloyd's k-means with k-means++ seeding; best of `restarts` by inertia → (labels, centroids, inertia)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    best: tuple[Any, Any, float] | None = None
    for _ in range(restarts):
        centers = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            total = d2.sum()
            pick = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
            centers.append(x[pick])
        c = np.array(centers)
        labels = np.zeros(len(x), dtype=int)
        for _ in range(iterations):
            labels_new = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
            for j in range(k):
                if (labels_new == j).any():
                    c[j] = x[labels_new == j].mean(0)
            if (labels_new == labels).all() and _ > 0:
                break
            labels = labels_new
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[2]:
            best = (labels.copy(), c.copy(), inertia)
    assert best is not None
    return best


def silhouette(x: Any, labels: Any) -> float:
    """Mean silhouette coefficient; points alone in their cluster count 0."""
    import numpy as np

    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    ks = np.unique(labels)
    if len(ks) < 2:
        return 0.0
    scores = np.zeros(len(x))
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() <= 1:
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == j].mean() for j in ks if j != labels[i])
        scores[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(scores.mean())


def standardize(x: Any) -> Any:
    import numpy as np

    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)


def choose_k(z: Any, k: str | int, seed: int = 0, k_max: int = 12) -> tuple[int, dict[int, float]]:
    """`auto` → the k in 2..k_max with the best silhouette; an integer → itself. Returns (k, silhouette by k)."""
    n = len(z)
    if isinstance(k, str) and k != "auto":
        if not k.isdigit():
            raise BadInput(f"--k {k!r}: give a number of clusters or 'auto'")
        k = int(k)
    if k == "auto":
        scores = {kk: silhouette(z, kmeans(z, kk, seed)[0]) for kk in range(2, min(k_max, n - 1) + 1)}
        if not scores:
            raise BadInput(f"only {n} heads: too few to cluster")
        return max(scores, key=lambda kk: scores[kk]), scores
    if not 1 <= int(k) <= n:
        raise BadInput(f"--k {k}: must be between 1 and the number of heads ({n})")
    return int(k), {}


def adjusted_rand(a: list[Any], b: list[Any]) -> float:
    """Adjusted Rand index of two labelings (1 = the same partition, ~0 = chance)."""
    import numpy as np

    _, ai = np.unique(np.asarray(a, dtype=str), return_inverse=True)
    _, bi = np.unique(np.asarray(b, dtype=str), return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def pairs(v: Any) -> float:
        return float((v * (v - 1) / 2).sum())

    n = len(a)
    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), n * (n - 1) / 2
    expected = rows * cols / total if total else 0.0
    top = (rows + cols) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)


def roles_from_atlas(doc: dict[str, Any], n_layers: int, n_heads: int) -> list[str]:
    """An `atlas --json` document → one role per head (validated roles first, then by score; `none` if no role)."""
    roles = ["none"] * (n_layers * n_heads)
    try:
        for entry in doc["heads"]:
            listed = sorted(entry.get("roles", []), key=lambda r: (not r.get("validated", False), -r["score"]))
            if listed and 0 <= entry["layer"] < n_layers and 0 <= entry["head"] < n_heads:
                roles[entry["layer"] * n_heads + entry["head"]] = str(listed[0]["role"])
    except (KeyError, TypeError) as exc:
        raise BadInput(f"not an `atlas --json` document ({exc})") from None
    return roles


def roles_from_probes(loaded: Loaded, seed: int = 0) -> list[str]:
    """The atlas's attention probes on random repeated sequences → a role per head (best score over threshold)."""
    rep = probe_inputs.repeats(loaded, batch=8, half=min(32, _max_half(loaded)), seed=seed)
    _, cache = hooks.run_with_cache(loaded, rep.tokens, names="blocks.*.attn.pattern",
                                    reduce=probes.pattern_reducer(loaded, rep))  # one layer's pattern at a time
    scores = probes.pattern_scores(loaded, rep, cache)
    roles = []
    for layer in range(loaded.n_layers):
        for head in range(loaded.n_heads):
            above = {name: float(s[layer, head]) for name, s in scores.items()
                     if float(s[layer, head]) >= atlas.threshold(name)}
            roles.append(max(above, key=lambda r: above[r] / atlas.threshold(r)) if above else "none")
    return roles


def _max_half(loaded: Loaded) -> int:
    limit = getattr(loaded.config, "max_position_embeddings", None) or 128
    return max(4, (int(limit) - 2) // 2)


def analyze(feats: Any, roles: list[str] | None, n_heads: int, k: str | int = "auto", seed: int = 0,
            roles_source: str = "") -> dict[str, Any]:
    """Head features (+ roles) → the report: clusters with centroids, contingency table, agreement, disagreements."""
    import numpy as np

    z = standardize(feats)
    k_chosen, k_scores = choose_k(z, k, seed)
    labels, _, _ = kmeans(z, k_chosen, seed)
    # number clusters by their first head, so the output does not depend on k-means' internal order
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    labels = np.array([order[x] for x in labels])
    heads = [{"layer": i // n_heads, "head": i % n_heads, "cluster": int(labels[i]),
              "role": roles[i] if roles else None} for i in range(len(labels))]
    clusters = []
    role_names = sorted(set(roles)) if roles else []
    table = []
    for c in range(k_chosen):
        members = np.flatnonzero(labels == c)
        centroid = feats[members].mean(0)
        entry: dict[str, Any] = {
            "cluster": c, "size": int(len(members)),
            "centroid": {name: float(v) for name, v in zip(FEATURES, centroid, strict=True)},
            "heads": [[int(i) // n_heads, int(i) % n_heads] for i in members],
        }
        if roles:
            counts = {r: int(sum(roles[i] == r for i in members)) for r in role_names}
            table.append([counts[r] for r in role_names])
            entry["roles"] = {r: v for r, v in counts.items() if v}
            dominant = max(counts, key=lambda r: counts[r])
            entry["dominant_role"], entry["purity"] = dominant, counts[dominant] / len(members)
        clusters.append(entry)
    report: dict[str, Any] = {"n_heads_total": len(labels), "k": k_chosen,
                              "silhouette_by_k": {str(kk): v for kk, v in k_scores.items()},
                              "features": FEATURES, "clusters": clusters, "heads": heads}
    if roles:
        report["contingency"] = {"roles": role_names, "table": table}
        named = [i for i, r in enumerate(roles) if r != "none"]
        report["agreement"] = {
            "adjusted_rand": adjusted_rand(labels.tolist(), roles),
            "adjusted_rand_named": adjusted_rand([int(labels[i]) for i in named], [roles[i] for i in named])
            if len(named) > 1 else None,
            "roles": role_matches(clusters, heads),
            "roles_from": roles_source}
        report["disagreements"] = disagreements(clusters, heads)
    return report


def role_matches(clusters: list[dict[str, Any]], heads: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per named role: the cluster holding most of its heads, recall (share of the role there) and precision
    (share of that cluster carrying the role)."""
    out = {}
    sizes = {c["cluster"]: c["size"] for c in clusters}
    for role in sorted({h["role"] for h in heads} - {"none"}):
        where = [h["cluster"] for h in heads if h["role"] == role]
        best = max(sorted(set(where)), key=lambda c: (where.count(c), where.count(c) / sizes[c]))  # ties: purer
        out[role] = {"heads": len(where), "cluster": best, "recall": where.count(best) / len(where),
                     "precision": where.count(best) / sizes[best]}
    return out


def disagreements(clusters: list[dict[str, Any]], heads: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: heads of a role outside that role's main cluster, and clusters no role names."""
    out = []
    matches = role_matches(clusters, heads)
    for h in heads:
        if h["role"] != "none" and h["cluster"] != matches[h["role"]]["cluster"]:
            out.append(f"head {h['layer']}.{h['head']} ({h['role']}) sits in cluster {h['cluster']}, not with the "
                       f"other {h['role']} heads (cluster {matches[h['role']]['cluster']})")
    for c in clusters:
        if c["dominant_role"] == "none" and c["size"] >= 2:
            top = max(c["centroid"], key=lambda f: c["centroid"][f] if f != "entropy" else -1.0)
            out.append(f"cluster {c['cluster']} ({c['size']} heads, {c['roles'].get('none', 0)} without a role) "
                       f"is a pattern the probes do not name: entropy {c['centroid']['entropy']:.2f}, "
                       f"largest share {top} {c['centroid'][top]:.2f}")
    return out

"""Composition scores of every head pair × 3 kinds: the low-rank Gram computation (glassbox.circuits.compose)
against the naive dense one (form W_QK and W_OV as d_model² matrices per pair), measured in the same run.

The dense cost is timed on a random subset of pairs and extrapolated to all of them (linear in the pair count);
the agreement of the two on that subset is printed too.

    .venv/bin/python benchmarks/circuits.py [--model smollm2-135m] [--subset 60]
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--subset", type=int, default=60, help="pairs × kinds timed the dense way")
    args = ap.parse_args()

    from glassbox import weights
    from glassbox.circuits import compose
    from glassbox.run.load import set_threads

    threads = set_threads()
    t = time.perf_counter()
    aw = weights.all_heads(args.model)
    load_s = time.perf_counter() - t
    L, H = aw.W_Q.shape[:2]
    n_pairs = sum(lr * H * H for lr in range(L))  # senders in earlier layers only
    t = time.perf_counter()
    comp = compose.composition(aw)
    fast_s = time.perf_counter() - t

    rng = random.Random(0)
    subset = []
    for _ in range(args.subset):
        lr = rng.randrange(1, L)
        subset.append((rng.choice(compose.KINDS), (rng.randrange(lr), rng.randrange(H)), (lr, rng.randrange(H))))
    t = time.perf_counter()
    dense = [compose.dense_score(aw, kind, s, r) for kind, s, r in subset]
    dense_each = (time.perf_counter() - t) / len(subset)
    dense_all = dense_each * n_pairs * 3
    err = max(abs(float(comp.score[compose.KINDS.index(k), r[0], r[1], s[0], s[1]]) - d) / d
              for (k, s, r), d in zip(subset, dense, strict=True))
    print(f"model {args.model}: {L} layers × {H} heads, d_model {comp.d_model}; {n_pairs} pairs × 3 kinds "
          f"= {3 * n_pairs} scores; torch threads {threads}; per-head weights read in {load_s:.1f} s")
    print(f"low-rank Gram (all scores): {fast_s:.1f} s")
    print(f"naive dense: {dense_each * 1e3:.1f} ms per score on {len(subset)} random scores → "
          f"{dense_all:.0f} s extrapolated to all")
    print(f"speed-up (dense / low-rank, same run): {dense_all / fast_s:.1f}×; "
          f"max relative difference on the subset: {err:.1e}")
    top = comp.pairs()[:3]
    print("strongest: " + "; ".join(f"{p['from'][0]}.{p['from'][1]}→{p['to'][0]}.{p['to'][1]} {p['kind']} "
                                    f"{p['score']:.3f} (z {p['z']:.0f})" for p in top))


if __name__ == "__main__":
    main()

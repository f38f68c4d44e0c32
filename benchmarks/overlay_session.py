"""Benchmark: the session memory's per-step cost does not grow with what the session has read (issue 13).

One step = what the overlay does per token: insert the token (`Session.add`), read P_S (`dist`), its features
and its probability for 40 candidate ids. Measured over `--steps` steps of real text (the KJV index's token
array) after the session has read 1×, 10× and 100× a base of `--base` tokens; interleaved rounds, p50/p99
of each, every ratio against the 1× figure of the same run. Also the offline quality check: given the LM
scalars of a held-out text dumped once (`--lm NPZ`, as `overlay eval` computes them), P_S and the gate's
decision, so the session's part can be refitted without new LM forwards.

    .venv/bin/python benchmarks/overlay_session.py [--base 2000] [--steps 2000] [--rounds 3]
Target: p99 at 100× ≤ 1.2× its value at 1× (flat by construction: dict reads of the last ≤ 5 tokens; what
grows with the session is how deep its contexts match, bounded by ORDER, so the figure prints that too).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from glassbox import bundled
from glassbox.overlay import index as ix
from glassbox.overlay.session import ORDER, Session


def steps_ms(tokens: np.ndarray, prefix: int, steps: int, vocab: int, cands: np.ndarray
             ) -> tuple[np.ndarray, float]:
    """Per-step milliseconds, and the mean number of levels read (the work per step is bounded by ORDER + 2:
    the unigram, ≤ ORDER contexts and the copy; a longer session matches deeper, never further)."""
    s = Session(vocab)
    for w in tokens[:prefix].tolist():
        s.add(w)
    out = np.zeros(steps)
    levels = 0
    for i, w in enumerate(tokens[prefix:prefix + steps].tolist()):
        t0 = time.perf_counter()
        s.add(w)
        d = s.dist()
        d.features(0.5)
        d.prob(cands)
        out[i] = (time.perf_counter() - t0) * 1000
        levels += len(d.levels)
    return out, levels / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(bundled.cache_dir() / "overlay-bench" / "kjv_1-39"),
                    help="An overlay index whose token array is the session's text (benchmarks/overlay.py builds it).")
    ap.add_argument("--base", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    index = ix.Index(args.index)
    tokens = np.asarray(index.tokens, dtype=np.int64)
    need = args.base * 100 + args.steps
    if len(tokens) < need:
        raise SystemExit(f"the index has {len(tokens)} tokens; need {need}")
    rng = np.random.default_rng(0)
    cands = rng.choice(np.flatnonzero(index.unigram > 0), 40, replace=False)
    scales = {"1x": args.base, "10x": args.base * 10, "100x": args.base * 100}
    times: dict[str, list[np.ndarray]] = {k: [] for k in scales}
    depth: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, so a burst of load on the shared machine hits every scale alike
        for k, prefix in scales.items():
            t, depth[k] = steps_ms(tokens, prefix, args.steps, index.vocab_size, cands)
            times[k].append(t)
    base = np.concatenate(times["1x"])
    best1 = np.min(np.stack(times["1x"]), axis=0)
    print(f"session step (add + dist + features + prob of 40 ids), {args.steps} steps x {args.rounds} rounds")
    for k, prefix in scales.items():
        t = np.concatenate(times[k])
        best = np.min(np.stack(times[k]), axis=0)  # per step, the fastest round: the step's own cost
        print(f"{k:>5} ({prefix:>7} tokens read): p50 {np.percentile(t, 50):.4f} ms, p99 {np.percentile(t, 99):.4f} ms,"
              f" best-of-rounds p99 {np.percentile(best, 99):.4f} ms; ratio to 1x: p50 "
              f"{np.percentile(t, 50) / np.percentile(base, 50):.3f}, p99 {np.percentile(t, 99) / np.percentile(base, 99):.3f}"
              f", best-of-rounds p99 {np.percentile(best, 99) / np.percentile(best1, 99):.3f}; "
              f"levels read per step {depth[k]:.2f} (at most {ORDER + 1} + the copy)")


if __name__ == "__main__":
    main()

"""Patching every head: batched patches (one batch row per head, ceil(H / B) forwards) against the naive loop
(one forward per head), on the bundled SmolLM2 and the IOI prompt pair.

Prints the cost of each in forward passes and in seconds, the ratio naive / batched for both, and the
largest difference between the two effect maps (they must agree: the batch rows are independent).
The forward-pass ratio is the target figure; wall time on a CPU gains less, since a batch of B rows
costs more than one row.

Run: .venv/bin/python benchmarks/patching.py [--model smollm2-135m] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from glassbox.lens import logit, patching
from glassbox.run import load_model

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    from threadcount import report

    report()  # the thread count and the one-thread ratio (issue 9)
    loaded = load_model(args.model)
    print(f"model {loaded.name}: {loaded.n_layers} layers × {loaded.n_heads} heads; "
          f"torch threads {torch.get_num_threads()}")
    clean, corrupt = logit.encode(loaded, CLEAN), logit.encode(loaded, CORRUPT)
    metric = patching.parse_metric(loaded, "logit_diff: Mary - John")
    patching.patch(loaded, clean, corrupt, metric, "heads", batch_size=args.batch_size)  # warm-up

    start = time.perf_counter()
    batched = patching.patch(loaded, clean, corrupt, metric, "heads", batch_size=args.batch_size)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    naive = patching.patch(loaded, clean, corrupt, metric, "heads", batch_size=1)
    t_naive = time.perf_counter() - start

    cells = loaded.n_layers * loaded.n_heads
    diff = float((batched.effect - naive.effect).abs().max())
    print(f"{cells} head patches, {len(clean)} tokens; both counts include the 2 unpatched baseline runs")
    print(f"naive   (1 head per forward):   {naive.forwards:4d} forwards  {t_naive:7.2f} s")
    print(f"batched ({args.batch_size} heads per forward): {batched.forwards:4d} forwards  {t_batched:7.2f} s")
    print(f"ratio naive / batched: {naive.forwards / batched.forwards:.1f}× fewer forward passes, "
          f"{t_naive / t_batched:.2f}× wall time")
    print(f"max |effect difference| between the two: {diff:.2e}")
    top = ", ".join(f"{r}.{c} {e:+.2f}" for r, c, e in batched.top(5))
    print(f"top heads (layer.head normalised effect): {top}")


if __name__ == "__main__":
    main()

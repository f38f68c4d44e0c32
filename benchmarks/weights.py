"""Cost of glassbox.weights against the floor: reading the same attention tensors with the checkpoint reader.

On the bundled SmolLM2-135M (Q4_1 GGUF, 30 layers, 9 query / 3 kv heads), times in the same run:
  baseline  every attention tensor (q/k/v/o projections + input norms) read with `Checkpoint.tensor`
  ours      `weights.all_heads(path)`: the same reads + role map + head slices + per-head stacking
  one head  `weights.head(path, 7, 4)` (one layer's tensors) with its byte ranges
and, for a model already in memory, `weights.all_heads(loaded)` (no dequantization: slicing and copying), on
the default thread count and on one thread.
Prints the ratios ours / baseline. No target is named by the issue; this says what the accessor costs.

Run: .venv/bin/python benchmarks/weights.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from glassbox import weights
from glassbox.anatomy.roles import classify
from glassbox.checkpoint import open_checkpoint

SPEC = "smollm2-135m"


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def baseline() -> None:
    with open_checkpoint(SPEC) as ck:
        for name in ck.tensors:
            level, layer = classify("llama", name)
            if layer is not None and level in ("attention.q", "attention.k", "attention.v", "attention.o",
                                               "attention.norm"):
                ck.tensor(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from threadcount import report

    report()  # the thread count and the one-thread ratio (issue 9)
    from glassbox.run.load import set_threads

    set_threads()  # GLASSBOX_THREADS, else torch's default (SmolLM2 is above the small-model cut)
    print(f"torch threads: {torch.get_num_threads()}")
    base = timed(baseline, args.repeats)
    ours = timed(lambda: weights.all_heads(SPEC), args.repeats)
    one = timed(lambda: weights.head(SPEC, 7, 4), args.repeats)
    from glassbox.run import load_model

    loaded = load_model(SPEC)
    default = torch.get_num_threads()
    mem = timed(lambda: weights.all_heads(loaded), args.repeats)
    torch.set_num_threads(1)
    mem1 = timed(lambda: weights.all_heads(loaded), args.repeats)
    torch.set_num_threads(default)
    print(f"baseline: read the attention tensors  {base * 1000:8.0f} ms")
    print(f"weights.all_heads(file)               {ours * 1000:8.0f} ms   {ours / base:.2f}x baseline")
    print(f"weights.head(file, 7, 4) + bytes      {one * 1000:8.0f} ms   {one / base:.2f}x baseline")
    print(f"weights.all_heads(loaded model)       {mem * 1000:8.0f} ms   {mem / base:.2f}x baseline "
          f"({default} threads)")
    print(f"  the same on 1 thread                {mem1 * 1000:8.0f} ms   one-thread / default = {mem1 / mem:.2f}")


if __name__ == "__main__":
    main()

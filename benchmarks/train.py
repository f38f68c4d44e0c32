"""Training observatory benchmark (one torch thread, the default of `glassbox train`).

Prints, for the induction-2l preset:
  - training + timeline wall time per seed, as a ratio to the 60 s budget (target <= 1.0);
  - the write ledger's overhead: training time with the ledger on every step / with it off (target <= 1.15);
  - the cost of steering: training time with --steer 1.1=induction / without.
Runs alternate (off, on, off, on, ...) and the best of each kind is kept, since the machine is shared.
Usage: python benchmarks/train.py [--seeds 0 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from glassbox.timeline.analyze import analyze
from glassbox.train.loop import declare, train


def timed_train(root: Path, name: str, **kw) -> float:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train(out, declare(preset="induction-2l", **kw))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from threadcount import report

    root0 = Path(tempfile.mkdtemp(prefix="glassbox-bench-threads-"))
    report(lambda: timed_train(root0, "threads", seed=0, steps=5), "5 steps of induction-2l", repeats=2)
    shutil.rmtree(root0, ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="glassbox-bench-"))
    try:
        timed_train(root, "warmup", seed=0, steps=20)  # imports and first-call costs out of the way
        print(f"torch threads: {torch.get_num_threads()}")
        for seed in args.seeds:
            t0 = time.perf_counter()
            timed_train(root, f"s{seed}", seed=seed)
            t_train = time.perf_counter() - t0
            doc = analyze(root / f"s{seed}")
            total = time.perf_counter() - t0
            ind = [c["step"] for c in doc["phase_changes"] if c["role"] == "induction"]
            print(f"seed {seed}: train {t_train:.1f} s + timeline {total - t_train:.1f} s = {total:.1f} s; "
                  f"ratio to the 60 s budget: {total / 60:.2f} (target <= 1.0); induction phase change at "
                  f"{min(ind) if ind else 'none'}")
        off, on, steered = [], [], []
        for _ in range(args.repeats):
            off.append(timed_train(root, "off", seed=0, ledger_every=0))
            on.append(timed_train(root, "on", seed=0, ledger_every=1))
            steered.append(timed_train(root, "steered", seed=0, ledger_every=1, steer=["1.1=induction"]))
        pairs = sorted(b / a for a, b in zip(off, on, strict=True))
        print(f"ledger every step: best {min(on):.2f} s, ledger off: best {min(off):.2f} s; "
              f"overhead ratio on/off: {min(on) / min(off):.3f} best-of-{args.repeats}, "
              f"{pairs[len(pairs) // 2]:.3f} median of back-to-back pairs (target <= 1.15)")
        print(f"steering 1.1=induction: {min(steered):.2f} s vs {min(on):.2f} s unsteered; "
              f"time ratio: {min(steered) / min(on):.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

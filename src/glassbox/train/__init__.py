"""Training with the write ledger: model from a declaration, data, checkpoints, resume, steering.

`demo_summary(out_dir)` trains the induction preset into `out_dir` (if it is not there yet), runs the timeline and
returns a few lines naming the phase change; `make demo` prints them.
"""

from __future__ import annotations

from pathlib import Path


def demo_summary(out_dir: str | Path, seed: int = 0) -> str:
    from glassbox.train.demo import demo_summary as _demo

    return _demo(out_dir, seed)


__all__ = ["demo_summary"]

"""The tour's two time targets, each against its baseline measured in the same run.

  - the training chapter computed fresh (train the induction-2l preset, its timeline, the rows that wrote
    the head) against its 30 s budget (target ratio <= 1.0);
  - `glassbox demo` with the tour against the same demo steps without it (anatomy, load, atlas, training,
    report: what the demo did before the tour): the seconds the tour adds (target <= 30 s) and the ratio.
Usage: python benchmarks/tour.py [--model smollm2-135m] [--skip-demo]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--skip-demo", action="store_true", help="Only the training chapter.")
    args = parser.parse_args()
    import torch
    from threadcount import report

    from glassbox import bundled
    from glassbox.anatomy import describe
    from glassbox.checkpoint import open_checkpoint
    from glassbox.demo import see_it, training_summary
    from glassbox.guide import walk
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.run import load_model
    from glassbox.tour import training

    report()
    print(f"torch threads: {torch.get_num_threads()}")
    root = Path(tempfile.mkdtemp(prefix="glassbox-bench-tour-"))
    try:
        t0 = time.perf_counter()
        run, _ = training.ensure_run(None, root / "fresh")
        training.chapter(run, True, 0.0, quiet=True)
        fresh = time.perf_counter() - t0
        print(f"training chapter, fresh: {fresh:.1f} s; ratio to the 30 s budget: {fresh / 30:.2f} (target <= 1.0)")
        if args.skip_demo:
            return
        t0 = time.perf_counter()
        with open_checkpoint(args.model) as ck:
            describe(ck)
        loaded = load_model(args.model)
        atlas = build_atlas(loaded, Settings(seed=0))
        training_summary(root / "demo" / "train")
        see_it(args.model, atlas, root / "demo")
        before = time.perf_counter() - t0
        t1 = time.perf_counter()
        doc = walk(args.model, bundled.resolve(args.model), None, root / "demo" / "train", None, root / "demo" / "tour",
                   quiet=True, loaded=loaded, atlas=atlas)
        see_it(args.model, atlas, root / "demo", doc)  # the report again, now with the tour
        tour = time.perf_counter() - t1
        print(f"demo steps without the tour: {before:.1f} s; the tour and its report: +{tour:.1f} s "
              f"(target <= 30 s); ratio with/without: {(before + tour) / before:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

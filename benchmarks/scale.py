"""Fan-out on Ray against the local serial path, measured in the same run (issue 14).

1. timeline over N checkpoints (one induction-2l run of --steps steps: one checkpoint per step early, then
   log-spaced): local serial (the default path) vs Ray with --workers actors; ratio = local / Ray.
2. a seed sweep (train + timeline per seed): local serial vs Ray; ratio = local / Ray.
3. per-task overhead: M no-op items through the seam on Ray vs in this process, per item.
4. the serial fraction: (a) measured directly in the serial timeline, the share of its wall time spent outside
   the per-checkpoint work (listing, merging, phase detection, writing: what no worker count removes); (b) the
   Karp-Flatt estimate from the 2-worker speed-up, which also counts Ray's overhead and the load on this machine.
   Amdahl's law with each gives the projected speed-up at 16 and 64 workers.
5. sizes for 1,000 checkpoints: the JSON of one timeline entry and of one full-atlas entry (atlas-over), times
   1,000 = what the driver holds in memory and writes as parts.

Every output is compared with the local one (the timeline.json bytes); the benchmark stops if they differ.
Both sides use GLASSBOX_THREADS=1 (one torch thread per worker, and in the serial baseline).
Run: .venv/bin/python benchmarks/scale.py [--steps 60] [--seeds 4] [--sweep-steps 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from glassbox import progress
from glassbox.scale import seam

# One torch thread per worker, and the same in the serial baseline: the workers compute with the driver's
# count, and with 2 threads each only one Ray actor would fit this 2-CPU machine.
os.environ.setdefault("GLASSBOX_THREADS", "1")


class Noop:
    """A worker that does nothing: the seam's own cost per item."""

    def __call__(self, i: int) -> dict:
        return {"i": i}


class PeakMemory:
    """A timeline worker that reports its process's peak resident memory after probing a checkpoint."""

    def __init__(self, decl: dict):
        from glassbox.timeline.analyze import CheckpointProber

        self.inner = CheckpointProber(decl, True)

    def __call__(self, step: int, path: str) -> dict:
        import resource

        self.inner(step, path)
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ray_timed(fn):
    """(result, total s, s until the first item is done, wall s per item after it): the seam's bar reports
    every finished item to the progress listener."""
    stamps: list[float] = []
    progress.listen(lambda description, done, total: stamps.append(time.perf_counter()))
    try:
        out, total = timed(fn)
    finally:
        progress.listen(None)
    return out, total, stamps[1] - stamps[0], (stamps[-1] - stamps[1]) / (len(stamps) - 2)


def amdahl(f: float, p: int) -> float:
    return 1.0 / (f + (1.0 - f) / p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="training steps of the timeline's run")
    ap.add_argument("--seeds", type=int, default=4, help="seeds in the sweep (the issue's full size: 16)")
    ap.add_argument("--sweep-steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noop", type=int, default=200, help="no-op items for the per-task overhead")
    args = ap.parse_args()
    from threadcount import report

    report()  # the thread count and the one-thread ratio (issue 9)

    import ray

    from glassbox.run.load import set_threads
    from glassbox.timeline import analyze as A
    from glassbox.timeline.atlas_over import CheckpointAtlas
    from glassbox.timeline.sweep import sweep
    from glassbox.train import checkpoints as ck
    from glassbox.train.loop import declare, train

    set_threads()
    root = Path(tempfile.mkdtemp(prefix="glassbox-scale-bench-"))
    try:
        base = root / "base"
        _, t_train = timed(lambda: train(base, declare(preset="induction-2l", seed=0, steps=args.steps)))
        n_ck = len(ck.list_checkpoints(base))
        print(f"run: induction-2l, {args.steps} steps, {n_ck} checkpoints (trained in {t_train:.1f} s)")

        # 1. timeline, local serial: time the per-checkpoint work separately to get the serial part
        local_run = shutil.copytree(base, root / "local")
        decl = A.read_declaration(local_run)
        item_time = 0.0
        original = A.CheckpointProber.__call__

        def counted(self, step, path):
            t0 = time.perf_counter()
            try:
                return original(self, step, path)
            finally:
                nonlocal item_time
                item_time += time.perf_counter() - t0

        A.CheckpointProber.__call__ = counted
        (local_doc, t_local) = timed(lambda: A.analyze(local_run))
        A.CheckpointProber.__call__ = original
        _, t_build = timed(lambda: A.CheckpointProber(decl, True))
        serial_direct = (t_local - item_time) / t_local

        _, t_init = timed(lambda: ray.init(num_cpus=args.workers, object_store_memory=80 << 20,
                                           include_dashboard=False, log_to_driver=False))
        backend = seam.backend("auto", args.workers)
        ray_run = shutil.copytree(base, root / "ray")
        ray_doc, t_ray, t_first, steady = ray_timed(lambda: A.analyze(ray_run, backend=backend))
        same = ((ray_run / "timeline.json").read_text().replace(str(ray_run), "RUN")
                == (local_run / "timeline.json").read_text().replace(str(local_run), "RUN"))
        if not same:
            raise SystemExit("timeline on Ray differs from the local one")
        s2 = t_local / t_ray
        w = item_time / n_ck
        p = args.workers
        karp_flatt = (1 / s2 - 1 / p) / (1 - 1 / p)

        # 3. per-task overhead
        items = [seam.Item(f"n{i}", (i,)) for i in range(args.noop)]
        _, t_noop_local = timed(lambda: seam.run_items(Noop, (), items))
        _, t_noop_ray, t_noop_start, noop_steady = ray_timed(lambda: seam.run_items(Noop, (), items, backend))
        # a worker spends `workers × wall per item` on each item it handles
        overhead_ms = (noop_steady * args.workers - t_noop_local / args.noop) * 1000

        peak = seam.run_items(PeakMemory, (decl,), [seam.Item("m", (0, str(ck.checkpoint_path(base, 0))))],
                              backend)[0]["peak_rss_mb"]

        # 2. sweep
        seeds = list(range(args.seeds))
        declaration = {"preset": "induction-2l", "steps": args.sweep_steps}
        sw_local, t_sw_local = timed(lambda: sweep(root / "sweep-local", declaration, seeds, plot=False))
        sw_ray, t_sw_ray = timed(lambda: sweep(root / "sweep-ray", declaration, seeds, backend=backend, plot=False))
        if json.dumps(sw_ray["comparison"]).replace("sweep-ray", "X") != \
                json.dumps(sw_local["comparison"]).replace("sweep-local", "X"):
            raise SystemExit("sweep on Ray differs from the local one")

        # 5. sizes at 1,000 checkpoints
        entry_bytes = len(json.dumps(local_doc["checkpoints"][-1]))
        atlas_worker, t_atlas_load = timed(lambda: CheckpointAtlas(str(ck.checkpoint_path(base, 0)),
                                                                   {"seed": 0, "max_per_role": 4, "validate": True}))
        atlas_entry, t_atlas = timed(lambda: atlas_worker(args.steps, str(ck.checkpoint_path(base, args.steps))))
        atlas_bytes = len(json.dumps(atlas_entry))
        ck_bytes = ck.checkpoint_path(base, 0).stat().st_size
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("machine: 2 cores shared with 7 other engineers' tests and benchmarks (loaded); absolute times are "
          "noisy, the ratios are measured in the same run")
    print(f"Ray start (local instance, {p} CPUs): {t_init:.1f} s (once per session/cluster, not counted below)")
    print(f"timeline, {n_ck} checkpoints: local serial {t_local:.2f} s, Ray {p} workers {t_ray:.2f} s "
          f"→ speed-up {s2:.2f}x (identical timeline.json)")
    print(f"  per checkpoint (serial): {w * 1000:.0f} ms; worker's model + probe build: {t_build * 1000:.0f} ms")
    print(f"  on Ray: first result after {t_first:.1f} s (worker processes start, import torch, build the "
          f"model), then {steady * 1000:.0f} ms per checkpoint → steady-state speed-up {w / steady:.2f}x")
    print(f"sweep, {len(seeds)} seeds × {args.sweep_steps} steps: local serial {t_sw_local:.1f} s, Ray {p} workers "
          f"{t_sw_ray:.1f} s → speed-up {t_sw_local / t_sw_ray:.2f}x (identical comparison)")
    print(f"per-task overhead on Ray: {overhead_ms:.1f} ms of a worker's time per item over local ({args.noop} "
          f"no-op items: {t_noop_ray:.2f} s in all, of which {t_noop_start:.1f} s until the first result (worker "
          f"start), then {noop_steady * 1000:.1f} ms wall per item; locally {t_noop_local * 1000 / args.noop:.3f} "
          f"ms) = {overhead_ms / (item_time / n_ck * 1000):.2f}x a timeline checkpoint's work")
    print(f"memory per task: a Ray timeline worker peaks at {peak:.0f} MB resident (torch + model + one probe)")
    s_steady = w / steady
    karp_flatt_steady = (1 / s_steady - 1 / p) / (1 - 1 / p)
    for name, f in (("direct (driver-only share of the serial timeline)", serial_direct),
                    (f"Karp-Flatt from the {p}-worker steady-state speed-up {s_steady:.2f}x", karp_flatt_steady),
                    (f"Karp-Flatt from the {p}-worker end-to-end speed-up {s2:.2f}x", karp_flatt)):
        if not 0 < f <= 1:
            print(f"serial fraction, {name}: {f:.3f} (outside (0, 1]: no Amdahl projection)")
            continue
        print(f"serial fraction, {name}: {f:.3f} → Amdahl at 16 workers {amdahl(f, 16):.1f}x, "
              f"at 64 workers {amdahl(f, 64):.1f}x")
    t_serial = t_local - item_time
    for n in (n_ck, 1000):
        cells = []
        for workers in (16, 64):
            model = t_serial * n / n_ck + t_first + n * (w + overhead_ms / 1000) / workers
            cells.append(f"{workers} workers {(t_serial * n / n_ck + n * w) / model:.1f}x")
        print(f"projected with the measured start-up ({t_first:.1f} s) and per-task overhead, {n} checkpoints: "
              + ", ".join(cells))
    print(f"1,000 checkpoints: timeline entry {entry_bytes / 1e3:.1f} kB → {entry_bytes * 1000 / 1e6:.1f} MB "
          f"of JSON on the driver; full-atlas entry {atlas_bytes / 1e3:.1f} kB → {atlas_bytes * 1000 / 1e6:.1f} MB "
          f"({t_atlas:.2f} s per checkpoint after a {t_atlas_load:.1f} s worker start); checkpoint "
          f"{ck_bytes / 1e3:.0f} kB each → {ck_bytes * 1000 / 1e6:.0f} MB read by the workers")


if __name__ == "__main__":
    main()

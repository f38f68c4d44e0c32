"""Issue 15's budget: does `glassbox train --preset text-induction` form an induction head on real text within
10 minutes on this machine, with the ledger on?

Per seed: the real CLI (`glassbox train --preset text-induction --seed S`, then `glassbox timeline RUN
--no-ablation --json`) in a subprocess, timed. Prints the wall time of training and of training + timeline as a
ratio against the 600 s budget (the named baseline), the previous-token and induction phase-change steps, and
the K-composition of the previous-token head into the induction head across the change.
Run it on a quiet machine: the seconds are the figure. Formation steps do not depend on the load (the run is a
function of seed and thread count).
Usage: python benchmarks/text_induction.py [SEEDS...] [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 600.0


def glassbox(*args: str) -> str:
    exe = Path(sys.executable).parent / "glassbox"
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"glassbox {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def k_composition(doc: dict, sender: list[int], receiver: list[int]) -> list[tuple[int, float]]:
    out = []
    for ck in doc["checkpoints"]:
        for row in ck.get("composition") or []:
            if row["from"] == sender and row["to"] == receiver and row["kind"] == "k":
                out.append((ck["step"], row["score"]))
    return out


def one(seed: int, root: Path, steps: int | None) -> dict:
    run = root / f"seed{seed}"
    extra = ["--steps", str(steps)] if steps else []
    t0 = time.perf_counter()
    glassbox("train", "--preset", "text-induction", "--seed", str(seed), "--out", str(run), *extra)
    t1 = time.perf_counter()
    doc = json.loads(glassbox("timeline", str(run), "--no-ablation", "--json"))
    t2 = time.perf_counter()
    changes = {(c["role"], c["layer"], c["head"]): c for c in doc["phase_changes"]}
    ind = min((c for c in changes.values() if c["role"] == "induction"), key=lambda c: c["step"], default=None)
    prev = min((c for c in changes.values() if c["role"] == "previous_token" and c["layer"] == 0),
               key=lambda c: c["step"], default=None)
    out = {"seed": seed, "train_s": t1 - t0, "train_and_timeline_s": t2 - t0,
           "induction": ind and {"head": f"L{ind['layer']}H{ind['head']}", "step": ind["step"]},
           "previous_token": prev and {"head": f"L{prev['layer']}H{prev['head']}", "step": prev["step"]}}
    if ind:
        senders = [[0, h] for h in range(2)]
        comp = {f"L0H{s[1]}": k_composition(doc, s, [ind["layer"], ind["head"]]) for s in senders}
        lo, hi = ind["window"]
        out["k_composition"] = {name: {"at_window_start": next((v for s, v in series if s >= lo), None),
                                       "at_end": series[-1][1] if series else None}
                                for name, series in comp.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="text-induction within the 10-minute budget, per seed")
    ap.add_argument("seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--steps", type=int, help="Train this many steps instead of the preset's.")
    ap.add_argument("--out", type=Path, help="Where the runs go (default: a new temporary folder).")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="ti-bench-"))
    seeds, steps = args.seeds, args.steps
    for seed in seeds:
        r = one(seed, out, steps)
        ind, prev = r["induction"], r["previous_token"]
        print(f"seed {seed}: train {r['train_s']:.0f} s = {r['train_s'] / BUDGET_S:.2f}x the 600 s budget; "
              f"with the timeline {r['train_and_timeline_s']:.0f} s = {r['train_and_timeline_s'] / BUDGET_S:.2f}x; "
              f"previous-token {prev['head'] + ' at ' + str(prev['step']) if prev else 'none'}; "
              f"induction {ind['head'] + ' at ' + str(ind['step']) if ind else 'none'}")
        for name, kc in (r.get("k_composition") or {}).items():
            print(f"  K-composition {name} -> {ind['head']}: {kc['at_window_start']:.3f} at the window's start, "
                  f"{kc['at_end']:.3f} at the end")
        print(json.dumps(r))


if __name__ == "__main__":
    main()

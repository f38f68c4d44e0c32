"""Benchmark for issue 22: SmolLM2-135M in bfloat16 against float32, side by side on this machine.

- `glassbox atlas smollm2-135m --json` in float32 and in bfloat16, each in its own process: wall time and peak
  resident memory (target: bfloat16 ≤ 0.7× float32), then the numerics: top-5 heads per role (target: ≥ 4 of 5
  agree for induction, previous_token, first_token), the validated (head, role) sets, how many checks fell
  inside bfloat16's noise floor, and |effect(bf16) − effect(f32)| per check against that floor;
- logit-lens top-1 per (layer, position) on three texts: share that agrees;
- activation patching over heads on one clean/corrupt pair: Spearman ρ of the effects, top-10 overlap.
The bfloat16 GGUF cache is built before anything is timed. Writes the figures to --out (JSON).

The two atlases run one after the other (never at once: each child's peak is its own, os.wait4), and the load
average is printed before and after (other work on the machine slows the runs; it does not change the peaks).

Run: .venv/bin/python benchmarks/half.py [--out out/benchmarks/half.json] [--skip-atlas] [--skip-lens]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import peak
from threadcount import report

ROLES = ("induction", "previous_token", "first_token")
TEXTS = ("The capital of France is Paris, and the capital of Italy is",
         "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
         "In the beginning God created the heaven and the earth. And the earth was without form")


def top5(atlas: dict, role: str) -> list[tuple[int, int]]:
    heads = sorted(atlas["heads"], key=lambda h: -h["scores"].get(role, 0.0))
    return [(h["layer"], h["head"]) for h in heads[:5]]


def validated(atlas: dict) -> set[tuple[int, int, str]]:
    return {(h["layer"], h["head"], r["role"]) for h in atlas["heads"] for r in h["roles"] if r["validated"]}


def checks(atlas: dict) -> dict[tuple[int, int, str], dict]:
    return {(h["layer"], h["head"], r["role"]): r for h in atlas["heads"] for r in h["roles"]}


def compare_atlases(f32: dict, bf16: dict) -> dict:
    roles = [r for r in f32["heads"][0]["scores"]]
    agree = {r: len(set(top5(f32, r)) & set(top5(bf16, r))) for r in roles}
    va, vb = validated(f32), validated(bf16)
    ca, cb = checks(f32), checks(bf16)
    both = sorted(set(ca) & set(cb))
    diffs = [abs(ca[k]["ablation_effect"] - cb[k]["ablation_effect"]) for k in both]
    within = [k for k, r in cb.items() if any(e.get("within_noise_floor") for e in r["kinds"].values())]
    return {"top5_agree": agree, "validated_f32": len(va), "validated_bf16": len(vb),
            "validated_both": len(va & vb), "validated_only_f32": sorted(map(list, va - vb)),
            "validated_only_bf16": sorted(map(list, vb - va)),
            "checks_compared": len(both), "noise_floor_bf16": bf16["significance"].get("noise_floor"),
            "noise_floor_f32": f32["significance"].get("noise_floor"),
            "effect_diff_median": sorted(diffs)[len(diffs) // 2] if diffs else None,
            "effect_diff_max": max(diffs) if diffs else None,
            "checks_within_noise_floor_bf16": sorted(map(list, within))}


def lens_and_patching() -> dict:
    import torch

    from glassbox.lens import logit, patching
    from glassbox.run import load_model

    models = {d: load_model("smollm2-135m", dtype=d) for d in ("float32", "bfloat16")}
    same, total = 0, 0
    for text in TEXTS:
        tops = {}
        for d, loaded in models.items():
            result = logit.apply(loaded, logit.encode(loaded, text))
            tops[d] = result.logprobs.argmax(-1)
        same += int((tops["float32"] == tops["bfloat16"]).sum())
        total += tops["float32"].numel()
    clean, corrupt = "When Mary and John went to the store, John gave a drink to", \
                     "When Mary and John went to the store, Mary gave a drink to"
    effects = {}
    for d, loaded in models.items():
        m = patching.parse_metric(loaded, "logit_diff: Mary - John")
        r = patching.patch(loaded, logit.encode(loaded, clean), logit.encode(loaded, corrupt), m, "heads",
                           "denoise", 32)
        effects[d] = r.effect.flatten().float()
    a, b = effects["float32"], effects["bfloat16"]
    rank = lambda x: x.argsort().argsort().float()  # noqa: E731
    rho = float(torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1])
    top = lambda x: set(x.abs().argsort(descending=True)[:10].tolist())  # noqa: E731
    return {"lens_top1_agree": same / total, "lens_cells": total, "patching_spearman": rho,
            "patching_top10_overlap": len(top(a) & top(b))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks/half.json"))
    parser.add_argument("--skip-atlas", action="store_true")
    parser.add_argument("--skip-lens", action="store_true", help="the atlases only (no lens/patching comparison)")
    args = parser.parse_args()
    from glassbox import bundled
    from glassbox.run import gguf_cache

    report()
    for d in ("float32", "bfloat16"):  # built (once) outside any timing
        gguf_cache.gguf_cache(bundled.resolve("smollm2-135m"), d)
    result: dict = {}
    if not args.skip_atlas:
        tmp = Path(tempfile.mkdtemp(prefix="glassbox-half-"))
        runs, docs = {}, {}
        for d in ("float32", "bfloat16"):
            print(f"load average before the {d} atlas: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
            runs[d] = peak.run(["atlas", "smollm2-135m", "--dtype", d, "--json", "--quiet"], tmp / f"{d}.json")
            docs[d] = json.loads((tmp / f"{d}.json").read_text())
            assert docs[d]["dtype"] == d, docs[d].get("dtype")
            print(f"atlas {d}: {runs[d]['seconds']:.0f} s, peak RSS {runs[d]['peak_rss_gb']:.2f} GB")
        print(f"atlas documents: {tmp}")
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        result["atlas_runs"] = runs
        result["atlas"] = compare_atlases(docs["float32"], docs["bfloat16"])
        ratio = runs["bfloat16"]["peak_rss_gb"] / runs["float32"]["peak_rss_gb"]
        print(f"peak RSS bfloat16 / float32: {ratio:.2f} (target ≤ 0.7); time ratio "
              f"{runs['bfloat16']['seconds'] / runs['float32']['seconds']:.2f}")
        agree = result["atlas"]["top5_agree"]
        print("top-5 agreement per role: " + ", ".join(f"{r} {n}/5" for r, n in agree.items()))
        print(f"target roles: {', '.join(f'{r} {agree.get(r)}/5' for r in ROLES)} (target ≥ 4/5 each)")
        a = result["atlas"]
        print(f"validated: float32 {a['validated_f32']}, bfloat16 {a['validated_bf16']}, both {a['validated_both']}; "
              f"|Δ ablation effect| median {a['effect_diff_median']}, max {a['effect_diff_max']} "
              f"(bfloat16 noise floor {a['noise_floor_bf16']}); "
              f"{len(a['checks_within_noise_floor_bf16'])} bfloat16 checks inside the floor")
    if not args.skip_lens:
        result["lens_patching"] = lp = lens_and_patching()
        print(f"logit lens top-1 agreement {lp['lens_top1_agree']:.3f} over {lp['lens_cells']} cells; patching "
              f"Spearman {lp['patching_spearman']:.3f}, top-10 overlap {lp['patching_top10_overlap']}/10")
    peak.write_result(args.out, result)


if __name__ == "__main__":
    main()

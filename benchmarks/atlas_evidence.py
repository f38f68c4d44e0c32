"""Benchmark for issue 11: does `validated` survive scrutiny, and what does the evidence cost?

On the bundled SmolLM2 (or MODEL), one atlas run, then:
(a) cost in forward-pass equivalents (tokens ÷ tokens of the main probe forward; target ≤ 60, 33 before issue 11);
(b) top-5 heads per attention role with the in-distribution probe tokens vs the same probes on random ids
    ≥ 1000 (the previous probe inputs), measured in this run: overlap out of 5 (target ≥ 3);
    with --old ATLAS.json (an atlas from before issue 11) also every role against its top-5;
(c) the top-5 induction heads: how many validated (target ≥ 3), and by which evidence;
(d) validated roles whose lead effect is negative or not significant (target 0), validated roles per kind.

Run: .venv/bin/python benchmarks/atlas_evidence.py [MODEL] [--old OLD.json] [--save NEW.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def top5(values: torch.Tensor) -> list[tuple[int, int]]:
    flat = values.flatten()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))[:5]
    return [divmod(i, values.shape[1]) for i in order]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--old", default=None, help="an atlas JSON from before issue 11 to compare top-5 with")
    parser.add_argument("--save", default=None, help="write the new atlas JSON here")
    parser.add_argument("--atlas", default=None, help="reuse an atlas JSON built by this code instead of building")
    args = parser.parse_args()
    from threadcount import report

    report()  # the thread count and the one-thread ratio (issue 9)
    from glassbox.heads import atlas as atlas_mod
    from glassbox.heads import probe_inputs, probes
    from glassbox.run import hooks, load_model
    from glassbox.run.load import _quiet_transformers

    _quiet_transformers()
    loaded = load_model(args.model)
    if args.atlas:
        doc = json.load(open(args.atlas))
        wall = None
    else:
        t = time.perf_counter()
        doc = atlas_mod.build_atlas(loaded, atlas_mod.Settings(seed=0))
        wall = time.perf_counter() - t
        if args.save:
            from glassbox.fileio import write_json

            write_json(args.save, doc)
    cost = doc["cost"]
    print(f"(a) {doc['model']}: {cost['tokens'] / cost['main_forward_tokens']:.1f} forward-pass equivalents "
          f"({cost['forwards']} forwards, {cost['tokens']} tokens; target ≤ 60; 33 before issue 11); "
          f"unchecked over budget: {cost['unchecked_over_budget']}" + (f"; {wall:.0f} s wall (machine loaded)" if wall else ""))

    # (b) the same attention probes on the previous inputs (random ids ≥ 1000) vs the in-distribution pool
    g = torch.Generator().manual_seed(0)
    low, high = probe_inputs.token_range(loaded)
    rows = [[loaded.bos_id] * (loaded.bos_id is not None) + (r := (torch.randperm(high - low, generator=g)[:32] + low).tolist()) + r
            for _ in range(atlas_mod.BATCH)]
    old_rep = probe_inputs.Repeats(torch.tensor(rows), 32)
    _, cache = hooks.run_with_cache(loaded, old_rep.tokens, names="blocks.*.attn.pattern")
    old_scores = probes.pattern_scores(loaded, old_rep, cache)
    n_h = doc["n_heads"]
    new = {name: torch.tensor([[h["scores"][name] for h in doc["heads"][layer * n_h:(layer + 1) * n_h]]
                               for layer in range(doc["n_layers"])]) for name in doc["heads"][0]["scores"]}
    print("(b) top-5 overlap, in-distribution probe tokens vs random ids ≥ 1000, same run (target ≥ 3/5):")
    for name, s in old_scores.items():
        a, b = top5(s), top5(new[name])
        print(f"    {name:16s} {len(set(a) & set(b))}/5   before {a}  now {b}")
    if args.old:
        old = json.load(open(args.old))
        print(f"    against {args.old} (every role):")
        for name in old["heads"][0]["scores"]:
            if name not in new:
                continue
            s = torch.tensor([[h["scores"][name] for h in old["heads"][layer * n_h:(layer + 1) * n_h]]
                              for layer in range(old["n_layers"])])
            a, b = top5(s), top5(new[name])
            print(f"    {name:16s} {len(set(a) & set(b))}/5")

    # (c) induction
    entries = {(h["layer"], h["head"]): {r["role"]: r for r in h["roles"]} for h in doc["heads"]}
    ind = top5(new["induction"])
    marks = []
    for lh in ind:
        r = entries[lh].get("induction")
        marks.append(f"{lh[0]}.{lh[1]} {'✓ ' + '+'.join(r['evidence']) if r and r['validated'] else '✗'}")
    n_ok = sum(bool(entries[lh].get("induction", {}).get("validated")) for lh in ind)
    print(f"(c) top-5 induction heads validated: {n_ok}/5 (target ≥ 3): {', '.join(marks)}")

    # (d) no validated role with a negative or insignificant effect
    roles = [r for h in doc["heads"] for r in h["roles"]]
    bad = [r for r in roles if r["validated"] and not (r["effect"] > 0 and r["ci"][0] > 0 and r["p"] < 0.05)]
    neg_total = [r for r in roles if r["validated"] and r["ablation_effect"] < 0]
    kinds = {k: sum(k in r["evidence"] for r in roles if r["validated"]) for k in ("total", "direct", "group")}
    print(f"(d) {sum(r['validated'] for r in roles)}/{len(roles)} roles validated; with a negative or insignificant "
          f"lead effect: {len(bad)} (target 0); validated with a negative total (ablation) effect: {len(neg_total)}; "
          f"validated by kind: {kinds}; tests corrected: {doc['significance']['tests']}")


if __name__ == "__main__":
    main()

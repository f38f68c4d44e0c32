"""Do the weights name the right senders? Path patching from the top K-composition senders of a model's top
induction head into its keys, against the same patch from random sender sets of the same size (earlier layers).

The induction head is chosen on one probe batch (seed 100) and the patching effects are measured on another
(seed 0), so the choice is not tuned on the data that judges it.

    .venv/bin/python benchmarks/circuits_path.py [--model smollm2-135m] [--senders 3] [--random 20]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--senders", type=int, default=3)
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the full result here")
    args = ap.parse_args()

    import torch

    from glassbox import weights
    from glassbox.circuits import compose, path
    from glassbox.heads import masks
    from glassbox.run import hooks, load_model

    t0 = time.perf_counter()
    loaded = load_model(args.model)
    bos = loaded.bos_id if loaded.needs_bos else None
    pick = path.induction_batch(int(loaded.config.vocab_size), 8, 20, 100, bos)
    _, cache = hooks.run_with_cache(loaded, pick, names="blocks.*.attn.pattern")
    mask = masks.role_mask(pick, "induction")
    ind = torch.stack([masks.head_scores(cache[f"blocks.{lyr}.attn.pattern"], mask)
                       for lyr in range(loaded.n_layers)])
    lr, hr = divmod(int(ind.argmax()), loaded.n_heads)
    comp = compose.composition(weights.all_heads(loaded.model))
    top = comp.top(lr, hr, kind="k", n=args.senders)
    senders = tuple(sorted(tuple(p["from"]) for p in top))
    spec = path.PathSpec(senders, (lr, hr), "k")
    doc = path.with_null(loaded, [spec], args.random, seed=0, n_seq=8, half=20)
    row = doc["paths"][0]
    null = row["random_senders"]
    print(f"model {args.model}; top induction head {lr}.{hr} (score {float(ind[lr, hr]):.3f} on the choosing batch)")
    print("its top K-composition senders: " + ", ".join(f"{p['from'][0]}.{p['from'][1]} ({p['score']:.3f}, "
                                                        f"z {p['z']:.0f})" for p in top))
    print(f"path patching {row['path']}: induction score {row['clean_induction_score']:.3f} → "
          f"{row['induction_score']:.3f} (effect {row['induction_effect']:+.3f}); second-copy loss "
          f"{row['clean_loss_second_copy']:.3f} → {row['loss_second_copy']:.3f}")
    print(f"{null['n']} random sender sets of {len(senders)}: effect {null['induction_effect_mean']:+.3f} ± "
          f"{null['induction_effect_sd']:.3f} (min {min(null['induction_effects']):+.3f}); top senders rank "
          f"{null['rank']} of {null['n'] + 1} (1 = largest drop)")
    ratio = row["induction_effect"] / null["induction_effect_mean"] if null["induction_effect_mean"] else float("inf")
    print(f"ratio of induction-score drops (top senders / random mean, same run): {ratio:.1f}×; "
          f"{doc['forwards']} forwards, {time.perf_counter() - t0:.0f} s (machine shared, loaded)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"head": [lr, hr], "top": top, **doc}, f)


if __name__ == "__main__":
    main()

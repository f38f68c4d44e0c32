"""The overlay against the LM at its full context, pair by pair: gate vs oracle (issue 24), every figure measured here.

Pairs (INDEX=HELDOUT; the held-out documents are never in the index; SPEC%N is every N-th document of SPEC,
SPEC%-N the rest; A+B+C is one index of several corpora, each document's source kept for the gate):
  in domain     pydoc topics 1-55 → 56-79; KJV Old Testament → New Testament; Brown A-J minus every tenth
                document → that tenth
  multi-corpus  KJV OT + pydoc 1-55 + Brown A-J minus the tenth, one index → each of the three held-outs
  cross-genre   issue 13's six Brown pairs (nonfiction → fiction, A-C → L, fiction → J, KJV OT → P,
                pydoc → N, D-H → R)
  readme        the README's other cross-genre pairs (pydoc 1-55 → NT, KJV OT → pydoc, KJV OT → LICENSE)
  confirm       pairs named before the session prior's rule was run (fiction → H, A-C → G, pydoc → NT)
Per pair, `overlay eval`'s own figures (SmolLM2-135M at its full context, the mixer fitted on the first half
of the held-out tokens and scored on the second): LM perplexity, overlay / LM with the block-bootstrap 95%
interval, what shipped, the oracle / LM (the best constant weights chosen on the test half itself: the most
fixed weights could add), the gate's share of the oracle's gain, the share of tokens made better / worse and
the best and worst deciles' gains, the static-only and session-only ratios.
Targets, printed as ratios: overlay / LM <= 1.000 on every pair; where the oracle gains >= 1%, the gate gets
>= 80% of that gain. `--lm-check` (first pair): the LM's perplexity at its full context (the eval default) =
with `--lm-window 8192` = one plain forward over the whole text (no cache), and beside them the 512-token
windows that were eval's default before.

    .venv/bin/python benchmarks/overlay_pairs.py [--max-tokens 4096] [--kinds ...] [--out pairs.json] [--table pairs.md]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glassbox import bundled
from glassbox.overlay import evaluate, lm
from glassbox.overlay.index import Index

sys.path.insert(0, str(Path(__file__).parent))
from overlay import ensure_index  # noqa: E402  (the same index builder as benchmarks/overlay.py)

TENTH = "brown:a-j%10"
REST = "brown:a-j%-10"
MULTI = f"kjv:1-39+pydoc:1-55+{REST}"
PAIRS = {
    "in domain": ["pydoc:1-55=pydoc:56-79", "kjv:1-39=kjv:40-66", f"{REST}={TENTH}"],
    "multi-corpus": [f"{MULTI}=pydoc:56-79", f"{MULTI}=kjv:40-66", f"{MULTI}={TENTH}"],
    "cross-genre": ["brown:nonfiction=brown:fiction", "brown:a-c=brown:l", "brown:fiction=brown:j",
                    "kjv:1-39=brown:p", "pydoc=brown:n", "brown:d-h=brown:r"],
    # the README's other cross-genre figures (issue 13, measured then against 512-token windows)
    "readme": ["pydoc:1-55=kjv:40-66", "kjv:1-39=pydoc", "kjv:1-39=python-license"],
    # issue 24's second session: pairs named before they were run, to confirm the session prior's rule
    "confirm": ["brown:fiction=brown:h", "brown:a-c=brown:g", "pydoc=kjv:40-66"],
}
MODEL = "smollm2-135m"


def folder(root: Path, spec: str) -> Path:
    return root / spec.replace(":", "_").replace("+", "__").replace("%", "pct")


def lm_check(held: str, sep: int, max_tokens: int) -> dict:
    """Test-half LM perplexity of one held-out text: full context (eval's default), windows of 8,192 (stride
    4,096), one plain forward of the whole text without a cache, and the old default's 512-token windows."""
    model, tok = lm.load_lm(MODEL)
    seq = evaluate.heldout_tokens(held, tok, sep, max_tokens)
    bos = tok.bos_token_id if lm.needs_bos(MODEL) else None
    n = len(seq) - 1
    test = slice(n // 2, n)
    ctx = evaluate.context_length(model)

    def ppl(window: int, stride: int) -> float:
        lp = np.zeros(n)
        for p, row, _ in evaluate.lm_rows(model, bos, seq, window, stride):
            lp[p] = row[seq[p + 1]]
        return float(math.exp(-lp[test].mean()))

    with torch.inference_mode():
        ids = ([bos] if bos is not None else []) + seq
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1).numpy().astype(np.float64)
    off = 1 if bos is not None else 0
    plain = np.array([logp[p + off, seq[p + 1]] for p in range(n)])
    return {"heldout": held, "tokens": n, "model_context": ctx, "full_context": ppl(ctx, ctx // 2),
            "window_8192": ppl(8192, 4096), "plain_forward": float(math.exp(-plain[test].mean())),
            "window_512": ppl(512, 256)}


def row(kind: str, spec: str, held: str, res: dict, seconds: float) -> dict:
    c, x = res["contract"], res["extra"]
    o = x["oracle"]
    return {
        "kind": kind, "index": spec, "heldout": held, "index_tokens": x["index_tokens"], "test_tokens": c["tokens"],
        "lm_ppl": c["lm"]["ppl"], "lm_context": c["lm_context"], "overlay_ratio": x["test_gain"]["ppl_ratio"],
        "overlay_ci95": x["test_gain"]["ppl_ratio_ci95"],
        "shipped": x["gate"]["kind"] if x["gate"]["shipped"] else "off",
        "oracle_ratio": o["ppl_ratio"], "oracle_weights": o["weights"], "gate_share_of_oracle_gain":
            o["gate_share_of_oracle_gain"],
        "static_only_ratio": x["static_only"]["ppl"] / c["lm"]["ppl"],
        "session_only_ratio": x["session_only"]["ppl"] / c["lm"]["ppl"],
        "fixed_lam_ratio": x["fixed_lam"]["ppl"] / c["lm"]["ppl"], "fixed_lam": x["fixed_lam"]["lam"],
        "per_token": x["per_token"], "oracle_per_token": o["per_token"],
        "top1": {"lm": c["lm"]["top1"], "overlay": c["overlay"]["top1"]},
        "gate_report": x["gate"].get("report", {}), "session_prior": x.get("session_prior"), "gate_parts": {k: x["gate"].get(k) for k in ("table", "session")},
        "seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    head = ("| kind | index (tokens) → held-out | LM ppl (full context) | **overlay ÷ LM** [95%] | shipped | oracle ÷ LM "
            "| gate's share of the oracle's gain | tokens better / worse | best / worst decile (nats/token) |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        pt = r["per_token"]
        share = r["gate_share_of_oracle_gain"]
        lines.append(
            f"| {r['kind']} | {r['index']} ({r['index_tokens']:,}) → {r['heldout']} | {r['lm_ppl']:.2f} | "
            f"**{r['overlay_ratio']:.4f}** [{r['overlay_ci95'][0]:.4f}, {r['overlay_ci95'][1]:.4f}] | {r['shipped']} | "
            f"{r['oracle_ratio']:.4f} | {'–' if share is None else f'{share if abs(share) >= 0.005 else 0.0:.0%}'} | "
            f"{pt['better_share']:.1%} / {pt['worse_share']:.1%} | "
            f"{pt['best_decile_nats_per_token']:+.3f} / {pt['worst_decile_nats_per_token']:+.3f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        oracle_gain = 1 - r["oracle_ratio"]
        share = r["gate_share_of_oracle_gain"]
        need = oracle_gain >= 0.01
        out.append(f"TARGET {r['index']} → {r['heldout']}: overlay/LM {r['overlay_ratio']:.4f} (<= 1: "
                   f"{'yes' if r['overlay_ratio'] <= 1 + 1e-12 else 'NO'}); oracle gain {oracle_gain:.2%}"
                   + (f", gate's share {share:.0%} (>= 80%: {'yes' if share is not None and share >= 0.8 else 'NO'})"
                      if need else " (< 1%: no share asked)"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=bundled.cache_dir() / "overlay-pairs")
    ap.add_argument("--max-tokens", type=int, default=4096, help="Held-out tokens per pair (half fit, half test).")
    ap.add_argument("--kinds", nargs="*", default=list(PAIRS)[:3], help=f"Which groups: {', '.join(PAIRS)} "
                    "(default: the first three).")
    ap.add_argument("--lm-check", action="store_true", help="Also the LM-context check on the first pair.")
    ap.add_argument("--pairs", nargs="*", help="Only these INDEX=HELDOUT pairs (of the groups chosen).")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, help="Write the gate-vs-oracle table (markdown) here.")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    opts = evaluate.EvalOptions(max_tokens=args.max_tokens, timing=False)
    results: dict = {"threads": torch.get_num_threads(), "max_tokens": args.max_tokens, "rows": []}

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=float))
        if args.table:
            args.table.write_text(table(results["rows"]) + "\n")

    for kind in args.kinds:
        for pair in PAIRS[kind]:
            if args.pairs and pair not in args.pairs:
                continue
            spec, held = pair.split("=", 1)
            path = ensure_index(folder(args.root, spec), spec)
            if args.lm_check and "lm_check" not in results:
                results["lm_check"] = chk = lm_check(held, Index(path).sep, args.max_tokens)
                print(f"TARGET LM perplexity on {held} (test half): full context {chk['full_context']:.4f}, "
                      f"--lm-window 8192 {chk['window_8192']:.4f} (ratio {chk['window_8192'] / chk['full_context']:.6f}), "
                      f"one plain forward {chk['plain_forward']:.4f}; 512-token windows {chk['window_512']:.4f}")
            t0 = time.perf_counter()
            res = evaluate.evaluate(path, MODEL, held, opts)
            r = row(kind, spec, held, res, time.perf_counter() - t0)
            results["rows"].append(r)
            print(f"\n=== {kind}: index {spec}, held-out {held} ({r['seconds']:.0f} s) ===")
            print(evaluate.render(res))
            print(verdicts([r])[0])
            save()
    print()
    print(table(results["rows"]))
    print("\n".join(verdicts(results["rows"])))
    save()


if __name__ == "__main__":
    main()

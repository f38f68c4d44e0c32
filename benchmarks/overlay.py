"""Benchmark of the overlay generator (issues 6 and 13), every figure measured in this run.

Pairs of (index corpus, held-out text), the held-out never in the index, SmolLM2's tokenizer and LM:
the README's three (KJV Old Testament → New Testament; KJV OT → CPython's pydoc topics; pydoc topics 1-55 →
56-79) and two cross-genre pairs of our own (pydoc 1-55 → the New Testament: technical prose → scripture;
KJV OT → CPython's LICENSE.txt: scripture → legal prose) and the issue's own scenario on the Brown corpus
(its informative prose, A-J, indexed; its fiction, K-R, held out). For each: the LM alone, the table alone (the
∞-gram P_T), the overlay mixture with the evidence gate and the session memory (and, beside it, the static
index alone and the session memory alone, each gated and guarded the same way), P_T with one λ, the previous mixture (accumulator
votes, one λ) and the faithful select mode (top-1, perplexity), recall@N, the latency ratio against LM-alone
greedy decoding, bytes per corpus token (and the size table), and the per-step lookup p50/p99 on indexes of
1×, 10×, 100× a base, with the link-table-only figure beside it, as is and again under extra load (`--load N`
busy processes started by this script). Opt-in: the repeat ("fatigue") rule ablation (--fatigue); always:
the feedback check (prefer a token at a step → chosen there on regeneration; an unrelated prompt unchanged).

    .venv/bin/python benchmarks/overlay.py [--quick] [--out results.json] [--pairs A=B ...] [--load 2]
--pos-filter also scores the select mode with the syntactic filter (overlay/pos.py), with vs without, same run.
Targets: overlay ppl <= LM ppl on every pair (<= 0.98x cross-genre); latency ratio <= 1.1; lookup
p99(100×) / p99(1×) <= 1.2; bytes/token <= 12.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glassbox import bundled
from glassbox.overlay import corpus, evaluate, lm, timing
from glassbox.overlay import index as ix
from glassbox.overlay.accumulator import Accumulator, AccumulatorConfig


def ensure_index(path: Path, spec: str, pos: bool = False) -> Path:
    """The index of `spec` at `path`, built if missing; SPEC1+SPEC2+... is one index of several corpora, each
    document's source kept (meta "sources", which the gate reads)."""
    if (path / "meta.json").exists() and json.loads((path / "meta.json").read_text()).get("format") == ix.FORMAT:
        if pos and not (path / "pos.npz").exists():  # the syntactic filter's table, added to an existing index
            from glassbox.overlay.pos import build_table

            build_table(path, corpus.load_documents(spec.split("+")), lm.load_tokenizer(path / "tokenizer"))
        return path
    t0 = time.perf_counter()
    sources = corpus.load_sources(spec.split("+"))
    ix.build([d for _, docs in sources for d in docs], lm.load_tokenizer("smollm2-135m"), path, ix.BuildOptions(),
             source=",".join(spec.split("+")), tokenizer_spec="smollm2-135m",
             parts=[(s, len(docs)) for s, docs in sources])
    print(f"built {path} from {spec} in {time.perf_counter() - t0:.1f} s")
    for name, v in ix.Index(path).sizes().items():
        print(f"  {name:22} {v['bytes']:12,d} B  {v['bytes_per_token']:6.2f} B/token")
    return ensure_index(path, spec, pos)


def fatigue_ablation(index: ix.Index, seq: list[int], n: int) -> list[dict]:
    """Table alone under different repeat rules (no LM needed)."""
    variants = {
        "per vote, base 10 (the notes' literal loop)": AccumulatorConfig(repeat_on="vote"),
        "per emission in last 64, base 10": AccumulatorConfig(repeat_window=64),
        "per emission in last 4, base 10 (default)": AccumulatorConfig(),
        "none (base 1)": AccumulatorConfig(repeat_base=1.0),
    }
    out = []
    for name, cfg in variants.items():
        acc, top1, recall = Accumulator(index, cfg), [], []
        for p in range(len(seq) - 1):
            acc.observe(seq[max(0, p - 1) : p + 1])
            total = acc.total()
            top1.append(total.max() > 0 and int(np.argmax(total)) == seq[p + 1])
            recall.append(seq[p + 1] in set(acc.candidates(n, total).tolist()))
        out.append({"rule": name, "table_top1": float(np.mean(top1)), "recall_at_n": float(np.mean(recall))})
    return out


def lookups(index: ix.Index, seq: list[int], opts: evaluate.EvalOptions) -> dict:
    return timing.lookup_scaling(index, seq, opts.scale_base, opts.lookup_steps, opts.lookup_rounds, opts.n_candidates)


@contextlib.contextmanager
def busy(n: int):  # type: ignore[no-untyped-def]
    """n extra processes spinning on the CPU while the block runs (the 'loaded' lookup figures)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def lookup_report(name: str, lookup: dict) -> str:
    """Growth from 1× to 10× / 100× of the p50, raw p99, best-of-rounds p99 and the link-table-only p99."""
    def ratio(field: str, k: str) -> float:
        return lookup[k][field] / lookup["1x"][field]

    fields = ("p50_ms", "p99_ms", "best_of_rounds_p99_ms", "links_only_p99_ms", "links_only_best_of_rounds_p99_ms")
    parts = [f"{f.replace('_ms', '')}: {ratio(f, '10x'):.3f} / {ratio(f, '100x'):.3f} "
             f"({'/'.join(f'{lookup[k][f]:.3f}' for k in ('1x', '10x', '100x'))} ms)" for f in fields if f in lookup["1x"]]
    return f"TARGET lookup growth 10x / 100x over 1x, {name}: " + "; ".join(parts)


def feedback_check(path: Path) -> dict:
    """After --prefer at a step, the same prompt chooses that token there; an unrelated prompt is unchanged."""
    import tempfile

    from glassbox.overlay.feedback import record
    from glassbox.overlay.generate import GenerateConfig
    from glassbox.overlay.store import Store
    from glassbox.overlay.trace import run

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store.sqlite")
        tok = lm.load_lm("smollm2-135m")[1]
        for mode in ("mixture", "select"):
            cfg = GenerateConfig(mode=mode, max_tokens=12)
            first = run(path, "And the LORD said unto Moses,", cfg, "smollm2-135m", store)
            other = run(path, "In the beginning", cfg, "smollm2-135m", store)
            step = min(3, len(first["steps"]) - 1)
            want = first["steps"][step]["candidates"][1]
            record(store, first, step, tok.decode([want["token"]]), True, tok)
            again = run(path, "And the LORD said unto Moses,", cfg, "smollm2-135m", store)
            out[mode] = {"preferred_chosen": again["steps"][step]["chosen"] == want["token"],
                         "unrelated_unchanged": run(path, "In the beginning", cfg, "smollm2-135m", store)["output_ids"]
                         == other["output_ids"], "step": step, "preferred": want["token"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", nargs="*", default=["kjv:1-39=kjv:40-66", "kjv:1-39=pydoc", "pydoc:1-55=pydoc:56-79",
                                                   "pydoc:1-55=kjv:40-66", "kjv:1-39=python-license",
                                                   "brown:nonfiction=brown:fiction"],
                    help="INDEX_CORPUS=HELDOUT pairs; held-out text must not be in the index corpus.")
    ap.add_argument("--root", type=Path, default=bundled.cache_dir() / "overlay-bench")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--scale-base", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="Small sizes, for a smoke run.")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--pos-filter", action="store_true",
                    help="Also score select mode with the syntactic filter (learns the index's POS table first).")
    ap.add_argument("--pos-min-share", type=float, default=0.002)
    ap.add_argument("--load", type=int, default=2, help="Busy processes for the loaded lookup figures (0: skip).")
    ap.add_argument("--fatigue", action="store_true", help="Also run the repeat-rule ablation.")
    ap.add_argument("--no-feedback", action="store_true", help="Skip the feedback check.")
    ap.add_argument("--lookup-only", action="store_true", help="Only the lookup scaling (no LM), as is and loaded.")
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--gen-tokens", type=int, default=24, help="Tokens per generation in the latency runs.")
    ap.add_argument("--dev-fraction", type=float, default=0.5, help="Share of the held-out tokens the gate is fitted on.")
    ap.add_argument("--no-session", action="store_true", help="Without the session memory (the static gate alone).")
    ap.add_argument("--latency-first-only", action="store_true", help="Full latency runs on the first pair only "
                    "(the others: one 2-token run; the LM's cost is the same on every pair).")
    args = ap.parse_args()
    from threadcount import report

    report()  # the thread count and the one-thread ratio (issue 9)
    opts = evaluate.EvalOptions(max_tokens=args.max_tokens, scale_base=args.scale_base, lookup_steps=400,
                                lookup_rounds=5, latency_runs=args.latency_runs, gen_tokens=args.gen_tokens)
    if args.quick:
        opts = evaluate.EvalOptions(max_tokens=600, scale_base=5_000, lookup_steps=200, gen_tokens=8)
    opts.pos_filter, opts.pos_min_share = args.pos_filter, args.pos_min_share
    opts.dev_fraction = args.dev_fraction
    opts.session = not args.no_session
    results = {"threads": torch.get_num_threads(), "runs": []}
    print(f"torch threads: {torch.get_num_threads()}")
    for pair in args.pairs:
        spec, held = pair.split("=", 1)
        path = ensure_index(args.root / spec.replace(":", "_").replace("+", "__").replace("%", "pct"), spec, args.pos_filter)
        index = ix.Index(path)
        if args.lookup_only:
            tok = lm.load_tokenizer("smollm2-135m")
            seq = evaluate.heldout_tokens(held, tok, index.sep, opts.lookup_steps + 2)
            run = {"index": spec, "heldout": held, "lookup": lookups(index, seq, opts)}
            print(lookup_report(f"index {spec}, held-out {held}, as is", run["lookup"]))
            if args.load:
                with busy(args.load):
                    run["lookup_loaded"] = lookups(index, seq, opts)
                print(lookup_report(f"same with {args.load} extra busy processes", run["lookup_loaded"]))
            results["runs"].append(run)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1, default=float))
            continue
        t0 = time.perf_counter()
        if args.latency_first_only and results["runs"]:
            opts.latency_runs, opts.gen_tokens = 1, 2
        res = evaluate.evaluate(path, "smollm2-135m", held, opts)
        print(f"\n=== index {spec} ({index.n_tokens} tokens), held-out {held} ({time.perf_counter() - t0:.0f} s) ===")
        print(evaluate.render(res))
        c, x = res["contract"], res["extra"]
        base_ppl = c["lm"]["ppl"]
        print(f"TARGET overlay/LM perplexity: {c['overlay']['ppl'] / base_ppl:.4f} (<= 1 on every pair, <= 0.98 "
              f"cross-genre); P_T with one λ: {x['fixed_lam']['ppl'] / base_ppl:.4f}; previous mixture: "
              f"{x['previous_mixture']['ppl'] / base_ppl:.4f}; top-1 LM {c['lm']['top1']:.4f} → overlay "
              f"{c['overlay']['top1']:.4f}")
        if x.get("session"):  # which part of the gain is the static index's and which the session memory's
            print(f"TARGET parts over the LM (same run): static index only {x['static_only']['ppl'] / base_ppl:.4f} "
                  f"({'shipped ' + x['static_only']['gate']['kind'] if x['static_only']['gate']['shipped'] else 'off'}), "
                  f"session memory only {x['session_only']['ppl'] / base_ppl:.4f} "
                  f"({'shipped ' + x['session_only']['gate']['kind'] if x['session_only']['gate']['shipped'] else 'off'}), "
                  f"both (the overlay) {c['overlay']['ppl'] / base_ppl:.4f} ({x['gate']['kind']}); "
                  f"P_S alone {x['session_table']['ppl'] / base_ppl:.2f}× (ppl {x['session_table']['ppl']:.1f})")
            g = x["test_gain"]
            print(f"TARGET overlay/LM perplexity, 95% block-bootstrap interval over the test half: "
                  f"[{g['ppl_ratio_ci95'][0]:.4f}, {g['ppl_ratio_ci95'][1]:.4f}]")
        print(f"TARGET latency ratio overlay/LM-greedy: {c['latency_ratio']:.3f} (target <= 1.1; whole overlay run over "
              f"its LM forwards; separate runs: {x['latency']['separate_runs_ratio']:.3f})")
        print(lookup_report("as is", x["lookup"]) + " (target <= 1.2)")
        run = {"index": spec, "index_tokens": index.n_tokens, "heldout": held, "contract": c, "extra": x}
        if args.load:
            tok = lm.load_lm("smollm2-135m")[1]
            seq = evaluate.heldout_tokens(held, tok, index.sep, opts.lookup_steps + 2)
            with busy(args.load):
                loaded = lookups(index, seq, opts)
            print(lookup_report(f"with {args.load} extra busy processes", loaded))
            run["lookup_loaded"] = {"busy_processes": args.load, **loaded}
        print(f"TARGET bytes/token: {c['bytes_per_token']:.2f} (target <= 12)")
        print(f"select/LM top-1: {x['select']['top1'] / c['lm']['top1']:.3f}")
        if args.fatigue:
            tok = lm.load_lm("smollm2-135m")[1]
            seq = evaluate.heldout_tokens(held, tok, index.sep, min(opts.max_tokens, 2000))
            run["fatigue"] = fatigue_ablation(index, seq, opts.n_candidates)
            for a in run["fatigue"]:
                print(f"repeat rule {a['rule']:45} table top-1 {a['table_top1']:.4f} recall@N {a['recall_at_n']:.4f}")
        results["runs"].append(run)
        if args.out:  # after every pair, so a long run that is stopped keeps what it measured
            args.out.write_text(json.dumps(results, indent=1, default=float))
    first = args.root / args.pairs[0].split("=", 1)[0].replace(":", "_").replace("+", "__").replace("%", "pct")
    results["feedback"] = {} if args.no_feedback else feedback_check(first)
    for mode, r in results["feedback"].items():
        print(f"feedback ({mode}): preferred token chosen at step {r['step']}: {r['preferred_chosen']}; "
              f"unrelated prompt unchanged: {r['unrelated_unchanged']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()

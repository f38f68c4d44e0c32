"""Facts on the bundled SmolLM2-135M: which of the set it knows, causal tracing per fact, and rank-one edits.

Trace (the first --trace known facts): the MLP-window peak layer at the subject's last token, the share of the
clean − corrupted gap it restores, seconds and forward passes per fact; the cost ratio against the baseline of
full forwards (every restored cell of every sample run over the whole prompt, what a plain implementation
does), measured in token positions processed, and the seconds against the 60 s target.
Edit (the first --edit known facts, each to its counterfactual `new` answer): efficacy, paraphrases,
specificity (10 other facts keep their top-1), fluency (perplexity ratio), and the tensors the byte diff names;
beside the paper's CounterFact figures for ROME on GPT-2 XL (text of Meng et al. 2022, not measured here).

    PYTHONPATH=src python benchmarks/facts.py [--trace 3] [--edit 10] [--samples 10] [--workers 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from glassbox.facts import edit as fe
from glassbox.facts.factset import candidates, known
from glassbox.facts.neurons import peak_layer
from glassbox.facts.trace import KINDS, Settings, default_workers, gap_share, subject_tokens, trace
from glassbox.run import load_model

PAPER = "paper (Meng et al. 2022, ROME on GPT-2 XL, CounterFact): efficacy near 100%, paraphrase mid-90s %, " \
        "neighborhood (specificity) mid-70s %"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=int, default=3, help="facts to trace (all four kinds)")
    ap.add_argument("--edit", type=int, default=10, help="facts to edit")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[0],
                    help="trace each fact once per worker count given (processes sharing the cells; 0: the "
                         "default, the usable CPUs up to 4)")
    ap.add_argument("--out", type=Path, default=None, help="write facts.json here")
    args = ap.parse_args()
    loaded = load_model("smollm2-135m")
    print(f"torch threads: {torch.get_num_threads()} (restored cells of a trace run on 1: see facts/trace.py)")
    from threadcount import report

    report(model=loaded.model)

    t = time.perf_counter()
    facts = known(loaded)
    print(f"fact set: {len(facts)} of {len(candidates())} candidates are the model's top-1 "
          f"({time.perf_counter() - t:.1f} s)")
    result = {"known": [{**f.to_json(), "p": p} for f, p in facts], "trace": [], "edit": []}

    for fact, _ in [(f, p) for f, p in facts[: args.trace] for _ in args.workers]:
        workers = args.workers[sum(r["prompt"] == fact.prompt for r in result["trace"])]
        load = os.getloadavg()[0]
        doc = trace(loaded, fact.prompt, fact.subject, fact.answer, Settings(samples=args.samples, workers=workers or None))
        c = doc["cost"]
        T, first = len(doc["tokens"]), doc["subject"]["tokens"][0]
        full = len(KINDS) * loaded.n_layers * (T - first) * args.samples * T  # baseline: full forwards
        row = {"prompt": fact.prompt, "peak_layer": peak_layer(doc), "peak": doc["peak"]["mlp_window"],
               "gap_share": gap_share(doc), "p_clean": doc["answer"]["p_clean"],
               "p_corrupt": doc["answer"]["p_corrupt"], **c, "baseline_tokens": full, "workers": workers,
               "load_before": load, "load_after": os.getloadavg()[0]}
        result["trace"].append(row)
        print(f"trace {fact.subject!r:<28} peak layer {row['peak_layer']:>2} (window {doc['window']}), gap share "
              f"{row['gap_share']:.2f}, {c['seconds']:.1f} s = {c['seconds'] / 60:.2f}× the 60 s target, "
              f"{c['forwards']} forwards, {c['tokens']} token positions = {c['tokens'] / full:.3f}× full forwards, "
              f"{workers or default_workers()} worker(s), load average {load:.1f} → {row['load_after']:.1f}")

    others_pool = [f for f, _ in facts]
    for fact, _ in facts[: args.edit]:
        others = [(f.prompt, f.answer) for f in others_pool if f.subject != fact.subject][:10]
        _, subj = subject_tokens(loaded, fact.prompt, fact.subject)
        layer = peak_layer(trace(loaded, fact.prompt, fact.subject, fact.answer,
                                 Settings(kinds=("mlp_window",), tokens=(subj[-1],), samples=args.samples)))
        with tempfile.TemporaryDirectory() as tmp:
            doc = fe.edit(loaded, fact.prompt, fact.subject, fact.new, Path(tmp) / "edited", layer,
                          list(fact.paraphrases), others)
        row = {"prompt": fact.prompt, "new": fact.new, "layer": layer, "efficacy": doc["efficacy"]["success"],
               "paraphrase": [p["success"] for p in doc["paraphrase"]],
               "specificity": sum(s["kept"] for s in doc["specificity"]), "of": len(doc["specificity"]),
               "ppl_ratio": doc["fluency"]["ratio"], "diff": [d["tensor"] for d in doc["diff"]],
               "bytes_changed": sum(d["bytes_changed"] for d in doc["diff"]), "seconds": doc["seconds"],
               "steps": doc["optimization"]["steps"]}
        result["edit"].append(row)
        print(f"edit {fact.subject!r:<28} → {fact.new!r:<10} layer {layer:>2}: efficacy {row['efficacy']}, "
              f"paraphrase {sum(row['paraphrase'])}/{len(row['paraphrase'])}, specificity "
              f"{row['specificity']}/{row['of']}, ppl ×{row['ppl_ratio']:.4f}, diff {row['diff']}, "
              f"{row['seconds']:.0f} s")

    if result["trace"]:
        tr = result["trace"]
        print(f"TRACE: median {statistics.median(r['seconds'] for r in tr):.1f} s per fact "
              f"(target 60 s), median token positions vs full forwards "
              f"{statistics.median(r['tokens'] / r['baseline_tokens'] for r in tr):.3f}×, median gap share "
              f"{statistics.median(r['gap_share'] for r in tr):.2f}")
    if result["edit"]:
        ed = result["edit"]
        n = len(ed)
        para = [ok for r in ed for ok in r["paraphrase"]]
        print(f"EDIT ({n} facts): efficacy {sum(r['efficacy'] for r in ed)}/{n}; paraphrase "
              f"{sum(para)}/{len(para)} prompts, facts with most paraphrases ok "
              f"{sum(2 * sum(r['paraphrase']) >= len(r['paraphrase']) for r in ed)}/{n}; specificity "
              f"mean {statistics.mean(r['specificity'] / r['of'] for r in ed):.2f}, min "
              f"{min(r['specificity'] for r in ed)}/10; fluency worst ppl ×{max(r['ppl_ratio'] for r in ed):.4f}; "
              f"diffs naming only the edited W_down {sum(len(r['diff']) == 1 for r in ed)}/{n}")
        print(PAPER)
    if args.out:
        from glassbox.fileio import write_json

        write_json(args.out / "facts.json", result)


if __name__ == "__main__":
    main()

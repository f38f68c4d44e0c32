"""The overlay's costs beside the LM's: generation latency and lookup time as the index grows.

1. Latency: greedy generation of `gen_tokens` tokens, overlay (mixture) vs the LM alone, same KV-cache
   forward code: a whole overlay run over its own LM forward time (median over runs); the ratio of separate
   LM-alone and overlay runs is reported beside it (noisier on a shared machine).
2. Lookup cost: the per-step candidate lookup (accumulator update + top-N + the table and session
   distributions of the candidates) on indexes of 1×, 10×, 100× a base of `scale_base` corpus tokens; the
   larger ones repeat the base with documents shuffled per copy (same distribution, 10×/100× the arrays).
   p50/p99 over interleaved rounds, and per step the fastest of the rounds (the step without preemptions).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from glassbox import progress
from glassbox.overlay.accumulator import Accumulator
from glassbox.overlay.generate import GenerateConfig, LMRunner, generate
from glassbox.overlay.index import FORMAT, BuildOptions, Index, write_arrays
from glassbox.overlay.mixer import Mixer


def latency_ratio(index: Index, model: Any, bos: int | None, seq: list[int], gen_tokens: int, runs: int,
                  n_candidates: int = 32, gate: Mixer | None = None) -> dict:
    """Greedy decoding, overlay (mixture) vs the LM alone (same KV-cache forward code), in alternating runs.

    On a shared machine two separate runs see different loads, so the ratio reported is measured inside each
    overlay run: its whole time over the time its LM forward passes took (exactly the LM-alone loop's work,
    less an argmax per token), median over runs. The ratio of separate runs' medians is reported beside it."""
    prompt = [t for t in seq[:16] if t != index.sep] or seq[:1]
    cfg = GenerateConfig(mode="mixture", max_tokens=gen_tokens, n_candidates=n_candidates, repeat_stop=0,
                         gate=gate.to_json() if gate is not None else None)
    lm_ms, ov_ms, paired = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner = LMRunner(model, bos)
        lp = runner.start(list(prompt))
        for _step in range(gen_tokens - 1):
            lp = runner.advance(int(np.argmax(lp)))
        lm_ms.append((time.perf_counter() - t0) * 1000 / gen_tokens)
        t0 = time.perf_counter()
        out = generate(index, list(prompt), cfg, model, bos, end_ids=set())
        total = (time.perf_counter() - t0) * 1000
        ov_ms.append(total / max(1, len(out["output_ids"])))
        paired.append(total / out["lm_ms"])
    return {"lm_ms_per_token": statistics.median(lm_ms), "overlay_ms_per_token": statistics.median(ov_ms),
            "ratio": statistics.median(paired), "separate_runs_ratio": statistics.median(ov_ms) / statistics.median(lm_ms),
            "paired_ratios": paired, "runs": runs, "tokens_per_run": gen_tokens}


def grown_index(index: Index, folder: Path, base: int, copies: int, seed: int = 0) -> Index:
    """An index whose corpus is `copies` repeats of the first `base` tokens, documents shuffled per copy."""
    toks = np.asarray(index.tokens[: min(base, index.n_tokens)], dtype=np.int64)
    cuts = np.flatnonzero(toks == index.sep) + 1
    docs = np.split(toks, cuts)
    docs = [d for d in docs if len(d)]
    rng = np.random.default_rng(seed)
    parts = [docs[i] for c in range(copies) for i in (rng.permutation(len(docs)) if c else range(len(docs)))]
    grown = np.concatenate(parts)
    folder.mkdir(parents=True, exist_ok=True)
    extra = write_arrays(folder, grown, index.vocab_size,
                         BuildOptions(k=index.meta["k"], window=index.meta["window"], cap=index.meta.get("cap", 256),
                                      cooc_k=index.meta.get("cooc_k", 16)))
    shutil.copytree(index.tokenizer_path(), folder / "tokenizer", dirs_exist_ok=True)
    meta = dict(index.meta, id=f"{index.id}-x{copies}", n_tokens=int(len(grown)), format=FORMAT, **extra)
    (folder / "meta.json").write_text(json.dumps(meta))
    return Index(folder)


def lookup_scaling(index: Index, seq: list[int], scale_base: int, steps: int = 300, rounds: int = 3,
                   n_candidates: int = 32) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="glassbox-overlay-scale-"))
    try:
        scales = {f"{c}x": grown_index(index, tmp / f"x{c}", scale_base, c) for c in (1, 10, 100)}
        times: dict[str, list[float]] = {k: [] for k in scales}
        links_only: dict[str, list[float]] = {k: [] for k in scales}  # the CSR tables alone, no suffix array
        steps = min(steps, len(seq) - 1)
        for _ in progress.track(range(rounds), "lookup rounds"):
            for name, ix in scales.items():
                for with_sa, sink in ((True, times[name]), (False, links_only[name])):
                    ng, ix.ngram = ix.ngram, (ix.ngram if with_sa else None)
                    acc = Accumulator(ix)
                    for p in range(steps):
                        t0 = time.perf_counter()
                        acc.observe(seq[max(0, p - 1) : p + 1])
                        cands = acc.candidates(n_candidates)
                        if with_sa:
                            acc.table().prob(cands)  # the mixture's table side for the candidates
                            acc.session.dist().prob(cands)  # and the session memory's (its size grows too)
                        sink.append((time.perf_counter() - t0) * 1000)
                    ix.ngram = ng
                # per step, the fastest of the rounds: what the step itself costs, without the scheduler's preemptions
        # (on a loaded machine the raw p99 is preemption noise); its p99 over the steps is reported beside
        best = {k: np.asarray(v).reshape(rounds, steps).min(axis=0) for k, v in times.items()}
        best_links = {k: np.asarray(v).reshape(rounds, steps).min(axis=0) for k, v in links_only.items()}
        return {k: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                    "links_only_p50_ms": float(np.percentile(links_only[k], 50)),
                    "links_only_p99_ms": float(np.percentile(links_only[k], 99)),
                    "best_of_rounds_p99_ms": float(np.percentile(best[k], 99)),
                    "links_only_best_of_rounds_p99_ms": float(np.percentile(best_links[k], 99)),
                    "corpus_tokens": scales[k].n_tokens, "samples": len(v)} for k, v in times.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

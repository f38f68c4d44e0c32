"""`glassbox overlay eval`: the LM alone, the table alone and the overlay, side by side on held-out text.

1. Teacher forcing: the accumulator reads the held-out tokens one by one; at every position we keep its
   top-N candidates and its table distribution. The LM scores the same tokens in windows (512, stride 256).
2. Per position: LM top-1 / log-prob; table top-1 / log-prob; the mixture (mode "mixture") with lam tuned on
   the first `dev_fraction` of positions (by perplexity); the faithful "select" mode (LM restricted to the
   table's N candidates, + beta · log p_table, beta tuned by top-1 on the dev part; its perplexity puts a
   floor of `select_floor` / V on every token so that misses are finite). Reported figures use the rest.
   With --pos-filter the select mode is scored a second time with the syntactic filter (overlay/pos.py):
   candidates whose tag cannot follow the previous token's are removed first (all kept if all would go),
   the LM renormalized over the rest; reported beside (extra "select_pos"), the contract is unchanged.
3. recall@N: how often the true next token is among the table's N candidates (the select mode's ceiling).
4. Latency: greedy generation of `gen_tokens` tokens, overlay (mixture) vs the LM alone, same KV-cache
   forward code: a whole overlay run over its own LM forward time (median over runs); the ratio of separate
   LM-alone and overlay runs is reported beside it (noisier on a shared machine).
5. Lookup cost: the per-step candidate lookup (accumulator update + top-N) on indexes of 1×, 10×, 100× a
   base of `scale_base` corpus tokens; the larger ones repeat the base with documents shuffled per copy
   (same distribution, 10×/100× the arrays). p50/p99 over interleaved rounds.
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.overlay import corpus as corpora
from glassbox.overlay import lm
from glassbox.overlay.accumulator import Accumulator, AccumulatorConfig
from glassbox.overlay.generate import GenerateConfig, LMRunner, generate
from glassbox.overlay.index import FORMAT, BuildOptions, Index, write_arrays
from glassbox.overlay.pos import PosTable


@dataclass
class EvalOptions:
    max_tokens: int = 4096
    n_candidates: int = 32
    scale_base: int = 50_000
    gen_tokens: int = 24
    window: int = 512
    stride: int = 256
    dev_fraction: float = 0.25
    mu: float = 0.1
    lams: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    betas: tuple[float, ...] = (0.0, 0.3, 1.0)
    select_floor: float = 1e-3
    lookup_steps: int = 300
    lookup_rounds: int = 3
    latency_runs: int = 5
    pos_filter: bool = False
    pos_min_share: float = 0.002


def heldout_tokens(spec: str, tok, sep: int, limit: int) -> list[int]:  # type: ignore[no-untyped-def]
    ids: list[int] = []
    for doc in corpora.load_documents([spec]):
        ids.extend(tok(doc, add_special_tokens=False)["input_ids"])
        ids.append(sep)
        if len(ids) > limit:
            break
    ids = ids[: limit + 1]
    if len(ids) < 16:
        raise BadInput(f"held-out text has only {len(ids)} tokens; need at least 16", spec)
    return ids


def table_pass(index: Index, seq: list[int], n: int, cfg: AccumulatorConfig) -> list[dict]:
    """For every position p (predicting seq[p+1]): candidates, the table's positive scores, match length."""
    acc = Accumulator(index, cfg)
    rows = []
    for p in progress.track(range(len(seq) - 1), "table pass"):
        acc.observe(seq[max(0, p + 1 - cfg.max_match - 2) : p + 1])
        total = acc.total()
        universe = np.flatnonzero(total > 0)
        rows.append({"cands": acc.candidates(n, total), "ids": universe, "vals": total[universe].astype(np.float64),
                     "match": acc.match_length})
    return rows


def lm_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first target) per window: every target j (1..n-1) is scored once, with the most context."""
    out, s = [], 0
    while True:
        end = min(s + window, n_tokens)
        first = 1 if s == 0 else s + window - stride
        out.append((s, end, first))
        if end >= n_tokens:
            return out
        s += stride


def evaluate(index_path: str | Path, model_spec: str, heldout: str, opts: EvalOptions | None = None) -> dict:
    import torch

    opts = opts or EvalOptions()
    index = Index(index_path)
    model, tok = lm.load_lm(model_spec)
    if len(tok) != index.vocab_size:
        raise BadInput(f"the model's vocabulary ({len(tok)}) differs from the index's ({index.vocab_size})", model_spec)
    seq = heldout_tokens(heldout, tok, index.sep, opts.max_tokens)
    V, N = index.vocab_size, opts.n_candidates
    acfg = AccumulatorConfig()
    rows = table_pass(index, seq, N, acfg)
    uni = (index.unigram + 1.0) / (index.unigram.sum() + V)
    n_targets = len(seq) - 1
    n_dev = max(1, int(n_targets * opts.dev_fraction))
    # per target: log-probs under each model; top-1 hits
    lm_lp, lm_hit, tab_lp, tab_hit = (np.zeros(n_targets) for _ in range(4))
    mix_lp = np.zeros((len(opts.lams), n_targets))
    mix_hit = np.zeros((len(opts.lams), n_targets))
    sel_lp = np.zeros((len(opts.betas), n_targets))
    sel_hit = np.zeros((len(opts.betas), n_targets))
    recall, recall_mix, lm_top_in = (np.zeros(n_targets) for _ in range(3))
    pos = PosTable.load(index_path, opts.pos_min_share) if opts.pos_filter else None
    pos_lp = np.zeros((len(opts.betas), n_targets))
    pos_hit = np.zeros((len(opts.betas), n_targets))
    pos_recall, pos_dropped, pos_true_dropped = (np.zeros(n_targets) for _ in range(3))
    sel_choice = np.zeros((len(opts.betas), n_targets), np.int64)  # select's pick, with and without the filter
    pos_choice = np.zeros((len(opts.betas), n_targets), np.int64)
    bos = [tok.bos_token_id] if lm.needs_bos(model_spec) else []
    windows = lm_windows(len(seq), opts.window, opts.stride)
    for s, e, first in progress.track(windows, "LM windows"):
        with torch.inference_mode():
            logits = model(torch.tensor([bos + seq[s:e]])).logits[0, len(bos):]
        logp_all = torch.log_softmax(logits.float(), -1).numpy().astype(np.float64)
        for j in range(first, e):
            p = j - 1
            true, lp, r = seq[j], logp_all[j - 1 - s], rows[p]
            lm_lp[p], lm_hit[p] = lp[true], float(np.argmax(lp) == true)
            ptab = opts.mu * uni
            tot = r["vals"].sum()
            if tot > 0:
                ptab = ptab.copy()
                ptab[r["ids"]] += (1 - opts.mu) * r["vals"] / tot
                tab_top = int(r["ids"][np.argmax(r["vals"])])
            else:
                ptab = uni
                tab_top = int(np.argmax(uni))
            tab_lp[p], tab_hit[p] = math.log(ptab[true]), float(tab_top == true)
            plm = np.exp(lp)
            for i, lam in enumerate(opts.lams):
                mix = (1 - lam) * plm + lam * ptab
                mix_lp[i, p], mix_hit[i, p] = math.log(mix[true]), float(np.argmax(mix) == true)
            cands = r["cands"] if len(r["cands"]) else np.argpartition(-lp, 8)[:8]
            recall[p] = float(true in set(r["cands"].tolist()))
            lm_top_in[p] = float(int(np.argmax(lp)) in set(r["cands"].tolist()))
            topk = set(np.argpartition(-lp, 8)[:8].tolist())
            recall_mix[p] = float(recall[p] > 0 or true in topk)
            for i, beta in enumerate(opts.betas):
                sel_choice[i, p], sel_lp[i, p] = _select(cands, lp, ptab, true, beta, opts.select_floor, V)
                sel_hit[i, p] = float(sel_choice[i, p] == true)
            if pos is not None:
                keep = np.array([pos.check(seq[p], int(c)) is None for c in cands])
                if not keep.any():
                    keep[:] = True
                pos_dropped[p] = float((~keep).sum())
                pos_true_dropped[p] = float(bool((cands[~keep] == true).any()))
                kc = cands[keep]
                pos_recall[p] = float(len(r["cands"]) > 0 and true in set(kc.tolist()))  # as recall: table ones only
                for i, beta in enumerate(opts.betas):
                    pos_choice[i, p], pos_lp[i, p] = _select(kc, lp, ptab, true, beta, opts.select_floor, V)
                    pos_hit[i, p] = float(pos_choice[i, p] == true)
    dev, test = slice(0, n_dev), slice(n_dev, n_targets)
    lam_i = int(np.argmax([m[dev].mean() for m in mix_lp]))
    beta_i = int(np.argmax([h[dev].mean() for h in sel_hit]))

    def fig(lp: np.ndarray, hit: np.ndarray) -> dict:
        return {"top1": float(hit[test].mean()), "ppl": float(math.exp(-lp[test].mean()))}

    latency = latency_ratio(index, model, bos[0] if bos else None, seq, opts)
    lookup = lookup_scaling(index, seq, opts)
    contract = {
        "tokens": int(n_targets - n_dev), "n_candidates": N,
        "lm": fig(lm_lp, lm_hit), "table": fig(tab_lp, tab_hit), "overlay": fig(mix_lp[lam_i], mix_hit[lam_i]),
        "recall_at_n": float(recall[test].mean()), "latency_ratio": latency["ratio"],
        "bytes_per_token": index.bytes_per_token(),
        "lookup_p99_ms": {k: v["p99_ms"] for k, v in lookup.items()},
    }
    extra = {
        "heldout": heldout, "index": str(index_path), "index_tokens": index.n_tokens, "dev_tokens": n_dev,
        "threads": torch.get_num_threads(), "lam": opts.lams[lam_i], "beta": opts.betas[beta_i],
        "select": fig(sel_lp[beta_i], sel_hit[beta_i]), "select_floor": opts.select_floor,
        "mixture_by_lam": {str(lam): fig(mix_lp[i], mix_hit[i]) for i, lam in enumerate(opts.lams)},
        "select_by_beta": {str(b): fig(sel_lp[i], sel_hit[i]) for i, b in enumerate(opts.betas)},
        "lm_top1_in_candidates": float(lm_top_in[test].mean()),
        "recall_mixture_candidates": float(recall_mix[test].mean()),
        "long_match_share": float(np.mean([r["match"] >= 8 for r in rows[n_dev:]])),
        "latency": latency, "lookup": lookup,
    }
    if pos is not None:
        pos_beta = int(np.argmax([h[dev].mean() for h in pos_hit]))
        extra["select_pos"] = {
            **fig(pos_lp[pos_beta], pos_hit[pos_beta]), "beta": opts.betas[pos_beta], "min_share": opts.pos_min_share,
            "recall_at_n": float(pos_recall[test].mean()), "dropped_per_step": float(pos_dropped[test].mean()),
            "true_token_dropped": float(pos_true_dropped[test].mean()),
            # decisions the filter changed (same beta as plain select), and whether the change fixed or broke one
            "decisions_changed": float((changed := (sel_choice[beta_i] != pos_choice[beta_i])[test]).mean()),
            "changed_now_right": float((changed & (pos_hit[beta_i][test] > 0)).mean()),
            "changed_was_right": float((changed & (sel_hit[beta_i][test] > 0)).mean()),
            "by_beta": {str(b): fig(pos_lp[i], pos_hit[i]) for i, b in enumerate(opts.betas)},
        }
    return {"contract": contract, "extra": extra}


def _select(cands: np.ndarray, lp: np.ndarray, ptab: np.ndarray, true: int, beta: float, floor: float,
            vocab: int) -> tuple[int, float]:
    """Select mode at one position: the LM's log-probs renormalized over the candidates plus β·log p_table →
    (the pick, log-prob of the true token, with `floor` spread over the vocabulary for a missed one)."""
    lc = lp[cands] - _lse(lp[cands])
    f = lc + beta * np.log(ptab[cands])
    f = f - _lse(f)
    hit = cands == true
    p_true = (1 - floor) * (math.exp(f[hit][0]) if hit.any() else 0.0) + floor / vocab
    return int(cands[int(np.argmax(f))]), math.log(p_true)


def _lse(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + math.log(float(np.exp(x - m).sum()))


def latency_ratio(index: Index, model, bos: int | None, seq: list[int], opts: EvalOptions) -> dict:  # type: ignore[no-untyped-def]
    """Greedy decoding, overlay (mixture) vs the LM alone (same KV-cache forward code), in alternating runs.

    On a shared machine two separate runs see different loads, so the ratio reported is measured inside each
    overlay run: its whole time over the time its LM forward passes took (exactly the LM-alone loop's work,
    less an argmax per token), median over runs. The ratio of separate runs' medians is reported beside it."""
    prompt = [t for t in seq[:16] if t != index.sep] or seq[:1]
    cfg = GenerateConfig(mode="mixture", max_tokens=opts.gen_tokens, n_candidates=opts.n_candidates, repeat_stop=0)
    lm_ms, ov_ms, paired = [], [], []
    for _ in range(opts.latency_runs):
        t0 = time.perf_counter()
        runner = LMRunner(model, bos)
        lp = runner.start(list(prompt))
        for _step in range(opts.gen_tokens - 1):
            lp = runner.advance(int(np.argmax(lp)))
        lm_ms.append((time.perf_counter() - t0) * 1000 / opts.gen_tokens)
        t0 = time.perf_counter()
        out = generate(index, list(prompt), cfg, model, bos, end_ids=set())
        total = (time.perf_counter() - t0) * 1000
        ov_ms.append(total / max(1, len(out["output_ids"])))
        paired.append(total / out["lm_ms"])
    return {"lm_ms_per_token": statistics.median(lm_ms), "overlay_ms_per_token": statistics.median(ov_ms),
            "ratio": statistics.median(paired), "separate_runs_ratio": statistics.median(ov_ms) / statistics.median(lm_ms),
            "paired_ratios": paired, "runs": opts.latency_runs, "tokens_per_run": opts.gen_tokens}


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
    write_arrays(folder, grown, index.vocab_size, BuildOptions(k=index.meta["k"], window=index.meta["window"]))
    shutil.copytree(index.tokenizer_path(), folder / "tokenizer", dirs_exist_ok=True)
    for f in index.path.glob("sem_*.npy"):  # semantic neighbours depend on the token set, not on counts
        shutil.copy(f, folder / f.name)
    import json

    meta = dict(index.meta, id=f"{index.id}-x{copies}", n_tokens=int(len(grown)), format=FORMAT)
    (folder / "meta.json").write_text(json.dumps(meta))
    return Index(folder)


def lookup_scaling(index: Index, seq: list[int], opts: EvalOptions) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="glassbox-overlay-scale-"))
    try:
        scales = {f"{c}x": grown_index(index, tmp / f"x{c}", opts.scale_base, c) for c in (1, 10, 100)}
        times: dict[str, list[float]] = {k: [] for k in scales}
        links_only: dict[str, list[float]] = {k: [] for k in scales}  # the CSR tables alone, no suffix array
        steps = min(opts.lookup_steps, len(seq) - 1)
        for _ in progress.track(range(opts.lookup_rounds), "lookup rounds"):
            for name, ix in scales.items():
                for with_sa, sink in ((True, times[name]), (False, links_only[name])):
                    sa, ix.sa = ix.sa, (ix.sa if with_sa else None)
                    acc = Accumulator(ix)
                    for p in range(steps):
                        t0 = time.perf_counter()
                        acc.observe(seq[max(0, p - 14) : p + 1])
                        acc.candidates(opts.n_candidates)
                        sink.append((time.perf_counter() - t0) * 1000)
                    ix.sa = sa
        return {k: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                    "links_only_p50_ms": float(np.percentile(links_only[k], 50)),
                    "links_only_p99_ms": float(np.percentile(links_only[k], 99)),
                    "corpus_tokens": scales[k].n_tokens, "samples": len(v)} for k, v in times.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(res: dict) -> str:
    c, x = res["contract"], res["extra"]
    lines = [
        f"held-out {x['heldout']}: {c['tokens']} test tokens (+{x['dev_tokens']} dev), index {x['index']} "
        f"({x['index_tokens']} tokens), {x['threads']} torch thread(s)",
        f"{'':34} {'top-1':>8} {'ppl':>10}",
        f"{'LM alone':34} {c['lm']['top1']:8.4f} {c['lm']['ppl']:10.2f}",
        f"{'table alone':34} {c['table']['top1']:8.4f} {c['table']['ppl']:10.2f}",
        f"{'overlay mixture (lam=' + str(x['lam']) + ')':34} {c['overlay']['top1']:8.4f} {c['overlay']['ppl']:10.2f}",
        f"{'overlay select (seed loop, beta=' + str(x['beta']) + ')':34} {x['select']['top1']:8.4f} "
        f"{x['select']['ppl']:10.2f}   (ppl with a {x['select_floor']}/V floor)",
        *([f"{'select + syntactic filter (beta=' + str(x['select_pos']['beta']) + ')':34} "
           f"{x['select_pos']['top1']:8.4f} {x['select_pos']['ppl']:10.2f}   recall@N after the filter "
           f"{x['select_pos']['recall_at_n']:.4f}; {x['select_pos']['dropped_per_step']:.2f} candidates dropped/step; "
           f"true token dropped {x['select_pos']['true_token_dropped']:.4f} (min share {x['select_pos']['min_share']}); "
           f"decisions changed {x['select_pos']['decisions_changed']:.4f} (now right "
           f"{x['select_pos']['changed_now_right']:.4f}, was right {x['select_pos']['changed_was_right']:.4f})"]
          if "select_pos" in x else []),
        f"recall@{c['n_candidates']}: {c['recall_at_n']:.4f}  (with the LM's top-8 added: "
        f"{x['recall_mixture_candidates']:.4f}); the LM's own top-1 was a table candidate "
        f"{x['lm_top1_in_candidates']:.4f} of the time",
        f"latency: overlay {x['latency']['overlay_ms_per_token']:.1f} ms/token vs LM {x['latency']['lm_ms_per_token']:.1f}"
        f" in separate runs ({x['latency']['separate_runs_ratio']:.3f}); inside overlay runs {c['latency_ratio']:.3f}",
        f"index: {c['bytes_per_token']:.2f} bytes/token",
    ]
    for k, v in x["lookup"].items():
        lines.append(f"lookup {k:>4} ({v['corpus_tokens']} tokens): p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms"
                     f"; link tables only: p50 {v['links_only_p50_ms']:.3f} ms, p99 {v['links_only_p99_ms']:.3f} ms")
    return "\n".join(lines)

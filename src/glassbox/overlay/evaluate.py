"""`glassbox overlay eval`: the LM alone, the table alone and the overlay, side by side on held-out text.

1. One pass over the held-out tokens fills one record per position p (predicting seq[p+1], `Record`): the
   LM's log-probs at its full context (every token before the scored one, up to the model's context length,
   fed through the KV cache as `overlay generate` feeds it; `window` N: windows of N tokens with stride N/2,
   kept for comparisons), the accumulator's candidates and votes, the static table P_T (overlay/ngram.py)
   and the session memory P_S (overlay/session.py) with their gate features, and each one's top candidates.
2. The mixer (overlay/mixer.py) is fitted on the first `dev_fraction` of positions and shipped only if its
   out-of-fold dev gain is above 0 at 95% (else it is the LM); reported figures use the rest (test).
   The baselines are functions over the same record: one fixed λ (dev-tuned), the oracle (the best constant
   weights chosen on the test half itself: what fixed weights could add at most), the previous mixture
   (normalized accumulator votes, one λ), the faithful "select" mode (the LM restricted to the table's N
   candidates, + beta · log p_table, beta tuned by top-1 on dev; a floor of `select_floor` / V keeps a miss
   finite) and, with --pos-filter, select after the syntactic filter (overlay/pos.py). Top-1 of a mixture is
   its argmax over the union of each part's top-16 (to within a hair of the argmax over the vocabulary).
3. recall@N (the select mode's ceiling), and the per-token view: the share of test tokens the overlay makes
   better and worse than the LM, and the gain carried by the best and worst deciles.
4. Latency and lookup scaling: overlay/timing.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.logprob import logsumexp
from glassbox.overlay import corpus as corpora
from glassbox.overlay import gate as gates
from glassbox.overlay import lm
from glassbox.overlay import session as sessions
from glassbox.overlay.accumulator import Accumulator, AccumulatorConfig, table_distribution
from glassbox.overlay.generate import LMRunner, select_final
from glassbox.overlay.index import Index
from glassbox.overlay.mixer import Mixer, block_ci, fit, mix, oracle
from glassbox.overlay.pos import PosTable
from glassbox.overlay.timing import latency_ratio, lookup_scaling

TOP = 16  # each part's top-k kept per position: a mixture's argmax lies in their union
CHUNK = 512  # tokens per forward when feeding the LM's cache


@dataclass
class EvalOptions:
    max_tokens: int = 4096
    n_candidates: int = 32
    scale_base: int = 50_000
    gen_tokens: int = 24
    window: int | None = None  # None: the LM's full context (up to its context length); else windows of N
    stride: int | None = None  # with `window`: window // 2 unless given
    dev_fraction: float = 0.5  # the gate needs data: half the held-out tokens fit it, half test it
    mu: float = 0.1
    lams: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    betas: tuple[float, ...] = (0.0, 0.3, 1.0)
    select_floor: float = 1e-3
    lookup_steps: int = 300
    lookup_rounds: int = 3
    latency_runs: int = 5
    pos_filter: bool = False
    pos_min_share: float = 0.002
    session: bool = True  # the session memory P_S (overlay/session.py); --no-session: the static gate alone
    timing: bool = True  # latency and lookup scaling (overlay/timing.py); off in the pairs benchmark
    prior_tokens: int = 8192  # the session prior's text (`prior_text`); 0: no prior


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


def lm_rows(model: Any, bos: int | None, seq: list[int], window: int, stride: int
            ) -> Iterator[tuple[int, np.ndarray, int]]:
    """(p, log-probs over the vocabulary predicting seq[p + 1], first token of its context) for p = 0, 1, ...
    in order. Each window is fed in chunks through the KV cache, so a token sees every token of its window
    before it; with the window at the model's context length that is the whole text before it."""
    runner = LMRunner(model, bos)
    for s, e, first in lm_windows(len(seq), window, stride):
        runner.cache = None
        ids = runner.bos + seq[s:e]
        for c in range(0, len(ids), CHUNK):
            logp = runner.feed(ids[c:c + CHUNK]).astype(np.float64)
            for i in range(len(logp)):
                j = s + c + i - len(runner.bos) + 1  # the target that row predicts
                if first <= j < e:
                    yield j - 1, logp[i], s


class Record:
    """Everything `evaluate` keeps per position p (predicting seq[p + 1]), filled in one pass."""

    def __init__(self, seq: list[int], vocab: int):
        n = len(seq) - 1
        self.seq, self.vocab, self.n = seq, vocab, n
        self.true = np.asarray(seq[1:], np.int64)
        z = np.zeros
        self.lm_lp, self.lm_hit, self.p_lm, self.p_t, self.t_hit, self.p_s, self.s_hit = (z(n) for _ in range(7))
        # lm_lp (log p_LM of the true token) is set from p_lm after the pass, with the mixer's own np.log
        self.p_votes, self.recall, self.lm_top_in, self.recall_mix = (z(n) for _ in range(4))
        self.match, self.s_match, self.ctx_start = (z(n, np.int64) for _ in range(3))
        self.s_prev = np.full(n, -1, np.int64)
        self.phi_t: list[dict | None] = [None] * n
        self.phi_s: list[dict | None] = [None] * n
        self.tops: list[tuple[np.ndarray, ...]] = [()] * n  # (ids, p_LM, P_T, P_S, p_votes) over the top-k union
        # (candidates, their LM log-probs and p_votes, the POS keep mask or None, whether the table offered any)
        self.sel: list[tuple[np.ndarray | None, ...]] = [()] * n

    def fill(self, p: int, lp: np.ndarray, start: int, acc: Accumulator, sd: sessions.SessionDist,
             n_cands: int, mu: float, pos: PosTable | None) -> None:
        index, true = acc.index, self.seq[p + 1]
        plm = np.exp(lp)
        self.p_lm[p], self.lm_hit[p], self.ctx_start[p] = plm[true], np.argmax(lp) == true, start
        pt = acc.table().dense() if index.ngram is not None else index.p0  # P_T, a distribution over V
        self.p_t[p], self.t_hit[p] = pt[true], int(np.argmax(pt)) == true
        self.phi_t[p] = gates.features(acc.levels, float(plm.max()), index)
        self.match[p] = acc.match_length
        ps = sd.dense()  # P_S: the held-out tokens before this target, never the target itself
        self.p_s[p], self.s_hit[p] = ps[true], int(np.argmax(ps)) == true
        self.phi_s[p] = sd.features(float(plm.max()))
        self.s_match[p], self.s_prev[p] = sd.match, sd.prev_end
        total = acc.total()
        ptab = table_distribution(total, index.unigram, mu)  # the accumulator's votes, normalized (select mode)
        self.p_votes[p] = ptab[true]
        both = np.unique(np.concatenate([np.argpartition(-x, TOP)[:TOP] for x in (plm, pt, ps, ptab)]))
        self.tops[p] = (both, plm[both], pt[both], ps[both], ptab[both])
        table_cands = acc.candidates(n_cands, total)
        cands = table_cands if len(table_cands) else np.argpartition(-lp, 8)[:8]
        in_table = set(table_cands.tolist())
        self.recall[p] = true in in_table
        self.lm_top_in[p] = int(np.argmax(lp)) in in_table
        self.recall_mix[p] = self.recall[p] > 0 or true in set(np.argpartition(-lp, 8)[:8].tolist())
        keep = None
        if pos is not None:
            keep = np.array([pos.check(self.seq[p], int(c)) is None for c in cands])
            if not keep.any():
                keep[:] = True
        self.sel[p] = (cands, lp[cands], ptab[cands], keep, np.array(len(table_cands) > 0))


def mixed(rec: Record, mixer: Mixer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log p of the true token, top-1 hit, weights [n, 3]) of a mixer at every position."""
    w = np.array([mixer.weights(a, b) for a, b in zip(rec.phi_t, rec.phi_s, strict=True)])
    lp = np.log(mix(w, rec.p_lm, rec.p_t, rec.p_s))
    hit = np.array([t[0][np.argmax(mix(wi, t[1], t[2], t[3]))] for t, wi in zip(rec.tops, w, strict=True)]) == rec.true
    return lp, hit.astype(float), w


def votes(rec: Record, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """The previous mixture, (1 − λ) p_LM + λ · normalized votes: (log p of the true token, top-1 hit)."""
    w = (1 - lam, lam)
    lp = np.log(mix(w, rec.p_lm, rec.p_votes))
    hit = np.array([t[0][np.argmax(mix(w, t[1], t[4]))] for t in rec.tops]) == rec.true
    return lp, hit.astype(float)


def select(rec: Record, beta: float, floor: float, filtered: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select mode (the seed's loop) at every position, scored by the generator's own `select_final`: (the
    pick, log-prob of the true token renormalized over the candidates with `floor` spread over the
    vocabulary for a miss, top-1 hit). `filtered`: after the syntactic filter's keep mask."""
    pick, lps = np.zeros(rec.n, np.int64), np.zeros(rec.n)
    for p, (cands, lp, pv, keep, _) in enumerate(rec.sel):
        if filtered:
            cands, lp, pv = cands[keep], lp[keep], pv[keep]
        f = select_final(lp, pv, beta)
        f = f - logsumexp(f)
        hit = cands == rec.true[p]
        p_true = (1 - floor) * (math.exp(f[hit][0]) if hit.any() else 0.0) + floor / rec.vocab
        pick[p], lps[p] = cands[int(np.argmax(f))], math.log(p_true)
    return pick, lps, (pick == rec.true).astype(float)


def per_token(gain: np.ndarray) -> dict:
    """The per-token view of a gain over the LM (nats): how many tokens it helps and hurts, and how much of
    the total the best and the worst tenth of tokens carry (a mean gain can hide many worse tokens)."""
    n = len(gain)
    g = np.sort(gain)
    k = max(1, n // 10)
    return {"better_share": float((gain > 1e-9).mean()), "worse_share": float((gain < -1e-9).mean()),
            "best_decile_nats_per_token": float(g[-k:].mean()), "worst_decile_nats_per_token": float(g[:k].mean()),
            "best_decile_share_of_total": float(g[-k:].sum() / n), "worst_decile_share_of_total": float(g[:k].sum() / n),
            "mean_nats_per_token": float(gain.mean())}


def context_length(model: Any) -> int:
    """The LM's context length (SmolLM2: 8,192): the longest window it was trained to read."""
    return int(getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048))


def prior_text(index: Index, tok: Any, n_tokens: int, segment: int) -> tuple[list[str], list[list[int]]]:
    """(specs, segments of tokens) of the session prior's text: the first documents of the index's own
    corpora, an equal share of `n_tokens` from each source, cut into segments of ≤ `segment` tokens that are
    read as separate texts (each one from an empty session, as eval reads its held-out text). Not the
    evaluated text (its documents are held out of the index); its positions never read the index (the
    table's weight is 0 there: it would find the text itself), so only the session part learns from them.
    ([], []) when the corpora can no longer be read (a file index whose files are gone)."""
    specs = [s["spec"] for s in index.meta.get("sources", [])] or [str(index.meta.get("source", ""))]
    share = max(16, n_tokens // len(specs))
    out: list[list[int]] = []
    try:
        for spec in specs:
            ids = heldout_tokens(spec, tok, index.sep, share)[:share]
            out.extend(ids[i:i + segment] for i in range(0, len(ids), segment) if len(ids) - i >= 16)
    except (BadInput, OSError, ValueError):
        return [], []
    return specs, out


def session_record(model: Any, bos: int | None, segments: list[list[int]], vocab: int, window: int, stride: int
                   ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """(p_LM, P_S of the true token, session features) per position of each segment, in order: the LM and
    the session memory alone, as `Record.fill` computes them (the static table is not read)."""
    p_lm, p_s, phi_s = [], [], []
    total = sum(len(seq) - 1 for seq in segments)
    rows = ((seq, p, lp) for seq in segments for p, lp, _ in lm_rows(model, bos, seq, window, stride))
    stream = None
    for seq, p, lp in progress.track(rows, "session prior", total=total):
        if p == 0:
            stream = sessions.online(seq, vocab)
        at, sd = next(stream)
        assert at == p
        plm = np.exp(lp)
        p_lm.append(plm[seq[p + 1]])
        p_s.append(sd.dense()[seq[p + 1]])
        phi_s.append(gates.vector(sd.features(float(plm.max())), sessions.SESSION_FEATURES))
    return np.array(p_lm), np.array(p_s), phi_s


def evaluate(index_path: str | Path, model_spec: str, heldout: str, opts: EvalOptions | None = None) -> dict:
    """`overlay eval`'s figures (see the module docstring)."""
    opts = opts or EvalOptions()
    index = Index(index_path)
    model, tok = lm.load_lm(model_spec)
    if len(tok) != index.vocab_size:
        raise BadInput(f"the model's vocabulary ({len(tok)}) differs from the index's ({index.vocab_size})", model_spec)
    seq = heldout_tokens(heldout, tok, index.sep, opts.max_tokens)
    ctx = context_length(model)
    window = min(opts.window or ctx, ctx)
    stride = opts.stride or window // 2
    bos = tok.bos_token_id if lm.needs_bos(model_spec) else None
    pos = PosTable.load(index_path, opts.pos_min_share) if opts.pos_filter else None

    def one_pass() -> Record:
        rec = Record(seq, index.vocab_size)
        acc = Accumulator(index, AccumulatorConfig(session=False))  # the session memory is read below, in step
        stream = sessions.online(seq, index.vocab_size)
        for p, lp, start in progress.track(lm_rows(model, bos, seq, window, stride), "scoring", total=rec.n):
            acc.observe(seq[max(0, p - 1) : p + 1])
            at, sd = next(stream)
            assert at == p  # the LM's rows come in order, one per target
            rec.fill(p, lp, start, acc, sd, opts.n_candidates, opts.mu, pos)
        rec.lm_lp = np.log(rec.p_lm)  # as `mixed` computes it, so a mixer that is off gains exactly 0
        return rec

    rec = one_pass()
    prior = None
    if opts.session and opts.prior_tokens > 0:
        specs, segs = prior_text(index, tok, opts.prior_tokens, opts.max_tokens)
        if sum(map(len, segs)) > 64:
            prior = (specs, *session_record(model, bos, segs, index.vocab_size, window, stride))
    return summarize(rec, index, index_path, heldout, opts, window, stride, ctx, pos, prior,
                     timing=(model, bos, seq) if opts.timing else None)


def summarize(rec: Record, index: Index, index_path: str | Path, heldout: str, opts: EvalOptions, window: int,
              stride: int, ctx: int, pos: PosTable | None, prior: tuple | None, timing: tuple | None = None) -> dict:
    """The mixer's fit on the dev positions and every figure on the test positions, from the one record."""
    import torch

    n_dev = max(1, int(rec.n * opts.dev_fraction))
    dev, test = slice(0, n_dev), slice(n_dev, rec.n)
    names = gates.names(index)
    vec_t = [gates.vector(f, names) for f in rec.phi_t]
    vec_s = [gates.vector(f, sessions.SESSION_FEATURES) for f in rec.phi_s]
    prior_part, prior_rep = None, {"reason": "no session prior (--prior-tokens 0, --no-session or no text)"}
    if prior is not None:  # the session part fitted by the same fitter on the index's own text (`prior_text`)
        specs, pp_lm, pp_s, pphi_s = prior
        pf = fit(pp_lm, np.zeros_like(pp_lm), pp_s, [None] * len(pp_lm), pphi_s)["session"]
        prior_part = pf.session if pf.shipped else None
        prior_rep = {"text": specs, "tokens": len(pp_lm), "shipped": pf.shipped, "mixer": pf.to_json()}
    fits = fit(rec.p_lm[dev], rec.p_t[dev], rec.p_s[dev], vec_t[:n_dev], vec_s[:n_dev], session=opts.session,
               table_features=names, prior=prior_part)
    gate = fits["overlay"]
    ov_lp, ov_hit, weights = mixed(rec, gate)
    st_lp, st_hit, _ = mixed(rec, fits["static"])
    so_lp, so_hit, _ = mixed(rec, fits["session"])
    best = oracle(rec.p_lm[test], rec.p_t[test], rec.p_s[test], vec_t[n_dev:], vec_s[n_dev:], opts.session, names)
    or_lp, or_hit, or_w = mixed(rec, best)
    lams = weights[:, 1]
    fixed = {lam: mixed(rec, Mixer.fixed(lam))[0] for lam in opts.lams}  # P_T with one λ everywhere
    fixed_best = max(fixed, key=lambda k: fixed[k][dev].mean())
    vote = {lam: votes(rec, lam) for lam in opts.lams}
    lam_v = max(opts.lams, key=lambda k: vote[k][0][dev].mean())
    sel = {beta: select(rec, beta, opts.select_floor) for beta in opts.betas}
    beta_s = max(opts.betas, key=lambda b: sel[b][2][dev].mean())

    def fig(lp: np.ndarray, hit: np.ndarray | None) -> dict:
        out = {"ppl": float(math.exp(-lp[test].mean()))}
        return ({"top1": float(hit[test].mean())} | out) if hit is not None else out

    if timing is not None:
        model, bos, seq = timing
        latency = latency_ratio(index, model, bos, seq, opts.gen_tokens, opts.latency_runs, opts.n_candidates, gate)
        lookup = lookup_scaling(index, seq, opts.scale_base, opts.lookup_steps, opts.lookup_rounds, opts.n_candidates)
    else:
        latency, lookup = {"ratio": float("nan")}, {}
    lm_context = {"mode": "full" if opts.window is None else "window", "window": window, "stride": stride,
                  "model_context": ctx, "longest_context_tokens": int((np.arange(rec.n) + 1 - rec.ctx_start).max())}
    contract = {
        "tokens": int(rec.n - n_dev), "n_candidates": opts.n_candidates,
        "lm": fig(rec.lm_lp, rec.lm_hit), "table": fig(np.log(rec.p_t), rec.t_hit), "overlay": fig(ov_lp, ov_hit),
        "recall_at_n": float(rec.recall[test].mean()), "latency_ratio": latency["ratio"],
        "bytes_per_token": index.bytes_per_token(),
        "lookup_p99_ms": {k: v["p99_ms"] for k, v in lookup.items()},
        "lm_context": lm_context,  # which LM the `lm` figures (and every ratio) are against
    }
    gain = ov_lp[test] - rec.lm_lp[test]
    lo, hi, block = block_ci(gain)
    or_gain = or_lp[test] - rec.lm_lp[test]
    extra = {
        "heldout": heldout, "index": str(index_path), "index_tokens": index.n_tokens, "dev_tokens": n_dev,
        # the test half's gain over the LM with its block-bootstrap 95% interval: is the ratio more than noise?
        "test_gain": {"nats_per_token": float(gain.mean()), "ci95": [lo, hi], "bootstrap_block": block,
                      "ppl_ratio": float(math.exp(-gain.mean())), "ppl_ratio_ci95": [math.exp(-hi), math.exp(-lo)]},
        "per_token": per_token(gain),
        # the ceiling for fixed weights: the best constant weights chosen on the test half itself
        "oracle": {**fig(or_lp, or_hit), "ppl_ratio": float(math.exp(-or_gain.mean())),
                   "weights": {k: float(or_w[test, i].mean()) for i, k in enumerate(("lm", "table", "session"))},
                   "gate_share_of_oracle_gain": (float(gain.mean() / or_gain.mean()) if or_gain.mean() > 0
                                                 else None), "per_token": per_token(or_gain)},
        "threads": torch.get_num_threads(), "lm_window": window, "lm_stride": stride, "lm_context": lm_context,
        "gate": gate.to_json(), "session_prior": prior_rep,
        "lam_test": {"mean": float(lams[test].mean()), "share_nonzero": float((lams[test] > 1e-6).mean()),
                     "p90": float(np.percentile(lams[test], 90))},
        "weights_test": {k: float(weights[test, i].mean()) for i, k in enumerate(("lm", "table", "session"))},
        # which part of a gain comes from the static index and which from the session memory
        "static_only": {**fig(st_lp, st_hit), "gate": fits["static"].to_json()},
        "session_only": {**fig(so_lp, so_hit), "gate": fits["session"].to_json()},
        "session_table": fig(np.log(rec.p_s), rec.s_hit),  # P_S alone
        "session": opts.session,
        "gain_by_distance": _gain_by_distance(rec.s_match[test], rec.s_prev[test], rec.ctx_start[test],
                                              {"overlay": ov_lp[test], "static_only": st_lp[test],
                                               "session_only": so_lp[test]}, rec.lm_lp[test]),
        "seen_share": float(np.mean([f is not None for f in rec.phi_t[n_dev:]])),
        "gain_by_match": _gain_by_match(rec.match[test], ov_lp[test], rec.lm_lp[test]),
        "fixed_lam": {"lam": float(fixed_best), **fig(fixed[fixed_best], None),
                      "by_lam": {str(k): fig(v, None) for k, v in fixed.items()}},
        "previous_mixture": {"lam": lam_v, **fig(*vote[lam_v]),
                             "by_lam": {str(k): fig(*v) for k, v in vote.items()}},
        "lam": lam_v, "beta": beta_s,
        "select": fig(sel[beta_s][1], sel[beta_s][2]), "select_floor": opts.select_floor,
        "mixture_by_lam": {str(k): fig(*v) for k, v in vote.items()},
        "select_by_beta": {str(b): fig(v[1], v[2]) for b, v in sel.items()},
        "lm_top1_in_candidates": float(rec.lm_top_in[test].mean()),
        "recall_mixture_candidates": float(rec.recall_mix[test].mean()),
        "long_match_share": float((rec.match[test] >= 8).mean()),
        "latency": latency, "lookup": lookup, "sizes": index.sizes(),
    }
    if pos is not None:
        extra["select_pos"] = _select_pos(rec, opts, beta_s, sel[beta_s], fig, test)
    return {"contract": contract, "extra": extra, "gate": gate}


def _select_pos(rec: Record, opts: EvalOptions, beta_plain: float, plain: tuple, fig: Any, test: slice) -> dict:
    """Select after the syntactic filter, beside plain select (the decisions changed: at plain select's beta)."""
    n_dev = test.start
    by = {beta: select(rec, beta, opts.select_floor, filtered=True) for beta in opts.betas}
    beta = max(opts.betas, key=lambda b: by[b][2][:n_dev].mean())
    pick, lp, hit = by[beta]
    keep = [s[3] for s in rec.sel[test]]
    table = np.array([bool(s[4]) for s in rec.sel[test]])
    cands = [s[0] for s in rec.sel[test]]
    true = rec.true[test]
    same = by[beta_plain]
    changed = (plain[0] != same[0])[test]
    return {
        **fig(lp, hit), "beta": beta, "min_share": opts.pos_min_share,
        # recall as plain recall@N: table candidates only
        "recall_at_n": float(np.mean([tb and t in set(c[k].tolist())
                                      for c, k, t, tb in zip(cands, keep, true, table, strict=True)])),
        "dropped_per_step": float(np.mean([(~k).sum() for k in keep])),
        "true_token_dropped": float(np.mean([bool((c[~k] == t).any()) for c, k, t in zip(cands, keep, true, strict=True)])),
        # decisions the filter changed, and whether the change fixed or broke one
        "decisions_changed": float(changed.mean()),
        "changed_now_right": float((changed & (same[2][test] > 0)).mean()),
        "changed_was_right": float((changed & (plain[2][test] > 0)).mean()),
        "by_beta": {str(b): fig(v[1], v[2]) for b, v in by.items()},
    }


def _gate_line(g: dict) -> str:
    r = g.get("report", {})
    ci = r.get("oof_gain_ci95")
    return (f"{'shipped ' + str(g.get('kind')) if g.get('shipped') else 'off (the LM)'}: out-of-fold dev gain "
            f"{r.get('oof_gain_nats_per_token', 0.0):+.4f} nats/token"
            + (f" (95% [{ci[0]:+.4f}, {ci[1]:+.4f}])" if ci else ""))


def _prior_line(prior: dict) -> str:
    if "mixer" not in prior:
        return "  session prior: " + prior["reason"]
    m, r = prior["mixer"], prior["mixer"].get("report", {})
    ci = r.get("oof_gain_ci95") or [math.nan, math.nan]
    return (f"  session prior: fitted on {prior['tokens']} tokens of {', '.join(prior['text'])}: "
            + (f"{m['kind']} proven there" if prior["shipped"] else "nothing proven there (no prior)")
            + f" (its out-of-fold gain there {r.get('oof_gain_nats_per_token', 0.0):+.4f} nats/token, 95% "
            f"[{ci[0]:+.4f}, {ci[1]:+.4f}])")


def _gain_by_distance(match: np.ndarray, prev: np.ndarray, start: np.ndarray, lps: dict[str, np.ndarray],
                      base: np.ndarray) -> dict:
    """Test gain over the LM (nats/token) by where the session's longest match last occurred: inside the LM's
    own context (the continuation it predicts from, prev + 1, is at or after the window's first token),
    beyond it (only a memory can bring it back), or no session match."""
    groups = {"no session match": match == 0, "previous occurrence in the LM's context": (match > 0) & (prev + 1 >= start),
              "previous occurrence beyond the LM's context": (match > 0) & (prev + 1 < start)}
    out = {}
    for name, m in groups.items():
        out[name] = {"share": float(m.mean()), **{k: float((v[m] - base[m]).mean()) if m.any() else 0.0
                                                  for k, v in lps.items()}}
    return out


def _gain_by_match(match: np.ndarray, ov: np.ndarray, base: np.ndarray) -> dict:
    """Test log-likelihood gain over the LM (nats/token) by the longest match's length bucket."""
    out = {}
    for name, lo, hi in (("0", 0, 0), ("1-2", 1, 2), ("3-4", 3, 4), ("5-7", 5, 7), ("8+", 8, 10**9)):
        m = (match >= lo) & (match <= hi)
        if m.any():
            out[name] = {"share": float(m.mean()), "gain_nats": float((ov[m] - base[m]).mean())}
    return out


def render(res: dict) -> str:
    c, x = res["contract"], res["extra"]
    lines = [
        f"held-out {x['heldout']}: {c['tokens']} test tokens (+{x['dev_tokens']} dev), index {x['index']} "
        f"({x['index_tokens']} tokens), {x['threads']} torch thread(s), "
        + (f"the LM at its full context (up to {x['lm_context']['model_context']} tokens; here up to "
           f"{x['lm_context']['longest_context_tokens']})" if x["lm_context"]["mode"] == "full" else
           f"LM windows of {x['lm_window']} tokens (stride {x['lm_stride']}; not the LM's full context)"),
        f"{'':34} {'top-1':>8} {'ppl':>10}",
        f"{'LM alone':34} {c['lm']['top1']:8.4f} {c['lm']['ppl']:10.2f}",
        f"{'table alone (∞-gram P_T)':34} {c['table']['top1']:8.4f} {c['table']['ppl']:10.2f}",
        f"{'overlay mixture (gated)':34} {c['overlay']['top1']:8.4f} {c['overlay']['ppl']:10.2f}   "
        + _gate_line(x["gate"]) + f"; test weights LM {x['weights_test']['lm']:.3f}, table "
        f"{x['weights_test']['table']:.3f}, session {x['weights_test']['session']:.3f}",
        f"{'  overlay ppl / LM ppl (test)':34} {'':8} {x['test_gain']['ppl_ratio']:10.4f}   95% block-bootstrap "
        f"[{x['test_gain']['ppl_ratio_ci95'][0]:.4f}, {x['test_gain']['ppl_ratio_ci95'][1]:.4f}]",
        f"{'  oracle (fixed weights, hindsight)':34} {x['oracle']['top1']:8.4f} {x['oracle']['ppl']:10.2f}   "
        f"ratio {x['oracle']['ppl_ratio']:.4f}, weights LM {x['oracle']['weights']['lm']:.3f}, table "
        f"{x['oracle']['weights']['table']:.3f}, session {x['oracle']['weights']['session']:.3f}; the gate gets "
        + (f"{x['oracle']['gate_share_of_oracle_gain']:.0%} of its gain" if x["oracle"]["gate_share_of_oracle_gain"]
           is not None else "nothing to get (the oracle is the LM)"),
        "  per token (test): {better_share:.1%} better, {worse_share:.1%} worse than the LM; best decile "
        "{best_decile_nats_per_token:+.3f} nats each, worst decile {worst_decile_nats_per_token:+.3f}".format(
            **x["per_token"]),
        f"{'  static index only (gated)':34} {x['static_only']['top1']:8.4f} {x['static_only']['ppl']:10.2f}   "
        + _gate_line(x["static_only"]["gate"]),
        *([f"{'  session memory only (gated)':34} {x['session_only']['top1']:8.4f} {x['session_only']['ppl']:10.2f}   "
           + _gate_line(x["session_only"]["gate"]),
           f"{'  session table P_S alone':34} {x['session_table']['top1']:8.4f} {x['session_table']['ppl']:10.2f}",
           _prior_line(x["session_prior"])]
          if x.get("session") else ["  (session memory off: --no-session)"]),
        f"{'  P_T with one λ (' + str(x['fixed_lam']['lam']) + ', dev-tuned)':34} {'':8} {x['fixed_lam']['ppl']:10.2f}",
        f"{'  previous mixture (votes, λ=' + str(x['previous_mixture']['lam']) + ')':34} "
        f"{x['previous_mixture']['top1']:8.4f} {x['previous_mixture']['ppl']:10.2f}",
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
        *([f"latency: overlay {x['latency']['overlay_ms_per_token']:.1f} ms/token vs LM "
           f"{x['latency']['lm_ms_per_token']:.1f} in separate runs ({x['latency']['separate_runs_ratio']:.3f}); "
           f"inside overlay runs {c['latency_ratio']:.3f}"] if "lm_ms_per_token" in x["latency"] else []),
        f"index: {c['bytes_per_token']:.2f} bytes/token ("
        + ", ".join(f"{k} {v['bytes_per_token']:.2f}" for k, v in x["sizes"].items()) + ")",
        "gain over the LM by match length (test): " + ", ".join(
            f"{k}: {v['share']:.2f} of tokens, {v['gain_nats']:+.4f} nats" for k, v in x["gain_by_match"].items()),
        *(["gain over the LM by the session match's previous occurrence (test, nats/token: overlay / static only / "
           "session only): " + "; ".join(f"{k}: {v['share']:.2f} of tokens, {v['overlay']:+.4f} / "
                                          f"{v['static_only']:+.4f} / {v['session_only']:+.4f}"
                                          for k, v in x["gain_by_distance"].items())] if x.get("session") else []),
    ]
    for k, v in x["lookup"].items():
        lines.append(f"lookup {k:>4} ({v['corpus_tokens']} tokens): p50 {v['p50_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms"
                     f" (best of rounds per step: p99 {v['best_of_rounds_p99_ms']:.3f}); link tables only: p50 "
                     f"{v['links_only_p50_ms']:.3f} ms, p99 {v['links_only_p99_ms']:.3f} ms "
                     f"({v['links_only_best_of_rounds_p99_ms']:.3f})")
    return "\n".join(lines)

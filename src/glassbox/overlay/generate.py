"""The overlay step loop: accumulator candidates → the LM as selector → emit → trace; greedy, beam or sampled.

Modes (the final score of candidate t; every term is written into the trace):
  select   the seed's loop, faithfully: the LM chooses only among the table's top-N candidates.
           final = log p_LM(t | t ∈ C) + beta · log p_table(t)          (p_LM renormalized over C)
           If the table offers no candidate at all, the LM's own top-k are used and tagged "lm-fallback".
  mixture  the measured combination: candidates = table top-N ∪ the LM's top-k (tagged "lm");
           final = log((1 - λ) · p_LM(t) + λ · P_T(t))                   (a proper distribution over V)
           P_T is the ∞-gram table distribution (overlay/ngram.py, "p_inf" in the trace); λ comes from the
           fitted mixer (overlay/mixer.py; its features, overlay/gate.py: the match length, its count, its
           continuations, the LM's confidence; written by `overlay eval --save-gate`, or given in the config),
           else the fixed `lam` (the same mixer with constant weights); λ = 0 wherever the tables saw nothing.
           Each step records λ and the features that set it.
           With a session part in the gate (overlay/session.py): final = log(π_LM p_LM + π_T P_T + π_S P_S),
           P_S the session memory (the prompt and the tokens emitted so far; "p_session" in the trace, its
           continuations join the candidates tagged "session"); the step records the three weights and the
           session features ("mix": weights, session_features, session_match).
  table    no LM (`--no-lm`): final = log p_table(t)
In every mode human feedback adds `feedback_nats · net(+1 prefer / -1 reject)` for the context (a, b) → t,
and preferred tokens always join the candidates. p_table is the accumulator's score normalized and smoothed
(accumulator.table_distribution). Stop rules: max tokens, the end token, a repeated `repeat_stop`-gram, no
candidate left, and the best table score below `min_score` (off at 0).

Opt-in parts of the seed's loop (off by default; the default output and trace are unchanged):
  --pos-filter            the syntactic filter (overlay/pos.py): after ranking, drop a candidate whose part of
                          speech cannot follow the previous token's (share below `pos_min_share`), take the next.
  --adaptive-temperature  sampling temperature from the flatness of the candidates' distribution:
                          p = softmax(final), h = H(p) / log(n) in [0, 1] (1 = flat, 0 = one candidate),
                          T = temperature · exp(gamma · (h0 − h)), h0 = 0.5, gamma = 1: a flat distribution
                          (h → 1) is sampled cooler (T → 0.61·temperature), a sharp one (h → 0) warmer (1.65·).
                          T is monotonically decreasing in h; each step's h and T are in the trace.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from glassbox.errors import BadInput
from glassbox.logprob import logsumexp
from glassbox.overlay.accumulator import SOURCES, Accumulator, AccumulatorConfig, Feedback, table_distribution
from glassbox.overlay.answers import AnswerLinks
from glassbox.overlay.gate import features
from glassbox.overlay.index import Index
from glassbox.overlay.mixer import Mixer, mix
from glassbox.overlay.pos import PosTable

MODES = ("mixture", "select", "table")


@dataclass
class GenerateConfig:
    mode: str = "mixture"
    max_tokens: int = 60
    n_candidates: int = 32
    lm_top_k: int = 8
    lam: float = 0.1
    beta: float = 0.3
    mu: float = 0.1
    feedback_nats: float = 20.0
    beam: int = 1
    temperature: float = 0.0
    seed: int = 0
    repeat_stop: int = 8
    min_score: float = 0.0  # stop when no candidate's table score reaches this (the notes' threshold)
    pos_filter: bool = False  # the syntactic filter (allowed_next[pos]); needs the index's pos.npz
    pos_min_share: float = 0.002  # a tag transition rarer than this share of the previous tag's is not allowed
    adaptive_temperature: bool = False  # sampling temperature from the distribution's flatness (see above)
    gate: dict | None = None  # the fitted mixer (overlay/mixer.py Mixer.to_json()); None: the fixed lam
    accumulator: AccumulatorConfig = field(default_factory=AccumulatorConfig)

    def check(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("max_tokens", "n_candidates", "beam"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.lam <= 1.0 or not 0.0 <= self.mu <= 1.0:
            raise BadInput("lam and mu must lie in [0, 1]")
        if self.temperature < 0:
            raise BadInput("--temperature must be >= 0")
        if self.adaptive_temperature and self.temperature <= 0:
            raise BadInput("--adaptive-temperature needs a base --temperature > 0 (it only matters when sampling)")
        if not 0.0 <= self.pos_min_share < 1.0:
            raise BadInput("--pos-min-share must lie in [0, 1)")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> GenerateConfig:
        d = dict(d)
        d["accumulator"] = AccumulatorConfig.from_json(d.get("accumulator", {}))
        return cls(**d)


class LMRunner:
    """The selector's forward passes: one token at a time with a KV cache, or a batch of equal-length
    contexts without one (beam search). Returns log-probabilities over the vocabulary as numpy."""

    def __init__(self, model: Any, bos_id: int | None = None):
        import torch

        self.torch = torch
        self.model = model
        self.bos = [bos_id] if bos_id is not None else []
        self.cache: Any = None
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def _logp(self, logits: Any) -> np.ndarray:
        return self.torch.log_softmax(logits.float(), dim=-1).numpy()

    def feed(self, ids: list[int]) -> np.ndarray:
        """Log-probs [len(ids), V] after each of `ids`, read on top of the cache (everything fed since
        `start`), which they join: the LM sees its whole context, as in generation."""
        with self.torch.inference_mode():
            kw = {self._cache_kw: self.cache} if self.cache is not None else {}
            out = self.model(self.torch.tensor([ids]), use_cache=True, **kw)
        self.cache = out.get("cache", None) or out.get("past_key_values", None)
        return self._logp(out.logits[0])

    def start(self, ids: list[int]) -> np.ndarray:
        self.cache = None
        return self.feed(self.bos + ids)[-1]

    def advance(self, token: int) -> np.ndarray:
        return self.feed([token])[-1]

    def batch(self, contexts: list[list[int]]) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.model(self.torch.tensor([self.bos + c for c in contexts]), use_cache=False)
        return self._logp(out.logits[:, -1])


def score_step(acc: Accumulator, lm_logp: np.ndarray | None, context: list[int], cfg: GenerateConfig,
               fallback_k: int = 8, pos: PosTable | None = None) -> dict:
    """Candidates and their scores for the next token after `context`: a trace step without texts."""
    total = acc.total()
    ids = [int(t) for t in acc.candidates(cfg.n_candidates, total)]
    origin = {t: "table" for t in ids}
    mixing = cfg.mode == "mixture" and lm_logp is not None
    # the fitted gate, or one fixed λ for the static table: the same mixer either way
    mixer = (Mixer.from_json(cfg.gate) if cfg.gate is not None else Mixer.fixed(cfg.lam)) if mixing else None
    sdist = acc.session.dist() if mixing and acc.session is not None else None
    if sdist is not None and mixer is not None and mixer.uses_session:
        for t in sdist.top(cfg.lm_top_k):  # what the session memory would continue with
            if t not in origin:
                ids.append(t)
                origin[t] = "session"
    a = context[-2] if len(context) >= 2 else -1
    fb = acc.feedback.get((a, context[-1]), {})
    for t, delta in fb.items():
        if delta > 0 and t not in origin:
            ids.append(t)
            origin[t] = "feedback"
    if lm_logp is not None and (cfg.mode == "mixture" or not ids):
        tag = "lm" if cfg.mode == "mixture" else "lm-fallback"
        k = cfg.lm_top_k if cfg.mode == "mixture" else fallback_k
        for t in np.argpartition(-lm_logp, k)[:k].tolist():
            if t not in origin:
                ids.append(t)
                origin[t] = tag
    if not ids:
        return {"candidates": [], "lm_top": _argmax(lm_logp), "universe": acc.universe_size(),
                "match_length": acc.match_length}
    arr = np.array(ids)
    p_tab = table_distribution(total, acc.index.unigram, cfg.mu)[arr]
    fbv = np.array([fb.get(t, 0.0) for t in ids])
    mixed = None
    if cfg.mode == "table" or lm_logp is None:
        final = np.log(p_tab)
    elif cfg.mode == "select":
        final = select_final(lm_logp[arr], p_tab, cfg.beta)
    else:
        p_inf = acc.table().prob(arr) if acc.index.ngram is not None else acc.index.p0[arr]
        maxp = float(np.exp(np.max(lm_logp)))
        phi = features(acc.levels, maxp, acc.index)
        phi_s = sdist.features(maxp) if sdist is not None else None
        p_ses = sdist.prob(arr) if sdist is not None else None
        assert mixer is not None
        w = mixer.weights(phi, phi_s)
        mixed = {"lam": w[1], "features": phi, "gate": "fitted" if cfg.gate is not None else "fixed",
               "weights": {"lm": w[0], "table": w[1], "session": w[2]}, "session_features": phi_s,
               "session_match": sdist.match if sdist is not None else None}
        final = np.log(mix(w, np.exp(lm_logp[arr].astype(np.float64)), p_inf, p_ses))
    final = final + cfg.feedback_nats * fbv
    order = np.argsort(-final, kind="stable")
    terms = acc.terms(arr)
    cands = []
    for i in order.tolist():
        t = ids[i]
        term = {s: float(terms[i, j]) for j, s in enumerate(SOURCES)}
        srcs = [s for s in SOURCES if term[s] != 0.0]
        if origin[t] != "table" and origin[t] not in srcs:
            srcs.append(origin[t])
        cands.append({
            "token": t, "sources": srcs, "terms": term, "table": float(total[t]), "p_table": float(p_tab[i]),
            "lm_logprob": None if lm_logp is None else float(lm_logp[t]), "feedback": float(fbv[i]),
            "final": float(final[i]),
        })
        if mixed is not None:
            cands[-1]["p_inf"] = float(p_inf[i])
            if p_ses is not None:
                cands[-1]["p_session"] = float(p_ses[i])
    step = {"candidates": cands, "lm_top": _argmax(lm_logp), "universe": acc.universe_size(),
            "match_length": acc.match_length}
    if mixed is not None:
        step["mix"] = mixed
    if pos is not None:
        pos_filter(step, context[-1], pos)
    return step


def select_final(lm_logp: np.ndarray, p_table: np.ndarray, beta: float) -> np.ndarray:
    """Select mode's scores over the candidates: log p_LM renormalized over them + β · log p_table."""
    lc = np.asarray(lm_logp, np.float64)
    return lc - logsumexp(lc) + beta * np.log(p_table)


def pos_filter(step: dict, prev: int, pos: PosTable) -> None:
    """Drop (in rank order) the candidates whose tag cannot follow `prev`'s; record them and why in step["pos"].
    If every candidate would go, keep them all (the filter never ends a generation)."""
    kept, dropped = [], []
    for c in step["candidates"]:
        c["pos"] = pos.tag(c["token"])
        why = pos.check(prev, c["token"])
        if why is None:
            kept.append(c)
        else:
            dropped.append({"token": c["token"], "final": c["final"], "sources": c["sources"], **why})
    step["pos"] = {"prev_tag": pos.tag(prev), "min_share": pos.min_share, "filtered": dropped,
                   "kept_all": not kept and bool(dropped)}
    if kept:
        step["candidates"] = kept


def _argmax(x: np.ndarray | None) -> int | None:
    return None if x is None else int(np.argmax(x))


def adaptive_temperature(final: np.ndarray, base: float, gamma: float = 1.0, h0: float = 0.5) -> tuple[float, float]:
    """(T, h): h = normalized entropy of softmax(final) (0 sharp … 1 flat); T = base · exp(gamma · (h0 − h))."""
    f = np.asarray(final, np.float64)
    if len(f) < 2:
        return base * math.exp(gamma * h0), 0.0
    p = np.exp(f - f.max())
    p /= p.sum()
    h = float(-(p * np.log(np.clip(p, 1e-300, None))).sum() / math.log(len(f)))
    return base * math.exp(gamma * (h0 - h)), h


def _choose(step: dict, cfg: GenerateConfig, rng: np.random.Generator) -> int:
    cands = step["candidates"]
    if cfg.temperature <= 0:
        return 0
    temperature = cfg.temperature
    if cfg.adaptive_temperature:
        temperature, h = adaptive_temperature(np.array([c["final"] for c in cands]), cfg.temperature)
        step["temperature"] = {"base": cfg.temperature, "flatness": h, "effective": temperature}
    f = np.array([c["final"] for c in cands]) / temperature
    p = np.exp(f - f.max())
    return int(rng.choice(len(cands), p=p / p.sum()))


def _stop(token: int, out: list[int], context: list[int], cfg: GenerateConfig, end_ids: set[int]) -> str | None:
    if token in end_ids:
        return "end token"
    r = cfg.repeat_stop
    if r and len(out) >= r:
        gram = context[-r:]
        hay = context[:-1]
        for i in range(len(hay) - r + 1):
            if hay[i : i + r] == gram:
                return "repetition"
    if len(out) >= cfg.max_tokens:
        return "max tokens"
    return None


def _finish(step: dict, choice: int, t0: float) -> dict:
    cands = step["candidates"]
    step["chosen"] = cands[choice]["token"]
    lm_top = step["lm_top"]
    ranks = [i for i, c in enumerate(cands) if c["token"] == lm_top]
    step["lm_top_rank"] = ranks[0] if ranks else None  # where the LM's own favourite ended up (None: absent)
    step["ms"] = (time.perf_counter() - t0) * 1000.0
    return step


def generate(index: Index, prompt_ids: list[int], cfg: GenerateConfig, model: Any = None,
             bos_id: int | None = None, feedback: Feedback | None = None, end_ids: set[int] | None = None,
             answers: AnswerLinks | None = None) -> dict:
    """Generate from `prompt_ids`. Returns {"output_ids", "stop_reason", "steps"}; steps carry token ids only."""
    cfg.check()
    if not prompt_ids:
        raise BadInput("the prompt is empty")
    if cfg.mode != "table" and model is None:
        raise BadInput(f"mode {cfg.mode!r} needs a language model (use --no-lm for the table alone)")
    end_ids = end_ids if end_ids is not None else {index.sep}
    acc = Accumulator(index, cfg.accumulator, feedback, answers)
    pos = PosTable.load(index.path, cfg.pos_min_share) if cfg.pos_filter else None
    for i in range(len(prompt_ids)):
        acc.observe(prompt_ids[: i + 1])
    runner = LMRunner(model, bos_id) if cfg.mode != "table" else None
    if cfg.beam > 1:
        return _beam(acc, prompt_ids, cfg, runner, end_ids, pos)
    rng = np.random.default_rng(cfg.seed)
    context = list(prompt_ids)
    out: list[int] = []
    steps: list[dict] = []
    t0 = time.perf_counter()
    lm_s = 0.0  # time inside the LM's forward passes, to split a step's cost into LM and overlay
    lm_logp = runner.start(context) if runner else None
    lm_s += time.perf_counter() - t0
    reason = "max tokens"
    while True:
        step = score_step(acc, lm_logp, context, cfg, pos=pos)
        if not step["candidates"]:
            reason = "no candidates"
            break
        if cfg.min_score > 0 and max(c["table"] for c in step["candidates"]) < cfg.min_score:
            reason = "low score"
            break
        step = _finish(step, _choose(step, cfg, rng), t0)
        step["step"] = len(steps)
        step["context_ids"] = context[-2:]
        steps.append(step)
        token = step["chosen"]
        context.append(token)
        out.append(token)
        stop = _stop(token, out, context, cfg, end_ids)
        if stop:
            reason = stop
            break
        t0 = time.perf_counter()
        acc.observe(context)
        t1 = time.perf_counter()
        lm_logp = runner.advance(token) if runner else None
        lm_s += time.perf_counter() - t1
    return {"output_ids": out, "stop_reason": reason, "steps": steps, "lm_ms": lm_s * 1000.0}


def _beam(acc: Accumulator, prompt_ids: list[int], cfg: GenerateConfig, runner: LMRunner | None,
          end_ids: set[int], pos: PosTable | None = None) -> dict:
    """Beam search: each beam carries its own accumulator; the score of a beam is the sum of its steps' final
    scores. Beams grow in lockstep, so one batched forward (no padding) scores them all."""
    beams = [{"context": list(prompt_ids), "acc": acc, "score": 0.0, "steps": [], "out": [], "stop": None}]
    while any(b["stop"] is None for b in beams):
        t0 = time.perf_counter()
        live = [b for b in beams if b["stop"] is None]
        logps = runner.batch([b["context"] for b in live]) if runner else [None] * len(live)
        grown = [(b["score"], b, None, None) for b in beams if b["stop"] is not None]
        for b, lp in zip(live, logps, strict=True):
            step = score_step(b["acc"], lp, b["context"], cfg, pos=pos)
            low = cfg.min_score > 0 and max((c["table"] for c in step["candidates"]), default=0.0) < cfg.min_score
            if not step["candidates"] or low:
                b["stop"] = "low score" if step["candidates"] else "no candidates"
                grown.append((b["score"], b, None, None))
                continue
            for choice, c in enumerate(step["candidates"][: cfg.beam]):
                grown.append((b["score"] + c["final"], b, step, choice))
        grown.sort(key=lambda g: -g[0])
        beams = []
        for score, b, step, choice in grown[: cfg.beam]:
            if step is None:
                beams.append(b)
                continue
            s = _finish(dict(step), choice, t0)
            s["step"] = len(b["steps"])
            s["context_ids"] = b["context"][-2:]
            context = b["context"] + [s["chosen"]]
            out = b["out"] + [s["chosen"]]
            nb = {"context": context, "acc": b["acc"], "score": score, "steps": b["steps"] + [s], "out": out,
                  "stop": _stop(s["chosen"], out, context, cfg, end_ids)}
            if nb["stop"] is None:
                nb["acc"] = b["acc"].copy()
                nb["acc"].observe(context)
            beams.append(nb)
    best = max(beams, key=lambda b: b["score"])
    return {"output_ids": best["out"], "stop_reason": best["stop"], "steps": best["steps"],
            "beam_score": best["score"]}

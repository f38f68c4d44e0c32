"""The Global Score Accumulator: every emitted token casts votes along its links; candidates are the top N.

For each new token w of the text (prompt tokens first, then each emitted one), per source s:
    score_s *= decay_s                                   recency: old votes fade (decay 1 = the notes' loop)
    score_s[t] += weight_s * base_w(w → t) / repeat_base ** repeat[t]      for every link (t, base_w)
    score_s[t] = 0 where score_s[t] < epsilon             pruning keeps the universe small
Sources (each kept separately, so a trace shows every term of a candidate's score):
    next      next-token links of w: base_w = P(t | w)
    cooc      co-occurrence links of w (t seen 2..W tokens after w, weighted 1/distance)
    semantic  the notes' semantic neighbours C_K(w): nearest tokens by embedding cosine (if the index has them);
              weight 0 by default, because they cost next-token recall (measured in the issue note)
    triad     the triad bonus: P(t | a, b) for the last two tokens (a, b), read from the suffix array
    suffix    the longest match of the context (3+ tokens) in the corpus: P(t | match) (the ∞-gram chain of
              overlay/ngram.py, carried from step to step, so no step searches the whole suffix array)
    feedback  net human feedback (+1 prefer, -1 reject) for the context (a, b) → t; no fatigue
The repeat penalty ("synaptic fatigue"): repeat[t] counts how often t was emitted in the last
`repeat_window` tokens (repeat_on="emit", default), or how many votes t received (repeat_on="vote", the
notes' literal wording, which silences frequent tokens after a few steps; measured in the issue note).
Consolidated answers (overlay/answers.py, opt-in) add their counts to the next and triad sources.
All state is a few arrays of vocabulary size, so the cost of a step does not grow with the corpus.
`table()` is the step's proper table distribution P_T (overlay/ngram.py), which the mixture uses; `session`
holds the session memory P_S (overlay/session.py): every observed token is inserted there too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from glassbox.overlay.index import Index
from glassbox.overlay.ngram import Chain, Level, TableDist
from glassbox.overlay.session import Session

if TYPE_CHECKING:
    from glassbox.overlay.answers import AnswerLinks

SOURCES = ("next", "cooc", "semantic", "triad", "suffix", "feedback")


def _default_weights() -> dict[str, float]:
    return {"next": 1.0, "cooc": 0.1, "semantic": 0.0, "triad": 1.0, "suffix": 2.0, "feedback": 1.0}


def _default_decay() -> dict[str, float]:
    # The immediate-next sources are about the very next position, so their old votes are dropped;
    # co-occurrence votes are about the next few positions and fade slowly.
    return {"next": 0.0, "cooc": 0.7, "semantic": 0.7, "triad": 0.0, "suffix": 0.0, "feedback": 0.0}


@dataclass
class AccumulatorConfig:
    weight: dict[str, float] = field(default_factory=_default_weights)
    decay: dict[str, float] = field(default_factory=_default_decay)
    repeat_base: float = 10.0
    repeat_on: str = "emit"
    repeat_window: int = 4
    epsilon: float = 1e-3
    session: bool = True  # keep the session memory (overlay/session.py): counts of the text read so far

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> AccumulatorConfig:
        # traces written before index format 2 carry max_match / cap, which nothing reads any more
        return cls(**{k: v for k, v in d.items() if k not in ("max_match", "cap")})


Feedback = dict[tuple[int, int], dict[int, float]]


class Accumulator:
    def __init__(self, index: Index, config: AccumulatorConfig | None = None, feedback: Feedback | None = None,
                 answers: AnswerLinks | None = None):
        self.index = index
        self.config = config or AccumulatorConfig()
        self.feedback = feedback or {}
        self.answers = answers if answers else None
        v = index.vocab_size
        self.scores = np.zeros((len(SOURCES), v), np.float32)
        self.repeat = np.zeros(v, np.int32)
        self.recent: deque[int] = deque()
        self.match_length = 0
        self.chain = Chain(index.ngram) if index.ngram is not None else None
        self.levels: list[Level] = []
        self.session = Session(v) if self.config.session else None
        c = self.config
        self._w = np.array([c.weight.get(s, 0.0) for s in SOURCES], np.float32)
        self._decay = np.array([c.decay.get(s, 0.0) for s in SOURCES], np.float32)

    def copy(self) -> Accumulator:
        other = Accumulator.__new__(Accumulator)
        other.__dict__.update(self.__dict__)
        other.scores = self.scores.copy()
        other.repeat = self.repeat.copy()
        other.recent = deque(self.recent)
        other.chain = self.chain.copy() if self.chain is not None else None
        other.session = self.session.copy() if self.session is not None else None
        return other

    def observe(self, context: list[int]) -> None:
        """Take in the newest token context[-1] (the rest of `context` is what came before it)."""
        c = self.config
        w = int(context[-1])
        if self.session is not None:
            self.session.add(w)
        fb = SOURCES.index("feedback")
        for s, d in enumerate(self._decay):
            if d == 0.0:
                self.scores[s].fill(0.0)
                continue
            row = self.scores[s]
            if d != 1.0:
                row *= d
            if s != fb:
                row[row < c.epsilon] = 0.0  # pruning
        if c.repeat_on == "emit":
            self.repeat[w] += 1
            self.recent.append(w)
            if len(self.recent) > c.repeat_window:
                self.repeat[self.recent.popleft()] -= 1
        for kind in ("next", "cooc", "semantic"):
            ids, base = self.index.links(kind, w)
            if kind == "next" and self.answers is not None and w in self.answers.next:
                n = float(self.index.unigram[w])
                ids, base = _merged(ids, base * n, self.answers.next[w], total=n)
            self._vote(kind, ids, base)
        a = int(context[-2]) if len(context) >= 2 else -1
        answers_triad = self.answers.triad.get((a, w)) if self.answers is not None else None
        if self.chain is None:
            self.levels, self.match_length = [], 0
            if answers_triad:
                self._vote("triad", *_merged(np.zeros(0, np.int64), np.zeros(0), answers_triad))
        else:
            self.levels = self.chain.step(w)
            self.match_length = self.chain.match_length
            pair = next((lv for lv in self.levels if lv.length == 2), None)
            if pair is not None:
                ids, counts = self._counts(pair)
                if answers_triad:
                    self._vote("triad", *_merged(ids, counts, answers_triad))
                else:
                    self._vote("triad", ids, counts / max(1.0, float(counts.sum())))
            elif answers_triad:
                self._vote("triad", *_merged(np.zeros(0, np.int64), np.zeros(0), answers_triad))
            if self.match_length >= 3:
                ids, counts = self._counts(self.levels[-1])
                self._vote("suffix", ids, counts / max(1.0, float(counts.sum())))
        for t, delta in self.feedback.get((a, w), {}).items():
            self.scores[fb, t] += self._w[fb] * delta

    def _counts(self, level: Level) -> tuple[np.ndarray, np.ndarray]:
        self.index.ngram.read(level)
        return level.ids, level.counts.astype(np.float32)

    def table(self) -> TableDist:
        """This step's table distribution P_T(· | context) over the vocabulary (overlay/ngram.py)."""
        return TableDist(self.index.ngram, self.levels, self.index.p0)

    def _vote(self, source: str, ids: np.ndarray, base: np.ndarray) -> None:
        if len(ids) == 0:
            return
        s = SOURCES.index(source)
        fatigue = np.power(self.config.repeat_base, -self.repeat[ids].astype(np.float32))
        self.scores[s, ids] += self._w[s] * base * fatigue
        if self.config.repeat_on == "vote":
            self.repeat[ids] += 1

    def total(self) -> np.ndarray:
        return self.scores.sum(axis=0)

    def candidates(self, n: int, total: np.ndarray | None = None) -> np.ndarray:
        """Token ids of the top n positive total scores, best first."""
        total = self.total() if total is None else total
        live = np.flatnonzero(total > 0)  # the universe: partition only it, not the vocabulary
        if len(live) > n:
            live = live[np.argpartition(-total[live], n - 1)[:n]]
        return live[np.argsort(-total[live], kind="stable")]

    def universe_size(self) -> int:
        return int(np.count_nonzero(self.scores[:-1].any(axis=0)))

    def terms(self, ids: np.ndarray) -> np.ndarray:
        """[len(ids), len(SOURCES)]: each source's part of each candidate's score."""
        return self.scores[:, ids].T


def _merged(ids: np.ndarray, counts: np.ndarray, extra: dict[int, float], total: float | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the corpus (ids, counts) plus the consolidated answers' counts `extra`, as shares of `total`
    (+ the extra counts); total defaults to the sum of `counts` (the next table keeps only its top K)."""
    merged = dict(zip(np.asarray(ids).tolist(), np.asarray(counts, np.float64).tolist(), strict=True))
    for t, n in extra.items():
        merged[t] = merged.get(t, 0.0) + n
    out_ids = np.fromiter(merged, np.int64, len(merged))
    vals = np.fromiter(merged.values(), np.float64, len(merged))
    denom = (float(np.sum(counts)) if total is None else total) + sum(extra.values())
    return out_ids, (vals / max(1.0, denom)).astype(np.float32)


def table_distribution(total: np.ndarray, unigram: np.ndarray, mu: float) -> np.ndarray:
    """The table alone as a distribution over the vocabulary: the accumulator's positive scores,
    normalized, smoothed with the corpus unigram (add-one) at weight mu so no token has probability 0."""
    pos = np.clip(total, 0.0, None).astype(np.float64)
    uni = (unigram + 1.0) / (unigram.sum() + len(unigram))
    s = pos.sum()
    if s <= 0:
        return uni
    return (1.0 - mu) * pos / s + mu * uni

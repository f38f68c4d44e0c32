"""Session memory: a table P_S over the text this session has already read or written (the mixer's third part).

The static index knows its corpus; a text of another genre mostly repeats *itself* (names, phrases, code
identifiers), often further back than the LM's window. P_S is a second table built online from the session's
own tokens (eval: the held-out tokens before the one scored; generate: the prompt and what was emitted),
updated by one insertion per token and read in O(1) per step (dict lookups of the last 1..ORDER tokens).

    P_S^(-1)(w) = 1/V
    P_S^(0)(w)  = max(c(w) − D_0, 0) / n + γ_0 · P_S^(-1)(w)          c: session unigram counts, n tokens read
    P_S^(k)(w)  = max(c(h_k w) − D_k, 0) / c(h_k) + γ_k · P_S^(k−1)(w)  h_k: the last k tokens, k = 1..m
    γ_k         = D_k · N1+(h_k •) / c(h_k)                            so every level sums to 1
m is the longest suffix (≤ ORDER) the session has seen followed by something; D_k = n1 / (n1 + 2 n2) of the
session's own (k+1)-gram count-of-counts, kept up to date at every insertion (clamped to [0.05, 0.95]).
Copies longer than ORDER (a license clause, a repeated passage far beyond the LM's window): a pointer to the
previous occurrence follows the text one token per step while it keeps copying, and adds one more level on
top, the token that came next there, with count 1 and D_ORDER; its length (capped at 16) is the match feature.

Features φ_S (of the context only): match (m or the copy's length, capped at 16, / 4), log_count
(log(1 + c(h_m)) / 4, n at m = 0), concentration (share of h_m's most frequent continuation), sparse (one
continuation seen), lm_maxp (the LM's top prob). How P_S is mixed with the LM and the static table, and
fitted: overlay/mixer.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

ORDER = 5  # contexts of 1..5 tokens: n-grams up to 6
SESSION_FEATURES = ("match", "log_count", "concentration", "sparse", "lm_maxp")


class Session:
    """Counts of the session's n-grams (n ≤ ORDER + 1), keyed by the context tuple; one insertion per token."""

    def __init__(self, vocab: int):
        self.vocab = int(vocab)
        self.hist: list[int] = []
        self.uni = np.zeros(self.vocab, np.float64)
        self.distinct = 0
        self.ctx: dict[tuple[int, ...], dict[int, int]] = {}  # context → {next token: count}
        self.total: dict[tuple[int, ...], int] = {}
        self.top: dict[tuple[int, ...], int] = {}  # the largest continuation count (counts only grow)
        self.last: dict[tuple[int, ...], int] = {}  # position of the last token of the context's last occurrence
        self.n12 = [[0, 0] for _ in range(ORDER + 1)]  # count-of-counts (n1, n2) of k-token contexts + 1
        # the copy pointer: a match longer than ORDER, followed token by token while the text keeps copying
        self.copy_len, self.copy_pos = 0, -1  # match length; position of the token that followed it last time

    def copy(self) -> Session:
        other = Session.__new__(Session)
        other.vocab, other.hist, other.uni, other.distinct = self.vocab, list(self.hist), self.uni.copy(), self.distinct
        other.ctx = {k: dict(v) for k, v in self.ctx.items()}
        other.total, other.top, other.last = dict(self.total), dict(self.top), dict(self.last)
        other.n12 = [list(x) for x in self.n12]
        other.copy_len, other.copy_pos = self.copy_len, self.copy_pos
        return other

    def _counted(self, k: int, c: int) -> None:
        """A (k+1)-gram's count went from c − 1 to c: keep n1, n2 of order k current."""
        n = self.n12[k]
        if c == 1:
            n[0] += 1
        elif c == 2:
            n[0] -= 1
            n[1] += 1
        elif c == 3:
            n[1] -= 1

    def add(self, w: int) -> None:
        """Read one more token of the session (it becomes the continuation of the contexts before it)."""
        w = int(w)
        pos = len(self.hist)
        for k in range(1, min(ORDER, pos) + 1):
            key = tuple(self.hist[pos - k:])
            d = self.ctx.get(key)
            if d is None:
                d = self.ctx[key] = {}
            c = d.get(w, 0) + 1
            d[w] = c
            self.total[key] = self.total.get(key, 0) + 1
            if c > self.top.get(key, 0):
                self.top[key] = c
            self.last[key] = pos - 1
            self._counted(k, c)
        c = int(self.uni[w]) + 1
        self.uni[w] = c
        self.distinct += c == 1
        self._counted(0, c)
        self.hist.append(w)
        if self.copy_len >= ORDER and self.hist[self.copy_pos] == w:  # still copying: one token longer
            self.copy_len += 1
            self.copy_pos += 1
            return
        self.copy_len, self.copy_pos = 0, -1  # else the longest context of ≤ ORDER tokens seen before, if any
        for k in range(1, min(ORDER, pos + 1) + 1):
            e = self.last.get(tuple(self.hist[pos + 1 - k:]))
            if e is None:
                break
            self.copy_len, self.copy_pos = k, e + 1

    def discount(self, k: int) -> float:
        n1, n2 = self.n12[k]
        return min(0.95, max(0.05, n1 / (n1 + 2 * n2))) if n1 + 2 * n2 > 0 else 0.5

    def dist(self) -> SessionDist:
        """P_S(· | the session so far): the levels of the current context the session has seen."""
        levels = []
        n = len(self.hist)
        for k in range(1, min(ORDER, n) + 1):
            key = tuple(self.hist[n - k:])
            d = self.ctx.get(key)
            if d is None:  # a longer context was never seen either (it contains this one)
                break
            levels.append((key, d, self.total[key], self.discount(k)))
        return SessionDist(self, levels)

    @property
    def copying(self) -> bool:
        """A match longer than ORDER: its next token is a level of its own (count 1, the 6-gram discount)."""
        return self.copy_len > ORDER


def online(seq: list[int], vocab: int) -> Iterator[tuple[int, SessionDist]]:
    """(p, P_S after reading seq[0..p]) for p = 0, 1, ...: what predicts seq[p + 1], never seq[p + 1] itself.
    The dist is valid until the next item is drawn (the session keeps growing under it)."""
    session = Session(vocab)
    for p in range(len(seq) - 1):
        session.add(seq[p])
        yield p, session.dist()


class SessionDist:
    """P_S of one step (see the module docstring), over the whole vocabulary."""

    def __init__(self, session: Session, levels: list[tuple[tuple[int, ...], dict[int, int], int, float]]):
        self.s = session
        self.copy_len = session.copy_len if session.copying else 0
        self.copy_pos = session.copy_pos
        if self.copy_len:  # the copy level: the token that followed the long match last time
            levels = levels + [(("copy",), {session.hist[self.copy_pos]: 1}, 1, session.discount(ORDER))]
        self.levels = levels
        self.n = len(session.hist)
        self.d0 = session.discount(0)

    @property
    def match(self) -> int:
        """The session match length: the longest context of ≤ ORDER tokens seen, or the copy's length."""
        return self.copy_len or len(self.levels)

    @property
    def prev_end(self) -> int:
        """Position of the end of the longest matched context's previous occurrence (-1: no match)."""
        if self.copy_len:
            return self.copy_pos - 1
        return self.s.last[self.levels[-1][0]] if self.levels else -1

    def features(self, lm_maxp: float) -> dict[str, float] | None:
        if self.n == 0:
            return None
        if self.levels:
            key, d, total, _ = self.levels[-2 if self.copy_len else -1]  # counts: the deepest counted context
            top = self.s.top[key]
            sparse = float(len(d) == 1)
        else:
            total, top, sparse = self.n, float(self.s.uni.max()), float(self.s.distinct == 1)
        return {"match": min(self.match, 16) / 4.0, "log_count": math.log1p(total) / 4.0,
                "concentration": float(top) / total, "sparse": sparse, "lm_maxp": float(lm_maxp)}

    def prob(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        p = np.full(len(ids), 1.0 / self.s.vocab)
        if self.n == 0:
            return p
        d0 = self.d0
        p = np.maximum(self.s.uni[ids] - d0, 0.0) / self.n + (d0 * self.s.distinct / self.n) * p
        for _, d, total, dk in self.levels:
            c = np.fromiter((d.get(t, 0) for t in ids.tolist()), np.float64, len(ids))
            p = np.maximum(c - dk, 0.0) / total + (dk * len(d) / total) * p
        return p

    def dense(self) -> np.ndarray:
        p = np.full(self.s.vocab, 1.0 / self.s.vocab)
        if self.n == 0:
            return p
        d0 = self.d0
        p = np.maximum(self.s.uni - d0, 0.0) / self.n + (d0 * self.s.distinct / self.n) * p
        for _, d, total, dk in self.levels:
            p *= dk * len(d) / total
            ids = np.fromiter(d.keys(), np.int64, len(d))
            c = np.fromiter(d.values(), np.float64, len(d))
            p[ids] += np.maximum(c - dk, 0.0) / total
        return p

    def top(self, n: int) -> list[int]:
        """The longest levels' most frequent continuations (the candidates the session offers)."""
        out: list[int] = []
        for _, d, _, _ in reversed(self.levels):
            for t, _ in sorted(d.items(), key=lambda kv: -kv[1]):
                if len(out) >= n:
                    return out
                if t not in out:
                    out.append(t)
        return out

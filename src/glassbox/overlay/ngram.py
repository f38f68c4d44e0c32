"""The table side as a proper distribution: ∞-gram counts read from the suffix array in bounded time.

Counts. For a context h (the last k tokens), c(h w) for every next token w are the runs of one SA interval:
the suffixes that start with h are contiguous and sorted by the token after h. We never search the whole SA
at a step. Every suffix interval of the new context is the previous step's interval of the same suffix,
one token shorter, *extended to the right* by the new token (a search inside that interval only), and the
1-token interval is read from the cumulative unigram counts. So a step costs one O(1) read plus one
extension per kept level, and an extension costs:
  - a context with at most `cap` occurrences: one vectorized read of its ≤ cap next tokens and a search;
  - a heavier context of length ≤ HEAVY tokens: its children (distinct next tokens and where their runs
    start) were stored at build time, so the search runs over at most V entries, never over the corpus;
  - a heavier, longer context (only in highly repetitive corpora): rounds of `cap` evenly spaced reads, each
    dividing the range by cap; its continuation counts are estimated from `cap` evenly spaced rows (the rows
    are sorted by next token, so each run's share is read to within 2·c(h)/cap; `Level.sampled` says so).
Levels kept at a step: the suffixes of length 1..SHORT (the n-gram part, n ≤ SHORT+1 = 5) and the longest
match, grown by one token per step while the context keeps copying the corpus (the ∞-gram part). When it
breaks, the longest becomes the longest of the short levels' extensions and grows again from there.

Distribution (interpolated absolute discounting down that chain, a proper distribution over the vocabulary):
    P_0(w)   = (c(w) + 1/2) / (N + V/2)                                          every token > 0
    P_k(w)   = max(c(h_k w) − D_k, 0) / c(h_k) + γ_k · P_{k−1}(w)
    γ_k      = (D_k · N1+(h_k •) + unread) / c(h_k)                              so Σ_w P_k(w) = 1
with D_k = n1 / (n1 + 2 n2) from the corpus's count-of-counts of (k+1)-grams (long levels use the 6-gram D),
N1+ the number of distinct continuations (`unread`, continuations not enumerated, is 0 in this version).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHORT = 4  # suffix lengths 1..SHORT are extended every step (5-grams)
HEAVY = 4  # contexts of 1..HEAVY tokens with more than `cap` occurrences store their children
LONG_D = 6  # long levels use the discount of 6-grams


class Packed:
    """Unsigned integers stored in `width` bytes each (little-endian, a uint8 [n, width] array), read as int64.
    The suffix array in the narrowest width that holds a corpus position (3 bytes up to 16.7 M tokens)."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw
        self.width = int(raw.shape[1])
        self._native = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(self.width)
        self._view = raw.view(f"<u{self.width}").reshape(-1) if self._native else None

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        if self._view is not None:
            v = self._view[i]
            return int(v) if np.ndim(v) == 0 else v.astype(np.int64)
        if isinstance(i, (int, np.integer)):
            return int.from_bytes(self.raw[i].tobytes(), "little")
        rows = self.raw[i]
        out = np.zeros((len(rows), 8), np.uint8)
        out[:, : self.width] = rows
        return out.view("<u8").reshape(-1).astype(np.int64)

    @staticmethod
    def width_for(max_value: int) -> int:
        return max(1, (int(max_value).bit_length() + 7) // 8)

    @staticmethod
    def pack(values: np.ndarray, width: int) -> np.ndarray:
        v = np.ascontiguousarray(values, dtype="<u8").view(np.uint8).reshape(-1, 8)
        return np.ascontiguousarray(v[:, :width])


# -- build ------------------------------------------------------------------------------------------

def heavy_tables(tokens: np.ndarray, sa: np.ndarray, cap: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Children of every context of 1..HEAVY tokens that occurs more than `cap` times, and the discounts.

    Arrays per level k: h{k}_lo / h{k}_hi (the context's SA interval, sorted by lo), h{k}_off (CSR offsets into
    the children), h{k}_tok (the next token of each child run, ascending) and h{k}_start (where its run starts).
    Discounts: D_n = n1 / (n1 + 2 n2) over the corpus's n-grams, n = 2..LONG_D (runs of equal n-token prefixes
    in SA order are exactly the distinct n-grams; their lengths are the counts)."""
    n = len(tokens)
    pad = np.concatenate([tokens.astype(np.int64), np.full(LONG_D + 1, -1, np.int64)])
    same = np.ones(max(0, n - 1), bool)  # same[i]: SA rows i and i+1 share their first k tokens
    starts: dict[int, np.ndarray] = {}
    discounts: dict[str, float] = {}
    for k in range(1, LONG_D + 1):
        col = pad[sa + (k - 1)]
        same &= (col[1:] == col[:-1]) & (col[1:] >= 0)
        starts[k] = np.concatenate([[0], np.flatnonzero(~same) + 1]).astype(np.int64)
        if k >= 2:
            runs = np.diff(np.append(starts[k], n))
            full = pad[sa[starts[k]] + (k - 1)] >= 0  # n-grams that do not run past the corpus end
            n1, n2 = int(np.sum((runs == 1) & full)), int(np.sum((runs == 2) & full))
            discounts[str(k)] = float(n1 / (n1 + 2 * n2)) if n1 + 2 * n2 > 0 else 0.5
    arrays: dict[str, np.ndarray] = {}
    for k in range(1, HEAVY + 1):
        lo = starts[k]
        hi = np.append(lo[1:], n)
        heavy = (hi - lo) > cap
        lo, hi = lo[heavy], hi[heavy]
        child = starts[k + 1]
        first = np.searchsorted(child, lo)
        last = np.searchsorted(child, hi)
        counts = last - first
        idx = np.repeat(first - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        child_rows = child[idx]
        child_tok = pad[sa[child_rows] + k]
        keep = child_tok >= 0  # the suffix that ends the corpus has no next token
        owner = np.repeat(np.arange(len(lo)), counts)[keep]
        off = np.zeros(len(lo) + 1, np.int64)
        off[1:] = np.cumsum(np.bincount(owner, minlength=len(lo)))
        arrays[f"h{k}_lo"], arrays[f"h{k}_hi"], arrays[f"h{k}_off"] = lo, hi, off
        arrays[f"h{k}_tok"], arrays[f"h{k}_start"] = child_tok[keep], child_rows[keep]
    return arrays, discounts


# -- lookups ----------------------------------------------------------------------------------------

@dataclass
class Level:
    """One context of the chain: its length, SA interval, and (once read) its continuation counts."""

    length: int
    lo: int
    hi: int
    ids: np.ndarray | None = None  # continuation token ids, ascending
    counts: np.ndarray | None = None
    unread: int = 0  # continuations not enumerated (kept for the formula; 0 since counts are never truncated)
    sampled: bool = False  # counts estimated from `cap` evenly spaced rows (a heavy context longer than HEAVY)

    @property
    def count(self) -> int:
        return self.hi - self.lo


class NGram:
    """Bounded-time lookups over the tokens, the (packed) suffix array and the heavy contexts' children."""

    def __init__(self, tokens: np.ndarray, sa: Packed, types: np.ndarray, cum: np.ndarray,
                 heavy: dict[str, np.ndarray], discounts: dict[str, float], cap: int, vocab: int,
                 max_runs: int = 64):
        self.tokens, self.sa, self.cap, self.max_runs = tokens, sa, int(cap), max_runs
        self.n = len(tokens)
        self.cum = np.asarray(cum, dtype=np.int64)
        self.local = np.full(vocab, -1, np.int64)
        self.local[np.asarray(types, dtype=np.int64)] = np.arange(len(types))
        self.heavy = {k: tuple(heavy[f"h{k}_{x}"] for x in ("lo", "hi", "off", "tok", "start"))
                      for k in range(1, HEAVY + 1) if f"h{k}_lo" in heavy}
        self.d = {k: float(discounts.get(str(k + 1), discounts.get(str(LONG_D), 0.5))) for k in range(1, LONG_D)}
        self.d_long = float(discounts.get(str(LONG_D), 0.5))

    def discount(self, length: int) -> float:
        return self.d.get(length, self.d_long)

    def unigram(self, w: int) -> tuple[int, int]:
        j = int(self.local[w]) if 0 <= w < len(self.local) else -1
        return (0, 0) if j < 0 else (int(self.cum[j]), int(self.cum[j + 1]))

    def _col(self, lo: int, hi: int, k: int) -> np.ndarray:
        """The token after each of the suffixes sa[lo:hi] (k tokens in), -1 past the end; ascending."""
        pos = self.sa[lo:hi] + k
        out = np.full(len(pos), -1, np.int64)
        ok = pos < self.n
        out[ok] = self.tokens[pos[ok]]
        return out

    def _heavy_children(self, k: int, lo: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        if k not in self.heavy:
            return None
        hlo, hhi, off, tok, start = self.heavy[k]
        j = int(np.searchsorted(hlo, lo))
        if j >= len(hlo) or int(hlo[j]) != lo:
            return None
        a, b = int(off[j]), int(off[j + 1])
        return tok[a:b], start[a:b], int(hhi[j])

    def extend(self, level: Level, w: int) -> Level | None:
        """The interval of (level's context) + w, searched inside the level's interval only; None if unseen."""
        lo, hi, k = level.lo, level.hi, level.length
        if hi - lo <= self.cap:
            col = self._col(lo, hi, k)
            a, b = int(np.searchsorted(col, w, "left")), int(np.searchsorted(col, w, "right"))
            return Level(k + 1, lo + a, lo + b) if b > a else None
        kids = self._heavy_children(k, lo) if k <= HEAVY else None
        if kids is not None:
            tok, start, end = kids
            c = int(np.searchsorted(tok, w))
            if c >= len(tok) or int(tok[c]) != w:
                return None
            return Level(k + 1, int(start[c]), int(start[c + 1]) if c + 1 < len(tok) else end)
        a = self._bound(lo, hi, k, w, left=True)
        b = self._bound(a, hi, k, w, left=False)
        return Level(k + 1, a, b) if b > a else None

    def _bound(self, lo: int, hi: int, k: int, w: int, left: bool) -> int:
        """First row in [lo, hi) whose next token is >= w (left) or > w (right). Narrowed by reading `cap`
        evenly spaced rows at a time (one vectorized read per round, each round divides the range by cap), then
        one read of the last <= cap rows: a handful of numpy calls even for a very frequent long context."""
        side = "left" if left else "right"
        while hi - lo > self.cap:
            rows = np.linspace(lo, hi - 1, self.cap).astype(np.int64)
            j = int(np.searchsorted(self._col_rows(rows, k), w, side))
            new_lo = lo if j == 0 else int(rows[j - 1]) + 1
            hi = hi if j == len(rows) else int(rows[j])
            lo = new_lo
            if j < len(rows) and lo >= hi:
                return hi
        return lo + int(np.searchsorted(self._col(lo, hi, k), w, side))

    def _col_rows(self, rows: np.ndarray, k: int) -> np.ndarray:
        pos = self.sa[rows] + k
        out = np.full(len(pos), -1, np.int64)
        ok = pos < self.n
        out[ok] = self.tokens[pos[ok]]
        return out

    def read(self, level: Level) -> Level:
        """Fill in the level's continuation counts (exact, in bounded time)."""
        if level.ids is not None:
            return level
        lo, hi, k = level.lo, level.hi, level.length
        kids = self._heavy_children(k, lo) if hi - lo > self.cap and k <= HEAVY else None
        if hi - lo <= self.cap:
            col = self._col(lo, hi, k)
            ids, counts = np.unique(col[col >= 0], return_counts=True)
        elif kids is not None:
            tok, start, end = kids
            ids = np.asarray(tok, dtype=np.int64)
            counts = np.diff(np.append(np.asarray(start, dtype=np.int64), end))
        else:  # a heavy long context (very repetitive corpora only): `cap` evenly spaced rows, one read
            rows = np.linspace(lo, hi - 1, self.cap).astype(np.int64)
            col = self._col_rows(rows, k)
            ids, counts = np.unique(col[col >= 0], return_counts=True)
            counts = counts * ((hi - lo) / len(rows))  # runs are contiguous: each sampled row stands for its share
            level.sampled = True
        level.ids, level.counts = ids.astype(np.int64), np.asarray(counts, np.float64)
        return level


class Chain:
    """The suffix intervals of the running context, carried from step to step (see the module docstring)."""

    def __init__(self, ngram: NGram):
        self.ngram = ngram
        self.levels: list[Level] = []  # lengths 1..m (≤ SHORT), then the longest if it is longer

    def copy(self) -> Chain:
        other = Chain(self.ngram)
        other.levels = list(self.levels)
        return other

    def step(self, w: int) -> list[Level]:
        ng = self.ngram
        lo, hi = ng.unigram(w)
        new = [Level(1, lo, hi)] if hi > lo else []
        if new:
            for prev in self.levels:  # ascending length: once one fails every longer one fails too
                grown = ng.extend(prev, w)
                if grown is None:
                    break
                new.append(grown)
        short = [lv for lv in new if lv.length <= SHORT]
        if new and new[-1].length > SHORT:
            short.append(new[-1])
        self.levels = short
        return short

    @property
    def match_length(self) -> int:
        return self.levels[-1].length if self.levels else 0


class TableDist:
    """P_T(· | context) of one step: the chain's levels with their discounts, over a base unigram P_0."""

    def __init__(self, ngram: NGram, levels: list[Level], p0: np.ndarray):
        self.p0 = p0
        self.parts: list[tuple[np.ndarray, np.ndarray, float]] = []  # lowest level first: (ids, A, gamma)
        for lv in levels:
            ngram.read(lv)
            total = float(lv.counts.sum() + lv.unread)
            if total <= 0:
                continue
            d = ngram.discount(lv.length)
            a = np.maximum(lv.counts - d, 0.0) / total
            gamma = (float(np.minimum(lv.counts, d).sum()) + lv.unread) / total  # = 1 − Σ_w A(w)
            self.parts.append((lv.ids, a, gamma))
        self.levels = levels

    def prob(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        p = self.p0[ids].astype(np.float64)
        for lids, a, gamma in self.parts:
            p *= gamma
            if len(lids):
                j = np.minimum(np.searchsorted(lids, ids), len(lids) - 1)
                hit = lids[j] == ids
                p[hit] += a[j[hit]]
        return p

    def dense(self) -> np.ndarray:
        p = self.p0.astype(np.float64, copy=True)
        for lids, a, gamma in self.parts:
            p *= gamma
            p[lids] += a
        return p

    def top(self, n: int) -> np.ndarray:
        """Token ids of the n most probable continuations among the levels' (the base unigram's are not)."""
        if not self.parts:
            return np.zeros(0, np.int64)
        ids = np.unique(np.concatenate([p[0] for p in self.parts]))
        pr = self.prob(ids)
        order = np.argsort(-pr, kind="stable")[:n]
        return ids[order]

"""The static table's gate features: what the tables know at this step (the mixer, overlay/mixer.py, weighs them).

Features φ of the context only (never of the token being scored, so the mixture stays a distribution):
    match          length of the longest corpus match of the context (capped at 16) / 4
    log_count      log(1 + occurrences of that match) / 4
    concentration  share of its most frequent continuation
    sparse         1 if a single continuation was ever seen after it (infini-gram's "sparse" estimate)
    lm_maxp        the LM's own top probability (kNN-LM: trust the LM where it is sure)
    source:SPEC    on an index of several corpora (meta "sources"), the share of the longest match's
                   occurrences inside each one (read from ≤ SOURCE_ROWS evenly spaced suffix-array rows),
                   so a fitted gate can trust one corpus more than another
None when the tables saw nothing here (the last token never occurs in the corpus): the table's weight is 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from glassbox.overlay.ngram import Level

FEATURES = ("match", "log_count", "concentration", "sparse", "lm_maxp")
SOURCE_ROWS = 64


def names(index: Any) -> tuple[str, ...]:
    """The table features of this index: FEATURES, and one share per source on a multi-corpus index."""
    return FEATURES + tuple(f"source:{s['spec']}" for s in index.meta.get("sources", []))


def features(levels: list[Level], lm_maxp: float, index: Any = None) -> dict[str, float] | None:
    """φ for one step from the accumulator's chain levels (counts read); None when the tables saw nothing.
    With `index` (one with several sources), each source's share of the longest match's occurrences too."""
    if not levels or levels[-1].counts is None:
        return None
    top = levels[-1]
    total = float(top.counts.sum() + top.unread)
    if total <= 0:
        return None
    phi = {"match": min(top.length, 16) / 4.0, "log_count": math.log1p(total) / 4.0,
           "concentration": float(top.counts.max()) / total, "sparse": float(len(top.counts) == 1),
           "lm_maxp": float(lm_maxp)}
    sources = index.meta.get("sources") if index is not None else None
    if sources:
        rows = (np.arange(top.lo, top.hi) if top.hi - top.lo <= SOURCE_ROWS
                else np.linspace(top.lo, top.hi - 1, SOURCE_ROWS).astype(np.int64))
        starts = np.array([s["start"] for s in sources])
        which = np.searchsorted(starts, np.asarray(index.sa[rows], np.int64), side="right") - 1
        share = np.bincount(which, minlength=len(sources)) / max(1, len(rows))
        phi |= {f"source:{s['spec']}": float(v) for s, v in zip(sources, share, strict=True)}
    return phi


def vector(phi: dict[str, float] | None, order: tuple[str, ...] = FEATURES) -> np.ndarray | None:
    return None if phi is None else np.array([phi[f] for f in order], np.float64)

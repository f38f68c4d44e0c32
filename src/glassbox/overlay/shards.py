"""`glassbox overlay build --ray`: the corpus tokenized shard by shard on the seam's workers (each loads the
tokenizer once), merged in shard order by `overlay.index.build_from_shards`, which makes exactly the
sequential index (shards in order, documents in order, a separator after each).

What travels to a worker: the tokenizer's spec (a bundled name or a path it can read) and a shard of document
texts; what comes back: token ids. The link tables, n-gram table and suffix array are then built by the driver
from the merged token array (they need the whole corpus). Tokenized shards are saved as they arrive beside the
index (`.<index>.glassbox-parts/`), so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SHARD_CHARS = 2_000_000  # text per shard: a few seconds of tokenizing; its token ids are ~10 MB of JSON


class ShardTokenizer:
    """One per worker: the tokenizer, loaded once; called with a shard of documents."""

    def __init__(self, spec: str):
        from glassbox.overlay import lm

        self.tokenizer = lm.load_tokenizer(spec)

    def __call__(self, docs: list[str]) -> list[list[int]]:
        from glassbox.overlay.index import tokenize_documents

        return [list(map(int, ids)) for ids in tokenize_documents(docs, self.tokenizer)]


def shard(docs: list[str], max_chars: int = SHARD_CHARS) -> list[list[str]]:
    """Consecutive documents, at most `max_chars` of text per shard (a longer document is a shard alone)."""
    shards: list[list[str]] = []
    size = 0
    for d in docs:
        if not shards or size + len(d) > max_chars:
            shards.append([])
            size = 0
        shards[-1].append(d)
        size += len(d)
    return shards


def build_sharded(docs: list[str], tokenizer: Any, out: str | Path, options: Any, backend: Any, source: str,
                  tokenizer_spec: str, max_chars: int = SHARD_CHARS,
                  sources: list[tuple[str, int]] | None = None) -> Path:
    """The index of `docs` at `out`, its tokenization fanned out where `backend` says; same files as
    `overlay.index.build` (apart from the index's random id)."""
    from glassbox.overlay.index import build_from_shards
    from glassbox.scale import seam

    out = Path(out)
    shards = shard(docs, max_chars)
    items = [seam.Item(f"shard-{i:06d}", (s,), hashlib.sha256("\x00".join(s).encode()).hexdigest()[:16])
             for i, s in enumerate(shards)]
    parts = seam.Parts(out.parent / f".{out.name}.glassbox-parts", {"tokenizer": tokenizer_spec, "max_chars": max_chars})
    # a path is made absolute: a worker's current folder is not ours
    spec = str(Path(tokenizer_spec).resolve()) if Path(tokenizer_spec).exists() else tokenizer_spec
    tokens = seam.run_items(ShardTokenizer, (spec,), items, backend, parts, "tokenizing shards")
    path = build_from_shards(tokens, tokenizer, out, options, source, tokenizer_spec, sources)
    parts.clear()  # only now: a build killed while linking resumes without tokenizing again
    return path

"""Offline text for lens training and clustering, as token windows: any corpus spec of glassbox.corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox import corpora
from glassbox.errors import BadInput
from glassbox.run.text import start_ids


def read_text(spec: str | Path, limit_chars: int = 4_000_000) -> str:
    """A corpus spec (glassbox.corpora: a .txt or .jsonl file, a folder, kjv[:A-B], pydoc[:A-B]) → one string of at
    most `limit_chars` characters."""
    return corpora.read_spec(spec, max_chars=limit_chars)


def token_ids(loaded: Any, text: str, max_tokens: int) -> list[int]:
    """Tokenize up to `max_tokens` tokens of `text` (in ~200 k-character pieces so huge files stay fast)."""
    if loaded.tokenizer is None:
        raise BadInput("this checkpoint has no tokenizer, so a text corpus cannot be encoded", loaded.source)
    ids: list[int] = []
    step = 200_000
    for start in range(0, len(text), step):
        ids += loaded.tokenizer(text[start : start + step], add_special_tokens=False)["input_ids"]
        if len(ids) >= max_tokens:
            break
    if len(ids) < 16:
        raise BadInput(f"corpus gives only {len(ids)} tokens; need at least 16")
    return ids[:max_tokens]


def windows(loaded: Any, ids: list[int], seq_len: int) -> Any:
    """Cut ids into [n, seq_len] rows, each starting with BOS when the model needs one."""
    import torch

    bos = next(iter(start_ids(loaded)), None)
    body = seq_len - (1 if bos is not None else 0)
    n = max(1, len(ids) // body)
    rows = []
    for i in range(n):
        chunk = ids[i * body : (i + 1) * body]
        if len(chunk) < body:
            break
        rows.append(([bos] if bos is not None else []) + chunk)
    if not rows:
        rows = [([bos] if bos is not None else []) + ids]
    return torch.tensor(rows)

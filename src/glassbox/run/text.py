"""Text ↔ token ids for a loaded model, the way the lens, patching and `heads why` read a --text option:
the model's start token first where it needs one (SmolLM2's tokenizer adds none by itself)."""

from __future__ import annotations

from typing import Any

from glassbox.errors import BadInput


def encode(loaded: Any, text: str, ids_without_tokenizer: bool = False) -> list[int]:
    """`text` → token ids, BOS first where `loaded.needs_bos`. A checkpoint without a tokenizer is refused,
    or, with ids_without_tokenizer, `text` is read as space-separated token ids (checked against the vocab)."""
    if loaded.tokenizer is None:
        if not ids_without_tokenizer:
            raise BadInput("this checkpoint has no tokenizer, so --text cannot be encoded", loaded.source)
        try:
            ids = [int(x) for x in text.split()]
        except ValueError:
            raise BadInput("this checkpoint has no tokenizer: give --text as space-separated token ids") from None
        vocab = int(loaded.config.vocab_size)
        if not ids or any(not 0 <= i < vocab for i in ids):
            raise BadInput(f"--text: token ids must lie in 0..{vocab - 1}")
        return ids
    ids = list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = loaded.bos_id
    if loaded.needs_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if not ids:
        raise BadInput("--text encodes to no tokens")
    return ids


def token_str(loaded: Any, token_id: int) -> str:
    """One token as text; `<id>` when the checkpoint has no tokenizer."""
    tok = loaded.tokenizer
    return tok.decode([int(token_id)]) if tok is not None else f"<{int(token_id)}>"

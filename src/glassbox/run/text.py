"""Text → token ids for a loaded model: the one reader of every command and view that takes text (`heads show`,
`heads why`, `lens`, `patch`, `cluster`, the atlas's text probes, the web's pattern view, `overlay`).

One start-token rule, the model's own need: an encoder gets its tokenizer's own special tokens ([CLS] … [SEP]);
a causal model gets its start token first when its family or bundled entry says it needs one (`Loaded.needs_bos`:
Gemma) or when its tokenizer adds one by itself. SmolLM2's tokenizer adds none, and its `bos_token` is the chat
template's `<|im_start|>`, so it reads text as it is.
"""

from __future__ import annotations

from typing import Any

from glassbox.errors import BadInput


def _tokenizer_adds_start(tok: Any) -> bool:
    """Whether the tokenizer puts its own start token in front when asked for its special tokens."""
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return False
    ids = list(tok("a", add_special_tokens=True)["input_ids"])
    return bool(ids) and ids[0] == bos


def start_ids(loaded: Any) -> list[int]:
    """The token(s) the model's input begins with: [start token] or []. Encoders begin with [CLS]."""
    bos = loaded.bos_id
    if bos is None:
        return []
    if loaded.is_encoder or loaded.needs_bos:
        return [bos]
    tok = loaded.tokenizer
    return [bos] if tok is not None and _tokenizer_adds_start(tok) else []


def encode_with_offsets(loaded: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`text` → (token ids, each token's character span in `text`; (0, 0) for a special token), under the
    start-token rule. Needs a tokenizer (a fast one: offsets come from it)."""
    tok = loaded.tokenizer
    if tok is None:
        raise BadInput("this checkpoint has no tokenizer, so text cannot be encoded", loaded.source)
    if loaded.is_encoder:  # the tokenizer's own [CLS] … [SEP]
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    start = start_ids(loaded)
    return start + list(enc["input_ids"]), [(0, 0)] * len(start) + [tuple(o) for o in enc["offset_mapping"]]


def encode(loaded: Any, text: str, ids_without_tokenizer: bool = False) -> list[int]:
    """`text` → token ids under the start-token rule. A checkpoint without a tokenizer is refused, or, with
    ids_without_tokenizer, `text` is read as token ids separated by spaces or commas (checked against the vocab)."""
    if loaded.tokenizer is None:
        if not ids_without_tokenizer:
            raise BadInput("this checkpoint has no tokenizer, so --text cannot be encoded", loaded.source)
        try:
            ids = [int(x) for x in text.replace(",", " ").split()]
        except ValueError:
            raise BadInput("this checkpoint has no tokenizer: give --text as space-separated token ids") from None
        vocab = int(loaded.config.vocab_size)
        if not ids or any(not 0 <= i < vocab for i in ids):
            raise BadInput(f"--text: token ids must lie in 0..{vocab - 1}")
        return ids
    tok = loaded.tokenizer
    if loaded.is_encoder:
        ids = list(tok(text, add_special_tokens=True)["input_ids"])
    else:
        ids = start_ids(loaded) + list(tok(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise BadInput("--text encodes to no tokens")
    return ids


def token_str(loaded: Any, token_id: int) -> str:
    """One token as text; `<id>` when the checkpoint has no tokenizer."""
    tok = loaded.tokenizer
    return tok.decode([int(token_id)]) if tok is not None else f"<{int(token_id)}>"

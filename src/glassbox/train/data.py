"""Training data whose every batch is a pure function of (seed, step): resuming needs no saved data state,
and the data position recorded in a checkpoint is simply step × batch size.

- `periodic`: a random block repeated to fill the sequence, period drawn from [min_period, max_period]. After the
  first period every token is predictable only by copying from one period back, and since the period varies no
  fixed positional offset solves it: induction pays, nothing else does.
- `text`: random windows of a byte-tokenized text (vocabulary 256): any corpus spec of glassbox.corpora (a file,
  a folder, `kjv`, `kjv:A-B`, `pydoc`, `pydoc:A-B`, ...), its documents joined by blank lines, UTF-8 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glassbox.errors import BadInput


def _generator(seed: int, step: int, salt: int = 0):
    import torch

    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63))
    return g


@dataclass
class Batch:
    tokens: object  # LongTensor [batch, seq]
    repeated: object  # BoolTensor [batch, seq]: positions whose next token is a repeat (predictable by copying)


class PeriodicData:
    kind = "periodic"

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, seed: int,
                 min_period: int = 4, max_period: int = 16):
        if not 1 <= min_period <= max_period < seq_len:
            raise BadInput(f"periodic data needs 1 <= min_period <= max_period < seq_len, got "
                           f"{min_period}, {max_period}, {seq_len}")
        self.vocab_size, self.seq_len, self.batch_size, self.seed = vocab_size, seq_len, batch_size, seed
        self.min_period, self.max_period = min_period, max_period

    def batch(self, step: int) -> Batch:
        import torch

        g = _generator(self.seed, step)
        b, n = self.batch_size, self.seq_len
        period = torch.randint(self.min_period, self.max_period + 1, (b, 1), generator=g)
        block = torch.randint(0, self.vocab_size, (b, self.max_period), generator=g)
        pos = torch.arange(n).unsqueeze(0)
        tokens = torch.gather(block, 1, pos % period)
        # the label at position i is token i+1; it repeats an earlier one once i+1 >= period
        repeated = (pos + 1) >= period
        return Batch(tokens, repeated.expand(b, n))

    def describe(self) -> dict:
        return {"kind": self.kind, "min_period": self.min_period, "max_period": self.max_period}


def corpus_bytes(spec: str | Path) -> bytes:
    """The byte-level tokens of a corpus spec (glassbox.corpora): its text, UTF-8 encoded."""
    from glassbox import corpora

    return corpora.read_spec(spec).encode("utf-8")


class TextData:
    kind = "text"

    def __init__(self, path: str | Path, seq_len: int, batch_size: int, seed: int, vocab_size: int):
        import torch

        if vocab_size < 256:
            raise BadInput(f"byte-level text needs a vocabulary of at least 256, the model has {vocab_size}", path)
        raw = corpus_bytes(path)
        if len(raw) <= seq_len + 1:
            raise BadInput(f"corpus is shorter than one sequence ({len(raw)} bytes, seq_len {seq_len})", path)
        self.path, self.seq_len, self.batch_size, self.seed = path, seq_len, batch_size, seed
        self.stream = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()

    def batch(self, step: int) -> Batch:
        import torch

        g = _generator(self.seed, step)
        starts = torch.randint(0, len(self.stream) - self.seq_len, (self.batch_size,), generator=g)
        tokens = torch.stack([self.stream[s : s + self.seq_len] for s in starts.tolist()])
        return Batch(tokens, torch.zeros_like(tokens, dtype=torch.bool))

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "tokenizer": "bytes", "bytes": len(self.stream)}


def make_data(spec: dict, vocab_size: int, seq_len: int, batch_size: int, seed: int):
    if spec.get("kind") == "periodic":
        return PeriodicData(vocab_size, seq_len, batch_size, seed, spec.get("min_period", 4), spec.get("max_period", 16))
    if spec.get("kind") == "text":
        return TextData(spec["path"], seq_len, batch_size, seed, vocab_size)
    raise BadInput(f"unknown data kind {spec.get('kind')!r}")

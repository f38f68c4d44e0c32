"""Training data whose every batch is a pure function of (seed, step): resuming needs no saved data state,
and the data position recorded in a checkpoint is simply step × batch size.

- `periodic`: a random block repeated to fill the sequence, period drawn from [min_period, max_period]. After the
  first period every token is predictable only by copying from one period back, and since the period varies no
  fixed positional offset solves it: induction pays, nothing else does.
- `text`: random windows of a byte-tokenized text (vocabulary 256): any corpus spec of glassbox.corpora (a file,
  a folder, `kjv`, `kjv:A-B`, `pydoc`, `pydoc:A-B`, ...), its documents joined by blank lines, UTF-8 bytes.
- `tokens`: the same corpus tokenized with the bundled SmolLM2 tokenizer, its ids remapped by frequency (in the
  training part) to `vocab_size - 1` classes plus one "rare" class, so the unembedding stays small. The last
  `heldout` fraction (10%) of the stream is never trained on; the timeline's probes come from it. With
  `repeat_rate` r, a fraction r of the rows carry one real span of length 8..T/2 repeated right after itself
  ("real text with quoted repeats": natural repeats are too rare in 1 M tokens for induction to pay within a CPU
  budget); `repeated` marks the second copy. The tokenized stream is cached under the glassbox cache dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glassbox import bundled, corpora
from glassbox.errors import BadInput
from glassbox.fileio import atomic_write
from glassbox.run.load import gguf_cache


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


TOKENIZER_MODEL = "smollm2-135m"
RARE = "<rare>"


def tokenizer_path(model: str = TOKENIZER_MODEL) -> Path:
    """tokenizer.json of a bundled model (from its dequantized cache folder; built once, offline)."""
    path = gguf_cache(bundled.bundled_path(model)) / "tokenizer.json"
    if not path.is_file():
        raise BadInput(f"bundled model {model!r} has no tokenizer.json in its cache folder", path.parent)
    return path


def corpus_ids(spec: str | Path, model: str = TOKENIZER_MODEL):
    """The corpus as tokenizer ids (int32 numpy array), cached by (corpus text, tokenizer) content hash."""
    import hashlib

    import numpy as np

    text = corpus_bytes(spec)
    tok_path = tokenizer_path(model)
    key = hashlib.sha256(text + b"\0" + tok_path.read_bytes()).hexdigest()[:32]
    cached = bundled.cache_dir() / "tokens" / f"{key}.npy"
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache file: tokenize again
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    # one document per encode call keeps memory bounded and the boundaries natural
    ids = [tok.encode(doc, add_special_tokens=False).ids for doc in text.decode("utf-8").split("\n\n")]
    arr = np.fromiter((i for doc in ids for i in doc), dtype=np.int32)
    with atomic_write(cached, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    return arr


class TokenData:
    kind = "tokens"

    def __init__(self, path: str | Path, seq_len: int, batch_size: int, seed: int, vocab_size: int,
                 repeat_rate: float = 0.0, heldout: float = 0.1, tokenizer: str = TOKENIZER_MODEL):
        import numpy as np
        import torch

        if not 0.0 <= repeat_rate <= 1.0:
            raise BadInput(f"repeat_rate must be in [0, 1], got {repeat_rate}")
        if not 0.0 < heldout < 0.5:
            raise BadInput(f"heldout must be in (0, 0.5), got {heldout}")
        if vocab_size < 2:
            raise BadInput(f"token data needs a vocabulary of at least 2, the model has {vocab_size}")
        if repeat_rate > 0 and seq_len < 16:
            raise BadInput(f"repeated spans need seq_len >= 16, got {seq_len}")
        raw = corpus_ids(path, tokenizer)
        split = int(len(raw) * (1 - heldout))
        if split <= seq_len + 1 or len(raw) - split <= seq_len:
            raise BadInput(f"corpus is too short for seq_len {seq_len} ({len(raw)} tokens)", path)
        uniq, counts = np.unique(raw[:split], return_counts=True)
        order = np.lexsort((uniq, -counts))  # by count, ties by id: deterministic
        self.original_ids = uniq[order][: vocab_size - 1].astype(np.int64)  # class k -> tokenizer id
        lookup = np.full(int(raw.max()) + 1, vocab_size - 1, dtype=np.int64)  # everything else: the rare class
        lookup[self.original_ids] = np.arange(len(self.original_ids))
        mapped = torch.from_numpy(lookup[raw])
        self.stream, self.heldout_stream = mapped[:split], mapped[split:]
        self.covered = float(counts[order][: vocab_size - 1].sum() / split)
        self.path, self.seq_len, self.batch_size, self.seed = path, seq_len, batch_size, seed
        self.vocab_size, self.repeat_rate, self.heldout, self.tokenizer = vocab_size, repeat_rate, heldout, tokenizer

    def batch(self, step: int) -> Batch:
        import torch

        g = _generator(self.seed, step)
        b, n = self.batch_size, self.seq_len
        starts = torch.randint(0, len(self.stream) - n, (b,), generator=g)
        tokens = torch.stack([self.stream[s : s + n] for s in starts.tolist()])
        repeated = torch.zeros_like(tokens, dtype=torch.bool)
        # drawn for every row whatever the rate, so a row's randomness does not depend on the others'
        quoted = torch.rand(b, generator=g) < self.repeat_rate
        lengths = torch.randint(8, max(9, n // 2 + 1), (b,), generator=g)
        offsets = torch.rand(b, generator=g)
        for r in range(b):
            if not quoted[r]:
                continue
            span = int(lengths[r])
            st = int(offsets[r] * (n - 2 * span + 1))
            tokens[r, st + span : st + 2 * span] = tokens[r, st : st + span].clone()
            # position i predicts token i+1: it is a repeat when i+1 falls in the second copy
            repeated[r, st + span - 1 : st + 2 * span - 1] = True
        return Batch(tokens, repeated)

    def probe(self, n: int = 16, seed: int = 1234):
        """[n, 2P] held-out real spans of P = seq_len // 2 tokens, each followed by itself (never trained on)."""
        import torch

        g = torch.Generator()
        g.manual_seed(seed)
        half = self.seq_len // 2
        starts = torch.randint(0, len(self.heldout_stream) - half, (n,), generator=g)
        block = torch.stack([self.heldout_stream[s : s + half] for s in starts.tolist()])
        return torch.cat([block, block], dim=1)

    def vocab_map(self) -> dict:
        """What turns class ids back into text: class k is tokenizer id `ids[k]`; the last class is rare."""
        return {"tokenizer": self.tokenizer, "ids": self.original_ids.tolist(), "rare": self.vocab_size - 1,
                "covered": self.covered}

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "tokenizer": self.tokenizer,
                "train_tokens": len(self.stream), "heldout_tokens": len(self.heldout_stream),
                "repeat_rate": self.repeat_rate, "covered_by_vocab": self.covered}


def decoder(run: str | Path):
    """ids -> text for a run's tokens: through vocab.json and the tokenizer (token data), bytes (text), or the
    raw ids (synthetic)."""
    import json

    run = Path(run)
    vm = run / "vocab.json"
    if vm.is_file():
        from tokenizers import Tokenizer

        m = json.loads(vm.read_text())
        tok = Tokenizer.from_file(str(tokenizer_path(m["tokenizer"])))
        ids = m["ids"]

        def decode(seq) -> str:
            parts, run_ids = [], []
            for t in seq:
                t = int(t)
                if t < len(ids):
                    run_ids.append(ids[t])
                else:
                    parts.append(tok.decode(run_ids)) if run_ids else None
                    run_ids = []
                    parts.append(RARE)
            if run_ids:
                parts.append(tok.decode(run_ids))
            return "".join(parts)
        return decode
    try:
        kind = json.loads((run / "config.json").read_text())["glassbox_train"]["data"].get("kind")
    except (OSError, ValueError, KeyError, TypeError):
        kind = None
    if kind == "text":
        return lambda seq: bytes(int(t) for t in seq).decode("utf-8", "replace")
    return lambda seq: " ".join(str(int(t)) for t in seq)


def make_data(spec: dict, vocab_size: int, seq_len: int, batch_size: int, seed: int):
    if spec.get("kind") == "periodic":
        return PeriodicData(vocab_size, seq_len, batch_size, seed, spec.get("min_period", 4), spec.get("max_period", 16))
    if spec.get("kind") == "text":
        return TextData(spec["path"], seq_len, batch_size, seed, vocab_size)
    if spec.get("kind") == "tokens":
        return TokenData(spec["path"], seq_len, batch_size, seed, vocab_size, spec.get("repeat_rate", 0.0),
                         spec.get("heldout", 0.1), spec.get("tokenizer", TOKENIZER_MODEL))
    raise BadInput(f"unknown data kind {spec.get('kind')!r}")

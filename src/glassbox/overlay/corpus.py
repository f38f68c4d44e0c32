"""The overlay's corpora: one or more corpus specs → documents, through the shared parser (glassbox.corpora).

Specs (offline only): kjv, kjv:A-B (books, a document = a chapter), pydoc, pydoc:A-B (CPython's help topics,
sorted by name), python-license (CPython's LICENSE.txt), brown, brown:fiction|nonfiction|X-Y (the Brown corpus,
a document = a 2,000-word sample), a text file, a .jsonl file, a folder of them.
"""

from __future__ import annotations

from glassbox import corpora
from glassbox.errors import BadInput

kjv_chapters = corpora.kjv_chapters
python_license = corpora.python_license


def pydoc_topics() -> list[str]:
    """CPython's pydoc topics, one document per topic, sorted by name."""
    topics = corpora.pydoc_topics()
    return [topics[k].strip() for k in sorted(topics)]


def load_documents(specs: list[str]) -> list[str]:
    """Every spec → documents, in the order given; every spec is checked before any text is read."""
    parsed = [corpora.parse_spec(s) for s in specs]
    docs = [d for spec in parsed for d in corpora.documents(spec)]
    if not docs:
        raise BadInput("the corpus is empty", ", ".join(specs))
    return docs

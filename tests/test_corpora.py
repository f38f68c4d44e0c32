"""One corpus-spec grammar (glassbox.corpora): named corpora with ranges, files, .jsonl, folders, bad specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glassbox import corpora
from glassbox.errors import BadInput


def test_named_ranges_are_slices_of_the_whole():
    topics = corpora.documents("pydoc")
    assert len(topics) > 60
    assert corpora.documents("pydoc:3-7") == topics[2:7]
    assert corpora.read_spec("pydoc:1-2") == topics[0] + "\n\n" + topics[1]
    spec = corpora.parse_spec("kjv:40-40")
    assert (spec.kind, spec.first, spec.last, spec.named) == ("kjv", 40, 40, True)


def test_kjv_books_and_chapters():
    genesis = corpora.documents("kjv:1-1")
    assert len(genesis) == 50 and genesis[0].startswith("In the beginning God created")
    assert len(corpora.documents("kjv")) == 1189


def test_files_jsonl_and_folders(tmp_path: Path):
    (tmp_path / "b.txt").write_text("second file", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file", encoding="utf-8")
    rows = [{"text": "row one"}, {"text": "row two"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    (tmp_path / "ignored.bin").write_bytes(b"\xff\x00")
    assert corpora.documents(tmp_path / "a.txt") == ["first file"]
    assert corpora.documents(str(tmp_path / "c.jsonl")) == ["row one", "row two"]
    assert corpora.documents(tmp_path) == ["first file", "second file", "row one", "row two"]
    assert corpora.parse_spec(tmp_path).kind == "folder"
    assert corpora.read_spec(tmp_path, max_chars=14) == "first file\n\nse"


@pytest.mark.parametrize("spec, words", [
    ("kjv:0-3", "1 <= A <= B <= 66"), ("kjv:5-2", "1 <= A <= B"), ("kjv:x", "kjv:A-B"), ("pydoc:1-99999", "topic"),
    ("pydoc:", "pydoc:A-B"), ("no/such/file.txt", "not a named corpus"),
])
def test_bad_specs_are_bad_input_before_reading(spec: str, words: str):
    with pytest.raises(BadInput) as exc:
        corpora.parse_spec(spec)
    assert words in str(exc.value)


def test_bad_files_are_bad_input(tmp_path: Path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(BadInput, match="not UTF-8"):
        corpora.documents(bad)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "ok"}\n{"no_text": 1}\n', encoding="utf-8")
    with pytest.raises(BadInput, match="line 2"):
        corpora.documents(rows)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInput, match="no \\*.txt"):
        corpora.documents(empty)
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(BadInput, match="empty"):
        corpora.documents(tmp_path / "blank.txt")

"""One text, one token sequence, whatever reads it: `heads show`, `heads why`, `lens`, `patch`, `cluster`'s
windows, the atlas's text probes, the web's pattern endpoint and the overlay's LM input all read text through
run/text's one start-token rule. Two real tiny models with a word-level tokenizer: a llama (no start token:
its family does not need one and its tokenizer adds none) and a gemma3 (its family needs one)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from webkit import live_server, tiny_with_tokenizer

from glassbox import cli
from glassbox.lens import corpus
from glassbox.overlay import lm
from glassbox.run import load_model
from glassbox.run.text import encode, encode_with_offsets, start_ids, token_str

TEXT = "the cat sat on the mat and then the big dog saw the cat sat on the"


def _cli(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(args))
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    return json.loads(out.out)


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def model(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"one-{request.param}")
    folder = tiny_with_tokenizer(request.param, root / "tiny")
    return request.param, root, folder, load_model(folder)


def test_the_start_token_rule(model):
    arch, _, _, loaded = model
    words = list(loaded.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert loaded.bos_id is not None  # both configs name one; only the family's need decides
    expected = ([loaded.bos_id] if arch == "gemma3" else []) + words
    assert start_ids(loaded) == expected[: len(expected) - len(words)]
    assert encode(loaded, TEXT) == expected
    ids, offsets = encode_with_offsets(loaded, TEXT)
    assert ids == expected and len(offsets) == len(ids)
    assert [TEXT[a:b] for a, b in offsets[len(ids) - len(words):]] == TEXT.split()


def test_every_text_taking_command_reads_the_same_tokens(model, capsys, tmp_path, monkeypatch):
    _, root, folder, loaded = model
    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    ids = encode(loaded, TEXT)
    tokens = [token_str(loaded, t) for t in ids]
    seen = {
        "heads show": _cli(capsys, "heads", "show", str(folder), "1.0", "--text", TEXT, "--json")["tokens"],
        "heads why": _cli(capsys, "heads", "why", str(folder), "1.0", "--text", TEXT, "--json")["tokens"],
        "lens": _cli(capsys, "lens", str(folder), "--text", TEXT, "--json")["tokens"],
        "patch": _cli(capsys, "patch", str(folder), "--clean", TEXT, "--corrupt", TEXT.replace("cat", "dog"),
                      "--metric", "logit_diff: cat - dog", "--over", "heads", "--json")["tokens"],
    }
    # cluster reads a corpus cut into windows; a text shorter than one window is one window, the whole text
    (tmp_path / "one.txt").write_text(TEXT)
    rows = corpus.windows(loaded, corpus.token_ids(loaded, corpus.read_text(tmp_path / "one.txt"), 64), 64)
    seen["cluster"] = [token_str(loaded, t) for t in rows[0].tolist()]
    # the overlay's LM input: its start token (if the one rule gives one) + the text's tokens
    tok = lm.load(str(folder)).tokenizer
    start = [tok.bos_token_id] if lm.needs_bos(str(folder)) else []
    seen["overlay"] = [token_str(loaded, t) for t in start + tok(TEXT, add_special_tokens=False)["input_ids"]]
    with live_server(root, ["tiny"]) as url, httpx.Client(base_url=url, timeout=120) as client:
        body = {"src": "tiny", "layer": 0, "head": 0, "text": TEXT}
        r = client.post("/api/pattern", json=body)
        deadline = time.time() + 120
        while r.status_code == 202 and time.time() < deadline:  # the model loads as a job first
            time.sleep(0.3)
            r = client.post("/api/pattern", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["ids"] == ids
        seen["web pattern"] = r.json()["tokens"]
    for command, got in seen.items():
        assert got == tokens, command

"""The timeline's `examples` section (timeline/spans.py): spans with the repeated part marked, read from the
`writes --examples` files, equal to the run's own batches; and `writes --steps A-B` over one window."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from glassbox.timeline import spans  # noqa: E402


def glassbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glassbox.cli", *args], capture_output=True, text=True, timeout=600)


def test_row_span_marks_the_quoted_copy_in_tokens_and_characters():
    words = ["in ", "the ", "beginning ", "god ", "created ", "heaven ", "and ", "earth ", "."]
    seq = [8, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]  # ". in the beginning god created | in the beginning god ..."
    repeated = [False] * len(seq)
    for i in range(5, 10):  # the data mark position i when token i+1 is the repeat
        repeated[i] = True
    sp = spans.row_span(lambda s: "".join(words[t] for t in s), seq, repeated)
    assert sp["pieces"] == [words[t] for t in seq] and sp["text"] == "".join(sp["pieces"])
    assert sp["repeated"] == [[6, 11]] and sp["source"] == [[1, 6]]
    (c0, c1), (s0, s1) = sp["repeated_chars"][0], sp["source_chars"][0]
    assert sp["text"][c0:c1] == sp["text"][s0:s1] == "in the beginning god created "
    assert sp["text"][:c0].endswith("created ")


def test_row_span_periodic_row_and_id_decoder():
    seq = [5, 9, 2, 5, 9, 2, 5, 9]
    repeated = [(i + 1) >= 3 for i in range(len(seq))]  # PeriodicData's mark for period 3
    sp = spans.row_span(lambda s: " ".join(str(t) for t in s), seq, repeated)
    assert sp["text"] == "5 9 2 5 9 2 5 9"
    assert sp["repeated"] == [[3, 8]] and sp["source"] == [[0, 3]]
    c0, c1 = sp["repeated_chars"][0]
    assert sp["text"][c0:c1] == " 5 9 2 5 9"


def test_summary_line():
    s = {"top_decile": {"with_quoted_or_periodic_repeat": 0.583, "repeated_fraction": 0.187, "with_4gram_repeat": None},
         "all_rows": {"with_quoted_or_periodic_repeat": 0.501, "repeated_fraction": 0.157, "with_4gram_repeat": 0.7}}
    assert spans.summary_line(s) == ("top decile: 58% with a quoted/periodic repeat vs 50% of all rows; "
                                     "19% copy-predictable positions vs 16% of all rows")


@pytest.fixture(scope="module")
def run_with_examples(tmp_path_factory) -> Path:
    from glassbox.train.loop import declare, train

    out = tmp_path_factory.mktemp("spans") / "run"
    train(out, declare(preset="induction-2l", seed=5, steps=8, save_every=4))
    got = glassbox("writes", str(out), "--examples", "--head", "1.1", "--steps", "3-4", "--top", "4", "--retrain",
                   "--quiet", "--json")
    assert got.returncode == 0, got.stderr
    return out


def test_timeline_json_has_the_examples_section(run_with_examples: Path):
    from glassbox.train import data as D
    from glassbox.train.loop import _read_declaration

    run = run_with_examples
    got = glassbox("timeline", str(run), "--json", "--no-plot", "--no-ablation")
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)
    for key in ("checkpoints", "phase_changes", "why", "final", "plots"):  # additive: the contract's keys stay
        assert key in doc
    file = json.loads((run / "examples-L1H1.json").read_text())
    (ex,) = doc["examples"]
    assert (ex["layer"], ex["head"], ex["steps"], ex["rows"]) == (1, 1, [3, 4], file["rows"])
    assert [(r["step"], r["row"], r["contribution"]) for r in ex["top"]] == \
        [(r["step"], r["row"], r["contribution"]) for r in file["top"]]
    assert ex["summary"] == file["summary"] and ex["summary_line"].startswith("top decile: ")
    rt = ex["retrain"]
    assert rt["replaced_rows"] == file["retrain"]["replaced_rows"]
    for name in ("baseline", "top_replaced", "random_replaced"):
        assert rt[name]["phase_change_step"] == file["retrain"][name]["phase_change_step"]
    # every span is the run's own batch row, with the marked part a copy of its source
    decl = _read_declaration(run)
    tr = decl["train"]
    data = D.make_data(decl["data"], decl["model_config"]["vocab_size"], tr["seq_len"], tr["batch_size"], decl["seed"])
    for r in ex["top"]:
        b = data.batch(r["step"])
        seq, mark = b.tokens[r["row"]].tolist(), b.repeated[r["row"]].tolist()
        assert r["text"] == " ".join(str(t) for t in seq) == "".join(r["pieces"])
        assert sum(hi - lo for lo, hi in r["repeated"]) == sum(mark[:-1])  # every marked position, once
        for (lo, hi), (s0, s1) in zip(r["repeated"], r["source"], strict=True):
            assert seq[lo:hi] == seq[s0 : s0 + hi - lo] and s1 == lo
        for (c0, c1), (lo, hi) in zip(r["repeated_chars"], r["repeated"], strict=True):
            assert r["text"][c0:c1] == "".join(r["pieces"][lo:hi])
    # the text view names it too
    txt = glassbox("timeline", str(run), "--no-plot", "--no-ablation")
    assert txt.returncode == 0 and "examples that wrote L1H1 (steps 3-4" in txt.stdout


def test_no_examples_no_section(tmp_path: Path):
    (tmp_path / "examples-L0H0.json").write_text("not json")  # unreadable files are skipped, not fatal
    assert spans.attach({"a": 1}, tmp_path) == {"a": 1}

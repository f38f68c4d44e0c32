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


def test_induction_predictable_tokens():
    #      0  1  2  3  4  5  6  7  8  9
    seq = [4, 7, 1, 4, 7, 2, 9, 9, 9, 1]
    got = spans.induction_predictable(seq)
    # 7 at 4 (after 4, as at 0→1); 9 at 8 ((9, 9) seen at 6→7); nothing else repeats a bigram
    assert [j for j, x in enumerate(got) if x] == [4, 8]
    assert spans.induction_predictable(seq, ignore=9) == [False] * 4 + [True] + [False] * 5  # the rare class: no part
    sp = spans.row_span(lambda s: " ".join(map(str, s)), seq, [False] * len(seq))
    assert sp["induction"] == [[4, 5], [8, 9]]
    assert [sp["text"][a:b] for a, b in sp["induction_chars"]] == [" 7", " 9"]


def test_row_span_periodic_row_and_id_decoder():
    seq = [5, 9, 2, 5, 9, 2, 5, 9]
    repeated = [(i + 1) >= 3 for i in range(len(seq))]  # PeriodicData's mark for period 3
    sp = spans.row_span(lambda s: " ".join(str(t) for t in s), seq, repeated)
    assert sp["text"] == "5 9 2 5 9 2 5 9"
    assert sp["induction"] == [[4, 8]]  # from the second 9 on, each token follows a bigram seen before
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
    from glassbox.train import batches
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
    ww = ex["window_writes"]  # where the update went in the same window, the head's share and rank
    assert (ww["focus"]["layer"], ww["focus"]["head"], ww["focus"]["of"], ww["steps_recorded"]) == (1, 1, 4, 2)
    assert sum(r["update_share"] for r in ww["levels"]) == pytest.approx(1.0)
    rt = ex["retrain"]
    assert rt["replaced_rows"] == file["retrain"]["replaced_rows"]
    for name in ("baseline", "top_replaced", "random_replaced"):
        assert rt[name]["phase_change_step"] == file["retrain"][name]["phase_change_step"]
    # every span is the run's own batch row, with the marked part a copy of its source
    decl = _read_declaration(run)
    tr = decl["train"]
    data = batches.make_data(decl["data"], decl["model_config"]["vocab_size"], tr["seq_len"], tr["batch_size"], decl["seed"])
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


def test_writes_over_one_window_sums_exactly_its_steps(run_with_examples: Path):
    import pyarrow.compute as pc

    from glassbox.timeline.writes import window_table, write_table
    from glassbox.train.store import read_table

    run = run_with_examples
    got = glassbox("writes", str(run), "--steps", "2-5", "--head", "1.0", "--json")
    assert got.returncode == 0, got.stderr
    w = json.loads(got.stdout)["window"]
    assert (w["start"], w["end"], w["steps_recorded"]) == (2, 5, 4)
    assert sum(r["update_share"] for r in w["levels"]) == pytest.approx(1.0)
    assert sum(r["grad_share"] for r in w["levels"]) == pytest.approx(1.0)
    assert sum(r["share"] for r in w["heads"]) == pytest.approx(1.0) and len(w["heads"]) == 4
    assert sum(r["grad_share"] for r in w["heads"]) == pytest.approx(1.0)
    assert [r["share"] for r in w["heads"]] == sorted((r["share"] for r in w["heads"]), reverse=True)
    f = w["focus"]
    assert (f["layer"], f["head"], f["of"]) == (1, 0, 4)
    assert w["heads"][f["rank"] - 1]["layer"] == 1 and w["heads"][f["rank"] - 1]["head"] == 0
    # the window is the sum of its steps: level by level, and each head straight from its ledger rows
    singles = [window_table(run, s, s)["window"] for s in range(2, 6)]
    for r in w["levels"]:
        parts = [next(x["update_sq"] for x in one["levels"] if x["level"] == r["level"]) for one in singles]
        assert r["update_sq"] == pytest.approx(sum(parts), rel=1e-9)
    ledger = read_table(run, "ledger")
    for r in w["heads"]:
        rows = ledger.filter(pc.and_(pc.and_(pc.equal(ledger["layer"], r["layer"]), pc.equal(ledger["head"], r["head"])),
                                     pc.and_(pc.greater_equal(ledger["step"], 2), pc.less_equal(ledger["step"], 5))))
        assert rows.num_rows == 4 * 7  # per step: Q/K/V weight and bias rows, the O weight row
        assert r["update_sq"] == pytest.approx(sum(x * x for x in rows["update_norm"].to_pylist()), rel=1e-9)
    # the whole run as one window is write_table's "all" column
    whole = window_table(run, 1, 8)["window"]
    every = next(x for x in write_table(run)["windows"] if x["all"])
    assert {r["level"]: r["update_share"] for r in whole["levels"]} == \
        pytest.approx({r["level"]: r["update_share"] for r in every["levels"]})
    txt = glassbox("writes", str(run), "--steps", "2-5", "--head", "1.0")
    assert txt.returncode == 0 and "L1H0 took" in txt.stdout and f"rank {f['rank']} of 4" in txt.stdout


def test_writes_phase_window_from_the_timeline(run_with_examples: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run_with_examples, run)
    (run / "timeline.json").unlink(missing_ok=True)
    bad = glassbox("writes", str(run), "--steps", "phase")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    # a phase change between checkpoints 2 and 6 is written by the updates of steps 3..6
    (run / "timeline.json").write_text(json.dumps({
        "phase_changes": [{"role": "previous_token", "layer": 0, "head": 1, "step": 3, "window": [1, 4]},
                          {"role": "induction", "layer": 1, "head": 1, "step": 4, "window": [2, 6]}],
        "why": [{"role": "induction", "layer": 1, "winner": 1}]}))
    got = json.loads(glassbox("writes", str(run), "--steps", "phase", "--json").stdout)["window"]
    assert (got["start"], got["end"], got["focus"]["layer"], got["focus"]["head"]) == (3, 6, 1, 1)
    assert "induction phase change of L1H1" in got["source"]
    other = json.loads(glassbox("writes", str(run), "--head", "0.1", "--json").stdout)["window"]
    assert (other["start"], other["end"], other["focus"]["head"]) == (2, 4, 1)
    assert glassbox("writes", str(run), "--head", "0.0").returncode == 2  # no phase change of that head
    assert glassbox("writes", str(run), "--steps", "3-99").returncode == 2  # past the run's end

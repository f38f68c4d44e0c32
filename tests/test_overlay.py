"""Overlay generator without the LM: the index against brute force, the accumulator's rules, table-mode
generation with traces, explain, replay, feedback (also from several processes at once) and consolidation."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from glassbox.cli import main
from glassbox.overlay import index as ix
from glassbox.overlay import lm
from glassbox.overlay.accumulator import SOURCES, Accumulator, AccumulatorConfig
from glassbox.overlay.feedback import consolidate, feedback_state
from glassbox.overlay.generate import GenerateConfig
from glassbox.overlay.store import Store
from glassbox.overlay.trace import replay, run


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A small real index: Genesis (KJV book 1), SmolLM2's tokenizer."""
    from glassbox.overlay.corpus import load_documents

    out = tmp_path_factory.mktemp("overlay") / "genesis"
    tok = lm.load_tokenizer("smollm2-135m")
    ix.build(load_documents(["kjv:1-1"]), tok, out, ix.BuildOptions(k=16, window=6), source="kjv:1-1")
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSBOX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_link_tables_match_brute_force(built):
    index = ix.Index(built)
    toks = np.asarray(index.tokens, dtype=np.int64)
    k = index.meta["k"]
    for a in np.unique(toks)[::97][:20]:
        followers = toks[1:][toks[:-1] == a]
        ids, counts = np.unique(followers, return_counts=True)
        got_ids, got_w = index.links("next", int(a))
        assert len(got_ids) == min(k, len(ids))
        want = dict(zip(ids.tolist(), (counts / counts.sum()).tolist(), strict=True))
        for t, w in zip(got_ids.tolist(), got_w.tolist(), strict=True):
            assert w == pytest.approx(want[t], rel=2e-3)  # float16 storage
        # the kept ones are the strongest: nothing left out beats the weakest kept link
        left_out = [w for t, w in want.items() if t not in set(got_ids.tolist())]
        assert max(left_out, default=0.0) <= float(min(got_w)) * (1 + 2e-3)
    assert np.all(np.diff(np.asarray(index.next[0], dtype=np.int64)) <= k)


def test_suffix_array_counts_and_longest_match(built):
    index = ix.Index(built)
    toks = np.asarray(index.tokens, dtype=np.int64)
    rng = np.random.default_rng(0)
    for start in rng.integers(0, len(toks) - 5, 15).tolist():
        for n in (1, 2, 4):
            pat = toks[start : start + n]
            windows = np.lib.stride_tricks.sliding_window_view(toks, n)
            brute = int(np.all(windows == pat, axis=1).sum())
            lo, hi = index.find(pat.tolist())
            assert hi - lo == brute
    context = toks[1000:1010].tolist() + [index.vocab_size - 1]  # ends in a token Genesis never uses
    assert index.longest_match(context)[0] == 0
    context = toks[2000:2012].tolist()
    length, lo, hi = index.longest_match(context, max_len=12)
    assert length == 12 and hi > lo


def test_accumulator_match_length_equals_full_search(built):
    index = ix.Index(built)
    toks = np.asarray(index.tokens, dtype=np.int64)
    rng = np.random.default_rng(1)
    # corpus runs (long matches), with random tokens spliced in (matches that break and regrow)
    seq = toks[500:560].tolist()
    for i in rng.integers(0, len(seq), 6).tolist():
        seq[i] = int(rng.integers(0, index.vocab_size))
    acc = Accumulator(index)
    for i in range(len(seq)):
        acc.observe(seq[: i + 1])
        full = index.longest_match(seq[: i + 1][-acc.config.max_match :], acc.config.max_match)[0]
        assert acc.match_length == (full if full >= 2 else 0)


def test_accumulator_fatigue_decay_and_pruning(built):
    index = ix.Index(built)
    toks = np.asarray(index.tokens[:40], dtype=np.int64).tolist()
    plain = Accumulator(index, AccumulatorConfig(repeat_base=1.0))
    tired = Accumulator(index, AccumulatorConfig(repeat_base=10.0, repeat_window=64))
    for i in range(len(toks)):
        plain.observe(toks[: i + 1])
        tired.observe(toks[: i + 1])
    nxt = SOURCES.index("next")
    ids, _ = index.links("next", toks[-1])
    for t in ids.tolist():  # this step's next-token votes, divided by 10^(times t was emitted)
        r = toks.count(t)
        assert tired.scores[nxt, t] == pytest.approx(plain.scores[nxt, t] / 10.0**r, rel=1e-5)
    live = plain.scores[:-1]
    assert not np.any((live > 0) & (live < plain.config.epsilon))
    cooc = SOURCES.index("cooc")
    before = plain.scores[cooc].copy()
    plain.observe(toks + [toks[0]])
    voted = set(index.links("cooc", toks[0])[0].tolist())
    others = np.array([t for t in np.flatnonzero(before > 0).tolist() if t not in voted])
    decayed = before[others] * plain.config.decay["cooc"]
    kept = decayed >= plain.config.epsilon
    assert np.allclose(plain.scores[cooc, others[kept]], decayed[kept])
    cands = plain.candidates(10)
    total = plain.total()
    assert len(cands) == 10 and np.all(np.diff(total[cands]) <= 0)
    assert total[cands[-1]] >= np.sort(total)[-10]


def test_table_generation_trace_explain_replay(built, home, capsys):
    code, out, err = cli(capsys, "overlay", "generate", str(built), "--no-lm", "--prompt", "And God said",
                         "--max-tokens", "12", "--json")
    assert code == 0, err
    trace = json.loads(out)
    assert 1 <= len(trace["steps"]) <= 12
    for s in trace["steps"]:
        chosen = s["candidates"][0]
        assert chosen["token"] == s["chosen"]
        assert chosen["final"] == max(c["final"] for c in s["candidates"])
        for c in s["candidates"]:  # the table score is the sum of its terms
            assert c["table"] == pytest.approx(sum(c["terms"].values()), rel=1e-4, abs=1e-6)
    code, out, _ = cli(capsys, "overlay", "explain", trace["id"], "--step", "1")
    assert code == 0 and "next" in out and repr(trace["steps"][1]["chosen_text"]) in out
    code, out, _ = cli(capsys, "overlay", "explain", trace["id"])
    assert code == 0 and trace["id"] in out
    assert replay(trace, Store())["identical"]
    code, out, err = cli(capsys, "overlay", "replay", trace["id"], "--json")
    assert code == 0 and json.loads(out)["identical"], err
    alt = trace["steps"][1]["candidates"][2]
    code, out, err = cli(capsys, "overlay", "feedback", trace["id"], "--step", "1", "--prefer", alt["text"], "--json")
    assert code == 0, err
    assert json.loads(out)["token"] == alt["token"]
    code, out, _ = cli(capsys, "overlay", "generate", str(built), "--no-lm", "--prompt", "And God said",
                       "--max-tokens", "12", "--json")
    assert json.loads(out)["steps"][1]["chosen"] == alt["token"]
    assert replay(trace, Store())["identical"]  # a replay uses only the feedback in force back then
    code, out, err = cli(capsys, "overlay", "generate", str(built), "--no-lm", "--prompt", "And God said",
                         "--min-score", "100", "--json")
    assert code == 0 and json.loads(out)["stop_reason"] == "low score", err
    code, out, err = cli(capsys, "overlay", "explain", "nosuchtrace")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and out == ""
    code, _, err = cli(capsys, "overlay", "explain", trace["id"], "--step", "99")
    assert code == 2 and err.startswith("error:")
    code, _, err = cli(capsys, "overlay", "feedback", trace["id"], "--step", "99", "--prefer", " the")
    assert code == 2 and err.startswith("error:")
    code, _, err = cli(capsys, "overlay", "feedback", trace["id"], "--step", "0", "--prefer", " the", "--reject", " a")
    assert code == 2 and err.startswith("error:")


def test_bad_build_input(built, tmp_path, capsys):
    code, _, err = cli(capsys, "overlay", "build", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "i"))
    assert code == 2 and err.startswith("error:")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("keep me")
    src = tmp_path / "c.txt"
    src.write_text("a small corpus of words")
    code, _, err = cli(capsys, "overlay", "build", "--corpus", str(src), "--out", str(tmp_path / "busy"))
    assert code == 2 and (tmp_path / "busy" / "precious.txt").read_text() == "keep me"
    code, _, err = cli(capsys, "overlay", "generate", str(tmp_path / "busy"), "--no-lm", "--prompt", "x")
    assert code == 2 and "not an overlay index" in err


def test_build_cli_from_text_file(tmp_path, capsys):
    from glassbox.overlay.corpus import pydoc_topics

    src = tmp_path / "topics.txt"
    src.write_text("\n\n".join(pydoc_topics()[:20]))
    out = tmp_path / "idx"
    code, stdout, err = cli(capsys, "overlay", "build", "--corpus", str(src), "--out", str(out), "--no-semantic",
                            "--k", "8", "--json")
    assert code == 0, err
    info = json.loads(stdout)
    index = ix.Index(out)
    assert info["tokens"] == index.n_tokens == int(index.unigram.sum()) and info["documents"] == 1
    npy = sum(f.stat().st_size for f in out.glob("*.npy"))
    assert info["bytes_per_token"] == pytest.approx(npy / index.n_tokens, abs=1e-3)
    assert index.semantic is None and len(index.links("semantic", 100)[0]) == 0
    assert not list(tmp_path.glob(".idx.*"))  # no temp folder left behind


def test_feedback_changes_that_step_only(built, home):
    store = Store()
    cfg = GenerateConfig(mode="table", max_tokens=10)
    first = run(built, "And the LORD God", cfg, None, store)
    other = run(built, "In the beginning", cfg, None, store)
    step = 2
    tok = lm.load_tokenizer(ix.Index(built).tokenizer_path())
    want = first["steps"][step]["candidates"][3]
    from glassbox.overlay.feedback import record

    record(store, first, step, want["text"], True, tok)
    again = run(built, "And the LORD God", cfg, None, store)
    assert again["output_ids"][:step] == first["output_ids"][:step]
    assert again["steps"][step]["chosen"] == want["token"] != first["steps"][step]["chosen"]
    assert "feedback" in again["steps"][step]["candidates"][0]["sources"]
    assert run(built, "In the beginning", cfg, None, store)["output_ids"] == other["output_ids"]
    # reject the token it now prefers: back off it again
    record(store, again, step, want["text"], False, tok)
    third = run(built, "And the LORD God", cfg, None, store)
    assert third["steps"][step]["chosen"] != want["token"]


def _writer(args: tuple[str, int, int]) -> int:
    path, worker, n = args
    store = Store(path)
    for i in range(n):
        store.add_feedback("idx", worker, i, 7, 1.0)
    return n


def test_concurrent_feedback_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "store.sqlite")
    Store(path)
    workers, n = 4, 40
    with mp.get_context("spawn").Pool(workers) as pool:
        assert sum(pool.map(_writer, [(path, w, n) for w in range(workers)])) == workers * n
    store = Store(path)
    rows = store.feedback_rows("idx")
    assert len(rows) == workers * n
    assert {(a, b) for _, a, b, _, _ in rows} == {(w, i) for w in range(workers) for i in range(n)}
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("UPDATE feedback SET delta = 5")


def test_consolidate_moves_feedback_into_index_without_double_counting(built, home, tmp_path, capsys):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(built, copy)
    index = ix.Index(copy)
    store = Store()
    store.add_feedback(index.id, 1, 2, 3, 1.0)
    store.add_feedback(index.id, 1, 2, 3, 1.0)
    store.add_feedback(index.id, 4, 5, 6, -1.0)
    before, upto = feedback_state(index, store)
    code, out, err = cli(capsys, "overlay", "consolidate", str(copy), "--json")
    assert code == 0, err
    assert json.loads(out)["new_rows"] == 3
    index = ix.Index(copy)
    assert index.consolidated_upto == upto and index.feedback_links(1, 2) == {3: 2.0}
    assert feedback_state(index, store)[0] == before
    store.add_feedback(index.id, 1, 2, 3, -1.0)
    assert feedback_state(ix.Index(copy), store)[0][(1, 2)] == {3: 1.0}
    consolidate(ix.Index(copy), store)
    assert ix.Index(copy).feedback_links(1, 2) == {3: 1.0}


def test_sampling_is_reproducible_from_the_trace(built, home):
    store = Store()
    cfg = GenerateConfig(mode="table", max_tokens=12, temperature=1.0, seed=5)
    trace = run(built, "And Abraham", cfg, None, store)
    assert replay(store.trace(trace["id"]), store)["identical"]
    outputs = {tuple(run(built, "And Abraham", GenerateConfig(mode="table", max_tokens=12, temperature=1.0, seed=s),
                         None, store, save=False)["output_ids"]) for s in range(6)}
    assert len(outputs) > 1  # the seed matters: sampling really samples

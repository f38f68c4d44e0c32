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
from glassbox.overlay.ngram import SHORT
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


def test_cooc_links_match_brute_force(built):
    """Co-occurrence: weight Σ 1/distance over distances 2..W, shared out of all of a's sightings; only links
    weighing more than one sighting can (> 0.5) are kept, the strongest K of them."""
    index = ix.Index(built)
    toks = np.asarray(index.tokens, dtype=np.int64)
    k, window = index.meta["cooc_k"], index.meta["window"]
    kept_any = dropped_any = False
    for a in np.unique(toks)[::53][:30]:
        weight: dict[int, float] = {}
        for d in range(2, window + 1):
            for t in toks[d:][toks[:-d] == a].tolist():
                weight[t] = weight.get(t, 0.0) + 1.0 / d
        total = sum(weight.values())
        strong = {t: w for t, w in weight.items() if w > ix.COOC_MIN_WEIGHT}
        got_ids, got_w = index.links("cooc", int(a))
        assert len(got_ids) == min(k, len(strong))
        for t, w in zip(got_ids.tolist(), got_w.tolist(), strict=True):
            assert w == pytest.approx(strong[t] / total, rel=2e-3)  # float16 storage
        left_out = [w for t, w in strong.items() if t not in set(got_ids.tolist())]
        assert max(left_out, default=0.0) / total <= float(min(got_w, default=1.0)) * (1 + 2e-3)
        kept_any |= len(got_ids) > 0
        dropped_any |= len(strong) < len(weight)
    assert kept_any and dropped_any  # both sides of the floor were exercised


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


def test_accumulator_match_length_against_full_search(built):
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
        full = index.longest_match(seq[: i + 1], max_len=len(seq))[0]
        # the flat chain (overlay/ngram.py) finds every match of up to SHORT tokens and grows longer ones
        # step by step, so it never claims more than the full search and equals it on short matches
        assert acc.match_length <= full and (full > SHORT or acc.match_length == full)


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
    for window in ("8", "9000"):  # refused before any model or text is read
        code, out, err = cli(capsys, "overlay", "eval", str(built), "--heldout", "brown:zz", "--lm-window", window)
        assert code == 2 and "--lm-window" in err and len(err.strip().splitlines()) == 1 and out == ""


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
    assert sum(g["bytes"] for g in info["sizes"].values()) == npy  # the size table covers every array
    assert {"tokens", "suffix array", "next links", "heavy contexts"} <= set(info["sizes"])
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


# -- seed-loop completions: syntactic filter, adaptive temperature, consolidation of answers ------------------

@pytest.fixture(scope="session")
def pos_built(built, tmp_path_factory):
    """A copy of the Genesis index with a part-of-speech table learned by spaCy from 60k characters of it."""
    import shutil

    from glassbox.overlay.corpus import load_documents
    from glassbox.overlay.pos import build_table

    out = tmp_path_factory.mktemp("overlay-pos") / "genesis"
    shutil.copytree(built, out)
    build_table(out, load_documents(["kjv:1-1"]), lm.load_tokenizer(out / "tokenizer"), 60_000)
    return out


def test_pos_transitions_are_corpus_counts(pos_built):
    from glassbox.overlay.pos import TAGS, PosTable

    index = ix.Index(pos_built)
    table = PosTable.load(pos_built, 0.002)
    toks = np.asarray(index.tokens, dtype=np.int64)
    tags = table.token_tag.astype(np.int64)
    assert (tags >= 0).sum() > 500 and table.tag(toks[1]) in TAGS  # the sample tagged most of the vocabulary
    want = np.zeros_like(table.counts)
    for a, b in zip(toks[:-1].tolist(), toks[1:].tolist(), strict=True):  # brute force over the corpus
        if tags[a] >= 0 and tags[b] >= 0 and index.sep not in (a, b):
            want[tags[a], tags[b]] += 1
    assert (table.counts == want).all()
    det, noun = TAGS.index("DET"), TAGS.index("NOUN")
    assert table.share[det, noun] > 0.3  # "the" + noun is the commonest thing after a determiner


def test_pos_filter_drops_a_transition_never_seen(pos_built):
    from glassbox.overlay.generate import score_step
    from glassbox.overlay.pos import PosTable

    index = ix.Index(pos_built)
    table = PosTable.load(pos_built, 0.002)
    tok = lm.load_tokenizer(pos_built / "tokenizer")
    context = tok("And God said", add_special_tokens=False)["input_ids"]
    acc = Accumulator(index)
    for i in range(len(context)):
        acc.observe(context[: i + 1])
    cfg = GenerateConfig(mode="table")
    plain = score_step(acc, None, context, cfg)
    assert "pos" not in plain and "pos" not in plain["candidates"][0]  # off by default: the trace is unchanged
    top = plain["candidates"][0]["token"]
    # make the top candidate's tag one that never follows the previous token's tag in this table
    prev_tag = int(table.token_tag[context[-1]])
    never = [q for q in range(table.counts.shape[1]) if table.counts[prev_tag, q] == 0]
    assert never, "some tag never follows the previous token's tag in Genesis"
    tags = table.token_tag.copy()
    tags[top] = never[0]
    rigged = PosTable(tags, table.counts, 0.002)
    step = score_step(acc, None, context, cfg, pos=rigged)
    assert step["candidates"][0]["token"] == plain["candidates"][1]["token"]  # dropped, the next one taken
    assert top not in [c["token"] for c in step["candidates"]]
    dropped = {f["token"]: f for f in step["pos"]["filtered"]}
    assert dropped[top]["count"] == 0 and dropped[top]["share"] < 0.002
    for f in step["pos"]["filtered"]:  # everything dropped really is below the threshold
        assert rigged.check(context[-1], f["token"]) is not None
    for c in step["candidates"]:
        assert rigged.check(context[-1], c["token"]) is None


def test_pos_filter_cli_trace_and_explain(pos_built, built, home, capsys):
    args = ["overlay", "generate", str(pos_built), "--no-lm", "--prompt", "And God said", "--max-tokens", "12",
            "--json", "--pos-filter", "--pos-min-share", "0.05"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    trace = json.loads(out)
    steps_with_drops = [s for s in trace["steps"] if s["pos"]["filtered"]]
    assert steps_with_drops  # at a 5% threshold the filter acts somewhere in 12 steps
    s = steps_with_drops[0]
    assert all(f["share"] < 0.05 and f["text"] for f in s["pos"]["filtered"])
    code, out, _ = cli(capsys, "overlay", "explain", trace["id"], "--step", str(s["step"]))
    assert code == 0 and "syntactic filter" in out and "dropped" in out
    code, out, _ = cli(capsys, "overlay", "replay", trace["id"], "--json")
    assert code == 0 and json.loads(out)["identical"]
    code, _, err = cli(capsys, "overlay", "generate", str(built), "--no-lm", "--prompt", "x", "--pos-filter")
    assert code == 2 and "part-of-speech" in err and len(err.strip().splitlines()) == 1


def test_adaptive_temperature_rule_is_monotonic():
    from glassbox.overlay.generate import adaptive_temperature

    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    temps, flat = [], []
    for sharpness in (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0):
        t, h = adaptive_temperature(base * sharpness, 0.8)
        temps.append(t)
        flat.append(h)
    assert flat[0] == pytest.approx(1.0) and temps[0] == pytest.approx(0.8 * np.exp(-0.5))  # flat: cooler
    assert flat[-1] < 0.05 and temps[-1] > 0.8 * np.exp(0.45)  # one candidate dominates: warmer
    assert all(a > b for a, b in zip(flat, flat[1:], strict=False))  # sharper → less flat …
    assert all(a < b for a, b in zip(temps, temps[1:], strict=False))  # … → higher temperature


def test_adaptive_temperature_is_traced_and_replays(built, home):
    cfg = GenerateConfig(mode="table", max_tokens=10, temperature=0.7, seed=3, adaptive_temperature=True)
    trace = run(built, "And Abraham", cfg, None, Store())
    for s in trace["steps"]:
        t = s["temperature"]
        assert t["effective"] == pytest.approx(0.7 * np.exp(0.5 - t["flatness"]))
    assert len({round(s["temperature"]["effective"], 6) for s in trace["steps"]}) > 1
    assert replay(trace, Store())["identical"]
    with pytest.raises(Exception, match="temperature"):
        GenerateConfig(mode="table", adaptive_temperature=True).check()


def test_consolidated_answer_adds_its_links_audited_and_reversible(built, home, tmp_path, capsys):
    import shutil

    copy = tmp_path / "genesis"
    shutil.copytree(built, copy)
    store = Store()
    cfg = GenerateConfig(mode="table", max_tokens=10)
    trace = run(copy, "And Noah builded", cfg, None, store)
    probe = run(copy, "And the waters", cfg, None, store)
    seq = trace["prompt_ids"][-2:] + trace["output_ids"]
    index = ix.Index(copy)
    code, out, err = cli(capsys, "overlay", "consolidate", str(copy), "--answers", trace["id"], "--answer-weight", "3",
                         "--json")
    assert code == 0, err
    info = json.loads(out)
    change = info["answers"]["changes"][0]
    expected = [list(t) for t in zip(seq, seq[1:], seq[2:], strict=False)]
    assert change["trace"] == trace["id"] and change["action"] == "add" and change["triads"] == expected
    rows = store.answer_rows(index.id)
    assert [(r["trace_id"], r["action"], r["tokens"], r["weight"]) for r in rows] == [(trace["id"], "add", seq, 3.0)]
    # the links: next P'(t | b) = (P(t | b)·count(b) + 3·n(b → t)) / (count(b) + 3·n(b → ·)), against brute force
    from glassbox.overlay.answers import answers_state

    answers, upto = answers_state(copy, index.id, store)
    assert upto == rows[-1]["id"] and answers.traces == [trace["id"]]
    nxt = SOURCES.index("next")
    for b, t in zip(seq[1:], seq[2:], strict=False):
        if b == t:
            continue  # the repeat rule would damp that vote
        acc0, acc = Accumulator(index), Accumulator(index, answers=answers)
        acc0.observe([seq[0], b])
        acc.observe([seq[0], b])
        ids, w = index.links("next", b)
        corpus = dict(zip(ids.tolist(), (w.astype(np.float64) * index.unigram[b]).tolist(), strict=True))
        n_ans = sum(1 for x, y in zip(seq[1:], seq[2:], strict=False) if x == b and y == t)
        n_all = sum(1 for x in seq[1:-1] if x == b)
        want = (corpus.get(t, 0.0) + 3 * n_ans) / (index.unigram[b] + 3 * n_all)
        assert acc.scores[nxt, t] / acc._w[nxt] == pytest.approx(want, rel=1e-3, abs=1e-6)
        assert acc.scores[nxt, t] > acc0.scores[nxt, t]
    code, out, err = cli(capsys, "overlay", "consolidate", str(copy), "--answers", trace["id"])
    assert code == 2 and "already" in err
    with_answer = run(copy, "And the waters", cfg, None, store)
    assert with_answer["answers_upto"] == upto and with_answer["answers_in_force"] == [trace["id"]]
    # forget: logged, the index is back to what it was, and the trace made meanwhile still replays exactly
    code, out, err = cli(capsys, "overlay", "consolidate", str(copy), "--forget", trace["id"], "--json")
    assert code == 0, err
    assert [r["action"] for r in store.answer_rows(index.id)] == ["add", "forget"]
    assert run(copy, "And the waters", cfg, None, store)["output_ids"] == probe["output_ids"]
    assert replay(with_answer, store)["identical"]
    assert replay(probe, store)["identical"]
    with pytest.raises(sqlite3.DatabaseError):
        store.db.execute("DELETE FROM answers")

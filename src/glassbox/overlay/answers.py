"""Memory consolidation of finished answers (the notes' "after each finished answer, new triads and candidates
are added"): opt-in, audited, reversible.

`glassbox overlay consolidate IDX --answers TRACE_ID ...` folds traced generations into the index:
  an answer = the two context tokens before its first step + its emitted tokens (an end token excluded);
  every emitted token t after (a, b) adds `weight` counts (default 1: one more corpus occurrence) to the
  triad (a, b) → t and to the next link b → t.
At generation these counts join the corpus's own:
  next   P'(t | b) = (P(t | b) · count(b) + n_answers(b → t)) / (count(b) + n_answers(b → ·))
  triad  the suffix array's continuation counts of (a, b) (scaled to the true number of matches when they were
         sampled) + n_answers(a, b → t), normalized
Where it lives: every fold and every `--forget TRACE_ID` is a row of the store's append-only `answers` table
(what was added, its tokens, from which trace, when); answers.npz in the index holds the answers in force and
the last log id they reflect, written atomically. Forgetting re-derives the file without that trace, so the
index is back to what it was (tested). A trace made with answers in force records `answers_upto`; its replay
rebuilds exactly that set from the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glassbox.errors import BadInput
from glassbox.overlay.store import Store

FILE = "answers.npz"


@dataclass
class AnswerLinks:
    next: dict[int, dict[int, float]] = field(default_factory=dict)
    triad: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)
    traces: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.next or self.triad)


def increments(tokens: list[int]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """(triads (a, b, t), next links (b, t)) for every emitted token: tokens[0:2] are context, not emitted."""
    triads = [(tokens[i - 2], tokens[i - 1], tokens[i]) for i in range(2, len(tokens))]
    return triads, [(b, t) for _, b, t in triads]


def links_from(sequences: dict[str, tuple[list[int], float]]) -> AnswerLinks:
    out = AnswerLinks(traces=list(sequences))
    for toks, weight in sequences.values():
        triads, nxt = increments(toks)
        for a, b, t in triads:
            row = out.triad.setdefault((a, b), {})
            row[t] = row.get(t, 0.0) + weight
        for b, t in nxt:
            row = out.next.setdefault(b, {})
            row[t] = row.get(t, 0.0) + weight
    return out


def answer_tokens(trace: dict, end_ids: set[int]) -> list[int]:
    """The answer a trace contributes: two context tokens + emitted tokens (end tokens dropped)."""
    ctx = (trace["prompt_ids"] or [])[-2:]
    if len(ctx) < 2:
        ctx = [-1] * (2 - len(ctx)) + ctx  # -1: "no token", never a real id (as in feedback keys)
    return [int(t) for t in ctx] + [int(t) for t in trace["output_ids"] if t not in end_ids]


def _in_force(rows: list[dict]) -> dict[str, tuple[list[int], float]]:
    """Replay the log: adds and forgets in order → {trace_id: (tokens, weight)}."""
    live: dict[str, tuple[list[int], float]] = {}
    for r in rows:
        if r["action"] == "add":
            live[r["trace_id"]] = (r["tokens"], float(r["weight"]))
        else:
            live.pop(r["trace_id"], None)
    return live


def read_file(index_path: str | Path) -> tuple[dict[str, tuple[list[int], float]], int]:
    f = Path(index_path) / FILE
    if not f.exists():
        return {}, 0
    with np.load(f) as z:
        seqs, offs, ids, ws = z["tokens"].tolist(), z["offsets"].tolist(), z["traces"].tolist(), z["weights"].tolist()
        return {t: (seqs[offs[i] : offs[i + 1]], ws[i]) for i, t in enumerate(ids)}, int(z["upto"])


def write_file(index_path: str | Path, live: dict[str, tuple[list[int], float]], upto: int) -> None:
    from glassbox.fileio import atomic_write

    seqs = [s for s, _ in live.values()]
    weights = np.array([w for _, w in live.values()], np.float64)
    offs = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    toks = np.array([t for s in seqs for t in s], np.int64)
    with atomic_write(Path(index_path) / FILE) as f:
        np.savez(f, tokens=toks, offsets=offs, traces=np.array(list(live), dtype=str), weights=weights,
                 upto=np.int64(upto))


def answers_state(index_path: str | Path, index_id: str, store: Store, upto: int | None = None
                  ) -> tuple[AnswerLinks, int]:
    """The answers in force and the log id they reflect: the index's file (upto=None), or the store's log
    rows with id <= upto (what a replay of a trace made then uses)."""
    if upto is None:
        live, last = read_file(index_path)
    else:
        live, last = _in_force(store.answer_rows(index_id, upto)), upto
    return links_from(live), last


def consolidate_answers(index_path: str | Path, index_id: str, store: Store, add: list[str], forget: list[str],
                        end_ids: set[int], weight: float = 1.0) -> dict:
    """Fold the answers of traces `add` into the index, take those of `forget` out; log both; rewrite the file."""
    if not weight > 0:
        raise BadInput("--answer-weight must be > 0")
    log = store.answer_rows(index_id)
    live = _in_force(log)
    rows, report = [], []
    for tid in add:
        trace = store.trace(tid)
        if trace["index_id"] != index_id:
            raise BadInput(f"trace {tid} was made with index {trace['index_id']}, not this one ({index_id})")
        if tid in live:
            raise BadInput(f"the answer of trace {tid} is already consolidated in this index")
        toks = answer_tokens(trace, end_ids)
        triads, nxt = increments(toks)
        if not triads:
            raise BadInput(f"trace {tid} emitted no token to consolidate")
        live[tid] = (toks, weight)
        rows.append((tid, "add", toks, weight, len(triads), len(nxt)))
        report.append({"trace": tid, "action": "add", "weight": weight, "triads": [list(t) for t in triads],
                       "next_links": len(nxt)})
    for tid in forget:
        if tid not in live:
            raise BadInput(f"trace {tid}'s answer is not consolidated in this index; nothing to forget")
        toks, w = live.pop(tid)
        triads, nxt = increments(toks)
        rows.append((tid, "forget", toks, w, len(triads), len(nxt)))
        report.append({"trace": tid, "action": "forget", "weight": w, "triads": [list(t) for t in triads],
                       "next_links": len(nxt)})
    ids = store.add_answer_rows(index_id, rows) if rows else []
    upto = ids[-1] if ids else (log[-1]["id"] if log else 0)
    write_file(index_path, live, upto)
    for r, i in zip(report, ids, strict=True):
        r["log_id"] = i
    return {"changes": report, "answers_in_force": list(live), "answers_upto": upto}

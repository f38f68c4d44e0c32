"""Feedback: a person prefers or rejects a token at a traced step; it becomes a link (a, b) → t with weight
+1 / -1, where (a, b) are the two tokens before that step. Rows are appended to the store (SQLite, WAL);
generation reads the index's consolidated links plus the store's newer rows; `consolidate` folds the newer
rows into the index (feedback.npz), so the index carries its corrections with it.
"""

from __future__ import annotations

from typing import Any

from glassbox.errors import BadInput
from glassbox.overlay.accumulator import Feedback
from glassbox.overlay.index import Index, write_feedback
from glassbox.overlay.store import Store


def _add(table: Feedback, a: int, b: int, t: int, w: float) -> None:
    row = table.setdefault((int(a), int(b)), {})
    row[int(t)] = row.get(int(t), 0.0) + float(w)


def feedback_state(index: Index, store: Store, upto: int | None = None) -> tuple[Feedback, int]:
    """The feedback in force, and the last feedback id it includes.
    upto=None: the index's consolidated links + the store's rows newer than them (what `generate` uses).
    upto=N: exactly the store's rows with id <= N (what a replay of a trace made at that point uses)."""
    table: Feedback = {}
    if upto is None:
        for (a, b), row in index._feedback.items():
            for t, w in row.items():
                _add(table, a, b, t, w)
        rows = store.feedback_rows(index.id, after=index.consolidated_upto)
        last = index.consolidated_upto
    else:
        rows = store.feedback_rows(index.id, upto=upto)
        last = 0
    for fid, a, b, t, w in rows:
        _add(table, a, b, t, w)
        last = max(last, fid)
    return table, (last if upto is None else upto)


def record(store: Store, trace: dict, step: int, text: str, prefer: bool, tokenizer: Any) -> dict:
    """Append one feedback row for step `step` of `trace`; returns what was recorded."""
    steps = trace["steps"]
    if not 0 <= step < len(steps):
        raise BadInput(f"trace {trace['id']} has steps 0..{len(steps) - 1}; there is no step {step}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise BadInput(f"{text!r} is {len(ids)} tokens {pieces}; feedback names exactly one token")
    ctx = steps[step]["context_ids"]
    a, b = (ctx[-2] if len(ctx) >= 2 else -1), ctx[-1]
    delta = 1.0 if prefer else -1.0
    fid = store.add_feedback(trace["index_id"], a, b, ids[0], delta, trace["id"], step)
    return {"feedback_id": fid, "trace": trace["id"], "step": step, "token": ids[0], "text": text,
            "delta": delta, "context_ids": [a, b], "index_id": trace["index_id"]}


def consolidate(index: Index, store: Store) -> dict:
    """Fold the store's feedback rows newer than the index's consolidated ones into feedback.npz."""
    table, last = feedback_state(index, store)
    new = len(store.feedback_rows(index.id, after=index.consolidated_upto))
    rows = [(a, b, t, w) for (a, b), row in table.items() for t, w in row.items() if w != 0.0]
    if new:
        write_feedback(index.path, rows, last)
    return {"index": str(index.path), "new_rows": new, "links": len(rows), "consolidated_upto": last}

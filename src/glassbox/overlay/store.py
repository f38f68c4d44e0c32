"""Where traces and feedback live: one SQLite database in WAL mode, append-only.

Location: --store PATH (a .sqlite file, or a folder that gets `overlay.sqlite`); else
$GLASSBOX_HOME/overlay/store.sqlite; else <glassbox cache dir>/overlay/store.sqlite (~/.cache/glassbox or
$GLASSBOX_CACHE). One store serves every index, so `explain TRACE_ID` needs no index path.

Tables (triggers refuse UPDATE and DELETE, so nothing recorded is ever rewritten):
  traces    id, created, index_path, index_id, body (the whole trace as zlib-compressed JSON)
  feedback  id (increasing), created, index_id, trace_id, step, a, b, token, delta (+1 prefer, -1 reject)
  answers   id (increasing), created, index_id, trace_id, action ('add' | 'forget'), tokens (JSON: the answer's
            two context tokens + its emitted tokens), weight (counts per occurrence), triads, next_links: the audit log of answers folded into
            (or taken out of) an index by `consolidate --answers / --forget` (overlay/answers.py)
Every write is one `BEGIN IMMEDIATE` transaction with a long busy timeout, so concurrent writers queue
instead of losing updates.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
import zlib
from pathlib import Path

from glassbox import bundled
from glassbox.errors import BadInput

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
  id TEXT PRIMARY KEY, created REAL NOT NULL, index_path TEXT, index_id TEXT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, index_id TEXT NOT NULL, trace_id TEXT,
  step INTEGER, a INTEGER NOT NULL, b INTEGER NOT NULL, token INTEGER NOT NULL, delta REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_by_index ON feedback(index_id, id);
CREATE TABLE IF NOT EXISTS answers (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, index_id TEXT NOT NULL, trace_id TEXT NOT NULL,
  action TEXT NOT NULL, tokens TEXT NOT NULL, weight REAL NOT NULL, triads INTEGER NOT NULL,
  next_links INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS answers_append_only_u BEFORE UPDATE ON answers
  BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS answers_append_only_d BEFORE DELETE ON answers
  BEGIN SELECT RAISE(ABORT, 'answers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS traces_append_only_u BEFORE UPDATE ON traces
  BEGIN SELECT RAISE(ABORT, 'traces are append-only'); END;
CREATE TRIGGER IF NOT EXISTS traces_append_only_d BEFORE DELETE ON traces
  BEGIN SELECT RAISE(ABORT, 'traces are append-only'); END;
CREATE TRIGGER IF NOT EXISTS feedback_append_only_u BEFORE UPDATE ON feedback
  BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END;
CREATE TRIGGER IF NOT EXISTS feedback_append_only_d BEFORE DELETE ON feedback
  BEGIN SELECT RAISE(ABORT, 'feedback is append-only'); END;
"""


def default_path(store: str | Path | None = None) -> Path:
    if store:
        p = Path(store)
        return p / "overlay.sqlite" if p.is_dir() or not p.suffix else p
    home = os.environ.get("GLASSBOX_HOME")
    root = Path(home) if home else bundled.cache_dir()
    return root / "overlay" / "store.sqlite"


class Store:
    def __init__(self, store: str | Path | None = None):
        self.path = default_path(store)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=120.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=120000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"not a usable overlay store: {exc}", self.path) from None

    def _write(self, fn):  # type: ignore[no-untyped-def]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
            self.db.execute("COMMIT")
            return out
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # -- traces ------------------------------------------------------------------------------------
    def add_trace(self, trace: dict) -> str:
        trace_id = trace.get("id") or uuid.uuid4().hex[:12]
        trace["id"] = trace_id
        body = zlib.compress(json.dumps(trace).encode())
        self._write(lambda: self.db.execute(
            "INSERT INTO traces VALUES (?, ?, ?, ?, ?)",
            (trace_id, time.time(), trace.get("index"), trace.get("index_id"), body)))
        return trace_id

    def trace(self, trace_id: str) -> dict:
        row = self.db.execute("SELECT body FROM traces WHERE id = ?", (trace_id,)).fetchone()
        if row is None:
            raise BadInput(f"no trace with id {trace_id!r} in the store", self.path)
        return json.loads(zlib.decompress(row[0]))

    # -- feedback ----------------------------------------------------------------------------------
    def add_feedback(self, index_id: str, a: int, b: int, token: int, delta: float,
                     trace_id: str | None = None, step: int | None = None) -> int:
        cur = self._write(lambda: self.db.execute(
            "INSERT INTO feedback (created, index_id, trace_id, step, a, b, token, delta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (time.time(), index_id, trace_id, step, a, b, token, delta)))
        return int(cur.lastrowid)

    def feedback_rows(self, index_id: str, after: int = 0, upto: int | None = None) -> list[tuple]:
        """(id, a, b, token, delta) for the index, with after < id <= upto."""
        q = "SELECT id, a, b, token, delta FROM feedback WHERE index_id = ? AND id > ?"
        args: list = [index_id, after]
        if upto is not None:
            q += " AND id <= ?"
            args.append(upto)
        return list(self.db.execute(q + " ORDER BY id", args))

    # -- consolidated answers (audit log) ----------------------------------------------------------
    def add_answer_rows(self, index_id: str, rows: list[tuple[str, str, list[int], float, int, int]]) -> list[int]:
        """Append (trace_id, action, tokens, weight, triads, next_links) rows in one transaction; their ids."""
        def write() -> list[int]:
            ids = []
            for trace_id, action, tokens, weight, triads, nxt in rows:
                cur = self.db.execute(
                    "INSERT INTO answers (created, index_id, trace_id, action, tokens, weight, triads, next_links) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (time.time(), index_id, trace_id, action, json.dumps(tokens),
                                                         weight, triads, nxt))
                ids.append(int(cur.lastrowid))
            return ids
        return self._write(write)

    def answer_rows(self, index_id: str, upto: int | None = None) -> list[dict]:
        """The answers log of an index (oldest first), rows with id <= upto."""
        q = "SELECT id, created, trace_id, action, tokens, weight, triads, next_links FROM answers WHERE index_id = ?"
        args: list = [index_id]
        if upto is not None:
            q += " AND id <= ?"
            args.append(upto)
        keys = ("id", "created", "trace_id", "action", "tokens", "weight", "triads", "next_links")
        rows = [dict(zip(keys, r, strict=True)) for r in self.db.execute(q + " ORDER BY id", args)]
        for r in rows:
            r["tokens"] = json.loads(r["tokens"])
        return rows

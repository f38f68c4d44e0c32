"""The timeline's `examples` section: each `RUN/examples-L{L}H{H}.json` (written by `glassbox writes --examples`)
as text spans a viewer can highlight.

A row is cut into token pieces whose concatenation is its text, so the repeated part (the second copy of a
quoted span, or everything after the first period of a periodic row: the positions the data mark as
predictable by copying) is given both as token ranges and as character ranges of that text, with the earlier
copy it repeats (`source`). The section also carries the window, the contributions, the top-decile-vs-all
summary and the `--retrain` result when the file has one. Additive: the timeline document keeps every key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.timeline.writes import window_table

FILE = re.compile(r"examples-L(\d+)H(\d+)\.json")
SUMMARY_KEYS = (("with_quoted_or_periodic_repeat", "with a quoted/periodic repeat"),
                ("repeated_fraction", "copy-predictable positions"), ("with_4gram_repeat", "with a repeated 4-gram"),
                ("induction_fraction", "induction-predictable tokens"))


def pieces(decode: Callable[[Sequence[int]], str], seq: Sequence[int]) -> list[str]:
    """One string per token, joined = decode(seq) when decoding extends prefix by prefix (it does for the
    run decoders: ids, bytes, SmolLM2 pieces); else each token decoded alone."""
    out, prev = [], ""
    for i in range(len(seq)):
        text = decode(seq[: i + 1])
        if not text.startswith(prev):  # a token that changes what came before (a split UTF-8 character)
            return [decode(seq[k : k + 1]) for k in range(len(seq))]
        out.append(text[len(prev):])
        prev = text
    return out


def _ranges(flags: Sequence[bool]) -> list[list[int]]:
    """[start, end) token ranges where flags is true."""
    out, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append([start, i])
            start = None
    return out


def _copy_distance(seq: Sequence[int], a: int, b: int) -> int | None:
    """The smallest lag d at which tokens a..b-1 equal the d tokens before each: where the copy came from."""
    for d in range(1, a + 1):
        if all(seq[j] == seq[j - d] for j in range(a, b)):
            return d
    return None


def induction_predictable(seq: Sequence[int], ignore: int | None = None) -> list[bool]:
    """Per token: could induction predict it? Its previous token occurred earlier, followed by this same token
    ([A][B] … [A] → [B]). This marks natural repeats (genealogies, refrains) as well as the data's quoted ones.
    `ignore` (token data's rare class) takes no part: "<rare><rare>" is not a phrase."""
    seen: set[tuple[int, int]] = set()
    out = [False] * len(seq)
    for j in range(1, len(seq)):
        pair = (int(seq[j - 1]), int(seq[j]))
        if ignore is None or ignore not in pair:
            out[j] = pair in seen
            seen.add(pair)
    return out


def row_span(decode: Callable[[Sequence[int]], str], seq: Sequence[int], repeated: Sequence[bool],
             ignore: int | None = None) -> dict[str, Any]:
    """A row as pieces, with the repeated tokens and the copy they repeat, and the tokens induction could
    predict, as token and character ranges.

    `repeated[i]` is the data's mark "the token after position i is a repeat", so the repeated tokens are i+1."""
    seq = [int(t) for t in seq]
    parts = pieces(decode, seq)
    starts = [0]
    for p in parts:
        starts.append(starts[-1] + len(p))
    tokens_repeated = [False] + [bool(x) for x in repeated[: len(seq) - 1]]
    rep = _ranges(tokens_repeated)
    src = []
    for a, b in rep:
        d = _copy_distance(seq, a, b)
        if d is not None:
            src.append([a - d, a])

    def chars(rs: list[list[int]]) -> list[list[int]]:
        return [[starts[a], starts[b]] for a, b in rs]

    ind = _ranges(induction_predictable(seq, ignore))
    return {"text": "".join(parts), "pieces": parts, "repeated": rep, "source": src, "induction": ind,
            "repeated_chars": chars(rep), "source_chars": chars(src), "induction_chars": chars(ind)}


def summary_line(summary: dict[str, Any]) -> str:
    """'top decile: 58% with a quoted/periodic repeat vs 50% of all rows; ...' from a `writes --examples` summary."""
    top, every = summary.get("top_decile") or {}, summary.get("all_rows") or {}
    parts = []
    for key, name in SUMMARY_KEYS:
        a, b = top.get(key), every.get(key)
        if a is not None and b is not None:
            parts.append(f"{a * 100:.0f}% {name} vs {b * 100:.0f}% of all rows")
    return "top decile: " + "; ".join(parts) if parts else ""


def _retrain(rt: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rt:
        return None
    out = {k: rt.get(k) for k in ("role", "from_step", "until", "replaced_rows", "share", "every", "thresholds",
                                  "midpoint")}

    def variant(v: dict | None) -> dict[str, Any]:
        v = v or {}
        return {"phase_change_step": v.get("phase_change_step"), "crossing_step": v.get("crossing_step"),
                "steps": v.get("steps"), "scores": v.get("scores")}

    for name in ("baseline", "top_replaced", "random_replaced"):
        out[name] = variant(rt.get(name))
    if rt.get("random_sets"):  # `--random-sets N`: the null spread the top rows' delay is read against
        out["random_sets"] = [variant(v) for v in rt["random_sets"]]
    return out


def _spans_from_data(run: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """For files written before rows carried their spans: rebuild them from the run's data (a function of
    (seed, step)); None where the data cannot be built here."""
    try:
        from glassbox.train import batches
        from glassbox.train.loop import _read_declaration
        from glassbox.train.model import build_model

        decl = _read_declaration(run)
        tr = decl["train"]
        vocab = build_model(decl["model_config"], decl["attention_only"]).config.vocab_size
        data = batches.make_data(decl["data"], vocab, tr["seq_len"], tr["batch_size"], decl["seed"])
        decode = batches.decoder(run)
        ignore = vocab - 1 if decl["data"].get("kind") == "tokens" else None
    except Exception:  # noqa: BLE001 — a nicety for old files: the rest of the section stands without it
        return [None] * len(rows)
    out = []
    for r in rows:
        b = data.batch(int(r["step"]))
        out.append(row_span(decode, b.tokens[int(r["row"])].tolist(), b.repeated[int(r["row"])].tolist(), ignore))
    return out


def head_section(path: Path) -> dict[str, Any] | None:
    """One examples file as the timeline's entry for its head; None when it is not a readable examples file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        layer, head = int(doc["layer"]), int(doc["head"])
        top = list(doc["top"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    missing = [r for r in top if "span" not in r]
    rebuilt = iter(_spans_from_data(path.parent, missing)) if missing else iter(())
    rows = []
    for r in top:
        span = r["span"] if "span" in r else next(rebuilt)
        rows.append({"step": r.get("step"), "row": r.get("row"), "contribution": r.get("contribution"),
                     "share": r.get("share"), "repeated_fraction": r.get("repeated_fraction"),
                     **(span or {"text": r.get("text", ""), "pieces": None, "repeated": [], "source": [],
                                 "induction": [], "repeated_chars": [], "source_chars": [],
                                 "induction_chars": []})})
    summary = doc.get("summary") or {}
    return {"window_writes": _window_writes(path.parent, doc.get("steps"), layer, head),
            "layer": layer, "head": head, "file": path.name, "steps": doc.get("steps"),
            "window_source": doc.get("window_source"), "rows": doc.get("rows"),
            "total_contribution": doc.get("total_contribution"),
            "top_share_of_positive": doc.get("top_share_of_positive"),
            "replay_max_abs_diff": doc.get("replay_max_abs_diff"), "replay_threads": doc.get("replay_threads"),
            "replay_threads_source": doc.get("replay_threads_source"),
            "top": rows, "summary": summary, "summary_line": summary_line(summary),
            "retrain": _retrain(doc.get("retrain"))}


def _window_writes(run: Path, steps: Any, layer: int, head: int) -> dict[str, Any] | None:
    """Where the update went over the same window (`writes --steps A-B --head L.H`): the levels' shares and the
    head's own share and rank; None without a ledger covering it."""
    try:
        w = window_table(run, int(steps[0]), int(steps[1]), (layer, head))["window"]
    except (BadInput, TypeError, ValueError, IndexError):
        return None
    return {"levels": [{k: r[k] for k in ("level", "update_share")} for r in w["levels"]], "focus": w["focus"],
            "steps_recorded": w["steps_recorded"]}


def section(run: str | Path) -> list[dict[str, Any]]:
    """Every head of the run with an examples file, in (layer, head) order."""
    run = Path(run)
    found = []
    for p in run.glob("examples-L*H*.json"):
        m = FILE.fullmatch(p.name)
        if m:
            entry = head_section(p)
            if entry is not None:
                found.append(entry)
    return sorted(found, key=lambda e: (e["layer"], e["head"]))


def attach(doc: dict[str, Any], run: str | Path) -> dict[str, Any]:
    """The timeline document with an `examples` section when the run has examples files (else unchanged)."""
    found = section(run)
    if found:
        doc = dict(doc, examples=found)
    return doc

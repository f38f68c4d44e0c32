"""The run's tables on disk. While training, each save point appends one part file per table
(parts/<table>-NNNNNN.parquet holds the rows up to step NNNNNN); at the end the parts become
<table>.parquet. Readers accept either, so a killed run can still be looked at."""

from __future__ import annotations

import re
from pathlib import Path

from glassbox.errors import BadInput
from glassbox.fileio import atomic_path

PART_RE = re.compile(r"(ledger|metrics)-(\d{6,})\.parquet")


def _parts(out: Path, table: str | None = None) -> list[tuple[int, Path]]:
    folder = out / "parts"
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = PART_RE.fullmatch(p.name)
            if m and (table is None or m.group(1) == table):
                found.append((int(m.group(2)), p))
    return sorted(found)


def write_part(out: Path, table: str, step: int, data) -> None:
    import pyarrow.parquet as pq

    with atomic_path(out / "parts" / f"{table}-{step:06d}.parquet") as tmp:
        pq.write_table(data, tmp)


def drop_parts_after(out: Path, step: int) -> None:
    """On resume: parts written after the resume state's step describe steps that will be redone."""
    for s, p in _parts(out):
        if s > step:
            p.unlink()


def finish_tables(out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for table in ("metrics", "ledger"):
        parts = _parts(out, table)
        if not parts:
            continue
        data = pa.concat_tables([pq.read_table(p) for _, p in parts])
        with atomic_path(out / f"{table}.parquet") as tmp:
            pq.write_table(data, tmp)
    for _, p in _parts(out):
        p.unlink()
    folder = out / "parts"
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def read_table(out: str | Path, table: str):
    """A run's `metrics` or `ledger` table (pyarrow), from the finished file or from the parts so far."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    path = out / f"{table}.parquet"
    try:
        if path.is_file():
            return pq.read_table(path)
        parts = _parts(out, table)
        if parts:
            return pa.concat_tables([pq.read_table(p) for _, p in parts])
    except (OSError, pa.ArrowInvalid) as exc:
        raise BadInput(f"unreadable {table} table: {exc}", path) from None
    return None

"""`glassbox tour`: the answer told once, on the user's own model, in three chapters bound to live values:
from the mathematics to the bytes (`bytes.py`), how training writes it (`training.py`), what the file does
not say (`specialization.py`). `build` puts them together into the `tour --json` document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def build(loaded: Any, atlas: dict[str, Any], head: tuple[int, int] | None, run: Path | None, folder: Path,
          seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """The `tour --json` document. `loaded`: a run.Loaded; `atlas`: its atlas; `head`: None = the top validated
    induction head; `run`: a training run to read (None: train the preset into folder/train); `folder`: where
    the tour writes (the trained run, the labelled copy)."""
    from glassbox.bundled import is_bundled_name
    from glassbox.checkpoint import open_checkpoint
    from glassbox.tour import bytes as bytes_chapter
    from glassbox.tour import specialization, training

    layer, h = head if head is not None else specialization.pick_head(atlas)
    spec = loaded.name if is_bundled_name(loaded.name) else str(loaded.source)  # what the commands are given
    with open_checkpoint(loaded.source) as ck:
        first = bytes_chapter.chapter(ck, loaded.model, layer, h, spec)
    t0 = time.perf_counter()
    train_run, now = training.ensure_run(run, folder / "train", seed)
    second = training.chapter(train_run, now, time.perf_counter() - t0, quiet)
    second["seconds"] = time.perf_counter() - t0
    third = specialization.chapter(loaded, atlas, layer, h, folder / "labelled", spec=spec)
    return {"model": loaded.name, "head": [layer, h], "chapters": [first, second, third]}

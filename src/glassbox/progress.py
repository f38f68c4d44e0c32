"""Progress bars on stderr for long work: shown only when stderr is a terminal and --quiet is off."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False
# A listener per thread (the web server's jobs): told (description, done, total) as work advances.
_listeners = threading.local()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def listen(fn: Callable[[str, int, int | None], None] | None) -> None:
    """Report this thread's progress to `fn` (None stops); used where no terminal shows a bar."""
    _listeners.fn = fn


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No bars or listener reports inside: work run under another bar (a fanned-out item) must neither start a
    second live display nor make the listener's progress jump between tasks."""
    global _quiet
    before, _quiet = _quiet, True
    listener = getattr(_listeners, "fn", None)
    _listeners.fn = None
    try:
        yield
    finally:
        _quiet = before
        _listeners.fn = listener


def enabled() -> bool:
    return not _quiet and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items`, drawing a bar on stderr when that is wanted; a plain pass-through otherwise."""
    listener = getattr(_listeners, "fn", None)
    if listener is not None:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        listener(description, 0, total)
        for done, item in enumerate(items, 1):
            yield item
            listener(description, done, total)
        return
    if not enabled():
        yield from items
        return
    # rich is imported only when a bar is drawn: it costs ~40 ms of start-up otherwise
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)

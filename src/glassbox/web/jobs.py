"""Heavy work (loading a model, an atlas, a timeline) off the event loop, one job at a time, with progress.

One worker thread: the forwards share one model lock anyway, and two atlases at once on a 2-core machine
would only be slower. A job asked for twice (same key) is the same job. Progress comes from
`glassbox.progress.track`, which reports to this thread's listener.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from glassbox import progress

_ids = itertools.count(1)


class Jobs:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glassbox-job")
        self._lock = threading.Lock()
        self._by_id: dict[int, dict[str, Any]] = {}
        self._by_key: dict[str, int] = {}

    def start(self, key: str, title: str, fn: Callable[[], Any]) -> dict[str, Any]:
        """Start `fn` unless a job with this key exists (a failed one stays until `forget`); → its state."""
        with self._lock:
            jid = self._by_key.get(key)
            if jid is not None:
                return self.public(jid)
            jid = next(_ids)
            job = {"id": jid, "key": key, "title": title, "state": "queued", "step": "", "done": 0,
                   "total": None, "error": None, "started": time.time(), "finished": None}
            self._by_id[jid], self._by_key[key] = job, jid
        self._pool.submit(self._run, job, fn)
        return self.public(jid)

    def _run(self, job: dict[str, Any], fn: Callable[[], Any]) -> None:
        def tell(step: str, done: int, total: int | None) -> None:
            job.update(step=step, done=done, total=total)

        job["state"] = "running"
        progress.listen(tell)
        try:
            fn()
            job["state"] = "done"
        except Exception as exc:  # the page shows one line; the server log keeps the rest
            job["state"], job["error"] = "error", str(exc) or type(exc).__name__
            traceback.print_exc()
        finally:
            progress.listen(None)
            job["finished"] = time.time()

    def forget(self, key: str) -> None:
        with self._lock:
            self._by_key.pop(key, None)

    def public(self, jid: int) -> dict[str, Any]:
        job = self._by_id[jid]
        return {k: job[k] for k in ("id", "title", "state", "step", "done", "total", "error")} | {
            "elapsed_s": round((job["finished"] or time.time()) - job["started"], 1)}

    def get(self, jid: int) -> dict[str, Any] | None:
        return self.public(jid) if jid in self._by_id else None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

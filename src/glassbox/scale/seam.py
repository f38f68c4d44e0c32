"""The execution seam: run independent items where the user asked, and get the same results back.

`run_items(factory, args, items, backend, parts)` builds one worker per process, `factory(*args)` (a model is
loaded there once, not once per item), calls `worker(*item.args)` for every item and returns the results in
the items' order, whatever order they finished in. The analysis code never knows where it ran:

- `local`: in this process, one after the other (what every command did before `--ray`);
- `pool`: a local process pool (`--workers N`), spawned processes, one torch thread each;
- `ray`: Ray actors, one per CPU of the cluster (`--ray auto|ray://HOST:PORT`; see `ray_backend`).

Every result is a JSON document. It is round-tripped through JSON on arrival, so a result computed in another
process, read back from a saved part, or computed here is the same Python value, and the merged output is
byte for byte the local one. With `parts`, each result is written atomically to its own file as it arrives
(named by the item's key, so a retried item overwrites, never duplicates); a killed driver that runs the job
again computes only what is missing. A saved result is reused only when the item's `stamp` (the size and
mtime of its input) and the job description still match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.scale import ray_backend
from glassbox.scale.worker import Backend, Item, worker_threads  # noqa: F401 (re-exported)

INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'glassbox[ray]' (or pip install 'ray[default]')"
_ADDRESS = re.compile(r"ray://[A-Za-z0-9._\-\[\]:]+:\d{1,5}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,120}")


def backend(ray: str | None = None, workers: int = 1, max_retries: int = 3) -> Backend:
    """The back end a command's `--ray` / `--workers` options ask for (BadInput for a bad value)."""
    if workers < 0 or (ray is None and workers < 1):
        raise BadInput(f"--workers must be >= 1, got {workers}")
    if max_retries < 0:
        raise BadInput(f"--max-retries must be >= 0, got {max_retries}")
    if ray is None:
        return Backend("pool" if workers > 1 else "local", workers, None, max_retries)
    if ray != "auto" and not _ADDRESS.fullmatch(ray):
        raise BadInput(f"--ray {ray!r}: expected auto or ray://HOST:PORT (e.g. ray://10.0.0.5:10001)")
    require_ray()
    return Backend("ray", workers if workers > 1 else 0, ray, max_retries)


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BadInput(INSTALL_HINT) from None


def file_stamp(path: str | Path) -> str:
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class Parts:
    """Per-item results of one job, one JSON file each, written atomically: what a killed driver resumes from.

    `job` describes everything the results depend on (settings, version, declaration); a folder holding
    another job's parts is emptied first.
    """

    def __init__(self, folder: str | Path, job: dict[str, Any]):
        self.folder = Path(folder)
        self.job = json.loads(json.dumps(job))
        marker = self.folder / "job.json"
        if self.folder.is_dir():
            try:
                same = json.loads(marker.read_text()) == self.job
            except (OSError, ValueError):
                same = False
            if not same:
                shutil.rmtree(self.folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, item: Item) -> tuple[bool, Any]:
        path = self._path(item.key)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):  # missing, or not ours: computed again
            return False, None
        if not isinstance(saved, dict) or saved.get("key") != item.key or saved.get("stamp") != item.stamp:
            return False, None
        return True, saved.get("result")

    def put(self, item: Item, result: Any) -> None:
        if not (self.folder / "job.json").is_file():
            write_json(self.folder / "job.json", self.job)
        # temp file + rename, without fsync: a part guards against a killed process (the page cache keeps
        # what it wrote), not a power cut; measured here: 11-15 ms a part with fsync, ~1 ms without
        path = self._path(item.key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": item.key, "stamp": item.stamp, "result": result}))
        os.replace(tmp, path)

    def count(self) -> int:
        """How many results are saved."""
        return len([p for p in self.folder.glob("*.json") if p.name != "job.json"]) if self.folder.is_dir() else 0

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def run_items(factory: Callable[..., Callable[..., Any]], args: tuple, items: Sequence[Item],
              backend: Backend | None = None, parts: Parts | None = None,
              description: str = "working") -> list[Any]:
    """results[i] = factory(*args)(*items[i].args), computed where `backend` says, in the items' order.

    `factory` and everything in `args` and `items` must be importable/picklable (module-level classes, plain
    data): that is what travels to a worker. Results must be JSON documents.
    """
    backend = backend or Backend()
    keys = [it.key for it in items]
    bad = next((k for k in keys if not _KEY.fullmatch(k)), None)
    if bad is not None or len(set(keys)) != len(keys):
        raise ValueError(f"item keys must be unique and file-safe: {bad or keys}")
    results: dict[str, Any] = {}
    pending = []
    for it in items:
        found, value = parts.get(it) if parts is not None else (False, None)
        if found:
            results[it.key] = value
        else:
            pending.append(it)
    if pending:
        if backend.kind != "local":
            from glassbox.run import memory
            from glassbox.run.load import set_threads

            # every worker computes with the driver's torch thread count: a float sum split over another
            # number of threads rounds differently, and the outputs must be the local ones, bit for bit;
            # and within the driver's --max-memory (dtype/device travel in the job's own arguments)
            backend = replace(backend, threads=set_threads(), budget=memory.asked())
        stream = _STREAMS[backend.kind](factory, args, pending, backend)
        for item, result in progress.track(stream, f"{description} ({backend.describe()})", total=len(pending)):
            result = json.loads(json.dumps(result))  # one representation, wherever it was computed
            if parts is not None:
                parts.put(item, result)
            results[item.key] = result
    return [results[k] for k in keys]


def _local(factory, args, pending: list[Item], backend: Backend) -> Iterator[tuple[Item, Any]]:
    worker = None
    for item in pending:
        with progress.silenced():  # the seam's bar is the one on screen
            if worker is None:
                worker = factory(*args)
            result = worker(*item.args)
        yield item, result


_pool_worker: Any = None


def _pool_init(factory, args, threads: int, budget: int | None = None) -> None:
    global _pool_worker

    worker_threads(threads, budget)
    progress.set_quiet(True)
    _pool_worker = factory(*args)


def _pool_call(item_args: tuple) -> Any:
    return _pool_worker(*item_args)


def _pool(factory, args, pending: list[Item], backend: Backend) -> Iterator[tuple[Item, Any]]:
    """A spawned process pool; if a worker process dies, the pool is rebuilt for the items not yet done."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    todo = list(pending)
    for attempt in range(backend.max_retries + 1):
        ex = ProcessPoolExecutor(max_workers=min(backend.workers, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_pool_init, initargs=(factory, args, backend.threads, backend.budget))
        futures = {ex.submit(_pool_call, it.args): it for it in todo}
        done: set[str] = set()
        try:
            for fut in as_completed(futures):
                item = futures[fut]
                result = fut.result()
                done.add(item.key)
                yield item, result
            return
        except BrokenProcessPool:
            if attempt == backend.max_retries:
                raise RuntimeError(f"a worker process died {backend.max_retries + 1} times; "
                                   f"{len(todo) - len(done)} items not done") from None
            todo = [it for it in todo if it.key not in done]
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _ray(factory, args, pending: list[Item], backend: Backend) -> Iterator[tuple[Item, Any]]:
    return ray_backend.stream(factory, args, pending, backend)


_STREAMS = {"local": _local, "pool": _pool, "ray": _ray}

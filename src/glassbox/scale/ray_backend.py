"""Ray as the seam's back end: one actor per `threads` CPUs of the cluster, each holding one worker (its model
loaded once) that computes with the driver's torch thread count (GLASSBOX_THREADS, else torch's default), so
its floats are the local run's; GLASSBOX_THREADS=1 gives one actor per CPU.

Connecting: `--ray auto` joins the cluster this machine belongs to (`ray start --head` / `ray start
--address=...`, or RAY_ADDRESS); when none is running it starts a private local instance for the duration of the
command (and says so on stderr). `--ray ray://HOST:PORT` connects through the Ray client. When glassbox joins a
running cluster, its own package folder is shipped to the workers (`runtime_env.py_modules`), so nodes need
only its dependencies (torch, transformers, ...), not the same checkout.

What travels: the worker factory (a module-level class, pickled by reference by Ray), its arguments and the
items (plain data: a declaration dict, steps and paths, settings), and JSON results back. Input files are read
by the workers at the paths they are given, so on several machines the run folder / corpus must be on a shared
file system at the same path; nothing is ever unpickled from a file.

Retries: an actor whose process dies (killed, out of memory, node lost) is restarted up to `max_retries`
times, and the item it was running is resubmitted to it (`max_task_retries`); results are keyed by item, so a
retried item is never counted twice. An exception raised by our code is not retried: a BadInput there is the
user's, and comes back as one `error:` line.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.scale.worker import Backend, Item, worker_threads

LOCAL_OBJECT_STORE = 256 << 20  # a private local instance: results are small JSON documents
IN_FLIGHT = 2  # items queued per actor; actor tasks run in order, and a restarted actor gets both again


class Worker:
    """What runs inside each Ray actor: set one torch thread, build the worker once, then call it per item."""

    def __init__(self, factory, args: tuple, threads: int, budget: int | None = None):
        worker_threads(threads, budget)  # the driver's count: the same floats as the local run
        progress.set_quiet(True)  # no terminal here; the driver draws the bar
        self.fn = factory(*args)

    def run(self, args: tuple) -> Any:
        return self.fn(*args)

    def pid(self) -> int:
        import os

        return os.getpid()


def connect(address: str) -> bool:
    """Make sure this process is a Ray driver; True when we connected (and so must disconnect)."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    shipped = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env=shipped, **common)
            return True
        except ConnectionError:
            pass
        print("glassbox: no Ray cluster is running here; starting a local instance for this command "
              "(`ray start --head` keeps one up)", file=sys.stderr)
        ray.init(object_store_memory=LOCAL_OBJECT_STORE, **common)
        return True
    try:
        with warnings.catch_warnings():  # the client warns before it raises: the error line says it all
            warnings.simplefilter("ignore")
            logging.getLogger("ray.client_builder").setLevel(logging.WARNING)  # its INFO line on stderr
            ray.init(address=address, runtime_env=shipped)
    except Exception as exc:  # the client raises several kinds for an unreachable or refusing server
        raise BadInput(f"--ray {address}: cannot connect: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return True


def stream(factory, args: tuple, pending: list[Item], backend: Backend) -> Iterator[tuple[Item, Any]]:
    """Yield (item, result) as the cluster finishes them; every actor has IN_FLIGHT items queued."""
    import ray

    # Ray's own messages (a worker died, a task is retried) are printed on stdout; ours is for --json
    with contextlib.redirect_stdout(sys.stderr):
        ours = connect(backend.address or "auto")
        actors: list[Any] = []
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
            per_actor = min(backend.threads, cpus)  # an actor reserves the CPUs its torch threads use
            n = max(1, min(len(pending), cpus // per_actor, backend.workers or cpus))
            actor_class = ray.remote(num_cpus=per_actor, max_restarts=backend.max_retries,
                                     max_task_retries=backend.max_retries)(Worker)
            actors = [actor_class.remote(factory, args, backend.threads, backend.budget) for _ in range(n)]
            queue = deque(pending)
            inflight: dict[Any, tuple[Any, Item]] = {}

            def submit(actor) -> None:
                item = queue.popleft()
                inflight[actor.run.remote(item.args)] = (actor, item)

            for _ in range(IN_FLIGHT):  # the next item waits at the actor: no round trip between items
                for actor in actors:
                    if queue:
                        submit(actor)
            while inflight:
                done, _ = ray.wait(list(inflight), num_returns=1)
                actor, item = inflight.pop(done[0])
                result = _result(ray, done[0], item, backend)
                if queue:
                    submit(actor)
                yield item, result
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if ours:
                ray.shutdown()


def _result(ray, ref, item: Item, backend: Backend) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BadInput):
            raise BadInput(str(cause)) from None
        raise RuntimeError(f"{item.key}: {type(cause or exc).__name__}: {cause or exc}".splitlines()[0]) from None
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"{item.key}: its worker died {backend.max_retries + 1} times "
                           f"({type(exc).__name__}); the results so far are saved") from None

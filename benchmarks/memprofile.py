"""Where the atlas's peak resident memory comes from (issue 22): one atlas in this process, profiled.

A sampler thread reads /proc/self/status every 20 ms; each new maximum of VmRSS records the phase the atlas is in
and the main thread's stack (glassbox frames only). Phases are marked by wrapping the atlas's building blocks
(the load, every cached forward, spaCy's parse, the validator's clean runs and its ablation batches, ...), and
the table gives per phase: RSS when it first began, the highest RSS seen inside it, and anonymous vs file-backed
(memory-mapped weights) RSS at that moment. Run it once per dtype, each in its own process:

    PYTHONPATH=src .venv/bin/python benchmarks/memprofile.py smollm2-135m --dtype bfloat16 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
import traceback
from pathlib import Path

_phases: list[str] = ["start"]
_table: dict[str, dict[str, float]] = {}
_peak: dict = {"rss": 0, "phase": "", "stack": [], "anon": 0, "file": 0}


def status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _note(s: dict[str, int]) -> None:
    row = _table.setdefault(_phases[-1], {"first_rss": s["VmRSS"], "peak_rss": 0, "anon": 0, "file": 0, "n": 0})
    if s["VmRSS"] > row["peak_rss"]:
        row.update(peak_rss=s["VmRSS"], anon=s["RssAnon"], file=s["RssFile"])


def _sampler(main_id: int, stop: threading.Event) -> None:
    while not stop.is_set():
        s = status()
        _note(s)
        if s["VmRSS"] > _peak["rss"] + 2**20:
            frame = sys._current_frames().get(main_id)
            stack = [ln.strip() for ln in traceback.format_stack(frame) if "glassbox" in ln] if frame else []
            _peak.update(rss=s["VmRSS"], phase=_phases[-1], stack=stack, anon=s["RssAnon"], file=s["RssFile"])
            del frame  # a frame held here would keep the main thread's locals (big tensors) alive
        time.sleep(0.02)


def mark(name: str) -> None:
    """A top-level phase (replaces the current one)."""
    _note(status())
    _phases[:] = [name]
    _note(status())


def wrap(owner: object, attr: str, label) -> None:
    """Make owner.attr a phase while it runs; `label(*args, **kwargs)` names it."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        _note(status())
        _phases.append(label(*args, **kwargs))
        _note(status())
        try:
            return fn(*args, **kwargs)
        finally:
            _note(status())
            _table[_phases[-1]]["n"] += 1
            _phases.pop()

    setattr(owner, attr, inner)


def _forward_label(loaded, tokens, names=None, *a, **k) -> str:
    names = names if names is not None else k.get("names")
    shape = "x".join(map(str, getattr(tokens, "shape", ())))
    return f"{_phases[-1]} / forward {shape} caching {names if isinstance(names, str) else sorted(names or [])[:1]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stop = threading.Event()
    sampler = threading.Thread(target=_sampler, args=(threading.get_ident(), stop), daemon=True)
    sampler.start()
    mark("imports (torch, transformers, glassbox)")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from glassbox import progress
    from glassbox.heads import atlas, probe_inputs, probes, validate
    from glassbox.run import hooks, load_model

    progress.set_quiet(True) if hasattr(progress, "set_quiet") else None
    wrap(hooks, "run_with_cache", _forward_label)
    wrap(probe_inputs, "parsed", lambda *a, **k: "spaCy: load + parse the sentences")
    wrap(probes, "successor_scores", lambda *a, **k: "successor probe")
    wrap(probes, "copying_scores", lambda *a, **k: "copying (weights)")
    wrap(probes, "copying_activation", lambda *a, **k: "copying_act (head_out per layer)")
    wrap(validate.Validator, "__init__", lambda *a, **k: "validation: clean runs + direct effects")
    wrap(validate.Validator, "runs", lambda self, task, kind, specs: f"ablation batches: {task} {kind}")
    wrap(atlas, "_groups", lambda *a, **k: "groups")
    mark("load")
    loaded = load_model(args.model, dtype=args.dtype)
    mark("atlas: probes")
    scores, inputs = atlas.compute_scores(loaded, atlas.Settings())
    mark("atlas: validation")
    start = dict(hooks.stats)
    atlas._validate(loaded, scores, inputs, atlas.Settings(), start)
    mark("end")
    time.sleep(0.1)
    stop.set()
    sampler.join()
    hwm = status()["VmHWM"]
    gb = 2**30
    print(f"{args.model} {args.dtype}: peak RSS (VmHWM) {hwm / gb:.3f} GB; sampled peak {_peak['rss'] / gb:.3f} GB "
          f"(anon {_peak['anon'] / gb:.3f}, file-backed {_peak['file'] / gb:.3f}) in: {_peak['phase']}")
    print("stack at the peak:\n  " + "\n  ".join(_peak["stack"][-8:]))
    print(f"{'phase':<90} {'n':>4} {'RSS first':>10} {'peak':>8} {'anon':>8} {'file':>8}")
    for name, row in _table.items():
        print(f"{name[:90]:<90} {int(row['n']):>4} {row['first_rss'] / gb:>10.3f} {row['peak_rss'] / gb:>8.3f} "
              f"{row['anon'] / gb:>8.3f} {row['file'] / gb:>8.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "dtype": args.dtype, "vm_hwm": hwm, "peak": _peak,
                                        "phases": _table}, indent=1))


if __name__ == "__main__":
    main()

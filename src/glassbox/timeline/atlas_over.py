"""`glassbox atlas-over RUN`: the full head atlas (every probe, causal checks) on every checkpoint of a training
run, and the role diff between consecutive checkpoints: which head took or lost which role, and when.

The timeline runs the cheap probes; this runs `heads.atlas.build_atlas` itself, so each checkpoint's entry is
what `glassbox atlas CHECKPOINT --json` says about it. A worker builds the model once (from the run's first
checkpoint, whatever checkpoint it is handed first, so every worker starts from the same module), in the dtype and
on the device the command was given (handed over explicitly: a worker process does not share the driver's option
state), and then loads each checkpoint's weights into it.

A head holds a role at a step when its score reaches the atlas threshold for that role; "validated" is the
atlas's causal verdict (only for the heads the atlas checked).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.heads.atlas import Settings, build_atlas, role_names, threshold
from glassbox.run import placement
from glassbox.run.load import preflight
from glassbox.scale import seam
from glassbox.timeline.analyze import read_declaration
from glassbox.train import checkpoints as ck

VERSION = 1


class CheckpointAtlas:
    """One per worker: the run's model built once; per call, a checkpoint's weights and its full atlas."""

    def __init__(self, first_checkpoint: str, settings: dict[str, Any], dtype: str = "auto", device: str = "auto"):
        from glassbox.run import load_model

        self.settings = settings
        self.loaded = load_model(first_checkpoint, dtype=dtype, device=device)

    def __call__(self, step: int, path: str) -> dict[str, Any]:
        ck.load_weights(self.loaded.model, Path(path))
        loaded = dataclasses.replace(self.loaded, name=Path(path).name, source=Path(path))
        return {"step": step, "checkpoint": Path(path).name, "atlas": build_atlas(loaded, Settings(**self.settings))}


def held_roles(atlas: dict[str, Any]) -> dict[tuple[int, int, str], dict[str, Any]]:
    """(layer, head, role) → {score, validated, ablation_effect} for every role a head's score reaches."""
    names = role_names(atlas)
    held = {}
    for h in atlas["heads"]:
        checked = {r["role"]: r for r in h.get("roles", [])}
        for role in names:
            score = h["scores"].get(role)
            if score is None or score < threshold(role):
                continue
            r = checked.get(role, {})
            held[(h["layer"], h["head"], role)] = {"score": score, "validated": r.get("validated"),
                                                   "ablation_effect": r.get("ablation_effect")}
    return held


def role_diff(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Between consecutive checkpoints: roles gained and lost, and causal verdicts that flipped."""
    out = []
    previous = None
    for c in checkpoints:
        now = held_roles(c["atlas"])
        if previous is not None:
            step0, before = previous

            def entry(key, info):
                return {"layer": key[0], "head": key[1], "role": key[2], "score": info["score"],
                        "validated": info["validated"]}

            gained = [entry(k, now[k]) for k in sorted(now.keys() - before.keys())]
            lost = [entry(k, before[k]) for k in sorted(before.keys() - now.keys())]
            validated = [entry(k, now[k]) for k in sorted(now.keys() & before.keys())
                         if now[k]["validated"] and not before[k]["validated"]]
            unvalidated = [entry(k, now[k]) for k in sorted(now.keys() & before.keys())
                           if before[k]["validated"] and not now[k]["validated"]]
            out.append({"from_step": step0, "to_step": c["step"], "gained": gained, "lost": lost,
                        "newly_validated": validated, "no_longer_validated": unvalidated})
        previous = (c["step"], now)
    return out


def first_held(checkpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every role held at the last checkpoint: since which step each holder has held it without a gap."""
    if not checkpoints:
        return []
    series = [(c["step"], held_roles(c["atlas"])) for c in checkpoints]
    out = []
    for key, info in sorted(series[-1][1].items()):
        since = series[-1][0]
        for step, held in reversed(series):
            if key not in held:
                break
            since = step
        out.append({"layer": key[0], "head": key[1], "role": key[2], "since_step": since,
                    "final_score": info["score"], "validated": info["validated"]})
    return out


def select(found: list[tuple[int, Path]], every: int) -> list[tuple[int, Path]]:
    """Every `every`-th checkpoint, always with the last one."""
    if every < 1:
        raise BadInput(f"--every must be >= 1, got {every}")
    picked = found[::every]
    if found and picked[-1] != found[-1]:
        picked.append(found[-1])
    return picked


def atlas_over(run: str | Path, settings: dict[str, Any], every: int = 1, backend=None, dtype: str = "auto",
               device: str = "auto") -> dict[str, Any]:
    """The atlas of every (every-th) checkpoint of `run`, with the role diff; saved as RUN/atlas-over.json.
    `dtype`/`device`: --dtype/--device, where each worker's model runs."""
    run = Path(run)
    decl = read_declaration(run)
    found = select(ck.list_checkpoints(run), every)
    if not found:
        raise BadInput("no checkpoints (checkpoints/step-NNNNNN.safetensors)", run)
    preflight(found[-1][1], dtype, device)  # refused here, before any worker starts, as `atlas` would
    items = [seam.Item(f"step-{step:06d}", (step, str(path.resolve())), seam.file_stamp(path))
             for step, path in found]
    parts = seam.Parts(run / ".glassbox-parts" / "atlas-over",
                       placement.keyed({"version": VERSION, "settings": settings, "decl": decl}, dtype, device))
    checkpoints = seam.run_items(CheckpointAtlas, (str(found[0][1].resolve()), settings, dtype, device), items,
                                 backend, parts, "atlas over checkpoints")
    last = checkpoints[-1]["atlas"]  # each checkpoint's atlas records where it ran; the last one's, on top
    doc = {"run": str(run), "version": VERSION, "settings": settings, "every": every,
           "dtype": last["dtype"], "device": last["device"],
           "steps": [c["step"] for c in checkpoints], "checkpoints": checkpoints,
           "role_diff": role_diff(checkpoints), "final_roles": first_held(checkpoints)}
    write_json(run / "atlas-over.json", doc)
    parts.clear()
    return doc


def render(doc: dict[str, Any]) -> str:
    lines = [f"{doc['run']}: full atlas on {len(doc['checkpoints'])} checkpoints "
             f"(steps {doc['steps'][0]}..{doc['steps'][-1]})"]
    changed = [d for d in doc["role_diff"] if d["gained"] or d["lost"]]
    if not changed:
        lines.append("no head gained or lost a role between checkpoints")
    for d in changed:
        parts = [f"+L{e['layer']}H{e['head']} {e['role']} {e['score']:.2f}" for e in d["gained"]]
        parts += [f"-L{e['layer']}H{e['head']} {e['role']}" for e in d["lost"]]
        lines.append(f"  step {d['from_step']:>6} → {d['to_step']:<6} " + ", ".join(parts))
    if doc["final_roles"]:
        lines.append("roles at the last checkpoint (held since):")
        for r in doc["final_roles"]:
            v = {True: "validated", False: "not validated", None: "unchecked"}[r["validated"]]
            lines.append(f"  L{r['layer']}H{r['head']} {r['role']:<16} {r['final_score']:.2f}  since step "
                         f"{r['since_step']}  ({v})")
    lines.append(f"written to {Path(doc['run']) / 'atlas-over.json'}")
    return "\n".join(lines)

"""The timeline of one run: the cheap probes on every checkpoint, phase changes, and "why this head".

For each checkpoint: the training loss there, the pattern scores of every head on a fixed probe batch (a random
block repeated twice), the in-context-learning score (probe loss on the first copy minus on the second copy:
how much seeing the block once helps), and each head's ablation effect (second-copy loss with the head's output
zeroed minus without), which is what makes a role "validated".

"Why this head": for each role that had a phase change, the winning head (highest final score) against the other
heads of its layer: score, share of the layer's attention writes (Σ‖Δw‖² over the head's Q/K/V/O slices, from
the ledger) and share of its gradient, before / during / after the change; and the winner's ablation effect
at the start, when it was still random.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from glassbox.circuits.timeline import keep_strongest
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.heads import masks
from glassbox.heads.masks import TRAINING_ROLES as ROLES
from glassbox.run import placement
from glassbox.run.load import place, preflight, set_threads
from glassbox.scale import seam
from glassbox.timeline import phases
from glassbox.timeline.probes import copy_losses, probe_batch
from glassbox.train import checkpoints as ck
from glassbox.train.model import build_model
from glassbox.train.store import read_table

ROLE_THRESHOLD = 0.4  # a head "has" a role when its score is at least this
VALIDATED_EFFECT = 0.1  # nats of second-copy loss lost when the head is zeroed
# role -> (low, high) for a phase change. Induction: the criterion (< 0.1 → > 0.5). Previous-token:
# uniform causal attention scores ~0.09 on the 32-token probe (queries 2..31; heads at init 0.075-0.097), and
# one head sharing its layer-0 job with positional mixing tops out near 0.5, so its bar is < 0.15 → > 0.4.
PHASE_ROLES = {"induction": (0.1, 0.5), "previous_token": (0.15, 0.4), "duplicate_token": (0.1, 0.4)}
VERSION = 4  # bump when the analysis changes, so cached timeline.json files are recomputed


def read_declaration(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    if not run.is_dir():
        raise BadInput("not a directory", run)
    if not path.is_file():
        raise BadInput("not a training run (no config.json)", run)
    try:
        return json.loads(path.read_text())["glassbox_train"]
    except (ValueError, KeyError, TypeError):
        raise BadInput("config.json has no glassbox_train section (not written by glassbox train)", path) from None


def _head_out_modules(model, architecture: str, config: dict) -> dict[int, tuple[object, list]]:
    """layer -> (the module whose input is the concatenated head outputs, that layer's o head slices)."""
    from glassbox.anatomy import roles

    dims = roles.Dims.from_config(architecture, config)
    modules = dict(model.named_modules())
    found = {}
    for name, p in model.named_parameters():
        level, layer = roles.classify(architecture, name)
        if level == "attention.o" and name.endswith(".weight"):
            slices = roles.head_slices(architecture, name, tuple(p.shape), dims)
            if slices:
                found[layer] = (modules[name[: -len(".weight")]], slices)
    return found


def _ablated_second_copy_loss(model, probe, module, hs) -> float:
    def zero_head(_mod, args):
        x = args[0].clone()
        x[..., hs.start : hs.stop] = 0
        return (x,) + tuple(args[1:])

    handle = module.register_forward_pre_hook(zero_head)
    try:
        return copy_losses(model(probe).logits, probe)[2]
    finally:
        handle.remove()


class CheckpointProber:
    """Builds the model, the probe batch and its masks once; then probes one checkpoint per call.

    The unit the scale seam fans out (glassbox.scale.seam): one per worker, called with (step, path).
    `dtype`/`device` are the command's --dtype/--device, handed over explicitly: a worker process does not
    share the driver's option state. The model runs there; what is read from it is read in float32 on the CPU.
    """

    def __init__(self, decl: dict, ablate: bool = True, dtype: str = "auto", device: str = "auto"):
        self.model = place(build_model(decl["model_config"], decl["attention_only"]).eval(), dtype, device)
        set_threads(self.model)
        if decl["data"].get("kind") == "tokens":  # real text: held-out real spans repeated, in distribution
            from glassbox.train.batches import make_data

            tr = decl["train"]
            self.probe = make_data(decl["data"], self.model.config.vocab_size, tr["seq_len"], 1, 0).probe()
        else:
            self.probe = probe_batch(self.model.config.vocab_size, decl["train"]["seq_len"])
        self.role_masks = masks.masks(self.probe, ROLES)  # built once, scored on every checkpoint
        self.on_device = self.probe.to(next(self.model.parameters()).device)
        self.outs = _head_out_modules(self.model, decl["architecture"], decl["model_config"]) if ablate else {}

    def __call__(self, step: int, path: str | Path) -> dict:
        import torch

        model, probe, role_masks, outs = self.model, self.probe, self.role_masks, self.outs
        meta = ck.load_weights(model, path)  # converted to the model's dtype and device as they are copied in
        with torch.no_grad():
            out = model(self.on_device, output_attentions=True)
            scores = masks.pattern_scores([a.float().cpu() for a in out.attentions], role_masks)
            _, first, second = copy_losses(out.logits.float().cpu(), probe)
            heads = []
            for layer in range(len(out.attentions)):
                for head in range(out.attentions[layer].shape[1]):
                    s = {role: float(scores[role][layer, head]) for role in ROLES}
                    effect = None
                    if layer in outs:
                        module, slices = outs[layer]
                        hs = next(x for x in slices if x.head == head)
                        effect = _ablated_second_copy_loss(model, self.on_device, module, hs) - second
                    roles = [{"role": r, "score": v, "ablation_effect": effect,
                              "validated": effect is not None and effect >= VALIDATED_EFFECT}
                             for r, v in sorted(s.items(), key=lambda kv: -kv[1]) if v >= ROLE_THRESHOLD]
                    heads.append({"layer": layer, "head": head, "scores": s, "roles": roles,
                                  "ablation_effect": effect})
        try:
            loss = float(meta.get("loss", "nan"))
        except ValueError:
            loss = float("nan")
        from glassbox.circuits.timeline import scores  # every pair; analyze() keeps the strongest

        return {"step": step, "loss": loss, "icl_score": first - second, **placement.of(model),
                "probe_loss_first_copy": first, "probe_loss_second_copy": second, "heads": heads,
                "composition": scores(model)}


def probe_checkpoints(run: Path, decl: dict, ablate: bool = True, backend=None, dtype: str = "auto",
                      device: str = "auto") -> list[dict]:
    """Every checkpoint probed, in step order, wherever `backend` (glassbox.scale.seam) says, each worker's
    model in `dtype` on `device`; each result is saved under RUN/.glassbox-parts/ as it arrives, so an
    interrupted timeline resumes."""
    set_threads()
    found = ck.list_checkpoints(run)
    if not found:
        raise BadInput("no checkpoints (checkpoints/step-NNNNNN.safetensors)", run)
    preflight(found[-1][1], dtype, device)  # refused here, before any worker starts
    items = [seam.Item(f"step-{step:06d}", (step, str(path.resolve())), seam.file_stamp(path))
             for step, path in found]
    return seam.run_items(CheckpointProber, (decl, ablate, dtype, device), items, backend,
                          _parts(run, decl, ablate, dtype, device), "probing checkpoints")


def _parts(run: Path, decl: dict, ablate: bool, dtype: str = "auto", device: str = "auto"):
    return seam.Parts(run / ".glassbox-parts" / "timeline",
                      placement.keyed({"version": VERSION, "ablate": ablate, "decl": decl}, dtype, device))


def detect_phase_changes(checkpoints: list[dict], metrics) -> tuple[list[dict], list[dict]]:
    steps = [c["step"] for c in checkpoints]
    changes = []
    for k, h in enumerate(checkpoints[0]["heads"]):
        for role, (low, high) in PHASE_ROLES.items():
            series = [c["heads"][k]["scores"][role] for c in checkpoints]
            found = phases.score_change(steps, series, low, high)
            if found:
                changes.append({"role": role, "layer": h["layer"], "head": h["head"], **found})
    loss_changes = []
    if metrics is not None:
        m = metrics.to_pydict()
        for metric in ("loss_repeated", "loss"):
            values = m.get(metric)
            if values and any(v == v for v in values):
                found = phases.loss_drop(m["step"], values)
                if found:
                    loss_changes.append({"metric": metric, **found})
    for c in changes:  # does the score jump coincide with the loss drop?
        for lc in loss_changes:
            if lc["metric"] == "loss_repeated":
                lo, hi = min(c["window"][0], lc["window"][0]), max(c["window"][1], lc["window"][1])
                c["loss_drop_step"] = lc["step"]
                c["coincides_with_loss_drop"] = abs(c["step"] - lc["step"]) <= max(10, (hi - lo) // 2)
    return sorted(changes, key=lambda c: c["step"]), loss_changes


def _head_write_shares(ledger, layer: int, windows: dict[str, tuple[int, int]]) -> dict[int, dict]:
    """head -> {quantity: {window: share of the layer's attention head writes}} from the ledger."""
    import pyarrow.compute as pc

    rows = ledger.filter(pc.and_(pc.equal(ledger["layer"], layer), pc.is_valid(ledger["head"])))
    d = rows.select(["step", "head", "update_norm", "grad_norm"]).to_pydict()
    shares: dict[int, dict] = {}
    for quantity in ("update_norm", "grad_norm"):
        for name, (lo, hi) in windows.items():
            per_head: dict[int, float] = {}
            for step, head, v in zip(d["step"], d["head"], d[quantity], strict=True):
                if lo <= step <= hi:
                    per_head[head] = per_head.get(head, 0.0) + v * v
            total = sum(per_head.values())
            for head, v in per_head.items():
                key = "write_share" if quantity == "update_norm" else "grad_share"
                shares.setdefault(head, {}).setdefault(key, {})[name] = v / total if total else None
    return shares


def why_this_head(checkpoints: list[dict], changes: list[dict], ledger, last_step: int) -> list[dict]:
    out = []
    steps = [c["step"] for c in checkpoints]
    for role in PHASE_ROLES:
        found = [c for c in changes if c["role"] == role]
        if not found:
            continue
        final = {(h["layer"], h["head"]): h["scores"][role] for h in checkpoints[-1]["heads"]}
        winner = max(found, key=lambda c: final[(c["layer"], c["head"])])
        layer, (w0, w1) = winner["layer"], winner["window"]
        windows = {"before": (1, max(1, w0 - 1)), "during": (w0, w1), "after": (w1 + 1, last_step)}
        shares = _head_write_shares(ledger, layer, windows) if ledger is not None else {}

        def at(step: int) -> int:
            return min(range(len(steps)), key=lambda i: abs(steps[i] - step))

        heads = []
        for h in checkpoints[0]["heads"]:
            if h["layer"] != layer:
                continue
            k = checkpoints[0]["heads"].index(h)
            first_useful = next((c for c in checkpoints if c["step"] > 0), checkpoints[0])["heads"][k]
            heads.append({
                "head": h["head"],
                "changed": any(c["layer"] == layer and c["head"] == h["head"] for c in found),
                "score": {name: checkpoints[at(s)]["heads"][k]["scores"][role]
                          for name, s in (("start", 0), ("before", w0), ("during", winner["step"]),
                                          ("after", last_step))},
                "early_ablation_effect": first_useful["ablation_effect"],
                "final_ablation_effect": checkpoints[-1]["heads"][k]["ablation_effect"],
                **shares.get(h["head"], {}),
            })
        first = min((c for c in found if c["layer"] == layer), key=lambda c: c["step"])
        out.append({"role": role, "layer": layer, "winner": winner["head"], "first_to_change": first["head"],
                    "step": winner["step"],
                    "window": winner["window"], "heads": heads})
    return out


def analyze(run: str | Path, ablate: bool = True, backend=None, dtype: str = "auto",
            device: str = "auto") -> dict[str, Any]:
    """The timeline document of one run (the contract's keys plus details); also saved as timeline.json.

    `backend` (glassbox.scale.seam.Backend) says where the checkpoints are probed; the document is the same.
    `dtype`/`device`: --dtype/--device (auto|float32|bfloat16|float16, auto|cpu|cuda|cuda:N|mps)."""
    run = Path(run)
    decl = read_declaration(run)
    cached = _cached(run, ablate, dtype, device)
    if cached is not None:
        return cached
    checkpoints = probe_checkpoints(run, decl, ablate, backend, dtype, device)

    keep_strongest(checkpoints)  # composition of the pairs strongest at the last checkpoint, at every checkpoint
    metrics = read_table(run, "metrics")
    ledger = read_table(run, "ledger")
    changes, loss_changes = detect_phase_changes(checkpoints, metrics)
    last_step = checkpoints[-1]["step"]
    doc = {
        "run": str(run), "seed": decl["seed"], "init": decl["init"], "steer": decl["steer"],
        "steps": decl["train"]["steps"], "last_checkpoint": last_step,
        "checkpoints": checkpoints, "phase_changes": changes, "loss_changes": loss_changes,
        "why": why_this_head(checkpoints, changes, ledger, last_step),
        "final": final_summary(checkpoints), "ablation": ablate, "version": VERSION,
        "dtype": checkpoints[-1]["dtype"], "device": checkpoints[-1]["device"],
    }
    doc = _finite(doc)
    write_json(run / "timeline.json", doc)
    _parts(run, decl, ablate, dtype, device).clear()  # merged: the per-checkpoint parts are no longer needed
    return doc


def _cached(run: Path, ablate: bool, dtype: str = "auto", device: str = "auto") -> dict[str, Any] | None:
    """timeline.json, when it is newer than everything it was computed from (and as thorough as asked, in the
    dtype and on the device asked: auto dtype takes a float32 one, as a trained run's model fits by far)."""
    path = run / "timeline.json"
    if not path.is_file():
        return None
    sources = [p for p in (run / "checkpoints").glob("*.safetensors")]
    sources += [p for p in (run / "metrics.parquet", run / "ledger.parquet", run / "config.json") if p.exists()]
    if (run / "parts").is_dir() or any(p.stat().st_mtime_ns > path.stat().st_mtime_ns for p in sources):
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return None
    if doc.get("version") != VERSION or (doc.get("ablation") != ablate and not doc.get("ablation")):
        return None
    if doc.get("dtype", "float32") != ("float32" if dtype == "auto" else dtype):
        return None
    if device != "auto" and doc.get("device", "cpu") != str(placement.resolve_device(device)):
        return None
    return {"dtype": "float32", "device": "cpu"} | dict(doc, run=str(run))  # older files: float32 on the CPU


def final_summary(checkpoints: list[dict]) -> dict[str, Any]:
    last = checkpoints[-1]
    top = {}
    for role in ROLES:
        best = max(last["heads"], key=lambda h: h["scores"][role])
        top[role] = {"layer": best["layer"], "head": best["head"], "score": best["scores"][role]}
    return {"step": last["step"], "loss": last["loss"], "icl_score": last["icl_score"],
            "probe_loss_second_copy": last["probe_loss_second_copy"], "top_heads": top}


def _finite(obj):
    """JSON has no NaN: turn non-finite floats into null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj

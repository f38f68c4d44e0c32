"""The head atlas: every probe's score for every head, roles above threshold, each checked causally.

Cost is bounded by construction: one cached forward over the repeated sequences (all attention probes),
one over the sentences (syntax, coreference), one per ordinal list (successor), the weights alone
(copying), then one small forward per ablated head: at most MAX_PER_ROLE heads per role plus
RANDOM_HEADS baselines per layer involved, memoized across roles that share a task.
`atlas["cost"]` reports the forwards and tokens; benchmarks/atlas.py turns them into forward-pass
equivalents (tokens ÷ tokens of the main probe forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassbox import progress
from glassbox.heads import data, probes, validate
from glassbox.run import hooks
from glassbox.run.load import Loaded

# Score a head must reach for the role to be listed (and checked). Chosen so that a random head of a
# model with ~64 positions stays well below (uniform attention gives ~0.03-0.3); successor's chance level
# is ~1/list length ≈ 0.1, so 0.35 is 3.5× chance. See the note on issue 3.
THRESHOLDS = {
    "previous_token": 0.4, "induction": 0.3, "duplicate_token": 0.3, "first_token": 0.8, "self": 0.3,
    "local": 0.7, "copying": 0.9, "successor": 0.35, "coreference": 0.7, "next_token": 0.4, "last_token": 0.5,
    "syntax": 0.6,
}
MAX_PER_ROLE = 4  # highest-scoring heads per role that get an ablation check
SEQ_HALF = 32
BATCH = 8
VALIDATION_BATCH = 4
VALIDATION_HALF = 16
TEXT_VALIDATION = 8  # sentences per text task
BUDGET_FPE = 45.0  # ablation runs stop (lowest-ranked first) when tokens reach this many main forwards
EXTRA_SCORES = {"copying_act"}  # cross-checks reported beside the probes, never turned into roles


@dataclass
class Settings:
    seed: int = 0
    half: int = SEQ_HALF
    batch: int = BATCH
    max_per_role: int = MAX_PER_ROLE
    validate: bool = True
    budget_fpe: float = BUDGET_FPE


def threshold(role: str) -> float:
    return THRESHOLDS["syntax"] if role.startswith("syntax:") else THRESHOLDS[role]


def _half(loaded: Loaded, wanted: int) -> int:
    limit = getattr(loaded.config, "max_position_embeddings", None) or getattr(loaded.config, "n_positions", 512)
    return max(4, min(wanted, (int(limit) - 2) // 2))


def compute_scores(loaded: Loaded, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """All probe scores → ({name: [layer, head] tensor}, inputs reused by the validation)."""
    half = _half(loaded, settings.half)
    steps = ["attention probes", "text probes", "weights"]
    scores: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for step in progress.track(steps, "atlas: probes"):
        if step == "attention probes":
            rep = data.repeats(loaded, settings.batch, half, settings.seed)
            names = ["blocks.*.attn.pattern"] + ([] if loaded.is_encoder else ["blocks.*.attn.head_out"])
            _, cache = hooks.run_with_cache(loaded, rep.tokens, names=names)
            scores.update(probes.pattern_scores(loaded, rep, cache))
            if not loaded.is_encoder:
                scores["copying_act"] = probes.copying_activation(loaded, rep, cache, settings.seed)
            inputs["repeats"] = rep
            del cache
        elif step == "text probes":
            sentences, coref = data.parsed(loaded), data.coreference(loaded)
            if sentences:
                _, _, cache = probes.text_cache(loaded, sentences)
                scores.update(probes.syntax_scores(loaded, sentences, cache))
                inputs["syntax"] = sentences
            if coref:
                _, _, cache = probes.text_cache(loaded, coref)
                scores["coreference"] = probes.coreference_scores(loaded, coref, cache)
                inputs["coreference"] = coref
        elif not loaded.is_encoder:
            scores["copying"] = probes.copying_scores(loaded)
            lists = data.ordinals(loaded)
            if lists:
                scores["successor"], _ = probes.successor_scores(loaded, lists)
                inputs["successor"] = lists
    return scores, inputs


def _tasks(loaded: Loaded, inputs: dict[str, Any], seed: int) -> dict[str, validate.Task]:
    import torch

    tasks: dict[str, validate.Task] = {}
    half = _half(loaded, VALIDATION_HALF)
    rep = data.repeats(loaded, VALIDATION_BATCH, half, seed + 1)  # fresh sequences: not the scoring ones
    targets = torch.zeros(rep.tokens.shape, dtype=torch.bool)
    targets[:, half + 2: 2 * half + 1] = True
    tasks["repeats"] = validate.Task(rep.tokens, targets=targets)
    for name in ("syntax", "coreference"):
        if name in inputs:
            tokens, mask = probes.pad([s.tokens for s in inputs[name][:TEXT_VALIDATION]])
            tasks[name] = validate.Task(tokens, mask)
    if "successor" in inputs:
        lists = inputs["successor"]
        tokens, mask = probes.pad([o.tokens for o in lists])
        targets = torch.zeros(tokens.shape, dtype=torch.bool)
        for i, o in enumerate(lists):
            targets[i, o.positions[1:]] = True
        tasks["successor"] = validate.Task(tokens, mask, targets)
    return tasks


def build_atlas(loaded: Loaded, settings: Settings | None = None) -> dict[str, Any]:
    """Scores, roles and their causal checks for every head → the atlas document (shared/design.md)."""
    import torch

    settings = settings or Settings()
    torch.manual_seed(settings.seed)
    start = dict(hooks.stats)
    scores, inputs = compute_scores(loaded, settings)
    probe_forwards = hooks.stats["forwards"] - start["forwards"]
    roles: dict[tuple[int, int], list[dict[str, Any]]] = {}
    unchecked = 0
    role_names = [n for n in scores if n not in EXTRA_SCORES]
    if settings.validate:
        busy = {(int(l_), int(h)) for role in role_names for l_, h in (scores[role] >= threshold(role)).nonzero().tolist()}
        validator = validate.Validator(loaded, _tasks(loaded, inputs, settings.seed), settings.seed, busy)
        budget = settings.budget_fpe * int(inputs["repeats"].tokens.numel())
        plan = []
        for role in role_names:
            s = scores[role]
            holders = {(int(l_), int(h)) for l_, h in (s >= threshold(role)).nonzero().tolist()}
            ranked = sorted(holders, key=lambda lh: (-float(s[lh]), lh))[: settings.max_per_role]
            task, metric, kind = validate.role_task(role, loaded.is_encoder)
            if task not in validator.tasks:
                continue
            plan += [(rank, role, task, metric, kind, lh, holders) for rank, lh in enumerate(ranked)]
        plan.sort(key=lambda p: p[0])  # every role's best head first, so a budget cut drops the weakest
        unchecked = 0
        for _, role, task, metric, kind, (layer, head), holders in progress.track(plan, "atlas: ablations"):
            spent = hooks.stats["tokens"] - start["tokens"]
            if spent + validator.cost(task, layer, head, holders, kind) > budget:
                unchecked += 1
                continue
            effect, baseline, ok = validator.check(task, metric, kind, layer, head, holders)
            entry = {"role": role, "score": round(float(scores[role][layer, head]), 4),
                     "ablation_effect": round(effect, 6), "validated": bool(ok),
                     "random_effect": None if math.isnan(baseline) else round(baseline, 6),
                     "metric": f"{metric} ({validate.KINDS[kind]})"}
            for key, value in validator.extra(task, kind, layer, head, holders).items():
                entry[key] = None if math.isnan(value) else round(value, 4)
            roles.setdefault((layer, head), []).append(entry)
    heads = []
    for layer in range(loaded.n_layers):
        for head in range(loaded.n_heads):
            entry = {"layer": layer, "head": head,
                     "scores": {name: round(float(s[layer, head]), 4) for name, s in scores.items()},
                     "roles": sorted(roles.get((layer, head), []), key=lambda r: -r["score"])}
            heads.append(entry)
    skipped = {}
    if loaded.is_encoder:
        skipped = {n: "causal-only probe; encoders are bidirectional" for n in ("induction", "copying", "successor")}
    elif loaded.tokenizer is None:
        skipped = {n: "no tokenizer in the checkpoint" for n in ("syntax", "coreference", "successor")}
    return {
        "model": loaded.name, "architecture": loaded.architecture,
        "n_layers": loaded.n_layers, "n_heads": loaded.n_heads, "seed": settings.seed,
        "thresholds": THRESHOLDS, "max_per_role": settings.max_per_role,
        "validation": "mean ablation (first_token: attention to position 0 removed and renormalized; "
                      "last_token: zero ablation); validated when |effect| > 2 × mean and > max of the same on "
                      f"{validate.RANDOM_HEADS} random same-layer heads (preferring heads with no role)",
        "skipped": skipped,
        "cost": {"forwards": hooks.stats["forwards"] - start["forwards"], "probe_forwards": probe_forwards,
                 "tokens": hooks.stats["tokens"] - start["tokens"],
                 "main_forward_tokens": int(inputs["repeats"].tokens.numel()),
                 "unchecked_over_budget": unchecked if settings.validate else None},
        "heads": heads,
    }


def role_names(atlas: dict[str, Any]) -> list[str]:
    names = list(atlas["heads"][0]["scores"]) if atlas["heads"] else []
    return [n for n in names if n not in EXTRA_SCORES]


def run_atlas(spec: str, out_dir: str | Path | None = None, seed: int = 0, allow_pickle: bool = False,
              loaded: Loaded | None = None, settings: Settings | None = None) -> tuple[dict[str, Any], Path]:
    """Load `spec`, build its atlas, write atlas.json and the heatmap PNG into out_dir → (atlas, png path).

    out_dir defaults to `glassbox-atlas/<model name>` under the current directory.
    """
    from glassbox.fileio import write_json
    from glassbox.heads.render import heatmap
    from glassbox.run import load_model

    loaded = loaded or load_model(spec, allow_pickle=allow_pickle)
    atlas = build_atlas(loaded, settings or Settings(seed=seed))
    out = Path(out_dir) if out_dir is not None else Path("glassbox-atlas") / Path(loaded.name).stem
    write_json(out / "atlas.json", atlas)
    png = heatmap(atlas, out / "atlas.png")
    return atlas, png

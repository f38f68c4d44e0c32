"""Causal validation: does intervening on a head change its role's task more than the same on random heads?

Each role has a task (a batch of probe inputs) and a metric on the model's output:
    previous_token, induction, duplicate_token, copying → loss on the repeated half of random sequences
        (previous-token and duplicate heads matter through composition with induction heads)
    first_token, self, local, next_token, last_token → KL(clean ‖ intervened) of the next-token distribution
        over the repeated sequences (how much the model needs the head at all)
    successor → loss of predicting each ordinal item's successor; syntax:* and coreference → LM loss
        on the parsed / pronoun sentences
Encoders have no next-token output: every metric is the change of the last hidden state (1 − cosine).

The intervention is mean ablation for most roles: the head's z is replaced by its mean over that task's
clean run (the head keeps its typical offset and loses only its input-dependent information).
first_token (attention sinks) is tested on the attention pattern instead ("no_sink"): the head's attention
to position 0 is removed and each query's row renormalized over the other keys (hooks.PatternEdit). A
sink head parks its attention on position 0, whose value is small, so its output is near constant and
ablating it changes almost nothing; taking the sink away makes it mix real tokens' values, so the head's
output norm grows sharply and the model's output moves. Its metric is that KL; the relative change of the
head's output norm (mean ‖head_out‖ over positions ≥ 1, intervened ÷ clean − 1) is reported beside it
(`norm_change`). last_token (encoder [SEP] sinks) keeps zero ablation, which removes the constant it writes.

The effect is |metric(intervened) − metric(clean)|; a role is `validated` when the head's effect is more
than twice the mean effect of the same intervention on up to RANDOM_HEADS random heads of the same layer,
and above the largest of them (and above FLOOR). The random heads are drawn from the layer's heads that
hold no role at all (score under every threshold), topped up with heads that at least lack this role
when there are fewer than MIN_FREE: a baseline should be a head not known to do anything. They come
from one seeded permutation per layer, so roles share their runs.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from glassbox.run import hooks
from glassbox.run.layout import o_weight
from glassbox.run.load import Loaded

RANDOM_HEADS = 3
MIN_FREE = 2  # fewer role-free heads than this in a layer: top up with heads that lack this role
FLOOR = 1e-4  # effects below this are noise whatever the baseline


@dataclass
class Task:
    tokens: Any  # [batch, seq]
    mask: Any | None = None  # real tokens (padding excluded)
    targets: Any | None = None  # [batch, seq] bool: positions whose next-token loss is the metric
    clean: Any = None
    means: Any = None
    z: Any = None  # clean attn.z per layer, for head output norms
    at: Any = None  # positions whose logits are needed (one before each target)
    memo: dict[tuple[str, int, int], dict[str, float]] = field(default_factory=dict)


def _loss(logits: Any, task: Task) -> float:
    """Mean next-token loss over the targets; logits are kept only at `task.at` (one before each target)."""
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    nll = -logp.gather(-1, task.tokens[:, task.at + 1, None])[..., 0]
    w = task.targets[:, task.at + 1].float()
    return float((nll * w).sum() / w.sum().clamp_min(1))


def _kl(clean: Any, logits: Any, task: Task) -> float:
    import torch

    p = torch.log_softmax(clean.float(), -1)
    q = torch.log_softmax(logits.float(), -1)
    kl = (p.exp() * (p - q)).sum(-1)
    w = task.targets[:, task.at + 1].float()
    return float((kl * w).sum() / w.sum().clamp_min(1))


def _change(clean: Any, hidden: Any, mask: Any) -> float:
    import torch

    cos = torch.nn.functional.cosine_similarity(clean.float(), hidden.float(), dim=-1)
    w = mask.float()
    return float(((1 - cos) * w).sum() / w.sum())


class Validator:
    """Runs and memoizes head ablations per task; compares each head with random heads of its layer."""

    def __init__(self, loaded: Loaded, tasks: dict[str, Task], seed: int,
                 busy: set[tuple[int, int]] | None = None):
        self.loaded = loaded
        self.busy = busy or set()  # heads holding some role: the last choice for a random baseline
        self.tasks = tasks
        self.seed = seed
        for task in tasks.values():
            if task.mask is None:
                task.mask = hooks._tokens(task.tokens).new_ones(task.tokens.shape)
            if task.targets is None:
                task.targets = task.mask.bool()
            task.targets[:, 0] = False  # nothing predicts the first token
            task.at = None if loaded.is_encoder else task.targets.any(0).nonzero()[:, 0] - 1
            task.clean, cache = hooks.run_with_cache(loaded, task.tokens, names="blocks.*.attn.z",
                                                     attention_mask=task.mask, logits_at=task.at)
            w = task.mask.float()[:, :, None, None]
            task.z = [cache[f"blocks.{layer}.attn.z"] for layer in range(loaded.n_layers)]
            task.means = _stack([(z * w).sum((0, 1)) / w.sum() for z in task.z])

    def metrics(self, task_name: str, layer: int, head: int, kind: str = "mean") -> dict[str, float]:
        task = self.tasks[task_name]
        if (kind, layer, head) not in task.memo:
            if kind == "no_sink":
                z = f"blocks.{layer}.attn.z"
                out, cache = hooks.run_with_cache(self.loaded, task.tokens, z,
                                                  [hooks.PatternEdit(layer, head, "no_sink")],
                                                  attention_mask=task.mask, logits_at=task.at)
                measured = self._measure(task, out)
                clean = self._head_norm(task, layer, head, task.z[layer])
                measured["norm_change"] = self._head_norm(task, layer, head, cache[z]) / max(clean, 1e-12) - 1
            else:
                if kind == "zero":
                    edits = hooks.zero_ablation([(layer, head)])
                else:
                    edits = hooks.mean_ablation([(layer, head)], task.means)
                out = hooks.run(self.loaded, task.tokens, edits, attention_mask=task.mask, logits_at=task.at)
                measured = self._measure(task, out)
            task.memo[(kind, layer, head)] = measured
        return task.memo[(kind, layer, head)]

    def _head_norm(self, task: Task, layer: int, head: int, z: Any) -> float:
        """Mean ‖head_out‖ over real tokens after the first (whose row a pattern edit cannot change)."""
        w = o_weight(self.loaded.model, self.loaded.architecture, layer)
        w = w.reshape(w.shape[0], z.shape[2], z.shape[3])[:, head]  # [d_model, d_head]
        norms = hooks._einsum("bsd,md->bsm", z[:, :, head], w).norm(dim=-1)
        m = task.mask.float().clone()
        m[:, 0] = 0
        return float((norms * m).sum() / m.sum().clamp_min(1))

    def _measure(self, task: Task, out: Any) -> dict[str, float]:
        if self.loaded.is_encoder:
            return {"change": _change(task.clean, out, task.mask)}
        return {"loss": _loss(out, task) - _loss(task.clean, task), "kl": _kl(task.clean, out, task)}

    def baseline_heads(self, layer: int, head: int, holders: set[tuple[int, int]]) -> list[int]:
        """Up to RANDOM_HEADS heads of the layer without the role, from one seeded permutation per layer."""
        order = list(range(self.loaded.n_heads))
        random.Random(zlib.crc32(f"{self.seed}:{layer}".encode())).shuffle(order)
        free = [h for h in order if (layer, h) not in self.busy and h != head]
        rest = [h for h in order if (layer, h) in self.busy and (layer, h) not in holders and h != head]
        return sorted((free if len(free) >= MIN_FREE else free + rest)[:RANDOM_HEADS])

    def cost(self, task_name: str, layer: int, head: int, holders: set[tuple[int, int]], kind: str) -> int:
        """Tokens still to run for one check (memoized runs are free)."""
        task = self.tasks[task_name]
        todo = {(kind, layer, h) for h in [head, *self.baseline_heads(layer, head, holders)]} - set(task.memo)
        return len(todo) * int(task.tokens.numel())

    def check(self, task: str, metric: str, kind: str, layer: int, head: int,
              holders: set[tuple[int, int]]) -> tuple[float, float, bool]:
        """(signed effect, mean random |effect|, validated) for one head in one role."""
        effect = self.metrics(task, layer, head, kind)[metric]
        rand = [abs(self.metrics(task, layer, h, kind)[metric]) for h in self.baseline_heads(layer, head, holders)]
        if not rand:
            return effect, float("nan"), False
        mean = sum(rand) / len(rand)
        ok = abs(effect) > max(2 * mean, max(rand), FLOOR)
        return effect, mean, ok

    def extra(self, task: str, kind: str, layer: int, head: int,
              holders: set[tuple[int, int]]) -> dict[str, float]:
        """Side measurements of a check already run (pattern edits: the head's output norm change, and the
        mean over the random heads), for the atlas entry."""
        if kind != "no_sink":
            return {}
        rand = [self.metrics(task, layer, h, kind)["norm_change"] for h in self.baseline_heads(layer, head, holders)]
        return {"norm_change": self.metrics(task, layer, head, kind)["norm_change"],
                "random_norm_change": sum(rand) / len(rand) if rand else float("nan")}


def _stack(items: list[Any]) -> Any:
    import torch

    return torch.stack(items)


KINDS = {"mean": "mean ablation", "zero": "zero ablation",
         "no_sink": "sink removed: attention to position 0 renormalized over the other keys"}


def role_task(role: str, is_encoder: bool) -> tuple[str, str, str]:
    """(task name, metric name, intervention kind) used to validate a role."""
    kind = {"first_token": "no_sink", "last_token": "zero"}.get(role, "mean")
    if role.startswith("syntax:"):
        task = "syntax"
    elif role == "coreference":
        task = "coreference"
    elif role == "successor":
        task = "successor"
    else:
        task = "repeats"
    if is_encoder:
        return task, "change", kind
    if task == "repeats" and role in ("first_token", "self", "local", "next_token", "last_token"):
        return task, "kl", kind
    return task, "loss", kind

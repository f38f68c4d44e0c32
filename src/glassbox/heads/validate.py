"""Causal validation with a null that could reject it: three kinds of evidence per (head, role).

Each role has a task (a batch of probe inputs) and a metric, oriented so that POSITIVE = the head helps:
    previous_token, induction, duplicate_token, copying → the rise of the next-token loss on the repeated half
        of random sequences when the head is removed (previous-token and duplicate heads act through
        composition with induction heads)
    first_token, self, local, next_token, last_token → KL(clean ‖ intervened) of the next-token distribution
        over the repeated sequences (how much the model needs the head at all; a KL is never negative)
    successor → rise of the loss of predicting each ordinal item's successor; syntax:* and coreference → rise
        of the LM loss on the parsed / pronoun sentences
Encoders have no next-token output: their metric is the change of the last hidden state (1 − cosine).
Every metric is measured per example (one predicted token; encoders: one token's hidden state), so a
bootstrap over examples gives a confidence interval.

The intervention is mean ablation (z replaced by its mean over the task's clean run); first_token (sinks) is
tested on the pattern ("no_sink": attention to position 0 removed and renormalized, hooks.PatternEdit, with
the head's output-norm change reported as `norm_change`), last_token (encoder [SEP] sinks) by zero ablation.

Evidence kinds:
  total   the head's own intervention. Null: the same intervention on NULL_HEADS heads that hold no role,
          nearest first from the head's layer and the layers before it (a layer gives at most `per_layer`
          of them, so the pool is shared across layers and its cost stays bounded), later layers only when
          the earlier ones run out; a small model gives what it has (`null_n` says how many), topped up to
          MIN_NULL with heads that merely lack this role only when fewer role-free heads exist.
          Each null head runs as its own copy of the task in one batch (HeadEdit(..., batch=rows)).
  direct  the head's direct contribution to the task's correct token: its output change under the same mean
          ablation, through the final norm with the scale frozen from the clean run, onto the centered
          unembedding row of the correct token (logit of the answer relative to the mean logit). Null: the
          same quantity for NULL_TOKENS random in-distribution tokens in place of the answer ("does the head
          push the answer more than any token?"): it needs no extra forward and exists in every model size.
          A redundant head keeps its direct effect when its twin is still there.
  group   the role's checked heads ablated together, against NULL_SETS random sets of the same size drawn
          from the null panel (every head a null may use, any layer; the sets are shared by every role of the
          same task and size, so they cost one batch per task, not one per role); a member is credited with the group only when removing it from the group
          lowers the group effect (paired bootstrap interval of the difference above 0). A member's group
          entry: `effect`, `ci`, `se` (and `drop`) are its own drop; the group's own effect, interval and se are
          `group_effect`, `group_ci`, `group_se`; `p` and the null's mean and sd test the group against its null.

Test, in two parts. Against the null population: effect x vs the null's mean m and sd s (n values),
t = (x − m) / (s √(1 + 1/n)), p from Student's t with n − 1 degrees of freedom (a prediction test: is x a
plausible draw from the null?), both tails, each corrected with Holm–Bonferroni over every (head, role, kind)
test of the atlas. Over examples: the 95% bootstrap interval of x must clear the null's mean (and 0), so an
effect carried by a few examples does not pass. A kind is significant when its corrected upper p < ALPHA,
its interval lies above max(0, m) and the effect exceeds FLOOR; significantly negative when its corrected
lower p < ALPHA and its interval lies below min(0, m). A role is validated when at least one kind is
significant and none is significantly negative.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from glassbox.heads.probes import _gain
from glassbox.logprob import kl_logp
from glassbox.run import hooks, memory
from glassbox.run.layout import final_norm, o_weight
from glassbox.run.load import Loaded

NULL_HEADS = 20  # heads in the null of one check
NULL_PER_LAYER = 3  # at most this many null heads from one layer (raised for shallow models)
NULL_SETS = 20  # random same-size sets in the null of a group
NULL_TOKENS = 32  # random answer tokens in the null of the direct effect
MIN_NULL = 3  # fewer null values than this: no test (p = 1)
BOOTSTRAP = 1000
ALPHA = 0.05
FLOOR = 1e-4  # effects below this are noise whatever the null
LOGIT_BUDGET = 48 * 2**20  # logits floats per batched forward (rows × kept positions × vocab)
KINDS_OF_EVIDENCE = ("total", "direct", "group")


@dataclass
class Task:
    tokens: Any  # [batch, seq]
    mask: Any | None = None  # real tokens (padding excluded)
    targets: Any | None = None  # [batch, seq] bool: positions whose next-token loss is the metric
    clean: Any = None  # clean logits at `at` (encoders: last hidden state), in the model's dtype
    means: Any = None  # [layer, head, d_head] mean z over the clean run
    z: Any = None  # clean attn.z per layer
    at: Any = None  # positions whose logits are needed (one before each target)
    ex_row: Any = None  # per example: batch row
    ex_pos: Any = None  # per example: target position (encoders: the token)
    ex_col: Any = None  # per example: index into `at` of the position predicting it
    clean_nll: Any = None  # [examples]
    direct: Any = None  # [layer, head, examples]: direct effect on the answer
    direct_null: Any = None  # [layer, head, NULL_TOKENS]: the same on random tokens (mean over examples)
    memo: dict[tuple[str, tuple[tuple[int, int], ...]], dict[str, Any]] = field(default_factory=dict)


def _einsum(spec: str, *ops: Any) -> Any:
    import torch

    return torch.einsum(spec, *ops)


class Validator:
    """Runs, memoizes and tests head interventions per task (single heads, null heads and groups as batch rows)."""

    def __init__(self, loaded: Loaded, tasks: dict[str, Task], seed: int,
                 busy: set[tuple[int, int]] | None = None, pool: Any | None = None):
        import torch

        self.loaded = loaded
        self.busy = busy or set()  # heads holding some role: never in a null unless the model has too few others
        self.tasks = tasks
        self.seed = seed
        self.pool = pool  # in-distribution token ids for the direct effect's null (None: the whole vocabulary)
        self.per_layer = max(NULL_PER_LAYER, math.ceil(NULL_HEADS / max(loaded.n_layers, 1)))
        for task in tasks.values():
            if task.mask is None:
                task.mask = hooks._tokens(task.tokens).new_ones(task.tokens.shape)
            if task.targets is None:
                task.targets = task.mask.bool().clone()
            if not loaded.is_encoder:
                task.targets[:, 0] = False  # nothing predicts the first token
                task.at = task.targets.any(0).nonzero()[:, 0] - 1
            names = ["blocks.*.attn.z"]
            if not loaded.is_encoder:
                names.append(f"blocks.{loaded.n_layers - 1}.resid_post")
            task.clean, cache = hooks.run_with_cache(loaded, task.tokens, names=names, attention_mask=task.mask,
                                                     logits_at=task.at, native=True)  # read per example
            w = task.mask.float()[:, :, None, None]
            task.z = [cache[f"blocks.{layer}.attn.z"] for layer in range(loaded.n_layers)]
            task.means = torch.stack([(z * w).sum((0, 1)) / w.sum() for z in task.z])
            ex = (task.mask.bool() if loaded.is_encoder else task.targets).nonzero()
            task.ex_row, task.ex_pos = ex[:, 0], ex[:, 1]
            if loaded.is_encoder:
                continue
            col = {int(p): i for i, p in enumerate(task.at.tolist())}
            task.ex_col = torch.tensor([col[int(p) - 1] for p in task.ex_pos.tolist()], dtype=torch.long)
            task.clean_nll = self._nll(task.clean, task)
            self._direct(task, cache[f"blocks.{loaded.n_layers - 1}.resid_post"])

    # ----- measurements -------------------------------------------------------------------------------------

    def _nll(self, logits: Any, task: Task) -> Any:
        import torch

        logp = torch.log_softmax(logits[task.ex_row, task.ex_col].float(), -1)
        return -logp.gather(-1, task.tokens[task.ex_row, task.ex_pos][:, None])[:, 0]

    def _measure(self, task: Task, out: Any) -> dict[str, Any]:
        """Per-example metrics of one copy of the task's output, oriented positive = the head helped."""
        import torch

        if self.loaded.is_encoder:
            a = task.clean[task.ex_row, task.ex_pos].float()
            b = out[task.ex_row, task.ex_pos].float()
            return {"change": 1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)}
        p = torch.log_softmax(task.clean[task.ex_row, task.ex_col].float(), -1)
        q = torch.log_softmax(out[task.ex_row, task.ex_col].float(), -1)
        nll = -q.gather(-1, task.tokens[task.ex_row, task.ex_pos][:, None])[:, 0]
        return {"loss": nll - task.clean_nll, "kl": kl_logp(p, q)}

    def _direct(self, task: Task, resid: Any) -> None:
        """Every head's direct effect on the answer, and on random tokens, from the clean run (no forward)."""
        import torch

        loaded = self.loaded
        norm = final_norm(loaded.model, loaded.architecture)
        w_u = loaded.model.get_output_embeddings().weight.detach()
        # logits relative to the mean logit (a uniform shift changes nothing), in float32; a half model's W_U is
        # read into the difference directly, without a float32 copy of it first
        w_u = w_u - w_u.mean(0, keepdim=True, dtype=torch.float32)
        x = resid[task.ex_row, task.ex_pos - 1].float()  # [e, d]: the final norm's input where each answer is read
        layer_norm = isinstance(norm, torch.nn.LayerNorm)
        if layer_norm:
            x = x - x.mean(-1, keepdim=True)
        eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)) or 1e-6) if norm is not None else 0.0
        sigma = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() if norm is not None else torch.ones(len(x), 1)

        gain = _gain(norm, x.shape[-1]).float()
        answers = task.tokens[task.ex_row, task.ex_pos]
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:direct".encode()))
        ids = self.pool if self.pool is not None else torch.arange(w_u.shape[0])
        draws = ids[torch.randint(0, len(ids), (len(answers), NULL_TOKENS), generator=g)]
        clash = draws == answers[:, None]  # a random token that is the answer: take the next pool id instead
        draws[clash] = ids[(torch.searchsorted(ids, draws[clash]) + 1) % len(ids)]
        u_ans, u_rand = w_u[answers], w_u[draws]  # [e, d], [e, R, d]
        direct, null = [], []
        with torch.inference_mode():
            for layer in range(loaded.n_layers):
                z = task.z[layer][task.ex_row, task.ex_pos - 1].float() - task.means[layer]  # [e, h, dh]
                w = o_weight(loaded.model, loaded.architecture, layer).float()
                w = w.reshape(w.shape[0], loaded.n_heads, -1)  # [d, h, dh]
                v = _einsum("ehk,dhk->ehd", z, w)
                if layer_norm:
                    v = v - v.mean(-1, keepdim=True)
                v = v / sigma[:, None] * gain
                direct.append(_einsum("ehd,ed->he", v, u_ans))
                null.append(_einsum("ehd,erd->hr", v, u_rand) / len(answers))
        task.direct, task.direct_null = torch.stack(direct), torch.stack(null)

    def runs(self, task_name: str, kind: str, specs: list[tuple[tuple[int, int], ...]]) -> list[dict[str, Any]]:
        """Per-example metrics for each spec (a tuple of heads intervened on together), batched as rows."""
        import torch

        task = self.tasks[task_name]
        todo = list(dict.fromkeys(s for s in specs if (kind, s) not in task.memo))
        n, seq = task.tokens.shape
        width = len(task.at) * int(self.loaded.config.vocab_size) if not self.loaded.is_encoder else seq
        per = max(1, min(LOGIT_BUDGET // max(n * width, 1), memory.batch_rows(self.loaded, seq, 10**6) // n))
        for start in range(0, len(todo), per):
            chunk = todo[start: start + per]
            tokens = task.tokens.repeat(len(chunk), 1)
            mask = task.mask.repeat(len(chunk), 1)
            edits: list[Any] = []
            for c, spec in enumerate(chunk):
                rows = list(range(c * n, (c + 1) * n))
                for layer, head in spec:
                    if kind == "no_sink":
                        edits.append(hooks.PatternEdit(layer, head, "no_sink", batch=rows))
                    else:
                        value = None if kind == "zero" else task.means[layer, head]
                        edits.append(hooks.HeadEdit(layer, head, value, batch=rows))
            single = kind == "no_sink"
            names = sorted({f"blocks.{layer}.attn.z" for spec in chunk for layer, _ in spec}) if single else []
            # logits in the model's dtype: _measure converts each example's row (a half model's batch of
            # logits is then half the float32 size; a float32 model's is the same tensor either way)
            out, cache = hooks.run_with_cache(self.loaded, tokens, names=names, edits=edits,
                                              attention_mask=mask, logits_at=task.at, native=True)
            for c, spec in enumerate(chunk):
                measured = self._measure(task, out[c * n: (c + 1) * n])
                if single and len(spec) == 1:
                    (layer, head), = spec
                    z = cache[f"blocks.{layer}.attn.z"][c * n: (c + 1) * n]
                    clean = self._head_norm(task, layer, head, task.z[layer])
                    measured["norm_change"] = torch.tensor(self._head_norm(task, layer, head, z) / max(clean, 1e-12) - 1)
                task.memo[(kind, spec)] = measured
            del out, cache  # before the next batch's forward: one batch of logits alive at a time, not two
        return [task.memo[(kind, s)] for s in specs]

    def metrics(self, task_name: str, layer: int, head: int, kind: str = "mean") -> dict[str, float]:
        """Mean of each metric for one head's intervention (the single-number view, for tests and `heads show`)."""
        measured = self.runs(task_name, kind, [((layer, head),)])[0]
        return {k: float(v.mean()) for k, v in measured.items()}

    def _head_norm(self, task: Task, layer: int, head: int, z: Any) -> float:
        """Mean ‖head_out‖ over real tokens after the first (whose row a pattern edit cannot change)."""
        w = o_weight(self.loaded.model, self.loaded.architecture, layer)
        w = w.reshape(w.shape[0], z.shape[2], z.shape[3])[:, head]  # [d_model, d_head]
        norms = hooks._einsum("bsd,md->bsm", z[:, :, head], w).norm(dim=-1)
        m = task.mask.float().clone()
        m[:, 0] = 0
        return float((norms * m).sum() / m.sum().clamp_min(1))

    # ----- nulls -----------------------------------------------------------------------------------------------

    def _order(self, layer: int) -> list[int]:
        order = list(range(self.loaded.n_heads))
        random.Random(zlib.crc32(f"{self.seed}:{layer}".encode())).shuffle(order)
        return order

    def null_heads(self, layer: int, exclude: set[tuple[int, int]], holders: set[tuple[int, int]]
                   ) -> tuple[list[tuple[int, int]], str]:
        """NULL_HEADS role-free heads nearest the layer, at or before it first → (heads, where they came from)."""
        layers = list(range(layer, -1, -1)) + list(range(layer + 1, self.loaded.n_layers))
        free: list[tuple[int, int]] = []
        for lay in layers:
            free += [(lay, h) for h in self._order(lay) if (lay, h) not in self.busy][: self.per_layer]
        free = [lh for lh in free if lh not in exclude]
        before = sum(1 for lay, _ in free[:NULL_HEADS] if lay <= layer)
        where = f"{min(len(free), NULL_HEADS)} role-free heads ({before} at or before layer {layer})"
        if len(free) < MIN_NULL:  # too few to test against: heads that hold other roles but not this one
            rest = [(lay, h) for lay in layers for h in self._order(lay)
                    if (lay, h) in self.busy and (lay, h) not in holders and (lay, h) not in exclude]
            if rest:
                where += f" + {min(len(rest), MIN_NULL - len(free))} heads without this role"
            free += rest[: MIN_NULL - len(free)]
        return free[:NULL_HEADS], where

    def panel(self) -> list[tuple[int, int]]:
        """Every role-free head a null may use (at most `per_layer` per layer, the same ones null_heads picks)."""
        return [(lay, h) for lay in range(self.loaded.n_layers)
                for h in [h for h in self._order(lay) if (lay, h) not in self.busy][: self.per_layer]]

    def null_sets(self, size: int, pool: list[tuple[int, int]], key: str) -> list[tuple[tuple[int, int], ...]]:
        """Up to NULL_SETS distinct random sets of `size` heads from `pool`, seeded by `key` (shared by roles)."""
        if len(pool) < size:
            return []
        rng = random.Random(zlib.crc32(f"{self.seed}:{key}".encode()))
        sets: list[tuple[tuple[int, int], ...]] = []
        possible = math.comb(len(pool), size)
        for _ in range(NULL_SETS * 10):
            if len(sets) >= min(NULL_SETS, possible):
                break
            s = tuple(sorted(rng.sample(pool, size)))
            if s not in sets:
                sets.append(s)
        return sets

    def new_tokens(self, task_name: str, kind: str, specs: list[tuple[tuple[int, int], ...]]) -> int:
        """Tokens still to run for these specs (memoized runs are free)."""
        task = self.tasks[task_name]
        return len({s for s in specs if (kind, s) not in task.memo}) * int(task.tokens.numel())

    # ----- evidence --------------------------------------------------------------------------------------------

    def total(self, task: str, metric: str, kind: str, head: tuple[int, int], null: list[tuple[int, int]]
              ) -> dict[str, Any]:
        runs = self.runs(task, kind, [(head,)] + [(h,) for h in null])
        own = runs[0][metric]
        result = evidence(own, [float(r[metric].mean()) for r in runs[1:]], self._seed(task, head, "total"))
        if kind == "no_sink":
            result["norm_change"] = float(runs[0]["norm_change"])
            result["null_norm_change"] = (sum(float(r["norm_change"]) for r in runs[1:]) / len(runs[1:])
                                          if runs[1:] else float("nan"))
        return result

    def direct(self, task_name: str, head: tuple[int, int]) -> dict[str, Any] | None:
        task = self.tasks[task_name]
        if task.direct is None:
            return None
        layer, h = head
        return evidence(task.direct[layer, h], task.direct_null[layer, h].tolist(),
                        self._seed(task_name, head, "direct"))

    def group(self, task: str, metric: str, kind: str, members: list[tuple[int, int]],
              sets: list[tuple[tuple[int, int], ...]]) -> tuple[dict[str, Any], dict[tuple[int, int], dict]]:
        """The group's evidence, and per member whether removing it from the group lowers the group effect."""
        group = tuple(sorted(members))
        loo = [tuple(m for m in group if m != x) for x in group]
        runs = self.runs(task, kind, [group, *loo, *sets])
        whole = runs[0][metric]
        result = evidence(whole, [float(r[metric].mean()) for r in runs[1 + len(loo):]],
                          self._seed(task, group[0], "group"))
        # the group's own figures under their own keys; `effect`, `ci` and `se` of a member's entry are its drop
        own = {"group_effect": result.pop("effect"), "group_ci": result.pop("ci"), "group_se": result.pop("se")}
        result.update(own)
        credit = {}
        for x, r in zip(group, runs[1: 1 + len(loo)], strict=True):
            diff = whole - r[metric]  # paired: the same examples
            lo, hi, se = _bootstrap(diff, self._seed(task, x, "credit"))
            drop = round(float(diff.mean()), 6)
            credit[x] = {"drop": drop, "effect": drop, "ci": [round(lo, 6), round(hi, 6)], "se": se,
                         "credited": bool(lo > 0 and float(diff.mean()) > FLOOR)}
        return result, credit

    def _seed(self, task: str, head: tuple[int, int], what: str) -> int:
        return zlib.crc32(f"{self.seed}:{task}:{head}:{what}".encode())


def bootstrap_ci(values: Any, seed: int) -> tuple[float, float]:
    lo, hi, _ = _bootstrap(values, seed)
    return lo, hi


def _bootstrap(values: Any, seed: int) -> tuple[float, float, float]:
    """95% percentile interval and standard error of the mean, resampling examples."""
    import torch

    v = values.float().flatten()
    if v.numel() < 2:
        x = float(v.mean()) if v.numel() else 0.0
        return x, x, 0.0
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (BOOTSTRAP, v.numel()), generator=g)
    means = v[idx].mean(1)
    q = torch.quantile(means, torch.tensor([0.025, 0.975]))
    return float(q[0]), float(q[1]), float(means.std())


def evidence(values: Any, null: list[float], seed: int) -> dict[str, Any]:
    """One kind of evidence: effect (mean over examples), 95% bootstrap interval, raw p of both tails vs the null."""
    effect = float(values.float().mean())
    lo, hi, se = _bootstrap(values, seed)
    n = len(null)
    out = {"effect": effect, "ci": [lo, hi], "null_n": n, "null_mean": float("nan"), "null_sd": float("nan"),
           "p_up": 1.0, "p_down": 1.0}
    if n >= 1:
        m = sum(null) / n
        out["null_mean"] = m
        out["null_sd"] = math.sqrt(sum((x - m) ** 2 for x in null) / (n - 1)) if n > 1 else float("nan")
    out["se"] = se
    out["p_up"], out["p_down"] = tails(effect, n, out["null_mean"], out["null_sd"])
    return out


def tails(effect: float, n: int, mean: float | None, sd: float | None) -> tuple[float, float]:
    """Raw p of both tails of the prediction test of `effect` against a null of n values (mean, sd); 1.0 for
    both with fewer than MIN_NULL values."""
    from scipy import stats

    if n < MIN_NULL or mean is None or sd is None or math.isnan(mean) or math.isnan(sd):
        return 1.0, 1.0
    scale = sd * math.sqrt(1 + 1 / n)
    if scale > 0:
        t = (effect - mean) / scale
        return float(stats.t.sf(t, n - 1)), float(stats.t.cdf(t, n - 1))
    # every value identical: the effect either differs from all of them or not at all
    return (0.0 if effect > mean else 1.0), (0.0 if effect < mean else 1.0)


def holm(ps: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error rate), in the input order."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def rounding_step(dtype: str, logit_rms: float) -> float:
    """One rounding step of the logits of a model in `dtype` (nats): machine epsilon × their RMS. How far
    rounding alone can move an effect measured on them (float32: ~1e-6 for SmolLM2; bfloat16: ~0.09)."""
    from glassbox.run.placement import eps

    return eps(dtype) * logit_rms


def noise_floor(dtype: str, logit_rms: float) -> float:
    """The smallest effect (nats) a model in `dtype` can resolve: one rounding step of its logits, never
    below FLOOR. float32: ~1e-6 for SmolLM2, so FLOOR decides as it always did; bfloat16: ~0.09 nats there.
    An effect at or below it is never called significant."""
    return max(FLOOR, rounding_step(dtype, logit_rms))


def decide(kinds: dict[str, dict[str, Any]], noise: float = FLOOR) -> tuple[bool, list[str], str | None]:
    """(validated, significant kinds, the kind whose figures lead the entry) from corrected kinds.

    Each kind needs `effect`, `ci`, `p` (corrected upper tail) and `p_down` (corrected lower tail); a group
    kind also `group_effect` (the verdict is the one the atlas gave before the member's drop took `effect`).
    `noise`: the dtype's noise floor (`noise_floor`); a kind that passes its test with an effect inside it is
    marked `within_noise_floor` instead of significant (half precision changed the verdict)."""
    def floor(e: dict[str, Any]) -> float:
        m = e.get("null_mean")
        return 0.0 if m is None or math.isnan(m) else m

    # a group entry: p and the null are the group's (its effect under group_effect), ci is the member's drop
    passed = [k for k, e in kinds.items() if e["p"] < ALPHA and e["ci"][0] > max(0.0, floor(e))
              and e.get("group_effect", e["effect"]) > FLOOR and e.get("credited", True)]
    positive = [k for k in passed if kinds[k].get("group_effect", kinds[k]["effect"]) > noise]
    for k in passed:
        if k not in positive:
            kinds[k]["within_noise_floor"] = True
    negative = [k for k, e in kinds.items() if e["p_down"] < ALPHA and e["ci"][1] < min(0.0, floor(e))]
    for k, e in kinds.items():
        e["significant"] = "positive" if k in positive else "negative" if k in negative else "no"
    lead = min(positive, key=lambda k: kinds[k]["p"]) if positive else ("total" if "total" in kinds else None)
    return bool(positive) and not negative, positive, lead


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

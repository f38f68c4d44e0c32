"""Which training examples wrote a head: `glassbox writes RUN --examples --head L.H [--steps A-B]`.

For each step s of the window the run is replayed exactly (glassbox.train.replay: data are a function of
(seed, step)); at the weights W_{s-1} every batch row i gets its own gradient g_i of its mean token loss, on
the head's Q/K/V/O slices only (torch.func: functional_call + vmap(grad)). The update actually taken is the
replayed Adam step u_s = W_s − W_{s−1} on those slices. Example i's contribution is

    c_{s,i} = −⟨g_i / b, u_s⟩ / ‖u_s‖

the descent its gradient makes along the direction the head moved; the batch loss is the mean of the rows', so
Σ_i c_{s,i} = −⟨∇L_batch, u_s/‖u_s‖⟩ exactly (tested by brute force). Positive: the example pushed the way the
head went. Ranking all (step, row) pairs of the window by c gives the examples that wrote the head.

`retrain` checks the ranking causally: replay to the window's start, then train on with the top-ranked rows
replaced by fresh rows of the same data (rows of far-away steps), or the same number of random rows replaced,
and find the step at which the head's role forms in each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glassbox.anatomy import roles
from glassbox.errors import BadInput
from glassbox.heads import masks
from glassbox.timeline import phases
from glassbox.timeline.analyze import PHASE_ROLES
from glassbox.timeline.probes import probe_batch
from glassbox.timeline.spans import induction_predictable, row_span
from glassbox.timeline.writes import phase_window
from glassbox.train import replay
from glassbox.train.batches import decoder
from glassbox.train.loop import _read_declaration

FAR = 10_000_000  # replacement rows come from batches of steps this far on: never used in training


def parse_head(text: str) -> tuple[int, int]:
    try:
        layer, head = (int(x) for x in text.upper().replace("L", "").replace("H", ".").split(".") if x != "")
    except ValueError:
        raise BadInput(f"--head wants LAYER.HEAD (e.g. 1.0), got {text!r}") from None
    return layer, head


def parse_steps(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split("-"))
    except ValueError:
        raise BadInput(f"--steps wants A-B (e.g. 80-140), got {text!r}") from None
    if not 1 <= a <= b:
        raise BadInput(f"--steps {text}: need 1 <= A <= B")
    return a, b


def head_params(model, architecture: str, config: dict, layer: int, head: int) -> dict[str, list[tuple]]:
    """parameter name -> index tuples of the head's Q/K/V/O blocks in it (K/V: the head's kv group)."""
    dims = roles.Dims.from_config(architecture, config)
    if dims is None or not (0 <= layer < dims.n_layers and 0 <= head < dims.n_heads):
        raise BadInput(f"no head L{layer}H{head} in this model")
    group = dims.group_size
    out: dict[str, list[tuple]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or roles.classify(architecture, name)[1] != layer:
            continue
        for hs in roles.head_slices(architecture, name, tuple(p.shape), dims):
            want = head // group if hs.kind in ("k", "v") else head
            if hs.head == want:
                out.setdefault(name, []).append(hs.index(p.ndim))
    if not out:
        raise BadInput(f"cannot find the Q/K/V/O slices of L{layer}H{head} ({architecture})")
    return out


def _flat(tensors: dict[str, Any], slices: dict[str, list[tuple]], batched: bool = False):
    import torch

    parts = []
    for name, idx in slices.items():
        t = tensors[name]
        for index in idx:
            block = t[(slice(None),) + index] if batched else t[index]
            parts.append(block.reshape(block.shape[0], -1) if batched else block.reshape(-1))
    return torch.cat(parts, dim=1 if batched else 0)


def per_example_grads(model, tokens, slices: dict[str, list[tuple]]):
    """[batch, n] gradients of each row's mean token loss on the head's slices (torch.func)."""
    import torch
    from torch.func import functional_call, grad, vmap

    names = list(slices)
    params = {n: p.detach() for n, p in model.named_parameters()}
    wanted = {n: params[n] for n in names}

    def row_loss(w, row):
        logits = functional_call(model, {**params, **w}, (row.unsqueeze(0),)).logits[0, :-1].float()
        return torch.nn.functional.cross_entropy(logits, row[1:])

    grads = vmap(grad(row_loss), in_dims=(None, 0), randomness="same")(wanted, tokens)
    return _flat(grads, slices, batched=True)


def contributions(run: str | Path, layer: int, head: int, steps: tuple[int, int],
                  quiet: bool = False) -> dict[str, Any]:
    """Per (step, row) contribution to the head's update over the window, by exact replay."""
    import torch

    state = replay.setup(run)
    decl, model = state["decl"], state["model"]
    last = decl["train"]["steps"]
    a, b = steps
    if b > last:
        raise BadInput(f"--steps {a}-{b} runs past the run's last step {last}", run)
    slices = head_params(model, decl["architecture"], decl["model_config"], layer, head)
    named = dict(model.named_parameters())
    replay.advance(state, a - 1, progress=None if quiet else "replaying to the window")
    rows: list[dict[str, Any]] = []
    held: dict[str, Any] = {}

    def before(step, batch):
        model.eval()  # no dropout in these presets; eval keeps vmap free of randomness anyway
        g = per_example_grads(model, batch.tokens, slices) / batch.tokens.shape[0]
        model.train()
        held["g"], held["w"], held["batch"] = g, _flat({n: named[n].detach() for n in slices}, slices).clone(), batch
        held["batch_grad"] = _flat({n: named[n].grad for n in slices}, slices).clone()

    def after(step, batch):
        u = _flat({n: named[n].detach() for n in slices}, slices) - held["w"]
        norm = float(u.norm())
        c = -(held["g"] @ u) / norm if norm > 0 else torch.zeros(held["g"].shape[0])
        total = float(-(held["batch_grad"] @ u) / norm) if norm > 0 else 0.0
        for i in range(len(c)):
            rows.append({"step": step, "row": i, "contribution": float(c[i]), "batch_total": total,
                         "update_norm": norm})

    replay.advance(state, b, before=before, after=after, progress=None if quiet else "per-example gradients")
    return {"rows": rows, "replay_max_abs_diff": replay.check_against_checkpoint(state), "data": state["data"],
            "threads": state["threads"], "threads_source": state["threads_source"]}


def default_window(run: Path, layer: int, head: int, last: int) -> tuple[tuple[int, int], str]:
    """The head's first phase change in timeline.json (its window, as `--steps phase` reads it), else the whole
    run."""
    try:
        window, _, source = phase_window(run, (layer, head))
        return window, source
    except (BadInput, KeyError, TypeError, ValueError):  # no timeline, no change of this head, or a broken file
        pass
    return (1, last), "whole run (no phase change of this head in timeline.json)"


def _ngram_repeat(seq: list[int], n: int = 4) -> bool:
    seen = set()
    for k in range(len(seq) - n + 1):
        g = tuple(seq[k : k + n])
        if g in seen:
            return True
        seen.add(g)
    return False


def rank(run: str | Path, layer: int, head: int, steps: tuple[int, int] | None = None, top: int = 10,
         quiet: bool = False) -> dict[str, Any]:
    """The `writes --examples` document: the window's rows ranked by contribution, with their text."""
    run = Path(run)
    decl = _read_declaration(run)
    if steps is None:
        steps, source = default_window(run, layer, head, decl["train"]["steps"])
    else:
        source = "given (--steps)"
    got = contributions(run, layer, head, steps, quiet)
    rows, data = got["rows"], got["data"]
    decode = decoder(run)
    ranked = sorted(rows, key=lambda r: -r["contribution"])
    batches: dict[int, Any] = {}
    rare = data.vocab_size - 1 if decl["data"].get("kind") == "tokens" else None  # token data's rare class

    def features(r: dict) -> dict:
        if r["step"] not in batches:
            batches[r["step"]] = data.batch(r["step"])
        bt = batches[r["step"]]
        seq = bt.tokens[r["row"]].tolist()
        ind = induction_predictable(seq, rare)
        return {"repeated_fraction": float(bt.repeated[r["row"]].float().mean()), "ngram_repeat": _ngram_repeat(seq),
                "tokens": seq, "repeated": bt.repeated[r["row"]].tolist(),
                "induction_fraction": sum(ind) / max(1, len(ind) - 1)}

    feats = {(r["step"], r["row"]): features(r) for r in rows}  # once per row: the top rows, the decile, all
    total = sum(r["contribution"] for r in rows)
    top_rows = []
    for r in ranked[:top]:
        f = feats[r["step"], r["row"]]
        top_rows.append({**{k: r[k] for k in ("step", "row", "contribution")},
                         "share": r["contribution"] / total if total else None,
                         "text": decode(f["tokens"]), "repeated_fraction": f["repeated_fraction"],
                         "ngram_repeat": f["ngram_repeat"],
                         # the text cut into token pieces, the repeated part marked (the report highlights it)
                         "span": row_span(decode, f["tokens"], f["repeated"], rare)})

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    def describe(group: list[dict]) -> dict:
        return {"n": len(group),
                "with_quoted_or_periodic_repeat": mean([f["repeated_fraction"] > 0 for f in group]),
                "repeated_fraction": mean([f["repeated_fraction"] for f in group]),
                "with_4gram_repeat": mean([f["ngram_repeat"] for f in group]),
                # tokens whose previous token occurred earlier followed by them: natural repeats too
                "induction_fraction": mean([f["induction_fraction"] for f in group])}

    top_group = [feats[r["step"], r["row"]] for r in ranked[: max(top, len(rows) // 10)]]
    summary = {"top_decile": describe(top_group), "all_rows": describe(list(feats.values()))}
    positive = sum(r["contribution"] for r in rows if r["contribution"] > 0)
    top_mass = sum(r["contribution"] for r in ranked[:top] if r["contribution"] > 0)
    return {"run": str(run), "layer": layer, "head": head, "steps": list(steps), "window_source": source,
            "update": "the replayed Adam step W_s - W_(s-1) on the head's Q/K/V/O slices (exact replay from step 0)",
            "contribution": "-<g_i / batch, u_s> / |u_s|: row i's descent along the head's actual update",
            "replay_max_abs_diff": got["replay_max_abs_diff"],
            "replay_threads": got["threads"], "replay_threads_source": got["threads_source"],
            "rows": len(rows), "total_contribution": total,
            "top_share_of_positive": top_mass / positive if positive else None,
            "top": top_rows, "summary": summary,
            "ranked_rows": [[r["step"], r["row"]] for r in ranked]}


def _role_of(run: Path, layer: int, head: int) -> str:
    try:
        doc = json.loads((run / "timeline.json").read_text())
        changes = [c for c in doc.get("phase_changes", []) if c["layer"] == layer and c["head"] == head]
    except (OSError, ValueError, KeyError, TypeError):
        changes = []
    return min(changes, key=lambda c: c["step"])["role"] if changes else "induction"


def retrain(run: str | Path, layer: int, head: int, doc: dict[str, Any], until: int | None = None,
            every: int = 2, quiet: bool = False, seed: int = 0, share: float = 0.1,
            n_random: int = 1) -> dict[str, Any]:
    """From the window's start: train on unchanged (baseline), with the top `share` of the ranked rows of `doc`
    replaced by fresh rows, and with as many random rows of the window replaced (`n_random` different random sets:
    their spread is the null the top-replaced delay is read against); the step at which the head's role forms
    in each (glassbox.timeline.phases thresholds of that role), the step at which its score crosses the
    thresholds' midpoint (`crossing_step`: defined even when the window starts mid-rise, above `low`), and the
    score series."""
    import copy

    import torch

    run = Path(run)
    role = _role_of(run, layer, head)
    low, high = PHASE_ROLES.get(role, (phases.LOW, phases.HIGH))
    state = replay.setup(run)
    model, data, opt = state["model"], state["data"], state["optimizer"]
    a, b = doc["steps"]
    last = state["decl"]["train"]["steps"]
    until = min(last, until or b + 3 * (b - a + 1))
    if not 0 < share <= 1:
        raise BadInput(f"--replace-share must be in (0, 1], got {share}")
    top = {tuple(x) for x in doc["ranked_rows"][: max(1, int(round(share * len(doc["ranked_rows"]))))]}
    bs = state["decl"]["train"]["batch_size"]
    if n_random < 1:
        raise BadInput(f"the number of random row sets must be at least 1, got {n_random}")
    g = torch.Generator()
    g.manual_seed(seed)
    every_row = [(s, r) for s in range(a, b + 1) for r in range(bs)]
    random_sets = [{every_row[k] for k in torch.randperm(len(every_row), generator=g)[: len(top)].tolist()}
                   for _ in range(n_random)]
    probe = data.probe() if hasattr(data, "probe") else probe_batch(model.config.vocab_size, data.seq_len)
    role_masks = masks.masks(probe, (role,))
    replay.advance(state, a - 1, progress=None if quiet else "replaying to the window")
    snap_model = {k: v.clone() for k, v in model.state_dict().items()}
    snap_opt = copy.deepcopy(opt.state_dict())

    def score() -> float:
        model.eval()
        with torch.no_grad():
            att = model(probe, output_attentions=True).attentions
        model.train()
        return float(masks.pattern_scores(att, role_masks)[role][layer, head])

    def variant(replace: set) -> dict[str, Any]:
        model.load_state_dict(snap_model)
        opt.load_state_dict(copy.deepcopy(snap_opt))
        state["step"] = a - 1
        steps, series = [a - 1], [score()]

        def edit(step, batch):
            rows = [r for (s, r) in replace if s == step]
            if rows:
                fresh = data.batch(FAR + step)  # rows from a batch never trained on
                batch.tokens[rows] = fresh.tokens[rows]
                batch.repeated[rows] = fresh.repeated[rows]
            return batch

        def after(step, batch):
            if step % every == 0 or step == until:
                steps.append(step)
                series.append(score())

        replay.advance(state, until, edit=edit, after=after)
        found = phases.score_change(steps, series, low, high)
        return {"phase_change_step": found["step"] if found else None,
                "crossing_step": midpoint_crossing(steps, series, (low + high) / 2),
                "steps": steps, "scores": series}

    out = {"role": role, "from_step": a - 1, "until": until, "replaced_rows": len(top), "share": share,
           "every": every, "thresholds": [low, high], "midpoint": (low + high) / 2}
    out["baseline"] = variant(set())
    out["top_replaced"] = variant(top)
    randoms = [variant(rows) for rows in random_sets]
    out["random_replaced"] = randoms[0]  # the first set under the original key; all of them below
    if n_random > 1:
        out["random_sets"] = randoms
    return out


def midpoint_crossing(steps: list[int], values: list[float], level: float) -> float | None:
    """The step (interpolated) after which the score stays above `level`: the last upward crossing, or the
    series' start when it never dips below; None when it ends below."""
    if not values or values[-1] < level:
        return None
    below = [k for k, v in enumerate(values) if v < level]
    if not below:
        return float(steps[0])
    k = below[-1] + 1
    a, b = values[k - 1], values[k]
    return steps[k - 1] + (steps[k] - steps[k - 1]) * (level - a) / (b - a)


def render(doc: dict[str, Any]) -> str:
    lines = [f"{doc['run']}: examples that wrote L{doc['layer']}H{doc['head']}, steps {doc['steps'][0]}-"
             f"{doc['steps'][1]} ({doc['window_source']}); {doc['rows']} rows ranked by their gradient's descent "
             "along the head's actual update"]
    if doc["replay_max_abs_diff"] is not None:
        lines.append(f"replay check: max |replayed - saved checkpoint| = {doc['replay_max_abs_diff']:.2e}"
                     + (f" ({doc['replay_threads']} torch threads: {doc['replay_threads_source']})"
                        if doc.get("replay_threads") else ""))
    for k, r in enumerate(doc["top"], 1):
        text = r["text"].replace("\n", " ")
        text = text if len(text) <= 160 else text[:157] + "..."
        lines.append(f"{k:>3}. step {r['step']:>5} row {r['row']:>3}  {r['contribution']:+.4f}  "
                     f"repeat {r['repeated_fraction'] * 100:3.0f}%  {text}")
    s = doc["summary"]
    lines.append("")
    lines.append("what the top rows have in common (top decile vs all rows of the window):")
    for key, label in (("with_quoted_or_periodic_repeat", "rows with a marked repeat"),
                       ("repeated_fraction", "positions predictable by copying"),
                       ("with_4gram_repeat", "rows with a repeated 4-gram"),
                       ("induction_fraction", "tokens predictable by induction")):
        a, b = s["top_decile"].get(key), s["all_rows"].get(key)
        if a is not None and b is not None:
            lines.append(f"  {label:<34} {a * 100:5.1f}%  vs  {b * 100:5.1f}%")
    rt = doc.get("retrain")
    if rt:
        lines.append("")
        lines.append(f"retraining from step {rt['from_step']} to {rt['until']} ({rt['replaced_rows']} rows replaced), "
                     f"step at which L{doc['layer']}H{doc['head']}'s {rt['role']} forms:")
        rows = [("baseline", rt["baseline"]), ("top_replaced", rt["top_replaced"])]
        rows += [(f"random_replaced {k}", v) for k, v in enumerate(rt.get("random_sets") or [rt["random_replaced"]])]
        for name, v in rows:
            step, cross = v["phase_change_step"], v.get("crossing_step")
            lines.append(f"  {name:<18} {step if step is not None else 'no full rise':>12}   "
                         f"crosses {rt.get('midpoint', 0.3):.2f} at "
                         + (f"{cross:.0f}" if cross is not None else "never"))
    return "\n".join(lines)

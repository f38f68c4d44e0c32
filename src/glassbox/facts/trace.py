"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", §2.1).

Run the prompt clean; run it again with Gaussian noise (3× the embeddings' standard deviation) added to the
subject tokens' embeddings, several noise samples as batch rows; then put back the clean value of one state
at a time in the corrupted run and measure the answer's probability at the last position:
    resid       the residual stream leaving block L at token t
    mlp         block L's MLP write at token t
    attn        block L's attention write at token t (every head's z, so the o_proj output is the clean one)
    mlp_window  the MLP writes of `window` consecutive blocks centred on L at token t (the paper's figure:
                one layer alone moves little)
A restored cell is computed only from block L and token t on (`run.partial`): the corrupted run's residual
stream and keys/values stand in for what the restoration cannot change, so cells are exact, not
approximations. Cells before the subject's first token equal the corrupted run and are not run at all.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from glassbox.errors import BadInput
from glassbox.progress import track
from glassbox.run import hooks, partial
from glassbox.run.load import Loaded
from glassbox.run.text import encode, token_str

KINDS = ("resid", "mlp", "attn", "mlp_window")
CUE_WORDS = (" is ", " was ", " are ", " were ", " has ", " had ", " lies ", " stands ", " plays ", " speaks ")


@dataclass(frozen=True)
class Settings:
    samples: int = 10  # noise samples, the paper's count
    noise: float = 3.0  # × the embeddings' standard deviation
    window: int | None = None  # None: the paper's 10 of 48 layers, scaled to the model
    seed: int = 0
    min_p: float = 0.1  # an answer below this clean probability is not "known"
    kinds: tuple[str, ...] = KINDS
    tokens: tuple[int, ...] | None = None  # restore only at these token positions (others = p_corrupt)
    threads: int | None = 1  # torch threads for the restored cells (None: leave as is); see `_threads`
    workers: int | None = None  # processes sharing the cells (None: the usable CPUs, at most 4); `_run_shares`


def default_window(n_layers: int) -> int:
    return max(1, round(n_layers * 10 / 48))


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """The `window` consecutive layers centred on `layer`, clipped to the model."""
    lo = max(0, layer - window // 2)
    return list(range(lo, min(n_layers, lo + window)))


def guess_subject(prompt: str) -> str:
    """The words before the first copula-like verb ("The Colosseum is located in" → "The Colosseum")."""
    cuts = [prompt.find(w) for w in CUE_WORDS if prompt.find(w) > 0]
    if not cuts:
        raise BadInput("cannot tell the subject of this prompt: give --subject", "--prompt")
    return prompt[:min(cuts)].strip()


def subject_tokens(loaded: Loaded, prompt: str, subject: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and the positions of the tokens that overlap the subject's characters."""
    start = prompt.find(subject) if subject else -1
    if start < 0:
        raise BadInput(f"the subject {subject!r} is not in the prompt", "--subject")
    ids = encode(loaded, prompt)
    try:
        enc = loaded.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers give no character offsets
        raise BadInput("this model's tokenizer gives no character offsets, so the subject's tokens cannot be "
                       "found", loaded.source) from None
    shift = len(ids) - len(enc["input_ids"])  # a BOS put first by `encode`
    end = start + len(subject)
    pos = [i + shift for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start]
    if not pos:
        raise BadInput(f"the subject {subject!r} covers no token of the prompt", "--subject")
    return ids, pos


def answer_token(loaded: Loaded, answer: str) -> int:
    ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise BadInput("the answer encodes to no token", "--answer")
    return int(ids[0])


def noise_scale(loaded: Loaded, factor: float) -> float:
    """factor × the standard deviation of the token embeddings as the first block sees them."""
    emb = loaded.model.get_input_embeddings()
    scale = float(getattr(emb, "embed_scale", 1.0))  # Gemma multiplies its embeddings by √d inside the module
    return factor * float(emb.weight.detach().float().std()) * scale


def trace(loaded: Loaded, prompt: str, subject: str | None = None, answer: str | None = None,
          settings: Settings = Settings()) -> dict[str, Any]:
    """The `glassbox facts --json` document (without `neurons`) plus `cost` (forwards, tokens, seconds)."""
    import torch

    if loaded.is_encoder or loaded.tokenizer is None:
        raise BadInput("causal tracing needs a causal language model with a tokenizer", loaded.source)
    bad = [k for k in settings.kinds if k not in KINDS]
    if bad:
        raise BadInput(f"unknown restore kind {bad[0]!r} (one of {', '.join(KINDS)})")
    t0, f0, n0 = time.perf_counter(), hooks.stats["forwards"], hooks.stats["tokens"]
    subject = guess_subject(prompt) if subject is None else subject
    ids, subj = subject_tokens(loaded, prompt, subject)
    n_layers, T, S = loaded.n_layers, len(ids), settings.samples
    window = settings.window or default_window(n_layers)
    x = torch.tensor([ids])

    point_names = ["blocks.*.resid_pre", "blocks.*.resid_post", "blocks.*.mlp.out", "blocks.*.attn.z"]
    logits, clean = hooks.run_with_cache(loaded, x, names=point_names, logits_at=[T - 1])
    probs = logits[0, -1].float().softmax(-1)
    if answer is None:
        target = int(probs.argmax())
    else:
        target = answer_token(loaded, answer)
    p_clean = float(probs[target])
    if p_clean < settings.min_p:
        raise BadInput(f"the model does not know this: p({token_str(loaded, target)!r}) = {p_clean:.3f} "
                       f"< {settings.min_p} (--min-p)", "--prompt")

    scale = noise_scale(loaded, settings.noise)
    gen = torch.Generator().manual_seed(settings.seed)
    d_model = clean["blocks.0.resid_pre"].shape[-1]
    noise = torch.randn(S, len(subj), d_model, generator=gen) * scale
    corrupted_emb = clean["blocks.0.resid_pre"][0, subj] + noise
    corrupt = [hooks.ResidEdit(0, "resid_pre", corrupted_emb, positions=subj)]
    logits_c, cor, past = partial.run_recording(loaded, x.repeat(S, 1), ["blocks.*.resid_pre",
                                                f"blocks.{n_layers - 1}.resid_post"], corrupt, [T - 1])
    p_corrupt = float(logits_c[:, -1].float().softmax(-1)[:, target].mean())
    # resid_pre of a virtual block n_layers: what the final norm reads
    pre = [cor[f"blocks.{i}.resid_pre"] for i in range(n_layers)] + [cor[f"blocks.{n_layers - 1}.resid_post"]]

    tokens = range(subj[0], T) if settings.tokens is None else [t for t in settings.tokens if subj[0] <= t < T]
    cells = [(kind, layer, t) for kind in settings.kinds for layer in range(n_layers) for t in tokens]
    groups: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
    for cell in cells:
        kind, layer, t = cell
        start = layer + 1 if kind == "resid" else window_layers(layer, window, n_layers)[0] \
            if kind == "mlp_window" else layer
        groups.setdefault((start, t), []).append(cell)

    restore = {k: [[p_corrupt] * T for _ in range(n_layers)] for k in settings.kinds}
    with _threads(settings.threads):
        _run_shares(loaded, groups, (pre, clean, past, window, S, target), restore, settings.workers)

    peak = {}
    for kind, grid in restore.items():
        layer, t = max(((lay, t) for lay in range(n_layers) for t in tokens), key=lambda lt: grid[lt[0]][lt[1]],
                       default=(0, subj[-1]))
        peak[kind] = {"layer": layer, "token": t, "p": grid[layer][t]}
    return {
        "model": loaded.name, "prompt": prompt,
        "subject": {"text": subject, "tokens": subj},
        "tokens": [token_str(loaded, i) for i in ids],
        "answer": {"token": token_str(loaded, target), "id": target, "p_clean": p_clean, "p_corrupt": p_corrupt},
        "noise": {"scale": scale, "samples": S, "seed": settings.seed},
        "window": window, "restore": restore, "peak": peak,
        "cost": {"forwards": hooks.stats["forwards"] - f0, "tokens": hooks.stats["tokens"] - n0,
                 "seconds": time.perf_counter() - t0, "cells": len(cells)},
    }


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Each restored cell is a small forward (a few rows, the prompt's tail): with more threads the hand-off
    between them costs more than it saves, and on a busy machine it is ruinous (measured on this 2-core box
    under load: 10× slower with 2 threads than with 1)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def _shares(loaded: Loaded, groups: dict, T: int, workers: int) -> list[dict]:
    """Split the groups into `workers` shares of about equal work (longest first, each to the lightest share).
    A group's work ~ rows × positions × blocks it runs."""
    shares: list[dict] = [{} for _ in range(workers)]
    load = [0] * workers
    for (start, t), members in sorted(groups.items(), key=lambda g: -len(g[1]) * (T - g[0][1]) *
                                      (loaded.n_layers + 1 - g[0][0])):
        i = load.index(min(load))
        shares[i][(start, t)] = members
        load[i] += len(members) * (T - t) * (loaded.n_layers + 1 - start)
    return shares


def _run_shares(loaded: Loaded, groups: dict, run: tuple, restore: dict[str, list[list[float]]],
                workers: int | None) -> None:
    """Restore every group, in `workers` processes forked from this one (the model is shared copy-on-write; each
    runs its share on one thread). Processes, not threads: the cells are independent forwards, and on a busy
    machine a process keeps its core busy where threads of one forward wait at each op for the slowest.
    Each group is the same batch whichever process runs it, so the numbers do not depend on `workers`.
    Measured on this 2-core box (2026-12-06): the full Colosseum trace took 97.7 s with 1 worker and 49.1 s
    with 2 when both cores were free; with one core held by another process 97.4 s with 2 against 87.7 s
    with 1. The gain (2×) outweighs the loss (~10%), so the default uses the CPUs there are."""
    import multiprocessing as mp

    T = len(next(iter(restore.values()))[0])
    n = default_workers() if workers is None else workers
    n = min(n, len(groups))
    on_cpu = next(loaded.model.parameters()).device.type == "cpu"  # a forked child cannot use a parent's CUDA
    if n <= 1 or not on_cpu or "fork" not in mp.get_all_start_methods():
        _restore_cells(loaded, groups, *run, restore)
        return
    shares = _shares(loaded, groups, T, n)
    ctx = mp.get_context("fork")
    children = []
    for share in shares[1:]:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, loaded, share, run, restore), daemon=True)
        proc.start()
        send.close()
        children.append((proc, recv))
    _restore_cells(loaded, shares[0], *run, restore)
    for proc, recv in children:
        try:
            got, stats = recv.recv()
        except EOFError:
            proc.join()
            raise RuntimeError(f"a tracing worker died (exit code {proc.exitcode})") from None
        proc.join()
        for kind, layer, t, p in got:
            restore[kind][layer][t] = p
        for key in ("forwards", "tokens"):
            hooks.stats[key] += stats[key]


def _child(send: Any, loaded: Loaded, share: dict, run: tuple, restore: dict[str, list[list[float]]]) -> None:
    import torch

    torch.set_num_threads(1)
    f0, n0 = hooks.stats["forwards"], hooks.stats["tokens"]
    _restore_cells(loaded, share, *run, restore, show=False)
    got = [(kind, layer, t, restore[kind][layer][t]) for members in share.values() for kind, layer, t in members]
    send.send((got, {"forwards": hooks.stats["forwards"] - f0, "tokens": hooks.stats["tokens"] - n0}))
    send.close()


def _restore_cells(loaded: Loaded, groups: dict, pre: list, clean: Any, past: Any, window: int, S: int,
                   target: int, restore: dict[str, list[list[float]]], show: bool = True) -> None:
    """Run every group of cells sharing (first block, token) as one batch; fill `restore`."""
    n_layers = loaded.n_layers
    items = sorted(groups.items())
    for (start, t), members in (track(items, "tracing") if show else items):
        hidden = pre[start][:, t:].repeat(len(members), 1, 1)
        edits: list[hooks.Edit] = []
        for c, (kind, layer, _) in enumerate(members):
            rows = list(range(c * S, (c + 1) * S))
            if kind == "resid":
                hidden[rows, 0] = clean[f"blocks.{layer}.resid_post"][0, t]
            elif kind == "mlp":
                edits.append(hooks.MlpEdit(layer, clean[f"blocks.{layer}.mlp.out"][0, t], [0], rows))
            elif kind == "mlp_window":
                edits += [hooks.MlpEdit(w, clean[f"blocks.{w}.mlp.out"][0, t], [0], rows)
                          for w in window_layers(layer, window, n_layers)]
            else:
                z = clean[f"blocks.{layer}.attn.z"][0, t]  # [head, d_head]
                edits += [hooks.HeadEdit(layer, h, z[h], [0], rows) for h in range(z.shape[0])]
        out = partial.run_from(loaded, start, hidden, partial.expand_past(loaded, past, t, len(members)), edits)
        p = out[:, -1].float().softmax(-1)[:, target].view(len(members), S).mean(1)
        for c, (kind, layer, _) in enumerate(members):
            restore[kind][layer][t] = float(p[c])


def gap_share(doc: dict[str, Any], kind: str = "mlp_window") -> float:
    """The share of the clean − corrupted gap that the kind's peak restores."""
    a = doc["answer"]
    gap = a["p_clean"] - a["p_corrupt"]
    return (doc["peak"][kind]["p"] - a["p_corrupt"]) / gap if gap > 0 else float("nan")

"""A rank-one edit of one MLP's W_down (ROME, Meng et al. 2022 §3), with the key used consistently in both
places of the update (r-ROME: Gupta, Baskaran, Anumanchipalli 2024, "Rebuilding ROME"; the original code's
mixed keys caused "disabling edits").

    k*  the key (W_down's input) at the subject's last token, averaged over the prompt and a few prefixes
    δ   a residual vector added to the MLP's write at the subject's last token, optimized (Adam) so that the
        new answer is likely after every prefix, with the paper's KL term (the distribution after
        "{subject} is a" stays put) and a weight decay on δ, until the new answer's mean probability
        reaches `stop_p` or `steps` run out
    C   E[k kᵀ] over the keys of a corpus sample (cached per model, layer, corpus and size)
    W ← W + δ (C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k*)     so that W k* gains exactly δ = v* − W k* (v* := W k* + δ)
The edited model is written as a new folder (config, safetensors, tokenizer) and never over its source; the
diff compares its tensors' bytes with the unedited weights serialized the same way (float32, same names).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassbox import bundled, fileio
from glassbox.errors import BadInput
from glassbox.facts.mlp import down, edit_keys
from glassbox.facts.trace import answer_token, subject_tokens
from glassbox.progress import track
from glassbox.run import hooks
from glassbox.run.layout import LAYOUTS, layers, submodule
from glassbox.run.load import Loaded
from glassbox.run.text import encode, token_str

PREFIXES = ("", "Here is what I know. ", "It is well known. ", "According to the guide, ", "Fact: ")


@dataclass(frozen=True)
class EditSettings:
    corpus: str = "pydoc"  # keys' covariance sample (the project's corpus grammar)
    cov_tokens: int = 16384
    lr: float = 0.5
    steps: int = 40
    stop_p: float = 0.9
    kl_weight: float = 0.0625
    weight_decay: float = 1e-3
    ridge: float = 1e-3  # × mean diagonal of C, so C⁻¹ is well posed
    fluency_corpus: str = "python-license"
    fluency_tokens: int = 512


def check_out(out: Path, source: Path | None) -> None:
    """Refuse an --out that is a file, sits inside the source, or is the source's folder (never in place)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput("--out must be a folder (it is a file)", out)
    target = out.resolve()
    src = Path(source).resolve() if source is not None else None
    src_dir = src if src is None or src.is_dir() else src.parent
    if src is not None and (target == src_dir or src_dir in target.parents or target in src.parents):
        raise BadInput("--out must not be the model's own folder or inside it: edits never write in place", out)
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise BadInput("--out: its folder is not writable", out)


def _rows(loaded: Loaded, texts: list[str], subject: str) -> tuple[Any, Any, list[int], list[int]]:
    """Right-padded batch: (ids, attention mask, subject's last token per row, last real token per row)."""
    import torch

    encoded = [subject_tokens(loaded, t, subject) for t in texts]
    width = max(len(ids) for ids, _ in encoded)
    pad = loaded.tokenizer.pad_token_id or 0
    x = torch.full((len(texts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for r, (ids, _) in enumerate(encoded):
        x[r, :len(ids)] = torch.tensor(ids)
        mask[r, :len(ids)] = 1
    return x, mask, [pos[-1] for _, pos in encoded], [len(ids) - 1 for ids, _ in encoded]


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def key_and_delta(loaded: Loaded, layer: int, prompt: str, subject: str, new: int,
                  settings: EditSettings) -> tuple[Any, Any, dict[str, Any]]:
    """k* (averaged over PREFIXES) and the optimized δ, with the optimization's record."""
    import torch

    texts = [p + prompt for p in PREFIXES]
    x, mask, subj_last, last = _rows(loaded, texts, subject)
    rows = torch.arange(len(texts))
    with edit_keys(loaded, layer, lambda k: k) as seen:
        hooks.run(loaded, x, attention_mask=mask)
    k_star = seen["keys"][rows, subj_last].float().mean(0)

    kl_x, kl_mask, kl_subj, kl_last = _rows(loaded, [f"{subject} is a"], subject)
    with torch.inference_mode():
        ref = loaded.model(input_ids=kl_x, attention_mask=kl_mask).logits[0, kl_last[0]].log_softmax(-1)
    ref = ref.clone()
    v0 = (down(loaded, layer).W.detach().float() @ k_star)
    delta = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    positions = subj_last + kl_subj
    mlp = submodule(layers(loaded.model, loaded.architecture)[layer], LAYOUTS[loaded.architecture].mlp_out)

    def add_delta(mod: Any, args: Any, out: Any) -> Any:
        out = out.clone()
        out[torch.arange(out.shape[0]), positions] += delta
        return out

    both_x = torch.nn.functional.pad(kl_x, (0, x.shape[1] - kl_x.shape[1])) if kl_x.shape[1] < x.shape[1] else kl_x
    width = max(x.shape[1], both_x.shape[1])
    xb = torch.cat([torch.nn.functional.pad(x, (0, width - x.shape[1])), both_x[:, :width]])
    mb = torch.cat([torch.nn.functional.pad(mask, (0, width - mask.shape[1])),
                    torch.nn.functional.pad(kl_mask, (0, width - kl_mask.shape[1]))[:, :width]])
    record: dict[str, Any] = {"steps": 0, "p_new": []}
    handle = mlp.register_forward_hook(add_delta)
    try:
        with _frozen(loaded.model), torch.enable_grad():
            for step in range(settings.steps):
                logits = loaded.model(input_ids=xb, attention_mask=mb).logits
                logp = logits[rows, last].log_softmax(-1)
                p_new = logp[:, new].exp().mean()
                record["steps"], record["p_new"] = step + 1, [*record["p_new"], float(p_new.detach())]
                if float(p_new.detach()) >= settings.stop_p:
                    break
                kl_logp = logits[len(texts), kl_last[0]].log_softmax(-1)
                kl = torch.nn.functional.kl_div(kl_logp, ref, log_target=True, reduction="sum")
                loss = -logp[:, new].mean() + settings.kl_weight * kl + \
                    settings.weight_decay * delta.norm() ** 2 / v0.norm() ** 2
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        handle.remove()
    return k_star, delta.detach(), record


def covariance(loaded: Loaded, layer: int, settings: EditSettings) -> Any:
    """E[k kᵀ] of layer `layer`'s keys over `cov_tokens` tokens of the corpus (cached on disk)."""
    import torch

    from glassbox.corpora import read_spec

    st = Path(loaded.source).stat()
    key = hashlib.sha256(f"{Path(loaded.source).resolve()}|{st.st_size}|{st.st_mtime_ns}|{layer}|"
                         f"{settings.corpus}|{settings.cov_tokens}".encode()).hexdigest()[:24]
    path = bundled.cache_dir() / "facts" / f"cov-{key}.pt"
    if path.exists():
        return torch.load(path)
    text = read_spec(settings.corpus, max_chars=settings.cov_tokens * 8)
    ids = encode(loaded, text)[: settings.cov_tokens]
    chunk = 256
    chunks = [ids[i:i + chunk] for i in range(0, len(ids) - chunk + 1, chunk)] or [ids]
    total, n = None, 0
    for c in track([chunks[i:i + 8] for i in range(0, len(chunks), 8)], "key covariance"):
        with edit_keys(loaded, layer, lambda k: k) as seen:
            hooks.run_with_cache_until(loaded, torch.tensor(c), layer, names=[])
        k = seen["keys"].reshape(-1, seen["keys"].shape[-1]).double()
        total = k.T @ k if total is None else total + k.T @ k
        n += k.shape[0]
    C = (total / n).float()
    with fileio.atomic_path(path) as tmp:
        torch.save(C, tmp)
    return C


def rank_one(C: Any, k_star: Any, delta: Any, ridge: float) -> Any:
    """ΔW = δ (C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k*), [d_model, d_ff]; then ΔW k* = δ exactly."""
    import torch

    reg = C + ridge * C.diagonal().mean() * torch.eye(C.shape[0])
    u = torch.linalg.solve(reg.double(), k_star.double()).float()
    return torch.outer(delta, u) / (u @ k_star)


@contextlib.contextmanager
def applied(loaded: Loaded, layer: int, dW: Any) -> Iterator[None]:
    """The edit in the loaded model's weights while inside; the original weights back afterwards."""
    import torch

    d = down(loaded, layer)
    weight = d.module.weight
    before = weight.detach().clone()
    with torch.no_grad():
        weight += (dW.t() if d.conv1d else dW).to(weight.dtype)
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(before)


def top1(loaded: Loaded, prompts: list[str]) -> list[tuple[int, Any]]:
    """(top-1 token, probabilities) at each prompt's last position."""
    import torch

    out = []
    for p in prompts:
        probs = hooks.run(loaded, torch.tensor([encode(loaded, p)]))[0, -1].float().softmax(-1)
        out.append((int(probs.argmax()), probs))
    return out


def perplexity(loaded: Loaded, ids: list[int]) -> float:
    import torch

    x = torch.tensor([ids])
    logp = hooks.run(loaded, x)[0, :-1].float().log_softmax(-1)
    return float(torch.exp(-logp[torch.arange(len(ids) - 1), x[0, 1:]].mean()))


def write_model(loaded: Loaded, out: Path) -> Path:
    """config + model.safetensors (float32, the model's own names) + tokenizer, as a new folder."""
    tmp = fileio.temp_dir_beside(out)
    try:
        loaded.model.save_pretrained(tmp)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(tmp)
        fileio.replace_dir(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out)


def byte_diff(loaded: Loaded, folder: Path) -> list[dict[str, Any]]:
    """Per tensor of the written file whose bytes differ from the loaded (unedited) model's weights serialized
    the same way: the byte count and the absolute [start, end) ranges in the file (runs of changed elements)."""
    import numpy as np

    from glassbox.checkpoint import open_checkpoint

    state = loaded.model.state_dict()
    out = []
    files = sorted(Path(folder).glob("*.safetensors"))
    for f in files:
        with open_checkpoint(f) as ckpt:
            for name, entry in ckpt.tensors.items():
                mine = state[name].detach().contiguous().numpy()
                itemsize = mine.dtype.itemsize
                stored = np.memmap(entry.file, dtype=np.uint8, mode="r", offset=entry.offset, shape=(entry.nbytes,))
                if stored.nbytes != mine.nbytes:
                    raise RuntimeError(f"{name}: {stored.nbytes} bytes in the file, {mine.nbytes} in the model")
                # an element changed when any of its bytes did (bitwise, so -0.0 vs 0.0 and NaNs count too)
                changed = np.any(stored.reshape(-1, itemsize) != mine.reshape(-1).view(np.uint8)
                                 .reshape(-1, itemsize), axis=1)
                if not changed.any():
                    continue
                edges = np.flatnonzero(np.diff(np.concatenate([[0], changed.astype(np.int8), [0]])))
                ranges = [[int(entry.offset + a * itemsize), int(entry.offset + b * itemsize)]
                          for a, b in zip(edges[::2], edges[1::2], strict=True)]
                out.append({"tensor": name, "bytes_changed": int(changed.sum()) * itemsize, "ranges": ranges})
    return out


def edit(loaded: Loaded, prompt: str, subject: str, new: str, out: Path | None, layer: int,
         paraphrases: list[str], others: list[tuple[str, str]], settings: EditSettings = EditSettings()
         ) -> dict[str, Any]:
    """Edit, measure, write (when `out` is given) → the `glassbox facts edit --json` document."""
    import time

    t0 = time.perf_counter()
    if not 0 <= layer < loaded.n_layers:
        raise BadInput(f"--layer must lie in 0..{loaded.n_layers - 1}")
    ids, _ = subject_tokens(loaded, prompt, subject)
    new_id = answer_token(loaded, new)
    before = top1(loaded, [prompt, *paraphrases, *[p for p, _ in others]])
    old_id = before[0][0]
    if old_id == new_id:
        raise BadInput(f"the model already answers {new!r}", "--new")
    C = covariance(loaded, layer, settings)
    k_star, delta, record = key_and_delta(loaded, layer, prompt, subject, new_id, settings)
    dW = rank_one(C, k_star, delta, settings.ridge)
    fl_ids = encode(loaded, _fluency_text(settings))[: settings.fluency_tokens]
    ppl_before = perplexity(loaded, fl_ids)
    with applied(loaded, layer, dW):
        after = top1(loaded, [prompt, *paraphrases, *[p for p, _ in others]])
        ppl_after = perplexity(loaded, fl_ids)
        if out is not None:
            write_model(loaded, out)
    diff = byte_diff(loaded, Path(out)) if out is not None else []

    def versus(i: int, text: str) -> dict[str, Any]:
        probs = after[i][1]
        return {"prompt": text, "p_new": float(probs[new_id]), "p_old": float(probs[old_id]),
                "top1": token_str(loaded, after[i][0]), "success": bool(probs[new_id] > probs[old_id])}

    n_para = len(paraphrases)
    specificity = []
    for j, (text, answer) in enumerate(others):
        i = 1 + n_para + j
        specificity.append({"prompt": text, "answer": answer, "top1_before": token_str(loaded, before[i][0]),
                            "top1_after": token_str(loaded, after[i][0]),
                            "kept": before[i][0] == after[i][0]})
    return {
        "model": loaded.name, "prompt": prompt, "subject": subject, "layer": layer,
        "tensor": down(loaded, layer).name,
        "old": token_str(loaded, old_id), "new": token_str(loaded, new_id),
        "efficacy": versus(0, prompt),
        "paraphrase": [versus(1 + i, p) for i, p in enumerate(paraphrases)],
        "specificity": specificity,
        "fluency": {"ppl_before": ppl_before, "ppl_after": ppl_after, "ratio": ppl_after / ppl_before,
                    "corpus": settings.fluency_corpus, "tokens": len(fl_ids)},
        "diff": diff, "out": str(out) if out is not None else None,
        "optimization": {**record, "key_prefixes": len(PREFIXES), "delta_norm": float(delta.norm()),
                         "covariance": {"corpus": settings.corpus, "tokens": settings.cov_tokens}},
        "seconds": time.perf_counter() - t0, "subject_tokens": len(ids),
    }


def _fluency_text(settings: EditSettings) -> str:
    from glassbox.corpora import read_spec

    return read_spec(settings.fluency_corpus, max_chars=settings.fluency_tokens * 8)

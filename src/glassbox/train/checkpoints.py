"""Checkpoints: the model at log-spaced steps (dense early, where things happen), and the resume state.

- `checkpoints/step-NNNNNN.safetensors`: HF-named weights; `__metadata__` records step, loss, seed, data position,
  init scheme and the model config, so each file stands on its own (a config.json sits beside them too).
- `resume.safetensors`: weights + Adam moments + RNG state at the last save point. Everything is written through
  a temp file and renamed, so a kill -9 at any instant leaves the previous good state; resuming loses at most
  the steps since that save point.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from glassbox.fileio import atomic_path

CHECKPOINT_RE = re.compile(r"step-(\d{6,})\.safetensors")


def schedule(total_steps: int, n_log: int = 24, n_linear: int = 40) -> list[int]:
    """Step 0 (the empty model), ~n_log geometrically spaced steps, and a linear grid of ~n_linear steps
    so that a phase change late in the run is still located to a few percent of the run."""
    steps = {0, total_steps}
    if total_steps > 0:
        for i in range(n_log + 1):
            steps.add(int(round(math.exp(math.log(total_steps) * i / n_log))))
        spacing = max(1, total_steps // n_linear)
        steps.update(range(0, total_steps + 1, spacing))
    return sorted(s for s in steps if 0 <= s <= total_steps)


def checkpoint_path(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}.safetensors"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    folder = out / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            m = CHECKPOINT_RE.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def _state(model) -> dict:
    # contiguous copies: safetensors refuses shared or strided storage
    return {n: t.detach().contiguous().clone() for n, t in model.state_dict().items()
            if not n.endswith((".attn.bias", ".attn.masked_bias"))}


def save_checkpoint(out: Path, model, step: int, metadata: dict) -> Path:
    from safetensors.torch import save_file

    path = checkpoint_path(out, step)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with atomic_path(path) as tmp:
        save_file(_state(model), str(tmp), metadata=meta)
    return path


def load_weights(model, path: Path) -> dict[str, str]:
    """Load a checkpoint's weights into `model`; returns its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        from glassbox.errors import BadInput

        raise BadInput(f"checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", path)
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def save_resume(out: Path, model, optimizer, step: int, metadata: dict) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{n}": t for n, t in _state(model).items()}
    names = {id(p): n for n, p in model.named_parameters()}
    opt_steps = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            n = names[id(p)]
            tensors[f"adam.{n}.exp_avg"] = st["exp_avg"].contiguous().clone()
            tensors[f"adam.{n}.exp_avg_sq"] = st["exp_avg_sq"].contiguous().clone()
            opt_steps[n] = float(st["step"])
    tensors["rng.torch"] = torch.get_rng_state().clone()
    meta = dict(metadata, step=step, adam_steps=opt_steps)
    with atomic_path(out / "resume.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})


def load_resume(out: Path, model, optimizer) -> dict:
    """Restore model, optimizer and RNG from resume.safetensors; returns the metadata (with `step`)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = out / "resume.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    params = dict(model.named_parameters())
    for n, s in meta.get("adam_steps", {}).items():
        p = params[n]
        optimizer.state[p] = {"step": torch.tensor(s), "exp_avg": tensors[f"adam.{n}.exp_avg"],
                              "exp_avg_sq": tensors[f"adam.{n}.exp_avg_sq"]}
    torch.set_rng_state(tensors["rng.torch"])
    return meta

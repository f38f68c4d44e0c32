"""Tuned lens (Belrose et al. 2023): one affine translator per layer, h ↦ h·W_l + b_l, fitted so that the
translated residual read through the final norm and unembedding matches the model's final distribution.

Training has two stages, both on residuals cached from an offline corpus:
1. closed form: ridge regression of the last residual (before the final norm) on layer l's residual, per
   layer; this is most of the gain and costs one d×d solve per layer;
2. KL: Adam steps on Σ_l KL(final ‖ lens_l) over random positions (the paper's objective), starting from (1).
Position 0 is left out: its residual is the attention sink's, with outsized norms, and every lens reads it
badly. Translators are saved as safetensors (`weight` [layers, d, d], `bias` [layers, d]) with metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.fileio import atomic_path
from glassbox.lens import logit
from glassbox.lens.corpus import windows
from glassbox.logprob import kl, kl_logp
from glassbox.run import hooks
from glassbox.run.load import Loaded

FORMAT = "glassbox.tuned_lens/1"


@dataclass
class TunedLens:
    weight: Any  # [n_layers, d, d]; identity = the logit lens
    bias: Any  # [n_layers, d]
    history: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @classmethod
    def identity(cls, n_layers: int, d: int) -> TunedLens:
        import torch

        return cls(torch.eye(d).repeat(n_layers, 1, 1), torch.zeros(n_layers, d))

    def translate(self, layer: int, h: Any) -> Any:
        """Lens layer `layer` (0 = embeddings) residual [..., d] → translated residual [..., d]."""
        return h @ self.weight[layer] + self.bias[layer]


def collect(loaded: Loaded, rows: Any, progress: Callable | None = None) -> tuple[Any, Any]:
    """Residuals at lens layers 0..n-1 and the last residual, positions ≥ 1 of every row.

    → (H [n_layers, N, d], final [N, d]) where `final` is blocks.{n-1}.resid_post (before the final norm).
    """
    import torch

    n = loaded.n_layers
    names = ["blocks.0.resid_pre"] + [f"blocks.{layer}.resid_post" for layer in range(n)]
    per_layer: list[list[Any]] = [[] for _ in range(n + 1)]
    batches = list(rows.split(4))
    for batch in (progress(batches, "caching residuals") if progress else batches):
        _, cache = hooks.run_with_cache(loaded, batch, names=names)
        for i, name in enumerate(names):
            per_layer[i].append(cache[name][:, 1:].reshape(-1, cache[name].shape[-1]).clone())
    stacked = [torch.cat(parts) for parts in per_layer]
    return torch.stack(stacked[:n]), stacked[n]


def fit_ridge(H: Any, final: Any, ridge: float = 1e-3) -> TunedLens:
    """Per layer, least squares final ≈ h·W + b (float64, ridge scaled to the feature variance)."""
    import torch

    n, count, d = H.shape
    lens = TunedLens.identity(n, d)
    y = final.double()
    y_mean = y.mean(0)
    for layer in range(n):
        x = H[layer].double()
        x_mean = x.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc
        lam = ridge * float(gram.diagonal().mean()) + 1e-8
        # shrink toward the identity (the logit lens), not toward zero
        w = torch.linalg.solve(gram + lam * torch.eye(d, dtype=gram.dtype), xc.T @ yc + lam * torch.eye(d, dtype=gram.dtype))
        lens.weight[layer] = w.float()
        lens.bias[layer] = (y_mean - x_mean @ w).float()
    return lens


def kl_per_layer(loaded: Loaded, lens: TunedLens | None, H: Any, final: Any, chunk: int = 256) -> list[float]:
    """Mean KL(final ‖ lens_l) per layer over the cached positions (lens None = the logit lens)."""
    import torch

    out = []
    with torch.inference_mode():
        target = [logit.readout(loaded, final[i : i + chunk]) for i in range(0, final.shape[0], chunk)]
        for layer in range(H.shape[0]):
            total = 0.0
            for j, i in enumerate(range(0, final.shape[0], chunk)):
                h = H[layer, i : i + chunk]
                if lens is not None:
                    h = lens.translate(layer, h)
                total += float(kl(target[j], logit.readout(loaded, h)).sum())
            out.append(total / final.shape[0])
    return out


def fit_kl(loaded: Loaded, lens: TunedLens, H: Any, final: Any, steps: int, positions: int = 16, lr: float = 1e-4,
           seed: int = 0, progress: Callable | None = None) -> TunedLens:
    """Adam on Σ_l KL(final ‖ lens_l), `positions` random cached positions per step (all layers each step)."""
    import torch

    if steps <= 0:
        return lens
    g = torch.Generator().manual_seed(seed)
    weight = lens.weight.clone().requires_grad_(True)
    bias = lens.bias.clone().requires_grad_(True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    model = loaded.model
    for p in model.parameters():
        p.requires_grad_(False)
    it = range(steps)
    for _ in (progress(it, "training translators (KL)") if progress else it):
        idx = torch.randint(0, final.shape[0], (positions,), generator=g)
        with torch.no_grad():
            target = torch.log_softmax(logit.readout(loaded, final[idx]).float(), dim=-1)
        h = H[:, idx]  # [n, P, d]
        translated = torch.einsum("lpd,lde->lpe", h, weight) + bias[:, None]
        logp = torch.log_softmax(logit.readout(loaded, translated).float(), dim=-1)
        loss = kl_logp(target, logp).mean(-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TunedLens(weight.detach(), bias.detach(), lens.history)


def train(loaded: Loaded, ids: list[int], steps: int = 40, seq_len: int = 128, positions: int = 16,
          progress: Callable | None = None, report_positions: int = 128) -> TunedLens:
    """Corpus token ids → a trained TunedLens (history holds the training-set KL per layer, logit vs tuned)."""
    logit.check_lm(loaded)
    rows = windows(loaded, ids, seq_len)
    H, final = collect(loaded, rows, progress)
    lens = fit_ridge(H, final)
    lens = fit_kl(loaded, lens, H, final, steps, positions, progress=progress)
    sample = slice(0, min(final.shape[0], report_positions))
    lens.history = {"logit_kl": kl_per_layer(loaded, None, H[:, sample], final[sample]),
                    "tuned_kl": kl_per_layer(loaded, lens, H[:, sample], final[sample])}
    return lens


def save(lens: TunedLens, path: str | Path, loaded: Loaded, extra: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "model": loaded.name, "architecture": loaded.architecture,
            "n_layers": str(lens.n_layers), "d_model": str(lens.weight.shape[1]),
            "history": json.dumps(lens.history), **(extra or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"weight": lens.weight.contiguous(), "bias": lens.bias.contiguous()}, str(tmp), metadata=meta)
    return path


def load(path: str | Path, loaded: Loaded) -> TunedLens:
    """Read translators written by `save`; they must fit this model's layer count and width."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInput("tuned lens file not found", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or set(f.keys()) != {"weight", "bias"}:
                raise BadInput(f"not a tuned lens written by `glassbox lens train` (format {meta.get('format')!r})",
                               path)
            weight, bias = f.get_tensor("weight").float(), f.get_tensor("bias").float()
    except SafetensorError as exc:
        raise BadInput(f"unreadable safetensors file ({exc})", path) from None
    d = int(loaded.config.hidden_size)
    if weight.shape != (loaded.n_layers, d, d) or bias.shape != (loaded.n_layers, d):
        raise BadInput(f"tuned lens has shape {tuple(weight.shape)}, this model needs "
                       f"({loaded.n_layers}, {d}, {d}) (trained for {meta.get('model')!r}?)", path)
    return TunedLens(weight, bias, json.loads(meta.get("history", "{}")))

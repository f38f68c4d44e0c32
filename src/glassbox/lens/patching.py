"""Activation patching (causal tracing): run one input with a piece of another run's activations put in, and
measure how much of the metric moves.

Directions: `denoise` runs the corrupt input and patches in clean activations (which pieces are enough to
restore the clean behaviour); `noise` runs the clean input and patches in corrupt ones (which pieces are
needed for it). Either way the effect is normalised so that 0 = the unpatched target run and 1 = the
other run's metric:  denoise (m − m_corrupt)/(m_clean − m_corrupt),  noise (m_clean − m)/(m_clean − m_corrupt).

Sites (`over`): `heads` = each head's z (before the output projection, so no other head is touched), all
positions → [layer, head]; `resid` = blocks.{l}.resid_pre at one position → [layer, position]; `mlp` = the
MLP's write at one position → [layer, position].

Cost: every patch is one batch row, so C cells cost ceil(C / batch_size) forwards instead of C (the edits
carry `batch=i`; benchmarks/patching.py measures the ratio).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from glassbox.errors import BadInput
from glassbox.logprob import kl_logp
from glassbox.run import hooks, memory
from glassbox.run.load import Loaded

SITES = ("heads", "resid", "mlp")
DIRECTIONS = ("denoise", "noise")


@dataclass(frozen=True)
class Metric:
    """What is measured at the last position: logit_diff (a − b), prob (of a), logprob (of a), or kl (to clean)."""

    kind: str
    text: str
    a: int | None = None
    b: int | None = None

    def __call__(self, logits: Any, clean_logits: Any) -> Any:
        """logits [batch, vocab] at the measured position → [batch] (clean_logits [vocab] for kl)."""
        import torch

        logits = logits.float()
        if self.kind == "logit_diff":
            return logits[:, self.a] - logits[:, self.b]
        logp = torch.log_softmax(logits, dim=-1)
        if self.kind == "prob":
            return logp[:, self.a].exp()
        if self.kind == "logprob":
            return logp[:, self.a]
        ref = torch.log_softmax(clean_logits.float(), dim=-1)
        return kl_logp(ref, logp)  # KL(clean ‖ run): 0 at the clean run


def _single_token(loaded: Loaded, word: str) -> int:
    tok = loaded.tokenizer
    if tok is None:  # tiny test models have no tokenizer: accept raw ids
        if word.lstrip("-").isdigit():
            return int(word)
        raise BadInput(f"this checkpoint has no tokenizer; give the metric's tokens as ids, not {word!r}")
    if word.startswith("#") and word[1:].isdigit():
        return int(word[1:])
    for form in (" " + word, word):  # a word mid-sentence is usually one token with its leading space
        ids = tok(form, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0])
    raise BadInput(f"metric token {word!r} is not a single token for this tokenizer (write #ID for a raw id)")


def parse_metric(loaded: Loaded | None, spec: str) -> Metric:
    """'logit_diff: Mary - John' | 'prob: Paris' | 'logprob: Paris' | 'kl' → Metric. With loaded=None only
    the syntax is checked (before a model loads) and the token ids are left None."""
    def token(word: str) -> int | None:
        return None if loaded is None else _single_token(loaded, word)

    kind, _, rest = spec.partition(":")
    kind, rest = kind.strip().lower(), rest.strip()
    if kind == "kl":
        return Metric("kl", spec)
    if kind == "logit_diff":
        a, sep, b = rest.partition(" - ")
        if not sep or not a.strip() or not b.strip():
            raise BadInput(f"--metric {spec!r}: write logit_diff as 'logit_diff: A - B'")
        return Metric("logit_diff", spec, token(a.strip()), token(b.strip()))
    if kind in ("prob", "logprob"):
        if not rest:
            raise BadInput(f"--metric {spec!r}: write '{kind}: TOKEN'")
        return Metric(kind, spec, token(rest))
    raise BadInput(f"--metric {spec!r}: unknown metric (logit_diff: A - B | prob: T | logprob: T | kl)")


@dataclass
class PatchResult:
    site: str
    direction: str
    metric: str
    clean: float  # metric on the clean run
    corrupt: float  # metric on the corrupt run
    rows: list[str]  # layer labels
    cols: list[str]  # head or position labels
    value: Any  # [rows, cols] the metric on each patched run
    effect: Any  # [rows, cols] normalised (see module docstring)
    forwards: int  # forward passes spent, the two baseline runs included
    tokens: list[str] = field(default_factory=list)

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        flat = self.effect.abs().flatten()
        order = flat.argsort(descending=True)[:k]
        cols = self.effect.shape[1]
        return [(int(i) // cols, int(i) % cols, float(self.effect.flatten()[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        col = "head" if self.site == "heads" else "position"
        return {
            "site": self.site, "direction": self.direction, "metric": self.metric,
            "clean": self.clean, "corrupt": self.corrupt, "tokens": self.tokens,
            "rows": self.rows, "cols": self.cols,
            "effect": [[float(x) for x in row] for row in self.effect],
            "value": [[float(x) for x in row] for row in self.value],
            "top": [{"layer": r, col: c, "effect": e} for r, c, e in self.top()],
            "forwards": self.forwards,
        }


_CACHE_NAMES = {"heads": "blocks.*.attn.z", "resid": "blocks.*.resid_pre", "mlp": "blocks.*.mlp.out"}


def _cells(loaded: Loaded, site: str, seq: int) -> list[tuple[int, int]]:
    cols = loaded.n_heads if site == "heads" else seq
    return [(layer, c) for layer in range(loaded.n_layers) for c in range(cols)]


def _edits(site: str, cells: Sequence[tuple[int, int]], source: Any) -> list[hooks.Edit]:
    """One edit per cell, cell i confined to batch row i; the source cache has batch 1."""
    run_edits: list[hooks.Edit] = []
    for row, (layer, c) in enumerate(cells):
        if site == "heads":
            run_edits += hooks.patch_heads([(layer, c)], source, batch=row, source_batch=0)
        elif site == "resid":
            value = source[f"blocks.{layer}.resid_pre"][0, c]
            run_edits.append(hooks.ResidEdit(layer, "resid_pre", value, positions=[c], batch=row))
        else:
            value = source[f"blocks.{layer}.mlp.out"][0, c]
            run_edits.append(hooks.MlpEdit(layer, value, positions=[c], batch=row))
    return run_edits


def run_cells(loaded: Loaded, target: Any, source: Any, site: str, cells: Sequence[tuple[int, int]],
              batch_size: int) -> Iterator[tuple[int, Any]]:
    """Patched final-position logits for each cell, `batch_size` cells per forward → (first index, [n, vocab])."""
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        logits = hooks.run(loaded, target.expand(len(chunk), -1), edits=_edits(site, chunk, source))
        yield start, logits[:, -1]


def patch(loaded: Loaded, clean: Sequence[int], corrupt: Sequence[int], metric: Metric, site: str = "heads",
          direction: str = "denoise", batch_size: int = 32, progress: Any = None) -> PatchResult:
    """Patch every cell of `site` (see module docstring) and measure `metric` at the last position."""
    import torch

    if site not in SITES:
        raise BadInput(f"--over {site!r}: choose one of {', '.join(SITES)}")
    if direction not in DIRECTIONS:
        raise BadInput(f"--direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    if len(clean) != len(corrupt):
        raise BadInput(f"clean and corrupt inputs must have the same number of tokens ({len(clean)} vs "
                       f"{len(corrupt)}), so positions line up")
    if loaded.is_encoder:
        raise BadInput("patching measures next-token logits; encoders have none", loaded.source)
    clean_t, corrupt_t = torch.tensor([list(clean)]), torch.tensor([list(corrupt)])
    names = _CACHE_NAMES[site]
    clean_logits, clean_cache = hooks.run_with_cache(loaded, clean_t, names=names)
    corrupt_logits, corrupt_cache = hooks.run_with_cache(loaded, corrupt_t, names=names)
    ref = clean_logits[0, -1]
    m_clean = float(metric(clean_logits[:, -1], ref)[0])
    m_corrupt = float(metric(corrupt_logits[:, -1], ref)[0])
    target, source = (corrupt_t, clean_cache) if direction == "denoise" else (clean_t, corrupt_cache)

    cells = _cells(loaded, site, len(clean))
    batch_size = memory.batch_rows(loaded, len(clean), batch_size)  # --max-memory (default: what is free)
    values = torch.zeros(len(cells))
    chunks = run_cells(loaded, target, source, site, cells, batch_size)
    if progress is not None:
        chunks = progress(chunks, f"patching {site}", (len(cells) + batch_size - 1) // batch_size)
    forwards = 2
    for start, logits in chunks:
        values[start : start + len(logits)] = metric(logits, ref)
        forwards += 1
    span = m_clean - m_corrupt
    if abs(span) < 1e-8:
        raise BadInput(f"the metric is the same on the clean and corrupt runs ({m_clean:.4g}); nothing to patch")
    effect = (values - m_corrupt) / span if direction == "denoise" else (m_clean - values) / span
    n_cols = len(cells) // loaded.n_layers
    cols = [str(c) for c in range(n_cols)]
    return PatchResult(site, direction, metric.text, m_clean, m_corrupt,
                       rows=[str(layer) for layer in range(loaded.n_layers)], cols=cols,
                       value=values.reshape(loaded.n_layers, n_cols), effect=effect.reshape(loaded.n_layers, n_cols),
                       forwards=forwards)

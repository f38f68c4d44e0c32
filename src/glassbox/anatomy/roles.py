"""Architecture role maps: each tensor name → its level, its layer, and how it splits into attention heads.

The facts (the regex rows, the Q/K/V layout, the config keys) are declared once per family in
`glassbox.registry`; this module applies them. See the registry's docstring for the head-split kinds.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from glassbox.registry import FAMILIES, MODEL_TYPES, Family, Rule

LEVELS = (
    "embedding", "position_embedding", "attention.q", "attention.k", "attention.v", "attention.o",
    "attention.qkv", "attention.qk_norm", "attention.norm", "mlp.in", "mlp.gate", "mlp.gate_up", "mlp.out",
    "mlp.norm", "final_norm", "unembedding", "buffer", "unknown",
)

# Kept under their old names: family name → registry entry, config model_type → family name.
ARCHITECTURES: dict[str, Family] = FAMILIES
__all__ = ["ARCHITECTURES", "LEVELS", "MODEL_TYPES", "Dims", "HeadSlice", "Rule", "classify",
           "detect_from_config", "detect_from_names", "head_slices"]


@functools.cache
def _compiled(architecture: str) -> tuple[tuple[re.Pattern[str], Rule], ...]:
    # compiled on first use: `glassbox` starts without paying for every architecture's regexes
    return tuple((re.compile(r.pattern), r) for r in FAMILIES[architecture].rules)


@dataclass(frozen=True)
class Dims:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int

    @property
    def group_size(self) -> int:
        """Query heads per key-value head (GQA); query head h reads kv head h // group_size."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def from_config(cls, architecture: str, config: dict[str, Any]) -> Dims | None:
        arch = ARCHITECTURES.get(architecture)
        if arch is None:
            return None
        config = config.get("text_config", config) if "text_config" in config else config
        k_layers, k_heads, k_kv, k_model = arch.config_keys
        try:
            n_layers, n_heads, d_model = int(config[k_layers]), int(config[k_heads]), int(config[k_model])
        except (KeyError, TypeError, ValueError):
            return None
        n_kv = int(config.get(k_kv) or n_heads) if k_kv else n_heads
        head_dim = int(config.get("head_dim") or d_model // n_heads)
        if n_heads <= 0 or n_kv <= 0 or n_heads % n_kv:
            return None
        return cls(n_layers, n_heads, n_kv, head_dim, d_model)


@dataclass(frozen=True)
class HeadSlice:
    head: int
    kind: str  # q | k | v | o
    kv_group: int | None
    axis: int  # axis of the stored tensor (non-negative)
    start: int
    stop: int

    def index(self, ndim: int) -> tuple[slice, ...]:
        """Use as tensor[hs.index(t.ndim)] to get this head's block."""
        return tuple(slice(self.start, self.stop) if a == self.axis else slice(None) for a in range(ndim))

    def slice_str(self, ndim: int) -> str:
        return _slice_str(self.axis, self.start, self.stop, ndim)


@functools.lru_cache(maxsize=8192)  # the same few slices recur in every layer
def _slice_str(axis: int, start: int, stop: int, ndim: int) -> str:
    return "[" + ", ".join(f"{start}:{stop}" if a == axis else ":" for a in range(ndim)) + "]"


def detect_from_config(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    for arch_class in config.get("architectures") or []:
        lowered = str(arch_class).lower()
        for key, family in MODEL_TYPES.items():
            if lowered.startswith(key.replace("_", "")):
                return family
    return None


@functools.cache
def _signatures() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The tensor name that gives each family away, most specific first (the registry's order)."""
    return tuple((f.name, re.compile(f.signature)) for f in FAMILIES.values())


def detect_from_names(names: list[str]) -> str | None:
    for family, signature in _signatures():
        if any(signature.fullmatch(n) for n in names):
            return family
    return None


def classify(architecture: str, name: str) -> tuple[str, int | None]:
    """(level, layer) of a tensor; ("unknown", None) when the role map has no row for it."""
    rule, layer = _match(architecture, name)
    return (rule.level, layer) if rule else ("unknown", None)


_LAYER_NUMBER = re.compile(r"(?<=\.)\d+(?=\.)")


def _match(architecture: str, name: str) -> tuple[Rule | None, int | None]:
    # Every layer's tensors share one shape of name: match the shape once, then read the layer number.
    numbers = _LAYER_NUMBER.findall(name)
    rule = _match_shape(architecture, _LAYER_NUMBER.sub("0", name))
    if rule is None:
        return None, None
    return rule, (int(numbers[0]) if numbers and "(?P<layer>" in rule.pattern else None)


@functools.lru_cache(maxsize=4096)
def _match_shape(architecture: str, name: str) -> Rule | None:
    if architecture not in FAMILIES:
        return None
    for regex, rule in _compiled(architecture):
        if regex.fullmatch(name):
            return rule
    return None


def head_slices(architecture: str, name: str, shape: tuple[int, ...] | list[int], dims: Dims | None
                ) -> list[HeadSlice]:
    """Which block of the stored tensor belongs to which head. Empty when the tensor is not split by head
    (norms, MLP, biases of the output projection) or when the shape does not fit the declared dims."""
    rule, _ = _match(architecture, name)
    if rule is None or rule.split is None or dims is None or not shape:
        return []
    return list(_split(rule, tuple(shape), dims))


@functools.lru_cache(maxsize=1024)  # every layer has the same splits: compute them once per shape
def _split(rule: Rule, shape: tuple[int, ...], dims: Dims) -> tuple[HeadSlice, ...]:
    axis = rule.axis % len(shape)
    d, H, K = dims.head_dim, dims.n_heads, dims.n_kv_heads
    g = dims.group_size
    blocks: list[HeadSlice] = []
    if rule.split == "q":
        blocks = [HeadSlice(h, "q", h // g, axis, h * d, (h + 1) * d) for h in range(H)]
    elif rule.split == "kv":
        kind = "k" if rule.level == "attention.k" else "v"
        blocks = [HeadSlice(k, kind, k, axis, k * d, (k + 1) * d) for k in range(K)]
    elif rule.split == "o":
        blocks = [HeadSlice(h, "o", h // g, axis, h * d, (h + 1) * d) for h in range(H)]
    elif rule.split == "qkv_blocked":
        base = {"q": 0, "k": H * d, "v": H * d + K * d}
        blocks = [HeadSlice(h, kind, h // g if kind == "q" else h, axis,
                            base[kind] + h * d, base[kind] + (h + 1) * d)
                  for kind, count in (("q", H), ("k", K), ("v", K)) for h in range(count)]
    elif rule.split == "qkv_interleaved":
        blocks = [HeadSlice(h, kind, h, axis, (3 * h + i) * d, (3 * h + i + 1) * d)
                  for h in range(H) for i, kind in enumerate("qkv")]
    if not blocks or max(b.stop for b in blocks) != shape[axis]:
        return ()  # the declared dims do not tile this tensor: better no heads than wrong heads
    return tuple(blocks)

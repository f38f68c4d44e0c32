"""Architecture role maps: a declarative table per architecture that turns a tensor's name into its level,
its layer, and how it splits into attention heads.

Adding an architecture is adding one entry to ARCHITECTURES: (regex, level, split) rows. A split says along
which axis of the *stored* tensor the heads lie and in what layout:
  "q" / "kv"      consecutive blocks of head_dim, one per query head / per key-value head
  "o"             the same blocks, for the output projection (its input side)
  "qkv_blocked"   [Q all heads | K all heads | V all heads]   (GPT-2's fused c_attn)
  "qkv_interleaved" per head [q | k | v]                      (GPT-NeoX's query_key_value)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

LEVELS = (
    "embedding", "position_embedding", "attention.q", "attention.k", "attention.v", "attention.o",
    "attention.qkv", "attention.qk_norm", "attention.norm", "mlp.in", "mlp.gate", "mlp.out", "mlp.norm",
    "final_norm", "unembedding", "buffer", "unknown",
)


@dataclass(frozen=True)
class Rule:
    pattern: str  # full-match regex over the tensor name; a group named `layer` gives the layer
    level: str
    split: str | None = None  # see the module docstring
    axis: int = 0  # the stored tensor's axis along which the heads lie (-1: the last one)


@dataclass(frozen=True)
class Architecture:
    name: str
    rules: tuple[Rule, ...]
    causal: bool = True
    rotary: bool = False
    # config keys: (n_layers, n_heads, n_kv_heads or None, d_model)
    config_keys: tuple[str, str, str | None, str] = (
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size")

    @functools.cached_property
    def compiled(self) -> tuple[tuple[re.Pattern[str], Rule], ...]:
        # compiled on first use: `glassbox` starts without paying for every architecture's regexes
        return tuple((re.compile(r.pattern), r) for r in self.rules)


L = r"(?P<layer>\d+)"


def _llama_like(name: str, prefix: str, extra: tuple[Rule, ...] = ()) -> Architecture:
    p = prefix
    return Architecture(name, rotary=True, rules=(
        Rule(rf"{p}embed_tokens\.weight", "embedding"),
        Rule(rf"{p}layers\.{L}\.self_attn\.q_proj\.(weight|bias)", "attention.q", "q"),
        Rule(rf"{p}layers\.{L}\.self_attn\.k_proj\.(weight|bias)", "attention.k", "kv"),
        Rule(rf"{p}layers\.{L}\.self_attn\.v_proj\.(weight|bias)", "attention.v", "kv"),
        Rule(rf"{p}layers\.{L}\.self_attn\.o_proj\.weight", "attention.o", "o", axis=-1),
        Rule(rf"{p}layers\.{L}\.self_attn\.o_proj\.bias", "attention.o"),
        Rule(rf"{p}layers\.{L}\.self_attn\.(q_norm|k_norm)\.weight", "attention.qk_norm"),
        Rule(rf"{p}layers\.{L}\.self_attn\.rotary_emb\.inv_freq", "buffer"),
        Rule(rf"{p}layers\.{L}\.input_layernorm\.weight", "attention.norm"),
        *extra,
        Rule(rf"{p}layers\.{L}\.post_attention_layernorm\.weight", "mlp.norm"),
        Rule(rf"{p}layers\.{L}\.mlp\.gate_proj\.weight", "mlp.gate"),
        Rule(rf"{p}layers\.{L}\.mlp\.up_proj\.weight", "mlp.in"),
        Rule(rf"{p}layers\.{L}\.mlp\.down_proj\.weight", "mlp.out"),
        Rule(rf"{p}norm\.weight", "final_norm"),
        Rule(r"lm_head\.weight", "unembedding"),
        Rule(rf"{p}rotary_emb\.inv_freq", "buffer"),
    ))


ARCHITECTURES: dict[str, Architecture] = {
    "llama": _llama_like("llama", r"(?:model\.)?"),
    # Gemma 3 normalizes the attention output before the residual add: post_attention_layernorm belongs to
    # attention there, not to the MLP as in Llama; so these rows come before the Llama-like ones.
    "gemma3": _llama_like("gemma3", r"(?:model\.)?(?:language_model\.)?", extra=(
        Rule(rf"(?:model\.)?(?:language_model\.)?layers\.{L}\.post_attention_layernorm\.weight", "attention.norm"),
        Rule(rf"(?:model\.)?(?:language_model\.)?layers\.{L}\.(pre|post)_feedforward_layernorm\.weight",
             "mlp.norm"),
    )),
    "gpt2": Architecture("gpt2", config_keys=("n_layer", "n_head", None, "n_embd"), rules=(
        Rule(r"(?:transformer\.)?wte\.weight", "embedding"),
        Rule(r"(?:transformer\.)?wpe\.weight", "position_embedding"),
        Rule(rf"(?:transformer\.)?h\.{L}\.ln_1\.(weight|bias)", "attention.norm"),
        # Conv1D stores weights [in, out]: the fused Q|K|V heads are column blocks.
        Rule(rf"(?:transformer\.)?h\.{L}\.attn\.c_attn\.(weight|bias)", "attention.qkv", "qkv_blocked", axis=-1),
        Rule(rf"(?:transformer\.)?h\.{L}\.attn\.c_proj\.weight", "attention.o", "o", axis=0),
        Rule(rf"(?:transformer\.)?h\.{L}\.attn\.c_proj\.bias", "attention.o"),
        Rule(rf"(?:transformer\.)?h\.{L}\.attn\.(bias|masked_bias)", "buffer"),
        Rule(rf"(?:transformer\.)?h\.{L}\.ln_2\.(weight|bias)", "mlp.norm"),
        Rule(rf"(?:transformer\.)?h\.{L}\.mlp\.c_fc\.(weight|bias)", "mlp.in"),
        Rule(rf"(?:transformer\.)?h\.{L}\.mlp\.c_proj\.(weight|bias)", "mlp.out"),
        Rule(r"(?:transformer\.)?ln_f\.(weight|bias)", "final_norm"),
        Rule(r"lm_head\.weight", "unembedding"),
    )),
    "gpt_neox": Architecture("gpt_neox", rotary=True, rules=(
        Rule(r"(?:gpt_neox\.)?embed_in\.weight", "embedding"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.input_layernorm\.(weight|bias)", "attention.norm"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.attention\.query_key_value\.(weight|bias)", "attention.qkv",
             "qkv_interleaved"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.attention\.dense\.weight", "attention.o", "o", axis=-1),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.attention\.dense\.bias", "attention.o"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)", "buffer"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.post_attention_layernorm\.(weight|bias)", "mlp.norm"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.mlp\.dense_h_to_4h\.(weight|bias)", "mlp.in"),
        Rule(rf"(?:gpt_neox\.)?layers\.{L}\.mlp\.dense_4h_to_h\.(weight|bias)", "mlp.out"),
        Rule(r"(?:gpt_neox\.)?final_layer_norm\.(weight|bias)", "final_norm"),
        Rule(r"(?:gpt_neox\.)?rotary_emb\.inv_freq", "buffer"),
        Rule(r"embed_out\.weight", "unembedding"),
    )),
    # BERT is post-norm: each LayerNorm follows its sublayer; we file it with that sublayer.
    "bert": Architecture("bert", causal=False, rules=(
        Rule(r"(?:bert\.)?embeddings\.(word|token_type)_embeddings\.weight", "embedding"),
        Rule(r"(?:bert\.)?embeddings\.position_embeddings\.weight", "position_embedding"),
        Rule(r"(?:bert\.)?embeddings\.LayerNorm\.(weight|bias)", "embedding"),
        Rule(r"(?:bert\.)?embeddings\.(position_ids|token_type_ids)", "buffer"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.self\.query\.(weight|bias)", "attention.q", "q"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.self\.key\.(weight|bias)", "attention.k", "kv"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.self\.value\.(weight|bias)", "attention.v", "kv"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.output\.dense\.weight", "attention.o", "o", axis=-1),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.output\.dense\.bias", "attention.o"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.attention\.output\.LayerNorm\.(weight|bias)", "attention.norm"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.intermediate\.dense\.(weight|bias)", "mlp.in"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.output\.dense\.(weight|bias)", "mlp.out"),
        Rule(rf"(?:bert\.)?encoder\.layer\.{L}\.output\.LayerNorm\.(weight|bias)", "mlp.norm"),
        Rule(r"(?:bert\.)?pooler\.dense\.(weight|bias)", "unembedding"),
        Rule(r"cls\.predictions\..*", "unembedding"),
    )),
}

# config `model_type` → role-map family
MODEL_TYPES = {
    "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "smollm3": "llama",
    "gemma3": "gemma3", "gemma3_text": "gemma3",
    "gpt2": "gpt2", "gpt_neox": "gpt_neox", "bert": "bert",
}


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


# The tensor name that gives each family away, checked most specific first.
_SIGNATURES = (
    ("gpt2", re.compile(r"(?:transformer\.)?h\.\d+\.attn\.c_attn\.weight")),
    ("gpt_neox", re.compile(r"(?:gpt_neox\.)?layers\.\d+\.attention\.query_key_value\.weight")),
    ("bert", re.compile(r"(?:bert\.)?encoder\.layer\.\d+\.attention\.self\.query\.weight")),
    ("gemma3", re.compile(r".*layers\.\d+\.pre_feedforward_layernorm\.weight")),
    ("llama", re.compile(r".*layers\.\d+\.self_attn\.q_proj\.weight")),
)


def detect_from_names(names: list[str]) -> str | None:
    for family, signature in _SIGNATURES:
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
    arch = ARCHITECTURES.get(architecture)
    if arch is None:
        return None
    for regex, rule in arch.compiled:
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

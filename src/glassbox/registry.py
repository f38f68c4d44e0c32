"""The architecture registry: one declarative entry per model family, and every per-family fact lives here.

An entry says which HF `model_type`s it covers, how each tensor name maps to a level (and how a tensor
splits into heads: the Q/K/V layout), where the hook points sit among the HF modules, which norm feeds
attention (and whether it scales by w or Gemma's 1 + w), the final norm, per-head q/k norms, causal or
encoder, and the GGUF tensor names with llama.cpp's Q/K row permutation. The role maps
(`anatomy/roles.py`), the run layer's tables (`run/load.py`, `run/layout.py`), the probes, the GGUF reader,
the per-head accessor (`weights.py`) and training all read these entries; adding a family is adding one.

Head splits (`Rule.split`), along `Rule.axis` of the *stored* tensor:
  "q" / "kv"      consecutive blocks of head_dim, one per query head / per key-value head
  "o"             the same blocks, for the output projection (its input side)
  "qkv_blocked"   [Q all heads | K all kv heads | V all kv heads] (GPT-2's c_attn columns, Phi-3's qkv_proj rows)
  "qkv_interleaved" per head [q | k | v]                          (GPT-NeoX's query_key_value)

This module imports nothing of glassbox, so the checkpoint readers below everything else can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

L = r"(?P<layer>\d+)"  # the layer number inside a rule's pattern


@dataclass(frozen=True)
class Rule:
    pattern: str  # full-match regex over the tensor name; a group named `layer` gives the layer
    level: str
    split: str | None = None  # see the module docstring
    axis: int = 0  # the stored tensor's axis along which the heads lie (-1: the last one)


@dataclass(frozen=True)
class Layout:
    """Module paths for the uniform hook points, relative to one layer (`layers`: to model.base_model)."""

    layers: str  # the ModuleList of layers
    attn: str  # module returning (attn_output, attn_weights)
    o_proj: str  # output projection; its input is z (every head's output, concatenated)
    mid_input: str | None  # module whose input is resid_mid
    mlp_out: str  # module whose output is the MLP's write to the residual stream
    conv1d: bool = False  # GPT-2 Conv1D stores weights [in, out]
    mid_output: str | None = None  # else: module whose output[0] is resid_mid; neither: resid_pre + attn.out


@dataclass(frozen=True)
class GGUFArch:
    """One GGUF `general.architecture` this family reads: its HF model_type and class, whether llama.cpp
    permuted the Q/K rows inside each head for its rope kernel (llama and mistral files: yes), and whether
    `<arch>.rope.dimension_count` gives head_dim when `attention.key_length` is absent (llama, mistral)."""

    name: str
    model_type: str
    hf_class: str
    permuted_qk: bool = False
    rope_dims_are_head_dim: bool = False


@dataclass(frozen=True)
class GGUFLayerTypes:
    """The per-layer attention kinds (HF config `layer_types`) of a family that mixes them. The metadata key
    `<arch>.<key>` holds one flag per layer (true: `flagged`, false: `other`) or a period n; without it the
    period is `every`: every n-th layer (counting from 1) is `other`, the rest `flagged` (llama.cpp's rule)."""

    key: str
    flagged: str
    other: str
    every: int


@dataclass(frozen=True)
class GGUFNames:
    layer: dict[str, str]  # blk.{n}.<key> → model.layers.{n}.<value>
    archs: tuple[GGUFArch, ...]
    hidden_act: str = "silu"
    hidden_act_key: str = "hidden_act"  # Gemma 3's config calls it hidden_activation
    layer_types: GGUFLayerTypes | None = None
    config_defaults: dict[str, float] = field(default_factory=dict)  # config keys the file does not carry
    globals: dict[str, str] = field(default_factory=lambda: {
        "token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"})


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    signature: str  # a tensor name that gives this family away when there is no config
    rules: tuple[Rule, ...]
    layout: Layout
    attn_input_norm: str | None  # module (relative to a layer) whose output feeds Q/K/V; None: post-norm
    final_norm: str | None  # relative to model.base_model; None: post-norm, no final norm
    mlp_down: str  # the MLP's output projection (relative to a layer): what attention-only training zeroes
    causal: bool = True
    rotary: bool = False
    norm_plus_one: bool = False  # RMSNorm scales by 1 + w (Gemma)
    attn_output_norm: str | None = None  # a norm on the attention output before the residual add (Gemma 3)
    q_norm: str | None = None  # per-head query/key RMSNorm before rotary (Qwen3, Gemma 3), relative to a layer
    k_norm: str | None = None
    needs_bos: bool = False  # the model expects a BOS token in front
    # config keys: (n_layers, n_heads, n_kv_heads or None, d_model)
    config_keys: tuple[str, str, str | None, str] = (
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size")
    gguf: GGUFNames | None = None


def _llama_rules(p: str, extra: tuple[Rule, ...] = (), qkv: tuple[Rule, ...] | None = None,
                 mlp_in: tuple[Rule, ...] | None = None) -> tuple[Rule, ...]:
    """The Llama-shaped decoder's rows; `extra` rows take precedence over the MLP norm row."""
    if qkv is None:
        qkv = (Rule(rf"{p}layers\.{L}\.self_attn\.q_proj\.(weight|bias)", "attention.q", "q"),
               Rule(rf"{p}layers\.{L}\.self_attn\.k_proj\.(weight|bias)", "attention.k", "kv"),
               Rule(rf"{p}layers\.{L}\.self_attn\.v_proj\.(weight|bias)", "attention.v", "kv"))
    if mlp_in is None:
        mlp_in = (Rule(rf"{p}layers\.{L}\.mlp\.gate_proj\.weight", "mlp.gate"),
                  Rule(rf"{p}layers\.{L}\.mlp\.up_proj\.weight", "mlp.in"))
    return (
        Rule(rf"{p}embed_tokens\.weight", "embedding"),
        *qkv,
        Rule(rf"{p}layers\.{L}\.self_attn\.o_proj\.weight", "attention.o", "o", axis=-1),
        Rule(rf"{p}layers\.{L}\.self_attn\.o_proj\.bias", "attention.o"),
        Rule(rf"{p}layers\.{L}\.self_attn\.(q_norm|k_norm)\.weight", "attention.qk_norm"),
        Rule(rf"{p}layers\.{L}\.self_attn\.rotary_emb\.inv_freq", "buffer"),
        Rule(rf"{p}layers\.{L}\.input_layernorm\.weight", "attention.norm"),
        *extra,
        Rule(rf"{p}layers\.{L}\.post_attention_layernorm\.weight", "mlp.norm"),
        *mlp_in,
        Rule(rf"{p}layers\.{L}\.mlp\.down_proj\.weight", "mlp.out"),
        Rule(rf"{p}norm\.weight", "final_norm"),
        Rule(r"lm_head\.weight", "unembedding"),
        Rule(rf"{p}rotary_emb\.inv_freq", "buffer"),
    )


_GGUF_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
_LLAMA_LAYOUT = Layout("layers", "self_attn", "self_attn.o_proj", "post_attention_layernorm", "mlp")

LLAMA = Family(
    "llama", ("llama", "mistral", "qwen2", "smollm3"),
    signature=r".*layers\.\d+\.self_attn\.q_proj\.weight",
    rules=_llama_rules(r"(?:model\.)?"), layout=_LLAMA_LAYOUT, rotary=True,
    attn_input_norm="input_layernorm", final_norm="norm", mlp_down="mlp.down_proj",
    gguf=GGUFNames({**_GGUF_LAYER, "ffn_norm": "post_attention_layernorm"}, (
        GGUFArch("llama", "llama", "LlamaForCausalLM", permuted_qk=True, rope_dims_are_head_dim=True),
        GGUFArch("mistral", "mistral", "MistralForCausalLM", permuted_qk=True, rope_dims_are_head_dim=True),
        GGUFArch("qwen2", "qwen2", "Qwen2ForCausalLM"))),
)

# Qwen3: Llama-shaped, plus an RMSNorm over each head's query and key before the rotary embedding.
QWEN3 = replace(
    LLAMA, name="qwen3", model_types=("qwen3",), signature=r".*layers\.\d+\.self_attn\.q_norm\.weight",
    q_norm="self_attn.q_norm", k_norm="self_attn.k_norm",
    gguf=replace(LLAMA.gguf, archs=(GGUFArch("qwen3", "qwen3", "Qwen3ForCausalLM"),)),
)

# Phi-3: one fused qkv_proj (rows [Q | K | V]) and one fused gate_up_proj (rows [gate | up]).
_PHI3_P = r"(?:model\.)?"
PHI3 = replace(
    LLAMA, name="phi3", model_types=("phi3",), signature=r".*layers\.\d+\.self_attn\.qkv_proj\.weight",
    rules=_llama_rules(
        _PHI3_P,
        qkv=(Rule(rf"{_PHI3_P}layers\.{L}\.self_attn\.qkv_proj\.(weight|bias)", "attention.qkv", "qkv_blocked"),),
        mlp_in=(Rule(rf"{_PHI3_P}layers\.{L}\.mlp\.gate_up_proj\.weight", "mlp.gate_up"),)),
    gguf=GGUFNames({"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm",
                    "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj", "ffn_norm": "post_attention_layernorm"},
                   (GGUFArch("phi3", "phi3", "Phi3ForCausalLM"),)),
)

# Gemma 3 normalizes the attention output before the residual add: post_attention_layernorm belongs to
# attention there (not to the MLP as in Llama), and resid_mid is the pre-feed-forward norm's input.
_GEMMA_P = r"(?:model\.)?(?:language_model\.)?"
GEMMA3 = Family(
    "gemma3", ("gemma3", "gemma3_text"), signature=r".*layers\.\d+\.pre_feedforward_layernorm\.weight",
    rules=_llama_rules(_GEMMA_P, extra=(
        Rule(rf"{_GEMMA_P}layers\.{L}\.post_attention_layernorm\.weight", "attention.norm"),
        Rule(rf"{_GEMMA_P}layers\.{L}\.(pre|post)_feedforward_layernorm\.weight", "mlp.norm"),
    )),
    layout=Layout("layers", "self_attn", "self_attn.o_proj", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"),
    attn_input_norm="input_layernorm", final_norm="norm", mlp_down="mlp.down_proj", rotary=True,
    norm_plus_one=True, q_norm="self_attn.q_norm", k_norm="self_attn.k_norm", needs_bos=True,
    attn_output_norm="post_attention_layernorm",
    gguf=GGUFNames({**_GGUF_LAYER, "post_attention_norm": "post_attention_layernorm",
                    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"},
                   (GGUFArch("gemma3", "gemma3", "Gemma3ForCausalLM"),),
                   hidden_act="gelu_pytorch_tanh", hidden_act_key="hidden_activation",
                   # 5 sliding-window layers, then 1 global; llama.cpp's fixed rope base for the sliding ones
                   layer_types=GGUFLayerTypes("attention.sliding_window_pattern", "sliding_attention",
                                              "full_attention", every=6),
                   config_defaults={"rope_local_base_freq": 10000.0}),
)

_G = r"(?:transformer\.)?"
GPT2 = Family(
    "gpt2", ("gpt2",), signature=r"(?:transformer\.)?h\.\d+\.attn\.c_attn\.weight",
    config_keys=("n_layer", "n_head", None, "n_embd"),
    rules=(
        Rule(rf"{_G}wte\.weight", "embedding"),
        Rule(rf"{_G}wpe\.weight", "position_embedding"),
        Rule(rf"{_G}h\.{L}\.ln_1\.(weight|bias)", "attention.norm"),
        # Conv1D stores weights [in, out]: the fused Q|K|V heads are column blocks.
        Rule(rf"{_G}h\.{L}\.attn\.c_attn\.(weight|bias)", "attention.qkv", "qkv_blocked", axis=-1),
        Rule(rf"{_G}h\.{L}\.attn\.c_proj\.weight", "attention.o", "o", axis=0),
        Rule(rf"{_G}h\.{L}\.attn\.c_proj\.bias", "attention.o"),
        Rule(rf"{_G}h\.{L}\.attn\.(bias|masked_bias)", "buffer"),
        Rule(rf"{_G}h\.{L}\.ln_2\.(weight|bias)", "mlp.norm"),
        Rule(rf"{_G}h\.{L}\.mlp\.c_fc\.(weight|bias)", "mlp.in"),
        Rule(rf"{_G}h\.{L}\.mlp\.c_proj\.(weight|bias)", "mlp.out"),
        Rule(rf"{_G}ln_f\.(weight|bias)", "final_norm"),
        Rule(r"lm_head\.weight", "unembedding"),
    ),
    layout=Layout("h", "attn", "attn.c_proj", "ln_2", "mlp", conv1d=True),
    attn_input_norm="ln_1", final_norm="ln_f", mlp_down="mlp.c_proj",
)

# NeoX defaults to the parallel residual: no point in the code holds resid_mid, so it is defined as
# resid_pre + attention output (exactly the MLP norm's input in the sequential variant).
_N = r"(?:gpt_neox\.)?"
GPT_NEOX = Family(
    "gpt_neox", ("gpt_neox",), signature=r"(?:gpt_neox\.)?layers\.\d+\.attention\.query_key_value\.weight",
    rules=(
        Rule(rf"{_N}embed_in\.weight", "embedding"),
        Rule(rf"{_N}layers\.{L}\.input_layernorm\.(weight|bias)", "attention.norm"),
        Rule(rf"{_N}layers\.{L}\.attention\.query_key_value\.(weight|bias)", "attention.qkv", "qkv_interleaved"),
        Rule(rf"{_N}layers\.{L}\.attention\.dense\.weight", "attention.o", "o", axis=-1),
        Rule(rf"{_N}layers\.{L}\.attention\.dense\.bias", "attention.o"),
        Rule(rf"{_N}layers\.{L}\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)", "buffer"),
        Rule(rf"{_N}layers\.{L}\.post_attention_layernorm\.(weight|bias)", "mlp.norm"),
        Rule(rf"{_N}layers\.{L}\.mlp\.dense_h_to_4h\.(weight|bias)", "mlp.in"),
        Rule(rf"{_N}layers\.{L}\.mlp\.dense_4h_to_h\.(weight|bias)", "mlp.out"),
        Rule(rf"{_N}final_layer_norm\.(weight|bias)", "final_norm"),
        Rule(rf"{_N}rotary_emb\.inv_freq", "buffer"),
        Rule(r"embed_out\.weight", "unembedding"),
    ),
    layout=Layout("layers", "attention", "attention.dense", None, "mlp"),
    attn_input_norm="input_layernorm", final_norm="final_layer_norm", mlp_down="mlp.dense_4h_to_h", rotary=True,
)

# BERT is post-norm: each LayerNorm follows its sublayer (filed with it); attention reads the previous
# layer's normalized output directly. resid_mid is BertAttention's output (after its LayerNorm); mlp.out is
# the dense write before the residual add and LayerNorm.
_B = r"(?:bert\.)?"
BERT = Family(
    "bert", ("bert",), signature=r"(?:bert\.)?encoder\.layer\.\d+\.attention\.self\.query\.weight",
    causal=False,
    rules=(
        Rule(rf"{_B}embeddings\.(word|token_type)_embeddings\.weight", "embedding"),
        Rule(rf"{_B}embeddings\.position_embeddings\.weight", "position_embedding"),
        Rule(rf"{_B}embeddings\.LayerNorm\.(weight|bias)", "embedding"),
        Rule(rf"{_B}embeddings\.(position_ids|token_type_ids)", "buffer"),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.self\.query\.(weight|bias)", "attention.q", "q"),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.self\.key\.(weight|bias)", "attention.k", "kv"),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.self\.value\.(weight|bias)", "attention.v", "kv"),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.output\.dense\.weight", "attention.o", "o", axis=-1),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.output\.dense\.bias", "attention.o"),
        Rule(rf"{_B}encoder\.layer\.{L}\.attention\.output\.LayerNorm\.(weight|bias)", "attention.norm"),
        Rule(rf"{_B}encoder\.layer\.{L}\.intermediate\.dense\.(weight|bias)", "mlp.in"),
        Rule(rf"{_B}encoder\.layer\.{L}\.output\.dense\.(weight|bias)", "mlp.out"),
        Rule(rf"{_B}encoder\.layer\.{L}\.output\.LayerNorm\.(weight|bias)", "mlp.norm"),
        Rule(rf"{_B}pooler\.dense\.(weight|bias)", "unembedding"),
        Rule(r"cls\.predictions\..*", "unembedding"),
    ),
    layout=Layout("encoder.layer", "attention.self", "attention.output.dense", None, "output.dense",
                  mid_output="attention"),
    attn_input_norm=None, final_norm=None, mlp_down="output.dense",
)

# Order matters where one family's tensor names are a superset of another's: detection from names alone
# tries them in this order (most specific signature first).
FAMILIES: dict[str, Family] = {f.name: f for f in (GPT2, GPT_NEOX, BERT, GEMMA3, PHI3, QWEN3, LLAMA)}

MODEL_TYPES: dict[str, str] = {t: f.name for f in FAMILIES.values() for t in f.model_types}

# GGUF general.architecture → (family, its GGUF facts)
GGUF_ARCHS: dict[str, tuple[Family, GGUFArch]] = {
    a.name: (f, a) for f in FAMILIES.values() if f.gguf for a in f.gguf.archs}


def get(name: str) -> Family:
    """The entry of a family name (`llama`, `gemma3`, ...); KeyError for one we do not know."""
    return FAMILIES[name]


def family_of(model_type: str | None) -> Family | None:
    """The entry that covers an HF config's model_type, or None."""
    name = MODEL_TYPES.get(model_type or "")
    return FAMILIES[name] if name else None

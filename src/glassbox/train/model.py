"""A real Hugging Face model from a declaration (a named preset or a config dict), initialized by a named,
recorded scheme.

The preset `induction-2l` is the recipe in shared/notes/induction-recipe.md: GPT-2, 2 layers, 2 heads, width 64,
untied unembedding, attention only. "Attention only" is done so that any HF loader reproduces the model: the MLP
stays in the file but its output weights are zero and frozen, so it adds exactly nothing.
"""

from __future__ import annotations

import math
from typing import Any

from glassbox import registry
from glassbox.errors import BadInput
from glassbox.run.layout import submodule

PRESETS: dict[str, dict[str, Any]] = {
    "induction-2l": {
        "config": {
            "model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 32, "n_positions": 32,
            "n_inner": 4, "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        },
        "attention_only": True,
        "init": "wide",
        "data": {"kind": "periodic", "min_period": 4, "max_period": 16},
        "train": {"steps": 350, "batch_size": 64, "seq_len": 32, "lr": 3e-3, "grad_clip": 1.0},
    },
    # real English, byte-level: induction heads need far more steps here (recipe note); for the longer runs
    "text-2l": {
        "config": {
            "model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 128, "vocab_size": 256, "n_positions": 128,
            "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        },
        "attention_only": False,
        "init": "hf-default",
        "data": {"kind": "text", "path": "kjv"},
        "train": {"steps": 3000, "batch_size": 32, "seq_len": 128, "lr": 1e-3, "grad_clip": 1.0},
    },
    # real text with quoted repeats: KJV in SmolLM2 tokens remapped to 1,023 frequent ids + a rare class; half the
    # rows carry one real span repeated right after itself (natural repeats are too rare for induction to pay
    # within a CPU budget). The recipe search is in docs/notes/issue-15.md.
    "text-induction": {
        "config": {
            "model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 1024, "n_positions": 64,
            "n_inner": 4, "tie_word_embeddings": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        },
        "attention_only": True,
        "init": "wide",
        "data": {"kind": "tokens", "path": "kjv", "tokenizer": "smollm2-135m", "repeat_rate": 0.5, "heldout": 0.1},
        "train": {"steps": 9000, "batch_size": 32, "seq_len": 64, "lr": 3e-3, "grad_clip": 1.0},
    },
}

# name -> what it does, for --help and for config.json
INIT_SCHEMES = {
    "hf-default": "the model class's own _init_weights with the config's initializer_range (GPT-2: 0.02)",
    "wide": "HF init at initializer_range 0.125, then token/position embeddings normal(0, 1) (the induction recipe)",
    "normal": "every weight matrix normal(0, 0.02) (normal:STD for another std), biases 0, norm weights 1",
    "xavier": "every weight matrix Xavier/Glorot uniform, biases 0, norm weights 1",
}


def read_config(path: Any) -> dict[str, Any] | None:
    """A `--config` file (a transformers config JSON) → its dict; None without one. BadInput for a missing file,
    invalid JSON or JSON that is not an object."""
    import json
    from pathlib import Path

    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise BadInput("config file not found", path)
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise BadInput(f"not valid JSON: {exc}", path) from None
    if not isinstance(config, dict):
        raise BadInput("the config must be a JSON object", path)
    return config


def parse_init(scheme: str) -> tuple[str, float | None]:
    name, _, arg = scheme.partition(":")
    if name not in INIT_SCHEMES:
        raise BadInput(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if arg:
        if name not in ("normal", "wide"):
            raise BadInput(f"init scheme {name!r} takes no parameter")
        try:
            value = float(arg)
        except ValueError:
            raise BadInput(f"init scheme {scheme!r}: {arg!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise BadInput(f"init scheme {scheme!r}: the std must be positive")
        return name, value
    return name, None


def build_model(config_dict: dict[str, Any], attention_only: bool = False):
    """An untrained HF causal LM from a config dict (eager attention, so patterns can be read)."""
    import transformers

    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type", None)
    if not model_type:
        raise BadInput("the model config has no model_type (e.g. \"gpt2\", \"llama\")")
    try:
        config = transformers.AutoConfig.for_model(model_type, **config_dict)
        config._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"cannot build a causal LM from this config: {exc}") from None
    if attention_only:
        _zero_mlps(model)
    return model


def _zero_mlps(model) -> None:
    """MLP output weights zero and frozen: the block's MLP then adds exactly 0, in this process or any loader.
    Which module is the MLP's output projection is the registry entry's `mlp_down`."""
    import torch

    family = registry.family_of(model.config.model_type)
    if family is None:
        raise BadInput(f"attention_only: architecture {model.config.model_type!r} has no registry entry "
                       f"(known: {', '.join(sorted(registry.MODEL_TYPES))})")
    mlp_path, _, _ = family.mlp_down.rpartition(".")
    for block in submodule(model.base_model, family.layout.layers):
        with torch.no_grad():
            for p in submodule(block, family.mlp_down).parameters():
                p.zero_()
        for p in submodule(block, mlp_path).parameters():
            p.requires_grad_(False)


def initialize(model, scheme: str, seed: int, attention_only: bool = False) -> dict[str, Any]:
    """Re-initialize every weight under `seed` by the named scheme; returns the record kept in config.json."""
    import torch

    name, arg = parse_init(scheme)
    torch.manual_seed(seed)
    if name in ("hf-default", "wide"):
        saved = getattr(model.config, "initializer_range", None)
        if name == "wide":
            model.config.initializer_range = arg or 0.125
        for module in model.modules():  # HF marks modules it has initialized; clear that so it does it again
            if hasattr(module, "_is_hf_initialized"):
                module._is_hf_initialized = False
        model.apply(model._init_weights)
        if name == "wide":
            model.config.initializer_range = saved
            with torch.no_grad():
                for emb in (model.get_input_embeddings(), getattr(model.base_model, "wpe", None)):
                    if emb is not None:
                        emb.weight.normal_(0.0, 1.0)
    else:
        std = arg or 0.02
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if p.ndim >= 2:
                    if name == "normal":
                        p.normal_(0.0, std)
                    else:
                        torch.nn.init.xavier_uniform_(p)
                elif "norm" in pname or ".ln_" in pname:
                    p.fill_(1.0) if pname.endswith("weight") else p.zero_()
                else:
                    p.zero_()
    if attention_only:
        _zero_mlps(model)
    return {"scheme": scheme, "description": INIT_SCHEMES[name], "seed": seed}


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}

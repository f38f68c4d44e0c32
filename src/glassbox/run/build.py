"""A transformers model object from a config: the class (encoder or causal LM), eager attention, the dtype."""

from __future__ import annotations

import warnings
from typing import Any

from glassbox import registry

# encoder families and their model_types (both get asked)
ENCODERS = {n for f in registry.FAMILIES.values() if not f.causal for n in (f.name, *f.model_types)}


def quiet_transformers() -> None:
    """Our progress bars are ours to draw; transformers' tqdm bars and warnings would clutter stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def model_class(config: Any) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModel if config.model_type in ENCODERS else AutoModelForCausalLM


def build(config: Any, dtype: Any = None) -> Any:
    """A model with real (randomly initialized) parameters in `dtype` (default float32), eval mode."""
    import torch

    config._attn_implementation = "eager"  # attention patterns need the eager kernel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_class(config).from_config(config, dtype=dtype or torch.float32, attn_implementation="eager")
    return model.eval()

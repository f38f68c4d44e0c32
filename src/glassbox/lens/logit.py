"""Logit lens (nostalgebraist 2020): read every layer's residual stream through the final norm and the
unembedding, as if the model stopped there.

Layers are counted as in the JSON contract: 0 = the embeddings (blocks.0.resid_pre), l = the output of
block l-1 (blocks.{l-1}.resid_post), n_layers = the model's final output. The last entry is read from the
model's own logits, so it is exactly the final distribution (KL 0) whatever the architecture adds after
the last block (Gemma's logit soft-capping, NeoX's parallel residual).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glassbox.errors import BadInput
from glassbox.logprob import kl
from glassbox.run import hooks, memory
from glassbox.run.layout import final_norm
from glassbox.run.load import Loaded
from glassbox.run.text import encode, token_str  # noqa: F401  (the lens text API: logit.encode)


def check_lm(loaded: Loaded) -> None:
    """Lenses read the unembedding; an encoder without an LM head has none."""
    if loaded.is_encoder or loaded.model.get_output_embeddings() is None:
        raise BadInput(f"lenses need a causal language model with an unembedding; {loaded.architecture} "
                       "encoders have none", loaded.source)


def readout(loaded: Loaded, resid: Any) -> Any:
    """Residual [..., d_model] → logits [..., vocab] through the final norm and the unembedding."""
    import torch

    model = loaded.model
    norm = final_norm(model, loaded.architecture)
    resid = resid.to(model.get_output_embeddings().weight.dtype)  # the model's own float type (cache: float32)
    x = norm(resid) if norm is not None else resid
    logits = model.get_output_embeddings()(x).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma squashes its final logits; read every layer the same way
        logits = torch.tanh(logits / cap) * cap
    return logits


def residuals(loaded: Loaded, tokens: Any, attention_mask: Any = None) -> tuple[list[Any], Any]:
    """One cached forward → ([resid at lens layer 0..n_layers-1] each [batch, seq, d_model], final logits)."""
    n = loaded.n_layers
    names = ["blocks.0.resid_pre"] + [f"blocks.{layer}.resid_post" for layer in range(n - 1)]
    logits, cache = hooks.run_with_cache(loaded, tokens, names=names, attention_mask=attention_mask)
    return [cache[name] for name in names], logits


@dataclass
class LensResult:
    """Per lens layer (0..n_layers) and position: log-probabilities and KL to the final distribution."""

    tokens: list[int]
    logprobs: Any  # [n_layers + 1, seq, vocab]
    kl_to_final: Any  # [n_layers + 1, seq]

    def top(self, k: int = 5) -> tuple[Any, Any]:
        """(probabilities, token ids), each [n_layers + 1, seq, k]."""
        values, ids = self.logprobs.topk(k, dim=-1)
        return values.exp(), ids

    def rank_of(self, token_id: int) -> Any:
        """Rank (0 = top) of one token per layer and position → [n_layers + 1, seq]."""
        target = self.logprobs[..., token_id : token_id + 1]
        return (self.logprobs > target).sum(dim=-1)


def apply(loaded: Loaded, tokens: list[int], translators: Any = None) -> LensResult:
    """Run the lens over one sequence. `translators` (a tuned.TunedLens) maps each layer's residual first."""
    import torch

    check_lm(loaded)
    n, seq, vocab = loaded.n_layers + 1, len(tokens), int(loaded.config.vocab_size)
    need = n * seq * vocab * 4  # the result's log-probabilities, float32
    have = memory.budget(torch.device(loaded.device))
    if need > have // 2:
        raise BadInput(f"the lens over {seq} tokens holds {memory.gb(need)} of log-probabilities "
                       f"({n} layers × {vocab} tokens each), more than half of {memory.gb(have)} "
                       f"(--max-memory, default what is free); give a shorter --text")
    resid, final = residuals(loaded, torch.tensor([tokens]))
    with torch.inference_mode():
        # one layer at a time into the result: the memory is the result plus one layer's logits
        logprobs = torch.empty(n, seq, final.shape[-1])
        divergence = torch.empty(n, seq)
        for layer in range(n):
            if layer < n - 1:
                h = resid[layer] if translators is None else translators.translate(layer, resid[layer])
                logits = readout(loaded, h)[0].float()
            else:
                logits = final[0].float()
            logprobs[layer] = torch.log_softmax(logits, dim=-1)
            divergence[layer] = kl(final[0], logits).clamp_min(0.0)  # what the lens misses of the output
    return LensResult(tokens=list(tokens), logprobs=logprobs, kl_to_final=divergence)


def to_json(loaded: Loaded, result: LensResult) -> dict[str, Any]:
    """The contract's document: tokens, and per layer the KL per position and the top token per position."""
    probs, ids = result.top(1)
    layers = []
    for layer in range(result.logprobs.shape[0]):
        layers.append({
            "layer": layer,
            "kl_to_final": [float(x) for x in result.kl_to_final[layer]],
            "top_tokens": [[token_str(loaded, i[0]), float(p[0])] for p, i in zip(probs[layer], ids[layer], strict=True)],
        })
    return {"tokens": [token_str(loaded, t) for t in result.tokens], "layers": layers}

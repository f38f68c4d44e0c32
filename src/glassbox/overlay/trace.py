"""A generation as a trace: run the loop, put readable texts beside the ids, store it, replay it.

A trace holds everything needed to regenerate its output exactly: the index (path and id), the model,
the prompt, the whole configuration (seed included) and the last feedback id in force.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.overlay import lm
from glassbox.overlay.answers import answers_state
from glassbox.overlay.feedback import feedback_state
from glassbox.overlay.generate import GenerateConfig, generate
from glassbox.overlay.index import Index
from glassbox.overlay.store import Store


def tokenizer_for(index: Index, model_spec: str | None) -> tuple[Any, Any]:
    """(model or None, tokenizer): the LM's own tokenizer, or the index's saved one for --no-lm."""
    if model_spec:
        model, tok = lm.load_lm(model_spec)
        if len(tok) != index.vocab_size:
            raise BadInput(f"the model's vocabulary ({len(tok)}) differs from the index's ({index.vocab_size}); "
                           "build the index with this model's tokenizer", model_spec)
        return model, tok
    return None, lm.load_tokenizer(index.tokenizer_path())


def run(index_path: str | Path, prompt: str, cfg: GenerateConfig, model_spec: str | None, store: Store,
        feedback_upto: int | None = None, save: bool = True, answers_upto: int | None = None) -> dict:
    index = Index(index_path)
    model, tok = tokenizer_for(index, model_spec if cfg.mode != "table" else None)
    feedback, upto = feedback_state(index, store, feedback_upto)
    answers, a_upto = answers_state(index.path, index.id, store, answers_upto)  # consolidated answers, if any
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if (lm.needs_bos(model_spec) and model is not None) else None
    end_ids = {index.sep} | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
    t0 = time.perf_counter()
    result = generate(index, prompt_ids, cfg, model, bos, feedback, end_ids, answers)
    elapsed = time.perf_counter() - t0
    dec = _decoder(tok)
    for s in result["steps"]:
        for c in s["candidates"]:
            c["text"] = dec(c["token"])
        s["chosen_text"] = dec(s["chosen"])
        for f in s.get("pos", {}).get("filtered", []):
            f["text"] = dec(f["token"])
        s["lm_top_text"] = None if s["lm_top"] is None else dec(s["lm_top"])
        ctx = (prompt_ids + result["output_ids"])[: len(prompt_ids) + s["step"]]
        s["context_tail"] = tok.decode(ctx[-12:])
        s["voters"] = {  # which context tokens cast this step's votes, as text
            "next": dec(ctx[-1]), "triad": [dec(t) for t in ctx[-2:]],
            "suffix": tok.decode(ctx[-s["match_length"]:]) if s["match_length"] >= 3 else None,
        }
    out_ids = [t for t in result["output_ids"] if t not in end_ids]
    trace = {
        "created": time.time(), "index": str(Path(index_path).resolve()), "index_id": index.id,
        "model": model_spec if cfg.mode != "table" else None, "prompt": prompt, "prompt_ids": prompt_ids,
        "config": cfg.to_json(), "feedback_upto": upto, "output_ids": result["output_ids"],
        "output": tok.decode(out_ids), "stop_reason": result["stop_reason"],
        "ms_per_token": 1000.0 * elapsed / max(1, len(result["steps"])), "steps": result["steps"],
    }
    if a_upto:
        trace["answers_upto"] = a_upto
        trace["answers_in_force"] = answers.traces
    if "beam_score" in result:
        trace["beam_score"] = result["beam_score"]
    if save:
        store.add_trace(trace)
    return trace


def _decoder(tok: Any):  # type: ignore[no-untyped-def]
    cache: dict[int, str] = {}

    def dec(t: int) -> str:
        if t not in cache:
            cache[t] = tok.decode([t])
        return cache[t]

    return dec


def replay(trace: dict, store: Store) -> dict:
    """Regenerate a trace from its own record; {"identical": bool, "output_ids": [...]}."""
    cfg = GenerateConfig.from_json(trace["config"])
    again = run(trace["index"], trace["prompt"], cfg, trace["model"], store, trace["feedback_upto"], save=False,
                answers_upto=trace.get("answers_upto", 0))
    return {"trace": trace["id"], "identical": again["output_ids"] == trace["output_ids"],
            "output_ids": again["output_ids"], "output": again["output"]}

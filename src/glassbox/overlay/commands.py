"""`glassbox overlay build|generate|explain|feedback|consolidate|replay|eval`.

Traces and feedback live in one store (see overlay/store.py): --store PATH, else $GLASSBOX_HOME/overlay/
store.sqlite, else ~/.cache/glassbox/overlay/store.sqlite. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from glassbox.errors import BadInput
from glassbox.run import options, placement

overlay = typer.Typer(help="A generator whose every token comes from readable link weights, with a full trace.",
                      no_args_is_help=True)

STORE = typer.Option(None, "--store", help="Trace/feedback store (.sqlite file or folder). Default: "
                     "$GLASSBOX_HOME/overlay/store.sqlite, else ~/.cache/glassbox/overlay/store.sqlite.")


def register(app: typer.Typer) -> None:
    app.add_typer(overlay, name="overlay")


def _emit(obj: dict) -> None:
    print(json.dumps(obj))


@overlay.command()
def build(
    corpus: list[str] = typer.Option(..., "--corpus", help="Text file, folder of .txt, or kjv | kjv:A-B | pydoc | "
                                     "python-license | brown:fiction | brown:X-Y."),
    out: Path = typer.Option(..., "--out", help="Index folder to write."),
    model: str = typer.Option("smollm2-135m", "--model", help="Whose tokenizer (bundled name, .gguf, folder)."),
    k: int = typer.Option(32, "--k", help="Next-token links (and semantic neighbours) kept per token."),
    cooc_k: int = typer.Option(16, "--cooc-k", help="Co-occurrence links kept per token."),
    window: int = typer.Option(8, "--window", help="Co-occurrence window, in tokens."),
    no_suffix_array: bool = typer.Option(False, "--no-suffix-array", help="Skip the suffix array."),
    semantic: bool = typer.Option(False, "--semantic", help="Also store semantic neighbours (embedding cosine; "
                                  "needs the model's weights; weight 0 unless --semantic-weight)."),
    no_semantic: bool = typer.Option(False, "--no-semantic", help="No semantic neighbours (the default)."),
    cap: int = typer.Option(256, "--cap", help="Contexts seen more often store their children (flat lookups)."),
    pos: bool = typer.Option(False, "--pos", help="Also learn the part-of-speech table for --pos-filter (spaCy)."),
    pos_sample: int = typer.Option(400_000, "--pos-sample", help="Characters of the corpus tagged for --pos."),
    ray: str | None = typer.Option(None, "--ray", help="Tokenize the corpus's shards on Ray: auto or "
                                   "ray://HOST:PORT (same index; see glassbox.scale)."),
    workers: int = typer.Option(1, "--workers", help="Local tokenizer processes (without --ray)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Tokenize a corpus and write the memory-mapped index."""
    from glassbox.overlay import corpus as corpora
    from glassbox.overlay import index as ix
    from glassbox.overlay import lm

    if k < 1 or cooc_k < 1 or window < 2 or cap < 2:
        raise BadInput("--k and --cooc-k must be >= 1, --window >= 2 and --cap >= 2")
    from glassbox.scale import seam

    backend = seam.backend(ray, workers)  # a bad --ray fails before the corpus is read
    sources = corpora.load_sources(corpus)
    docs = [d for _, part in sources for d in part]
    parts = [(spec, len(part)) for spec, part in sources]  # each document's source, for the gate
    tok = lm.load_tokenizer(model)
    opts = ix.BuildOptions(k=k, cooc_k=cooc_k, window=window, suffix_array=not no_suffix_array,
                           semantic_from=model if semantic and not no_semantic else None, cap=cap)
    if backend.kind == "local":
        ix.build(docs, tok, out, opts, source=",".join(corpus), tokenizer_spec=model, parts=parts)
    else:  # shards tokenized where the seam says, merged in order: the same index
        from glassbox.overlay.shards import build_sharded

        build_sharded(docs, tok, out, opts, backend, source=",".join(corpus), tokenizer_spec=model, sources=parts)
    if pos:
        from glassbox.overlay.pos import build_table

        build_table(out, docs, tok, pos_sample)
    index = ix.Index(out)
    info = {"index": str(out), "id": index.id, "documents": len(docs), "tokens": index.n_tokens,
            "bytes_per_token": round(index.bytes_per_token(), 3), "sizes": index.sizes()}
    if as_json:
        _emit(info)
    else:
        print(f"index {out}: {info['tokens']} tokens from {len(docs)} documents, "
              f"{info['bytes_per_token']:.2f} bytes/token (id {index.id})")
        print(f"  {'part':22} {'bytes':>12} {'bytes/token':>12}")
        for name, v in info["sizes"].items():
            print(f"  {name:22} {v['bytes']:12,d} {v['bytes_per_token']:12.2f}")


@overlay.command("pos-table")
def pos_table(
    index: Path = typer.Argument(..., help="Index folder."),
    corpus: list[str] = typer.Option(None, "--corpus", help="The index's corpus (default: as recorded at build)."),
    sample: int = typer.Option(400_000, "--sample", help="Characters of the corpus tagged."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Learn the part-of-speech transition table (for --pos-filter) of an existing index."""
    from glassbox.overlay import corpus as corpora
    from glassbox.overlay import index as ix
    from glassbox.overlay import lm
    from glassbox.overlay.pos import build_table

    idx = ix.Index(index)
    specs = corpus or [s for s in str(idx.meta.get("source", "")).split(",") if s]
    if not specs:
        raise BadInput("the index does not record its corpus; give --corpus", index)
    if sample < 1000:
        raise BadInput("--sample must be at least 1000 characters")
    info = build_table(index, corpora.load_documents(specs), lm.load_tokenizer(idx.tokenizer_path()), sample)
    if as_json:
        _emit(info)
    else:
        print(f"part-of-speech table for {index}: {info['sample_tokens']} tokens tagged, {info['tagged_vocab']} "
              f"token ids with a tag, {info['transitions']} corpus transitions counted")


@overlay.command()
def generate(
    index: Path = typer.Argument(..., help="Index folder."),
    prompt: str = typer.Option(..., "--prompt"),
    model: str = typer.Option("smollm2-135m", "--model", help="The selector LM."),
    max_tokens: int = typer.Option(60, "--max-tokens"),
    mode: str = typer.Option("mixture", "--mode", help="mixture | select (the LM picks among the index's candidates) | table"),
    no_lm: bool = typer.Option(False, "--no-lm", help="The table alone (same as --mode table)."),
    n_candidates: int = typer.Option(32, "--n-candidates", "-n"),
    lm_top_k: int = typer.Option(8, "--lm-top-k", help="LM top-k added to the candidates (mixture)."),
    lam: float | None = typer.Option(None, "--lam", help="A fixed table weight in the mixture (default: the "
                                     "index's fitted gate, `overlay eval --save-gate`; without one 0.1)."),
    beta: float = typer.Option(0.3, "--beta", help="Table log-prob weight in select mode."),
    beam: int = typer.Option(1, "--beam"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    seed: int = typer.Option(0, "--seed"),
    min_score: float = typer.Option(0.0, "--min-score", help="Stop when the best table score is below this."),
    repeat_base: float = typer.Option(10.0, "--repeat-base", help="Votes for a repeated token / base^repeats."),
    semantic_weight: float = typer.Option(0.0, "--semantic-weight", help="Weight of semantic-neighbour votes."),
    cooc_weight: float = typer.Option(0.1, "--cooc-weight", help="Weight of co-occurrence votes."),
    pos_filter: bool = typer.Option(False, "--pos-filter", help="Drop candidates whose part of speech cannot "
                                    "follow the previous token's (needs the index's POS table)."),
    pos_min_share: float = typer.Option(0.002, "--pos-min-share", help="Rarer tag transitions are not allowed."),
    adaptive_temperature: bool = typer.Option(False, "--adaptive-temperature", help="Sample cooler when the "
                                              "candidates' distribution is flat, warmer when sharp."),
    store: str | None = STORE,
    as_json: bool = typer.Option(False, "--json", help="Print the whole trace as JSON."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Generate; every step is traced in the store (its id is printed)."""
    from glassbox.overlay.accumulator import AccumulatorConfig
    from glassbox.overlay.generate import GenerateConfig
    from glassbox.overlay.index import Index
    from glassbox.overlay.store import Store
    from glassbox.overlay.trace import run

    gate = Index(index).gate() if lam is None else None
    cfg = GenerateConfig(mode="table" if no_lm else mode, max_tokens=max_tokens, n_candidates=n_candidates,
                         lm_top_k=lm_top_k, lam=0.1 if lam is None else lam, beta=beta, gate=gate, beam=beam, temperature=temperature, seed=seed,
                         min_score=min_score, pos_filter=pos_filter, pos_min_share=pos_min_share,
                         adaptive_temperature=adaptive_temperature,
                         accumulator=AccumulatorConfig(repeat_base=repeat_base))
    cfg.accumulator.weight.update(semantic=semantic_weight, cooc=cooc_weight)
    cfg.check()
    st = Store(store)
    trace = run(index, prompt, cfg, None if no_lm else model, st)
    if as_json:
        _emit({**trace, **placement.last})  # "dtype", "device" of the selector LM when one ran
    else:
        print(trace["prompt"] + trace["output"])
        print(f"[trace {trace['id']}: {len(trace['steps'])} steps, stopped on {trace['stop_reason']}, "
              f"{trace['ms_per_token']:.1f} ms/token; `glassbox overlay explain {trace['id']}`]")


@overlay.command()
def explain(
    trace_id: str = typer.Argument(...),
    step: int | None = typer.Option(None, "--step", help="Show one step in full."),
    top: int = typer.Option(15, "--top", help="Candidates shown."),
    store: str | None = STORE,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Why each token: links, weights, accumulator terms, LM log-prob, rejected candidates."""
    from glassbox.overlay import explain as ex
    from glassbox.overlay.store import Store

    trace = Store(store).trace(trace_id)
    if step is not None and not 0 <= step < len(trace["steps"]):
        raise BadInput(f"trace {trace_id} has steps 0..{len(trace['steps']) - 1}; there is no step {step}")
    if as_json:
        _emit(trace["steps"][step] if step is not None else trace)
    else:
        print(ex.step_view(trace, step, top) if step is not None else ex.summary(trace))


@overlay.command()
def feedback(
    trace_id: str = typer.Argument(...),
    step: int = typer.Option(..., "--step"),
    prefer: str | None = typer.Option(None, "--prefer", help="The token that should have been chosen."),
    reject: str | None = typer.Option(None, "--reject", help="A token that should not be chosen here."),
    store: str | None = STORE,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Record a preference or rejection at a traced step; later generations use it."""
    from glassbox.overlay import lm
    from glassbox.overlay.feedback import record
    from glassbox.overlay.store import Store

    if (prefer is None) == (reject is None):
        raise BadInput("give exactly one of --prefer TEXT or --reject TEXT")
    st = Store(store)
    trace = st.trace(trace_id)
    tokenizer_dir = Path(trace["index"]) / "tokenizer"
    tok = lm.load_tokenizer(tokenizer_dir if tokenizer_dir.exists() else (trace["model"] or "smollm2-135m"))
    row = record(st, trace, step, prefer if prefer is not None else reject, prefer is not None, tok)
    if as_json:
        _emit(row)
    else:
        verb = "prefer" if row["delta"] > 0 else "reject"
        print(f"feedback #{row['feedback_id']}: {verb} {row['text']!r} after context ids {row['context_ids']} "
              f"(index {row['index_id']}); applies to later generations")


@overlay.command()
def consolidate(
    index: Path = typer.Argument(...),
    answers: list[str] = typer.Option(None, "--answers", help="Also fold these traces' answers (new triads and "
                                      "next links) into the index; audited in the store."),
    forget: list[str] = typer.Option(None, "--forget", help="Take these traces' consolidated answers out again."),
    answer_weight: float = typer.Option(1.0, "--answer-weight", help="Counts each answer's triad / next link adds "
                                        "(1 = one more corpus occurrence)."),
    store: str | None = STORE,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fold stored feedback (and, opt-in, finished answers) into the index's own link files."""
    from glassbox.overlay.answers import consolidate_answers
    from glassbox.overlay.feedback import consolidate as fold
    from glassbox.overlay.index import Index
    from glassbox.overlay.store import Store

    idx, st = Index(index), Store(store)
    info = fold(idx, st)
    if answers or forget:
        end_ids = {idx.sep} | _eos(idx)
        info["answers"] = consolidate_answers(index, idx.id, st, list(answers or []), list(forget or []), end_ids,
                                             answer_weight)
    if as_json:
        _emit(info)
        return
    print(f"{info['new_rows']} new feedback rows folded; the index now holds {info['links']} feedback links "
          f"(through feedback id {info['consolidated_upto']})")
    for ch in info.get("answers", {}).get("changes", []):
        verb = "folded in" if ch["action"] == "add" else "taken out"
        print(f"answer of trace {ch['trace']} {verb}: {len(ch['triads'])} triads, {ch['next_links']} next-link "
              f"increments (log #{ch['log_id']})")
    if "answers" in info:
        print(f"answers in force: {len(info['answers']['answers_in_force'])} (log through "
              f"#{info['answers']['answers_upto']})")


def _eos(idx) -> set[int]:  # type: ignore[no-untyped-def]
    """The end token of the index's tokenizer (an answer's end token is not consolidated)."""
    from glassbox.overlay import lm

    eos = lm.load_tokenizer(idx.tokenizer_path()).eos_token_id
    return set() if eos is None else {int(eos)}


@overlay.command()
def replay(
    trace_id: str = typer.Argument(...),
    store: str | None = STORE,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Regenerate a trace from its record and say whether the output is identical (exit 1 if not)."""
    from glassbox.overlay.index import Index
    from glassbox.overlay.store import Store
    from glassbox.overlay.trace import replay as again

    st = Store(store)
    trace = st.trace(trace_id)
    if Index(trace["index"]).id != trace["index_id"]:
        raise BadInput(f"the index at this path was rebuilt since trace {trace_id} (id {trace['index_id']})",
                       trace["index"])
    res = again(trace, st)
    if as_json:
        _emit(res)
    else:
        print(("identical: " if res["identical"] else "DIFFERENT: ") + repr(res["output"]))
    if not res["identical"]:
        raise typer.Exit(1)


@overlay.command("eval")
def eval_(
    index: Path = typer.Argument(...),
    model: str = typer.Option("smollm2-135m", "--model"),
    heldout: str = typer.Option(..., "--heldout", help="Held-out text: a file or a named corpus (kjv:A-B, pydoc, "
                                "brown:fiction, ...)."),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="Held-out tokens scored (the first ones)."),
    n_candidates: int = typer.Option(32, "--n-candidates", "-n"),
    scale_base: int = typer.Option(50_000, "--scale-base", help="Tokens in the 1x index of the lookup test."),
    gen_tokens: int = typer.Option(24, "--gen-tokens", help="Tokens per generation in the latency test."),
    pos_filter: bool = typer.Option(False, "--pos-filter", help="Also score select mode with the syntactic "
                                    "filter (needs the index's POS table); reported beside, contract unchanged."),
    pos_min_share: float = typer.Option(0.002, "--pos-min-share"),
    save_gate: bool = typer.Option(False, "--save-gate", help="Write the gate fitted on the dev part into the "
                                   "index (gate.json); `generate` then uses it."),
    no_session: bool = typer.Option(False, "--no-session", help="No session memory (the text read so far as a "
                                    "second table): the overlay is the static index's gate alone."),
    lm_window: int | None = typer.Option(None, "--lm-window", help="Score the LM in windows of N tokens (stride "
                                         "N/2: each token gets N/2..N-1 tokens of context), for comparisons. "
                                         "Default: its full context, everything before the token up to the "
                                         "model's context length, as `generate` gives it."),
    prior_tokens: int = typer.Option(8192, "--prior-tokens", help="Tokens of the index's own documents on which "
                                     "the session memory's part is fitted and proven first (the session prior; "
                                     "the dev half then checks that it carries over). 0: no prior."),
    as_json: bool = typer.Option(False, "--json"),
    details: bool = typer.Option(False, "--details", help="With --json: also the breakdown (gates, static-only, "
                                 "session-only, gain by match length and distance, sizes) under 'details'."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Held-out benchmark: LM vs table vs overlay, recall@N, latency ratio, bytes/token, lookup p99."""
    from glassbox.overlay.evaluate import EvalOptions, evaluate, render

    if lm_window is not None and not 16 <= lm_window <= 8192:
        raise BadInput("--lm-window must be between 16 and 8192 tokens")
    if prior_tokens < 0:
        raise BadInput("--prior-tokens must be 0 (no session prior) or more")
    opts = EvalOptions(max_tokens=max_tokens, n_candidates=n_candidates, scale_base=scale_base,
                       gen_tokens=gen_tokens, pos_filter=pos_filter, pos_min_share=pos_min_share,
                       session=not no_session, window=lm_window, prior_tokens=prior_tokens)
    res = evaluate(index, model, heldout, opts)
    res["extra"].update(placement.last)  # the contract's keys stay exact; "dtype", "device" go with --details
    if res["extra"]["long_match_share"] > 0.5:  # a held-out text inside the index: its "gain" is recall
        print(f"warning: {res['extra']['long_match_share']:.0%} of the scored tokens continue a match of 8+ tokens "
              f"in the index; is {heldout} part of the index's corpus ({res['extra']['index']})?", file=sys.stderr)
    if save_gate:
        from glassbox.overlay.index import write_gate

        write_gate(index, res["gate"].to_json() | {"heldout": heldout, "model": model})
    if as_json:
        # the contract's keys exactly; --details adds everything `render` shows under one more key
        _emit(res["contract"] | ({"details": res["extra"]} if details else {}))
    else:
        print(render(res))

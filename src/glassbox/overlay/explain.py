"""Render a trace for a person: what was generated, and for one step why that token won."""

from __future__ import annotations

from glassbox.errors import BadInput
from glassbox.overlay.accumulator import SOURCES


def summary(trace: dict) -> str:
    cfg = trace["config"]
    lines = [
        f"trace {trace['id']}  mode={cfg['mode']}  model={trace['model'] or '(none: table alone)'}  "
        f"beam={cfg['beam']}  temperature={cfg['temperature']}  seed={cfg['seed']}",
        f"index {trace['index']} (id {trace['index_id']}), feedback rows in force up to id {trace['feedback_upto']}",
        *([f"syntactic filter on (min share {cfg['pos_min_share']})"] if cfg.get("pos_filter") else []),
        *(["adaptive temperature on"] if cfg.get("adaptive_temperature") else []),
        f"prompt: {trace['prompt']!r}",
        f"output: {trace['output']!r}",
        f"stopped: {trace['stop_reason']} after {len(trace['steps'])} steps, {trace['ms_per_token']:.1f} ms/token",
        "",
        " step  chosen               from                 LM's top (rank)      candidates",
    ]
    for s in trace["steps"]:
        chosen = next(c for c in s["candidates"] if c["token"] == s["chosen"])
        rank = "absent" if s["lm_top_rank"] is None else str(s["lm_top_rank"])
        lm_top = "-" if s["lm_top_text"] is None else f"{s['lm_top_text']!r} ({rank})"
        lines.append(f"{s['step']:5d}  {s['chosen_text']!r:20} {','.join(chosen['sources']):20} "
                     f"{lm_top:20} {len(s['candidates'])}")
        if s.get("pos", {}).get("filtered"):
            dropped = ", ".join(repr(f["text"]) for f in s["pos"]["filtered"][:3])
            lines.append(f"       (syntactic filter dropped {len(s['pos']['filtered'])}: {dropped}"
                         f"{', …' if len(s['pos']['filtered']) > 3 else ''})")
    lines.append("")
    lines.append(f"`glassbox overlay explain {trace['id']} --step N` shows one step in full.")
    return "\n".join(lines)


def step_view(trace: dict, step: int, limit: int = 15) -> str:
    steps = trace["steps"]
    if not 0 <= step < len(steps):
        raise BadInput(f"trace {trace['id']} has steps 0..{len(steps) - 1}; there is no step {step}")
    s = steps[step]
    cfg = trace["config"]
    if s["lm_top_text"] is None:
        lm_part = "no LM"
    else:
        where = "not a candidate" if s["lm_top_rank"] is None else f"ranked {s['lm_top_rank']}"
        lm_part = f"the LM's own top choice {s['lm_top_text']!r} was {where}"
    head = (f"step {step} of trace {trace['id']} (mode {cfg['mode']}): after …{s['context_tail']!r}\n"
            f"chosen {s['chosen_text']!r}; {lm_part}; "
            f"universe {s['universe']} tokens; longest corpus match {s['match_length']} tokens; {s['ms']:.1f} ms\n")
    mix = s.get("mix") or {}
    lam = mix.get("lam", cfg["lam"])
    formula = {
        "select": f"final = log p_LM(t | t in candidates) + {cfg['beta']} * log p_table",
        "mixture": _mixture_formula(mix, lam),
        "table": "final = log p_table",
    }[cfg["mode"]] + f" + {cfg['feedback_nats']} * feedback"
    v = s.get("voters", {})
    voters = [f"  next      ← the next-token links of {v.get('next')!r}: P(t | that token)",
              f"  cooc      ← co-occurrence links of the recent tokens (votes fade by "
              f"{cfg['accumulator']['decay']['cooc']} a step)",
              f"  semantic  ← embedding neighbours of the recent tokens (weight {cfg['accumulator']['weight']['semantic']})",
              f"  triad     ← the corpus continuations of the pair {v.get('triad')}",
              "  suffix    ← " + (f"the continuations of the longest corpus match {v['suffix']!r}" if v.get("suffix")
                                   else "no corpus match of 3+ tokens"),
              "  feedback  ← net human preferences for this context"]
    cols = "  ".join(f"{x:>8}" for x in SOURCES)
    ses = any("p_session" in c for c in s["candidates"])
    lines = [head, "who voted:", *voters, formula,
             f"p_table = (1 - {cfg['mu']}) * table / sum(table) + {cfg['mu']} * unigram", "",
             f"rank  token                {cols}     table  {'p_inf' if mix else 'p_table':>7}"
             + (f"  {'p_sess':>7}" if ses else "") + "  LM logp     final  sources"]
    for i, c in enumerate(s["candidates"][:limit]):
        terms = "  ".join(f"{c['terms'][x]:8.4f}" for x in SOURCES)
        lmv = "       -" if c["lm_logprob"] is None else f"{c['lm_logprob']:8.3f}"
        mark = "*" if c["token"] == s["chosen"] else " "
        sv = f"  {c['p_session']:7.4f}" if ses else ""
        lines.append(f"{i:3d}{mark}  {c['text']!r:20} {terms}  {c['table']:8.4f}  {c.get('p_inf', c['p_table']):7.4f}"
                     f"{sv}  {lmv}  {c['final']:8.3f}  {','.join(c['sources'])}")
    rest = len(s["candidates"]) - limit
    if rest > 0:
        lines.append(f"… and {rest} more rejected candidates (--json lists all)")
    if "temperature" in s:
        t = s["temperature"]
        lines.append(f"adaptive temperature: flatness {t['flatness']:.3f} (0 sharp, 1 flat) → T = {t['base']} · "
                     f"exp(0.5 − {t['flatness']:.3f}) = {t['effective']:.3f}")
    if "pos" in s:
        lines.extend(pos_lines(s["pos"]))
    return "\n".join(lines)


def _features(phi: dict | None, none: str) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in phi.items()) if phi else none


def _mixture_formula(mix: dict, lam: float) -> str:
    """The mixture's formula with this step's weights and the features that set them."""
    table = _features(mix.get("features"), "none: the tables saw nothing here, so their weight is 0")
    w = mix.get("weights")
    if w is None:  # a trace written before the session memory
        return (f"final = log((1 - {lam:.4f}) * p_LM + {lam:.4f} * p_inf)   (p_inf: the ∞-gram table distribution; "
                f"λ from the {mix.get('gate', 'fixed')} gate, features {table})")
    sess = _features(mix.get("session_features"), "none: the session has read nothing yet")
    return (f"final = log({w['lm']:.4f} * p_LM + {w['table']:.4f} * p_inf + {w['session']:.4f} * p_session)\n"
            f"  weights = softmax(0, z_table, z_session) from the {mix.get('gate', 'fixed')} gate\n"
            f"  p_inf: the ∞-gram table distribution; table features {table}\n"
            f"  p_session: the session memory (the text read so far; longest session context "
            f"{mix.get('session_match')} tokens); session features {sess}")


def pos_lines(p: dict) -> list[str]:
    """The syntactic filter's decisions at one step."""
    head = (f"syntactic filter: previous token's tag {p['prev_tag'] or 'unknown'}; a tag may follow it if its share "
            f"of the corpus's transitions from that tag is >= {p['min_share']}")
    if not p["filtered"]:
        return [head, "  no candidate filtered"]
    lines = [head + (" (every candidate failed, so none was dropped)" if p["kept_all"] else "")]
    for f in p["filtered"]:
        lines.append(f"  dropped {f['text']!r:20} tag {f['tag']:6} {f['prev_tag']} → {f['tag']} share "
                     f"{f['share']:.5f} ({f['count']} in the corpus), final {f['final']:.3f}")
    return lines

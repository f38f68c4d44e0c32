"""Benchmark for issue 9 §3: the warm load of the bundled SmolLM2-135M and of a user's safetensors folder.

In one run, on the dequantized cache folder of `smollm2-135m` (config.json + a 538 MB float32
model.safetensors + tokenizer), after one warm-up of each (imports done, file in the page cache):
  - glassbox `load_model("smollm2-135m")` (model + tokenizer) and its model part alone,
  - glassbox `load_model(FOLDER)` (the same folder as a user's safetensors folder),
  - `AutoModelForCausalLM.from_pretrained(FOLDER)` (the baseline) and `AutoTokenizer.from_pretrained`,
  - a plain read of model.safetensors into memory.
Targets: glassbox's model load ≤ 0.5× from_pretrained, and ≤ 1 s. Medians of interleaved repeats.

Run: .venv/bin/python benchmarks/load.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from threadcount import report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from glassbox import bundled
    from glassbox.run import load as load_mod
    from glassbox.run import load_model

    load_mod._quiet_transformers()
    gguf = bundled.resolve("smollm2-135m")
    folder = load_mod.gguf_cache(gguf)
    weights = folder / "model.safetensors"
    config = load_mod._config(folder)

    def plain_read():
        with open(weights, "rb") as f:
            while f.read(64 << 20):
                pass

    def hf():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")

    runs = {
        "glassbox load_model('smollm2-135m') (model + tokenizer)": lambda: load_model("smollm2-135m"),
        "glassbox model only (meta + mmap assign)": lambda: load_mod._assign(config, [weights], folder),
        "glassbox load_model(FOLDER) (a user's safetensors folder)": lambda: load_model(folder),
        "AutoModelForCausalLM.from_pretrained(FOLDER)": hf,
        "AutoTokenizer.from_pretrained(FOLDER)": lambda: AutoTokenizer.from_pretrained(folder),
        "plain read of model.safetensors": plain_read,
    }
    for fn in runs.values():  # warm-up: imports, page cache
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            del out
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["AutoModelForCausalLM.from_pretrained(FOLDER)"]
    print(f"warm loads of {folder} ({weights.stat().st_size / 1e6:.0f} MB float32), medians of {args.repeats}:")
    for name, t in med.items():
        print(f"  {name:60s} {t * 1000:7.0f} ms  {t / base:5.2f}× from_pretrained")
    model = med["glassbox model only (meta + mmap assign)"]
    print(f"target model load ≤ 0.5× from_pretrained: {model / base:.2f}× "
          f"({'met' if model / base <= 0.5 else 'NOT met'}); ≤ 1 s: {model:.2f} s ({'met' if model <= 1 else 'NOT met'})")
    report(lambda: load_model(folder), "load_model of the SmolLM2 folder", repeats=2)


if __name__ == "__main__":
    main()

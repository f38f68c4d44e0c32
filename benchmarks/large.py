"""Benchmark for issue 22: a 1B-parameter model on this 2-core machine, in bfloat16.

Writes a checkpoint with Llama-3.2-1B's layer shapes (16 layers, 32 query heads, 8 kv heads, head_dim 64,
d_model 2048, d_ff 8192, tied embeddings) but SmolLM2's tokenizer and vocabulary (49,152, so text works:
1.07 B parameters, 2.1 GB in bfloat16), random weights (std 0.02, norms 1), bfloat16 safetensors sharded at
1 GB, into a temporary folder under /tmp that is deleted afterwards. RANDOM WEIGHTS: the figures are loading,
memory and speed, never findings. Then, each in its own process (wall time, peak resident memory):
  anatomy; load; one forward over 256 tokens recording the full cache; the atlas (reduced probe size by
  default: --atlas-batch 2 --atlas-half 16 --max-per-role 1; --full-atlas for the command's defaults);
  `heads show` on 256 tokens (scores from that atlas). Target: heads show's peak RSS ≤ 1.5× the weights' bytes.
Beside it, on paper (estimates from the shapes, not measured): the same for Llama-3.1-8B's shape and a GPU.

Run: nice .venv/bin/python benchmarks/large.py [--out out/benchmarks/large.json] [--full-atlas]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import peak
from threadcount import report

SHAPE_1B = dict(num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, hidden_size=2048,
                intermediate_size=8192, head_dim=64)
SHAPE_8B = dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096,
                intermediate_size=14336, head_dim=128, vocab_size=128256)
SHARD = 2**30
PARAGRAPH = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
             "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. ")


def write_checkpoint(folder: Path) -> tuple[int, int]:
    """The 1B-shaped checkpoint → (parameters, weight bytes)."""
    import safetensors.torch
    import torch
    import transformers

    from glassbox import bundled
    from glassbox.run import gguf_cache

    tok_folder = gguf_cache.gguf_cache(bundled.resolve("smollm2-135m"))
    tok = transformers.AutoTokenizer.from_pretrained(tok_folder)
    tok.save_pretrained(folder)
    config = transformers.LlamaConfig(**SHAPE_1B, vocab_size=len(tok), tie_word_embeddings=True,
                                      max_position_embeddings=8192, rope_theta=500000.0,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      torch_dtype="bfloat16")
    config.save_pretrained(folder)
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in transformers.LlamaForCausalLM(config).state_dict().items()
                  if n != "lm_head.weight"}
    g = torch.Generator().manual_seed(0)
    shard, size, files, weight_map, total, params = {}, 0, [], {}, 0, 0

    def flush() -> None:
        nonlocal shard, size
        name = f"model-{len(files) + 1:05d}.safetensors"
        safetensors.torch.save_file(shard, str(folder / name), metadata={"format": "pt"})
        files.append(name)
        weight_map.update({k: name for k in shard})
        shard, size = {}, 0

    for name, shape in shapes.items():
        t = (torch.ones(shape) if name.endswith("norm.weight") else torch.randn(shape, generator=g) * 0.02)
        t = t.to(torch.bfloat16)
        if size + t.nbytes > SHARD and shard:
            flush()
        shard[name] = t
        size += t.nbytes
        total += t.nbytes
        params += t.numel()
    flush()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return params, total


def text_of(folder: Path, n: int) -> str:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tok(PARAGRAPH * 20, add_special_tokens=False)["input_ids"][: n - 1]  # + the start token
    return tok.decode(ids)


def on_paper(params_1b: int, seconds_forward: float) -> dict:
    """Estimates from the shapes (not measured): weights in each dtype, the attention patterns of one layer and
    of all layers at T = 2,048, and a forward's time scaled by parameters from the measured 1B forward."""
    def count(shape: dict, vocab: int) -> int:
        d, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
        hd, h, kv = shape["head_dim"], shape["num_attention_heads"], shape["num_key_value_heads"]
        return vocab * d * 2 + L * (d * hd * (2 * h + 2 * kv) + 3 * d * f + 2 * d) + d

    out = {}
    for label, shape, vocab in (("1B shape (this vocab)", SHAPE_1B, 49152), ("Llama-3.1-8B", SHAPE_8B, 128256)):
        n = count(shape, vocab) - (vocab * shape["hidden_size"] if label.startswith("1B") else 0)
        pattern_layer = shape["num_attention_heads"] * 2048**2 * 2
        out[label] = {"parameters_b": round(n / 1e9, 2), "float32_gb": round(n * 4 / 2**30, 1),
                      "bfloat16_gb": round(n * 2 / 2**30, 1),
                      "patterns_one_layer_T2048_bf16_gb": round(pattern_layer / 2**30, 2),
                      "patterns_all_layers_T2048_bf16_gb": round(pattern_layer * shape["num_hidden_layers"] / 2**30, 1),
                      "cpu_load_and_forward_256_tokens_s_estimate": round(seconds_forward * n / params_1b, 1)}
    out["gpu_note"] = ("on an 80 GB GPU both shapes fit in bfloat16 (8B: 15 GB of weights + patterns per layer); "
                       "GPU figures are not measured here: benchmarks/device.py measures them where a GPU is lent")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks/large.json"))
    parser.add_argument("--full-atlas", action="store_true")
    parser.add_argument("--atlas-batch", type=int, default=2)
    parser.add_argument("--atlas-half", type=int, default=16)
    parser.add_argument("--max-per-role", type=int, default=1)
    args = parser.parse_args()
    threads_ratio = report()
    folder = Path(tempfile.mkdtemp(prefix="glassbox-large-", dir="/tmp"))
    result: dict = {"threads_one_vs_default": threads_ratio}
    try:
        params, nbytes = write_checkpoint(folder)
        result.update(parameters=params, weight_bytes=nbytes)
        print(f"checkpoint: {params / 1e9:.2f} B parameters, {nbytes / 2**30:.2f} GB bfloat16 in "
              f"{len(list(folder.glob('*.safetensors')))} shards (random weights)")
        text = text_of(folder, 256)
        d = str(folder)
        settings = ("Settings()" if args.full_atlas else
                    f"Settings(batch={args.atlas_batch}, half={args.atlas_half}, max_per_role={args.max_per_role})")
        steps = {
            "anatomy": ["anatomy", d, "--json"],
            "load": ["-c", f"from glassbox.run import load_model; load_model({d!r}, dtype='bfloat16')"],
            "forward_full_cache_256": ["-c", (
                "import torch; from glassbox.run import load_model, hooks; from glassbox.run.text import encode; "
                f"m = load_model({d!r}, dtype='bfloat16'); ids = encode(m, {text!r}); "
                "logits, cache = hooks.run_with_cache(m, ids); print(len(cache), len(ids))")],
            "atlas": ["-c", (
                "import json; from glassbox.run import load_model; from glassbox.heads.atlas import Settings, "
                "build_atlas; from glassbox.heads.render import save; "
                f"m = load_model({d!r}, dtype='bfloat16'); a = build_atlas(m, {settings}); "
                f"save(a, __import__('pathlib').Path({d!r}) / 'atlas'); print(a['cost'])")],
            "heads_show_256": ["heads", "show", d, "8.3", "--dtype", "bfloat16", "--text", text,
                               "--atlas", str(folder / "atlas" / "atlas.json"), "--json", "--quiet"],
        }
        result["atlas_settings"] = settings
        runs = {}
        for name, argv in steps.items():
            runs[name] = peak.run(argv, folder / f"{name}.out")
            r = runs[name]
            print(f"{name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
                  f"({r['peak_rss_gb'] * 2**30 / nbytes:.2f}× the weights' bytes), rc {r['rc']}")
        result["runs"] = runs
        show = runs["heads_show_256"]["peak_rss_gb"] * 2**30 / nbytes
        print(f"heads show, 256 tokens: peak RSS / weight bytes = {show:.2f} (target ≤ 1.5)")
        print(f"atlas ({settings}): {runs['atlas']['seconds']:.0f} s")
        result["on_paper"] = on_paper(params, runs["forward_full_cache_256"]["seconds"])
        print(json.dumps(result["on_paper"], indent=1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peak.write_result(args.out, result)


if __name__ == "__main__":
    main()

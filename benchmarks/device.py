"""Benchmark for issue 22 §6: glassbox on a GPU. NOT YET RUN: no GPU was lent to the session that wrote it.

On a CUDA machine, in one process:
  - the SmolLM2-135M atlas on the CPU in float32 (the reference) and on the GPU in float32 and bfloat16: wall
    time, peak GPU memory (torch.cuda.max_memory_allocated), top-5 agreement per role with the CPU atlas and
    the validated sets in common;
  - the 1B-shaped random checkpoint of benchmarks/large.py on the GPU in bfloat16: load, a forward over 256
    tokens with the full cache, `heads show`'s work on 256 tokens, the reduced atlas; time and peak GPU memory.
Without CUDA it says so and exits 0 having measured nothing.

Run: python benchmarks/device.py [--out out/benchmarks/device.json] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import peak
from half import ROLES, compare_atlases
from large import text_of, write_checkpoint


def measured(fn):  # noqa: ANN001, ANN201
    """(result, seconds, peak GPU GB) of fn() with the GPU synchronized around it."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out/benchmarks/device.json"))
    parser.add_argument("--skip-cpu", action="store_true", help="no CPU reference atlas (agreement not computed)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (GPU figures are not yet measured)")
        return
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.heads.show import describe_head
    from glassbox.run import hooks, load_model
    from glassbox.run.text import encode

    name = torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    result: dict = {"device": name, "smollm2": {}, "large": {}}
    cpu_atlas = None
    if not args.skip_cpu:
        start = time.perf_counter()
        cpu_atlas = build_atlas(load_model("smollm2-135m", dtype="float32", device="cpu"))
        result["smollm2"]["cpu_float32_seconds"] = time.perf_counter() - start
    for dtype in ("float32", "bfloat16"):
        loaded, load_s, _ = measured(lambda d=dtype: load_model("smollm2-135m", dtype=d, device="cuda"))
        atlas, seconds, gb = measured(lambda m=loaded: build_atlas(m))
        row = {"load_s": load_s, "atlas_s": seconds, "peak_gpu_gb": gb, "dtype": atlas["dtype"],
               "device": atlas["device"]}
        if cpu_atlas is not None:
            row["vs_cpu_float32"] = compare_atlases(cpu_atlas, atlas)
            agree = row["vs_cpu_float32"]["top5_agree"]
            print(f"smollm2 {dtype} on GPU: atlas {seconds:.1f} s, peak {gb:.2f} GB; top-5 vs CPU float32: "
                  + ", ".join(f"{r} {agree[r]}/5" for r in ROLES))
        result["smollm2"][dtype] = row
        del loaded
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="glassbox-large-") as tmp:  # deleted afterwards
        folder = Path(tmp)
        params, nbytes = write_checkpoint(folder)
        text = text_of(folder, 256)
        loaded, load_s, load_gb = measured(lambda: load_model(folder, dtype="bfloat16", device="cuda"))
        ids = encode(loaded, text).to(loaded.device)
        _, fwd_s, fwd_gb = measured(lambda: hooks.run_with_cache(loaded, ids))
        atlas, atlas_s, atlas_gb = measured(lambda: build_atlas(loaded, Settings(batch=2, half=16, max_per_role=1)))
        (folder / "atlas.json").write_text(json.dumps(atlas))
        _, show_s, show_gb = measured(lambda: describe_head(loaded, 8, 3, text, folder / "atlas.json"))
        result["large"] = {"parameters": params, "weight_gb": nbytes / 2**30, "load_s": load_s, "load_gb": load_gb,
                           "forward_full_cache_256_s": fwd_s, "forward_gb": fwd_gb, "atlas_reduced_s": atlas_s,
                           "atlas_gb": atlas_gb, "heads_show_256_s": show_s, "heads_show_gb": show_gb}
        print(json.dumps(result["large"], indent=1))
    peak.write_result(args.out, result)


if __name__ == "__main__":
    main()

"""Anatomy speed on a large checkpoint, against the reference `safetensors` library listing its keys.

Builds a sparse 1.5 GB llama-shaped safetensors file (hundreds of tensors, no data blocks on disk), then
times, in the same run: safetensors.safe_open(...).keys() (the baseline), our strict header parse, and the
whole anatomy (parse + role map + per-head byte ranges). Proof that no tensor bytes are read: the process's
read_bytes/rchar counters (/proc/self/io) grow by about the header's size only, and the sparse file still
occupies no data blocks afterwards. Target: anatomy ≤ 3× the baseline.

Run: .venv/bin/python benchmarks/anatomy.py
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import safetensors

from glassbox.anatomy import describe
from glassbox.checkpoint import open_checkpoint

LAYERS, D, FF, HEADS, KV, VOCAB = 48, 1024, 2816, 16, 4, 32000


def build(folder: Path) -> Path:
    head_dim = D // HEADS
    shapes = {"model.embed_tokens.weight": [VOCAB, D]}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [D, D], p + "self_attn.k_proj.weight": [KV * head_dim, D],
                   p + "self_attn.v_proj.weight": [KV * head_dim, D], p + "self_attn.o_proj.weight": [D, D],
                   p + "mlp.gate_proj.weight": [FF, D], p + "mlp.up_proj.weight": [FF, D],
                   p + "mlp.down_proj.weight": [D, FF], p + "input_layernorm.weight": [D],
                   p + "post_attention_layernorm.weight": [D]}
    shapes |= {"model.norm.weight": [D], "lm_head.weight": [VOCAB, D]}
    header, cursor = {}, 0
    for name, shape in shapes.items():
        n = 2 * (shape[0] * (shape[1] if len(shape) > 1 else 1))  # BF16
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [cursor, cursor + n]}
        cursor += n
    raw = json.dumps(header).encode()
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + cursor)
    config = {"model_type": "llama", "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV, "hidden_size": D, "intermediate_size": FF, "vocab_size": VOCAB}
    (folder / "config.json").write_text(json.dumps(config))
    return path


def io_counters() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["read_bytes"])


def best_of(fn, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    from threadcount import report

    report()  # the thread line of issue 9 (anatomy itself runs no torch op; the matmul is the yardstick)
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp))
        size = path.stat().st_size
        header_len = struct.unpack("<Q", path.open("rb").read(8))[0]

        def reference():
            with safetensors.safe_open(str(path), "np") as f:
                return list(f.keys())

        def parse():
            return open_checkpoint(path)

        def anatomy():
            return describe(open_checkpoint(path)).to_json()

        reference(), anatomy()  # warm imports and page cache of the header
        rchar0, _ = io_counters()
        doc = anatomy()
        rchar = io_counters()[0] - rchar0
        base, base_med = best_of(reference)
        ours_parse, _ = best_of(parse)
        ours, ours_med = best_of(anatomy)
        heads = sum(len(t["heads"]) for t in doc["tensors"])
        print(f"file: {size / 1e9:.2f} GB sparse safetensors, {len(doc['tensors'])} tensors, "
              f"header {header_len / 1e3:.0f} kB, {heads} head slices; torch not used; 1 process")
        print(f"safetensors.safe_open keys (baseline): {base * 1e3:8.2f} ms (median {base_med * 1e3:.2f})")
        print(f"glassbox strict header parse:          {ours_parse * 1e3:8.2f} ms  ratio {ours_parse / base:.2f}x")
        print(f"glassbox full anatomy (+ roles, bytes): {ours * 1e3:8.2f} ms  ratio {ours / base:.2f}x "
              f"(median {ours_med / base_med:.2f}x)  target <= 3x")
        print(f"bytes read by one full anatomy: {rchar:,} (header is {header_len + 8:,}; file is {size:,})")
        print(f"data blocks on disk after: {os.stat(path).st_blocks * 512:,} bytes (sparse file never touched)")
        # What a user waits for: a whole command each, interpreter start-up included.
        ref_cmd = [sys.executable, "-c", "import sys, safetensors; "
                   "print(len(list(safetensors.safe_open(sys.argv[1], 'np').keys())))", str(path)]
        our_cmd = [sys.executable, "-m", "glassbox", "anatomy", str(path), "--json"]
        ref_cli, _ = best_of(lambda: subprocess.run(ref_cmd, check=True, capture_output=True), 5)
        our_cli, _ = best_of(lambda: subprocess.run(our_cmd, check=True, capture_output=True), 5)
        print(f"end to end: `python -c safe_open keys` {ref_cli * 1e3:.0f} ms, `glassbox anatomy --json` "
              f"{our_cli * 1e3:.0f} ms  ratio {our_cli / ref_cli:.2f}x  target <= 3x")
        if rchar > 2 * (header_len + 8) + 1_000_000:
            sys.exit("FAIL: anatomy read far more than the header")


if __name__ == "__main__":
    main()

"""The atlas's memory: freed tensors leave resident memory (run/heap.py), half-precision logits stay half."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glassbox.run import heap, hooks, load_model

SRC = str(Path(__file__).resolve().parents[1] / "src")
FREED = """
import sys, torch
from glassbox.run import heap

def anon():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) * 1024

warm = torch.ones(24 << 18)  # 24 MB mapped and freed: glibc's threshold rises above the next block's size
del warm
if sys.argv[1] == 'load':  # the policy as every command gets it: through load_model
    from glassbox.run import load_model
    load_model(sys.argv[2])
    applied = heap._done
else:
    applied = heap.map_large_blocks() if sys.argv[1] == 'on' else False
x = torch.ones(16 << 18)  # 16 MB, every page written
held = anon()
del x
print(int(applied), held - anon())
"""


def _freed(*argv: str) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", FREED, *argv], capture_output=True, text=True, env=env, check=True)
    applied, freed = out.stdout.split()
    return int(applied), int(freed)


@pytest.mark.skipif(heap._libc() is None, reason="glibc's mallopt only")
def test_a_freed_large_tensor_leaves_resident_memory():
    applied, freed = _freed("on")
    assert applied == 1
    assert freed >= 12 << 20  # most of the 16 MB went back to the system when the tensor was freed


@pytest.mark.skipif(heap._libc() is None, reason="glibc's mallopt only")
def test_load_model_applies_the_heap_policy(tiny_folder):
    applied, freed = _freed("load", str(tiny_folder("llama")))
    assert applied == 1 and freed >= 12 << 20


def test_native_logits_are_the_models_dtype_and_the_same_numbers(tiny_folder):
    ids = torch.tensor([[1, 5, 9, 5, 9, 3, 7, 2], [2, 4, 6, 8, 1, 3, 5, 7]])
    at = torch.tensor([2, 5, 6])
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(tiny_folder("llama"), dtype=dtype)
        native, _ = hooks.run_with_cache(loaded, ids, names=[], logits_at=at, native=True)
        read, _ = hooks.run_with_cache(loaded, ids, names=[], logits_at=at)
        assert native.dtype == getattr(torch, dtype) and read.dtype == torch.float32
        assert torch.equal(native.float(), read)


def test_half_models_embed_unembed_by_blocks_agrees_with_the_whole_product(tiny_folder):
    from glassbox.heads import probes

    loaded = load_model(tiny_folder("llama"), dtype="bfloat16")
    w_e = loaded.model.get_input_embeddings().weight.detach()
    whole = w_e.float().t() @ probes.ov_readout(loaded)[0]
    blocks = probes._embed_unembed(loaded, w_e, rows=7)  # 96 rows: 14 blocks, the last one short
    assert blocks.dtype == torch.float32
    assert torch.allclose(blocks, whole, rtol=1e-5, atol=1e-5 * float(whole.abs().max()))

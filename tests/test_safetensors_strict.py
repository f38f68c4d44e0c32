"""The strict reader against malformed and tricky files, through the real CLI: exit 2, one `error:` line
naming the file and the rule, no traceback, quickly; tricky-but-valid files load with a warning."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy
import torch

from glassbox.checkpoint import open_checkpoint


def craft(path, header: dict | bytes, data: bytes = b"", length: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def one(name="w", dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


def glassbox(*args, timeout=60):
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "glassbox", *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    return run, time.monotonic() - start


BAD = {
    "truncated_prefix": (lambda p: p.write_bytes(b"\x10\x00\x00"), "at least 8"),
    "empty": (lambda p: p.write_bytes(b""), "at least 8"),
    "header_too_long": (lambda p: craft(p, b"{}", length=200_000_000), "exceeds the limit"),
    "header_past_eof": (lambda p: craft(p, b"{}", length=1000), "past the end"),
    "bad_json": (lambda p: craft(p, b'{"w": {"dtype": '), "not valid JSON"),
    "bad_utf8": (lambda p: craft(p, b'{"\xff\xfe": 1}'), "UTF-8"),
    "not_object": (lambda p: craft(p, b"[1, 2]"), "JSON object"),
    "overlap": (lambda p: craft(p, one("a", offsets=(0, 16)) | one("b", offsets=(8, 24)), bytes(24)), "overlap"),
    "gap": (lambda p: craft(p, one("a", offsets=(0, 16)) | one("b", offsets=(20, 36)), bytes(36)), "gap"),
    "size_mismatch": (lambda p: craft(p, one(shape=(3, 2)), bytes(16)), "needs 24"),
    "unknown_dtype": (lambda p: craft(p, one(dtype="F128"), bytes(16)), "unknown dtype"),
    "trailing_bytes": (lambda p: craft(p, one(), bytes(20)), "trailing bytes"),
    "short_data": (lambda p: craft(p, one(), bytes(10)), "past the end"),
    "huge_shape": (lambda p: craft(p, one(shape=(2**40, 2**40), offsets=(0, 16)), bytes(16)), "overflows"),
    "negative_dim": (lambda p: craft(p, one(shape=(-2, 2)), bytes(16)), "non-negative"),
    "bad_metadata": (lambda p: craft(p, {"__metadata__": {"k": 1}} | one(), bytes(16)), "__metadata__"),
    "offsets_reversed": (lambda p: craft(p, one(offsets=(16, 0)), bytes(16)), "before begin"),
    "random_bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), ""),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_safetensors_exit_2(tmp_path, case):
    make, rule = BAD[case]
    path = tmp_path / f"{case}.safetensors"
    make(path)
    run, seconds = glassbox("anatomy", path, "--json")
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert str(path) in lines[0] and rule in lines[0]
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert seconds < 5 + 3  # the rule is 5 s; allow interpreter start-up on a loaded machine


def sharded_folder(tmp_path, weight_map, shards):
    for name, tensors in shards.items():
        safetensors.numpy.save_file(tensors, str(tmp_path / name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tmp_path


def test_sharded_valid(tmp_path):
    a, b = np.ones((2, 3), np.float32), np.zeros(4, np.float32)
    folder = sharded_folder(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"},
                            {"s1.safetensors": {"a": a}, "s2.safetensors": {"b": b}})
    ck = open_checkpoint(folder)
    assert set(ck.tensors) == {"a", "b"}
    assert ck.tensors["b"].file.name == "s2.safetensors"
    assert torch.equal(ck.tensor("a"), torch.ones(2, 3))


@pytest.mark.parametrize("case,rule", [
    ("missing_shard", "missing"), ("escape", "escapes"), ("two_shards", "two shards"), ("wrong_map", "maps it"),
])
def test_sharded_malformed(tmp_path, case, rule):
    a = {"a": np.ones(2, np.float32)}
    if case == "missing_shard":
        sharded_folder(tmp_path, {"a": "s1.safetensors", "b": "gone.safetensors"}, {"s1.safetensors": a})
    elif case == "escape":
        sharded_folder(tmp_path, {"a": "../s1.safetensors"}, {"s1.safetensors": a})
    elif case == "two_shards":
        sharded_folder(tmp_path, {"a": "s1.safetensors"}, {"s1.safetensors": a, "s2.safetensors": a})
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        index["weight_map"]["b"] = "s2.safetensors"
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        sharded_folder(tmp_path, {"a": "s2.safetensors", "b": "s1.safetensors"},
                       {"s1.safetensors": a, "s2.safetensors": {"b": np.ones(1, np.float32)}})
    run, _ = glassbox("anatomy", tmp_path / "model.safetensors.index.json", "--json")
    assert run.returncode == 2 and run.stderr.startswith("error: ") and rule in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_duplicate_keys_and_odd_names_warn(tmp_path):
    raw = (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
           b' "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
           b' "../x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}   ')
    path = craft(tmp_path / "tricky.safetensors", raw, np.arange(3, dtype=np.float32).tobytes())
    run, _ = glassbox("anatomy", path, "--json")
    assert run.returncode == 0, run.stderr
    warnings = json.loads(run.stdout)["warnings"]
    assert any("duplicate key 'w'" in w for w in warnings)
    assert any("'../x'" in w for w in warnings)
    # the reference reader agrees the file is valid and keeps the last 'w'
    assert safetensors.numpy.load_file(str(path))["w"].shape == (2,)


def test_nan_inf_warned_when_values_are_read(tmp_path):
    path = tmp_path / "nan.safetensors"
    safetensors.numpy.save_file({"x": np.array([1.0, np.nan, np.inf], np.float32), "i": np.arange(3)}, str(path))
    run, _ = glassbox("anatomy", path, "--json")
    assert not any("NaN" in w for w in json.loads(run.stdout)["warnings"])  # listing reads no values
    run, _ = glassbox("anatomy", path, "--json", "--check-values")
    assert any("1 NaN and 1 Inf" in w for w in json.loads(run.stdout)["warnings"])


def test_values_match_reference_for_every_dtype(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).bfloat16(), "f16": torch.randn(2, 2).half(),
               "i64": torch.arange(6).reshape(2, 3), "empty": torch.zeros(0, 3), "b": torch.tensor([True, False])}
    path = tmp_path / "dtypes.safetensors"
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(path))
    ck = open_checkpoint(path)
    for name, t in tensors.items():
        assert torch.equal(ck.tensor(name), t), name


def test_listing_reads_no_tensor_bytes(tmp_path):
    """A file whose data region is unreadable garbage-free but sparse: listing must not touch it."""
    path = tmp_path / "big.safetensors"
    header = {f"t{i}": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [i * 4 << 20, (i + 1) * 4 << 20]}
              for i in range(64)}
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + 64 * (4 << 20))  # sparse: 256 MiB that occupy no disk
    before = os.stat(path).st_blocks
    ck = open_checkpoint(path)
    assert len(ck.tensors) == 64
    assert os.stat(path).st_blocks == before


def test_missing_file_and_bad_option(tmp_path):
    run, _ = glassbox("anatomy", tmp_path / "nope.safetensors")
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "nope.safetensors" in run.stderr
    run, _ = glassbox("anatomy", tmp_path, "--no-such-option")
    assert run.returncode == 2 and run.stderr.startswith("error: ")
    assert len(run.stderr.strip().splitlines()) == 1

"""Safetensors headers the reference reader and we must agree on: a lone surrogate escape (not text →
reject), a duplicate key inside __metadata__ (undefined winner → reject), __metadata__ twice at the top level
(a duplicate field → reject), an unknown field in a tensor entry
(a newer writer's addition → accept with a warning). Through the real CLI: exit 2 with one `error:` line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput

ENTRY = b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'


def craft(path, raw: bytes, data: bytes = np.float32(1.5).tobytes()):
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "glassbox", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("raw,rule", [
    (b'{"__metadata__": {"k": "\\ud800"}, ' + ENTRY + b"}", "lone surrogate"),
    (b'{"\\udfff": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "lone surrogate"),
    (b'{"__metadata__": {"k": "a", "k": "b"}, ' + ENTRY + b"}", "inside __metadata__"),
    (b'{"__metadata__": {"k": "a"}, ' + ENTRY + b', "__metadata__": {"k": "b"}}', "duplicate field __metadata__"),
])
def test_rejected(tmp_path, raw, rule):
    path = craft(tmp_path / "bad.safetensors", raw)
    with pytest.raises(BadInput, match=rule):
        open_checkpoint(path)
    run = cli("anatomy", path, "--json")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and rule in lines[0]
    assert str(path) in lines[0] and run.stdout == ""


def test_surrogate_pair_is_text(tmp_path):
    """A correctly paired escape is one real character (U+1F600), not a lone surrogate."""
    path = craft(tmp_path / "ok.safetensors", b'{"__metadata__": {"k": "\\ud83d\\ude00"}, ' + ENTRY + b"}")
    with open_checkpoint(path) as ck:
        assert ck.metadata == {"k": "\U0001F600"} and ck.warnings == []


def test_unknown_tensor_field_warns(tmp_path):
    raw = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "quantization": {"bits": 4}}}'
    path = craft(tmp_path / "newer.safetensors", raw)
    run = cli("anatomy", path, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert any("'w'" in w and "quantization" in w for w in doc["warnings"])
    with open_checkpoint(path) as ck:
        assert float(ck.tensor("w")[0]) == 1.5
    assert safetensors.numpy.load_file(str(path))["w"][0] == 1.5  # the reference reader opens it too


def test_duplicate_tensor_key_still_only_warns(tmp_path):
    """Top-level duplicates keep their old verdict (warn; the reference keeps the last one)."""
    raw = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, ' + ENTRY + b"}"
    path = craft(tmp_path / "dup.safetensors", raw)
    with open_checkpoint(path) as ck:
        assert ck.tensors["w"].shape == (1,)
        assert any("duplicate key 'w'" in w for w in ck.warnings)


def test_metadata_twice_is_rejected_by_the_reference_too(tmp_path):
    path = craft(tmp_path / "twice.safetensors", b'{"__metadata__": {}, ' + ENTRY + b', "__metadata__": {}}')
    with pytest.raises(Exception, match="duplicate field"):  # the reference reader's own error type
        safetensors.numpy.load_file(str(path))
    with pytest.raises(BadInput, match="duplicate field __metadata__"):
        open_checkpoint(path)

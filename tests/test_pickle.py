"""Pickle checkpoints: listed from an opcode walk that executes nothing; values only with allow_pickle.

The malicious files here carry a real payload (a __reduce__ that creates a file); a control test proves the
payload fires under plain pickle, so "nothing was created" means something.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from glassbox.checkpoint import open_checkpoint
from glassbox.checkpoint.pickled import open_pickle
from glassbox.errors import BadInput

torch.set_num_threads(1)

SAFE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
              torch.bool: "BOOL", torch.uint8: "U8"}


def tiny_gpt2(dtype=torch.float32):
    """A tiny GPT-2: tied lm_head/wte (two names, one storage), Conv1D weights, buffers."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32))
    return model.to(dtype).eval()


def assert_lists_state_dict(ckpt, state: dict[str, torch.Tensor]) -> None:
    assert list(ckpt.tensors) == list(state)
    for name, value in state.items():
        entry = ckpt.tensors[name]
        assert entry.shape == tuple(value.shape), name
        assert entry.dtype == SAFE_NAMES[value.dtype], name
        assert entry.nbytes == value.numel() * value.element_size()


def assert_offsets_hold_the_bytes(path: Path, ckpt, state: dict[str, torch.Tensor]) -> None:
    data = path.read_bytes()
    for name, value in state.items():
        entry = ckpt.tensors[name]
        assert entry.offset >= 0, name
        stored = data[entry.offset:entry.offset + entry.nbytes]
        assert stored == value.contiguous().view(torch.uint8).numpy().tobytes(), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_save_zip_lists_like_the_state_dict(tmp_path, dtype):
    state = tiny_gpt2(dtype).state_dict()
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    with open_checkpoint(path) as ckpt:  # dispatch by suffix
        assert ckpt.format == "pickle" and ckpt.metadata["pickle.layout"] == "zip"
        assert ckpt.warnings == []
        assert_lists_state_dict(ckpt, state)
        assert_offsets_hold_the_bytes(path, ckpt, state)
        # tied weights share one storage: both names point at the same bytes
        assert ckpt.tensors["lm_head.weight"].offset == ckpt.tensors["transformer.wte.weight"].offset


def test_legacy_stream_lists_like_the_state_dict(tmp_path):
    state = tiny_gpt2().state_dict()
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with open_pickle(path, allow_pickle=True) as ckpt:
        assert ckpt.metadata["pickle.layout"] == "legacy"
        assert_lists_state_dict(ckpt, state)
        assert_offsets_hold_the_bytes(path, ckpt, state)
        for name in ("transformer.h.1.attn.c_attn.weight", "lm_head.weight"):
            assert torch.equal(ckpt.tensor(name), state[name])


def test_values_need_allow_pickle(tmp_path):
    state = tiny_gpt2().state_dict()
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with open_pickle(path, allow_pickle=False) as ckpt:
        with pytest.raises(BadInput, match="--allow-pickle") as err:
            ckpt.tensor("transformer.h.0.mlp.c_fc.weight")
        assert str(path) in str(err.value)
    with open_pickle(path, allow_pickle=True) as ckpt:
        for name, value in state.items():
            assert torch.equal(ckpt.tensor(name), value), name


def test_training_checkpoint_wrapper_and_views(tmp_path):
    state = tiny_gpt2().state_dict()
    w = torch.arange(12.0).reshape(3, 4)
    path = tmp_path / "train.ckpt"
    torch.save({"state_dict": state, "epoch": 7, "extra": {"views": [w[1:], w.t()]},
                "param": torch.nn.Parameter(torch.ones(3))}, path)
    with open_pickle(path, allow_pickle=True) as ckpt:
        names = list(ckpt.tensors)
        assert names[:len(state)] == [f"state_dict.{n}" for n in state]  # other top-level tensors: no stripping
        assert ckpt.metadata["pickle.epoch"] == "7"
        row_view, transposed = ckpt.tensors["extra.views.0"], ckpt.tensors["extra.views.1"]
        assert row_view.shape == (2, 4) and row_view.offset >= 0
        assert transposed.shape == (4, 3) and transposed.offset == -1
        assert any("extra.views.1" in w for w in ckpt.warnings)
        assert torch.equal(ckpt.tensor("extra.views.1"), w.t())
        assert torch.equal(ckpt.tensor("param"), torch.ones(3))
    torch.save({"state_dict": state, "epoch": 7}, path)
    with open_pickle(path) as ckpt:
        assert list(ckpt.tensors) == list(state)
        assert any("state_dict" in w for w in ckpt.warnings)


# --- malicious pickles ---------------------------------------------------------------------------------------


class Touch:
    """Unpickling this creates `target` (via os.system or builtins.open)."""

    def __init__(self, target: Path, how: str = "system"):
        self.target, self.how = str(target), how

    def __reduce__(self):
        if self.how == "open":
            return (open, (self.target, "w"))
        return (os.system, (f"touch {self.target}",))


def torch_style_zip(path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return path


def malicious_files(tmp_path: Path, marker: Path) -> list[Path]:
    """The same payload in every place a loader might meet it."""
    files = []
    for protocol in (0, 2, 4):
        for how in ("system", "open"):
            evil = pickle.dumps(Touch(marker, how), protocol=protocol)
            raw = tmp_path / f"raw-p{protocol}-{how}.pt"
            raw.write_bytes(evil)
            files.append(raw)
            files.append(torch_style_zip(tmp_path / f"zip-p{protocol}-{how}.pt", evil))
    # a genuine torch.save'd state dict with the payload as one more entry
    buffer = io.BytesIO()
    torch.save({"weight": torch.ones(2, 3), "evil": Touch(marker)}, buffer)
    hidden = tmp_path / "hidden.bin"
    hidden.write_bytes(buffer.getvalue())
    files.append(hidden)
    return files


def test_payload_is_live_under_plain_pickle(tmp_path):
    """Control: the payload really creates its file when something does unpickle it."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Touch(marker, "open")))
    pickle.loads(pickle.dumps(Touch(tmp_path / "control2")))
    assert marker.exists() and (tmp_path / "control2").exists()


@pytest.mark.parametrize("allow", [False, True])
def test_malicious_pickle_creates_nothing_and_is_refused(tmp_path, allow):
    marker = tmp_path / "pwned"
    for path in malicious_files(tmp_path, marker):
        with pytest.raises(BadInput) as err:
            ckpt = open_pickle(path, allow_pickle=allow)
            for name in ckpt.tensors:  # only reached if listing wrongly succeeded
                ckpt.tensor(name)
        message = str(err.value)
        assert str(path) in message
        assert "system" in message or "open" in message or "refused" in message, message
        assert not marker.exists(), path


def test_refusal_names_the_global(tmp_path):
    marker = tmp_path / "pwned"
    path = torch_style_zip(tmp_path / "evil.pt", pickle.dumps(Touch(marker), protocol=2))
    with pytest.raises(BadInput, match=r"refused global (posix|os)\.system"):
        open_pickle(path, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("allow", [False, True])
def test_cli_anatomy_refuses_malicious_pickle(tmp_path, allow):
    marker = tmp_path / "pwned"
    path = torch_style_zip(tmp_path / "evil.bin", pickle.dumps(Touch(marker), protocol=2))
    cmd = [sys.executable, "-m", "glassbox", "anatomy", str(path), "--json"] + (["--allow-pickle"] if allow else [])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()

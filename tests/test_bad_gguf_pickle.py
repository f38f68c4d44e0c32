"""Malformed GGUF and pickle checkpoints: each one is BadInput naming the file (exit 2 through the CLI), with no
hang and no huge allocation. The files are crafted byte by byte so each breaks exactly one rule."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from gguf_util import tiny_llama, write_tiny_gguf

from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput

torch.set_num_threads(1)

# --- a byte-level GGUF builder --------------------------------------------------------------------------------


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, dims: list[int], qtype: int = 0, offset: int = 0) -> bytes:
    dims_bytes = b"".join(struct.pack("<Q", d) for d in dims)
    return s(name) + struct.pack("<I", len(dims)) + dims_bytes + struct.pack("<IQ", qtype, offset)


def gguf_bytes(kvs: list[bytes] | None = None, tensors: list[bytes] | None = None, data: bytes = b"",
               version: int = 3, n_tensors: int | None = None, n_kv: int | None = None, magic: bytes = b"GGUF",
               align: int = 32) -> bytes:
    kvs = [kv("general.architecture", 8, s("llama"))] if kvs is None else kvs
    tensors = [tinfo("output_norm.weight", [8])] if tensors is None else tensors
    if data == b"" and tensors:
        data = struct.pack("<8f", *range(8))
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % align) + data


def test_builder_makes_a_valid_file(tmp_path):
    """The builder's baseline is accepted, so each case below fails for its own broken rule only."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes())
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.tensor("model.norm.weight"), torch.arange(8.0))


U32, STR, ARR = 4, 8, 9
BIG = 1 << 62
GGUF_CASES = {
    "empty": b"",
    "short header": b"GGUF\x03\x00\x00\x00\x01",
    "wrong magic": gguf_bytes(magic=b"GGUG"),
    "safetensors bytes": struct.pack("<Q", 2) + b"{}" + b"\0" * 40,
    "version 1": gguf_bytes(version=1),
    "version 99": gguf_bytes(version=99),
    "absurd tensor count": gguf_bytes(n_tensors=BIG),
    "absurd kv count": gguf_bytes(n_kv=(1 << 64) - 1),
    "key length past the end": gguf_bytes(kvs=[struct.pack("<Q", BIG) + b"general"]),
    "string value past the end": gguf_bytes(kvs=[kv("general.name", STR, struct.pack("<Q", BIG))]),
    "array length past the end": gguf_bytes(kvs=[kv("x.arr", ARR, struct.pack("<IQ", 0, BIG))]),
    "string array length past the end": gguf_bytes(kvs=[kv("x.arr", ARR, struct.pack("<IQ", STR, BIG))]),
    "nested arrays too deep": gguf_bytes(kvs=[kv("x.arr", ARR, struct.pack("<IQ", ARR, 1) * 40)]),
    "unknown value type": gguf_bytes(kvs=[kv("general.thing", 99, b"\0" * 8)]),
    "unknown array type": gguf_bytes(kvs=[kv("x.arr", ARR, struct.pack("<IQ", 77, 1) + b"\0" * 8)]),
    "key not utf-8": gguf_bytes(kvs=[kv(b"general.\xff\xfe", U32, struct.pack("<I", 1))]),
    "duplicate key": gguf_bytes(kvs=[kv("general.architecture", STR, s("llama"))] * 2),
    "alignment not a power of two": gguf_bytes(kvs=[kv("general.alignment", U32, struct.pack("<I", 24))]),
    "alignment zero": gguf_bytes(kvs=[kv("general.alignment", U32, struct.pack("<I", 0))]),
    "zero dims": gguf_bytes(tensors=[tinfo("output_norm.weight", [])]),
    "five dims": gguf_bytes(tensors=[tinfo("output_norm.weight", [1, 1, 1, 1, 8])]),
    "unknown tensor type": gguf_bytes(tensors=[tinfo("output_norm.weight", [8], qtype=250)]),
    "removed tensor type": gguf_bytes(tensors=[tinfo("output_norm.weight", [8], qtype=4)]),  # Q4_2 is gone
    "huge dims": gguf_bytes(tensors=[tinfo("output_norm.weight", [1 << 40, 1 << 40])]),
    "row not a whole block": gguf_bytes(tensors=[tinfo("blk.0.attn_q.weight", [33, 2], qtype=8)]),  # Q8_0
    "data past the end": gguf_bytes(tensors=[tinfo("output_norm.weight", [64])]),
    "offset past the end": gguf_bytes(tensors=[tinfo("output_norm.weight", [8], offset=1 << 40)]),
    "misaligned offset": gguf_bytes(tensors=[tinfo("a", [4]), tinfo("b", [4], offset=16)],
                                    data=b"\0" * 64),
    "overlapping tensors": gguf_bytes(tensors=[tinfo("a", [16]), tinfo("b", [16], offset=32)],
                                      data=b"\0" * 96),
    "duplicate tensor name": gguf_bytes(tensors=[tinfo("a", [8]), tinfo("a", [8], offset=32)],
                                        data=b"\0" * 64),
    "two names map to one": gguf_bytes(tensors=[tinfo("output_norm.weight", [8]),
                                                tinfo("model.norm.weight", [8], offset=32)], data=b"\0" * 64),
    "tensor name not utf-8": gguf_bytes(tensors=[s(b"\xc3\x28") + struct.pack("<IQIQ", 1, 8, 0, 0)]),
}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> bytes:
    path = write_tiny_gguf(tiny_llama(), tmp_path_factory.mktemp("valid") / "tiny.gguf", qtype="Q8_0")
    return path.read_bytes()


def expect_bad(path: Path, allow_pickle: bool = False) -> str:
    with pytest.raises(BadInput) as err:
        with open_checkpoint(path, allow_pickle=allow_pickle) as ckpt:
            for name in ckpt.tensors:  # reached only if the index was accepted: values must fail cleanly too
                ckpt.tensor(name)
    message = str(err.value)
    assert str(path) in message, message
    return message


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_malformed_gguf(tmp_path, case):
    path = tmp_path / f"{case.replace(' ', '_')}.gguf"
    path.write_bytes(GGUF_CASES[case])
    message = expect_bad(path)
    assert "GGUF" in message or "gguf" in message, message


@pytest.mark.timeout(60)
def test_every_truncation_of_a_real_gguf_is_refused(tmp_path, tiny_gguf):
    """Cut a valid quantized file at 60 points through its header, index and data: each prefix is refused."""
    path = tmp_path / "cut.gguf"
    cuts = sorted({*range(0, 400, 7), *range(0, len(tiny_gguf), max(1, len(tiny_gguf) // 40))} - {len(tiny_gguf)})
    for cut in cuts:
        path.write_bytes(tiny_gguf[:cut])
        expect_bad(path)


@pytest.mark.timeout(60)
def test_random_bytes_as_gguf(tmp_path):
    import random

    rng = random.Random(0)
    for i in range(20):
        path = tmp_path / f"random{i}.gguf"
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 4096)))
        path.write_bytes((b"GGUF\x03\0\0\0" if i % 2 else b"") + body)  # half of them past the magic
        expect_bad(path)


def test_trailing_bytes_and_gaps_are_warnings(tmp_path):
    """Tricky but valid: a gap between tensors and junk after the last one load with warnings."""
    path = tmp_path / "gappy.gguf"
    path.write_bytes(gguf_bytes(tensors=[tinfo("a", [8]), tinfo("b", [8], offset=64)],
                                data=struct.pack("<8f", *range(8)) + b"\0" * 32 + struct.pack("<8f", *range(8))
                                + b"\0" * 100))
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.tensor("b"), torch.arange(8.0))
        assert any("gap" in w for w in ckpt.warnings) and any("after the last tensor" in w for w in ckpt.warnings)


# --- malformed pickle checkpoints -----------------------------------------------------------------------------


class Rebuild:
    """Emits a torch._utils._rebuild_tensor_v2 call with whatever arguments a case needs (pickled by
    reference; never called: the walk refuses or accepts it without running it)."""

    def __init__(self, *args, fn=None):
        self.args, self.fn = args, fn

    def __reduce__(self):
        return (self.fn or torch._utils._rebuild_tensor_v2, self.args)


class StorageRecord:
    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, StorageRecord) else None


def crafted(obj, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def torch_zip(pickle_bytes: bytes, storages: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
              compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buffer.getvalue()


def float_storage(key: str, numel: int):
    return StorageRecord(("storage", torch.FloatStorage, key, "cpu", numel))


def one_tensor(storage, offset=0, size=(2, 3), stride=(3, 1)):
    from collections import OrderedDict

    return {"w": Rebuild(storage, offset, size, stride, False, OrderedDict())}


def valid_zip() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}, buffer)
    return buffer.getvalue()


def valid_legacy() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


SIX = struct.pack("<6f", *range(6))
PICKLE_CASES = {  # name → a function making the bytes (some are large: made only when used)
    "empty": lambda: b"",
    "random bytes": lambda: bytes(range(7, 250)) * 3,
    "truncated zip": lambda: valid_zip()[: len(valid_zip()) // 2],
    "truncated legacy": lambda: valid_legacy()[:-10],
    "legacy cut in its pickles": lambda: valid_legacy()[:200],
    "legacy without magic": lambda: pickle.dumps(12345, protocol=2) + valid_legacy()[15:],
    "plain pickle of a dict": lambda: pickle.dumps({"a": 1}, protocol=2),
    "zip without data.pkl": lambda: torch_zip(b"", extra={"archive/other": b"x"}).replace(b"data.pkl", b"dat4.pkl"),
    "zip with two data.pkl": lambda: torch_zip(crafted({}), extra={"second/data.pkl": crafted({})}),
    "pickle without STOP": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6)))[:-1], {"0": SIX}),
    "storage entry missing": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6)))),
    "storage shorter than its record": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6))), {"0": SIX[:8]}),
    "tensor past its storage": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6), offset=3)), {"0": SIX}),
    "stride past its storage": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6), stride=(5, 1))), {"0": SIX}),
    "negative size": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6), size=(-2, 3))), {"0": SIX}),
    "size and stride lengths differ": lambda: torch_zip(crafted(one_tensor(float_storage("0", 6), stride=(1,))),
                                                {"0": SIX}),
    "rebuild from a string": lambda: torch_zip(crafted({"w": Rebuild("0", 0, (6,), (1,), False, None)})),
    "wrong argument count": lambda: torch_zip(crafted({"w": Rebuild(float_storage("0", 6), 0)}), {"0": SIX}),
    "persistent id not a storage": lambda: torch_zip(crafted({"w": StorageRecord(("module", "os", "system"))})),
    "storage type not a storage": lambda: torch_zip(crafted({"w": StorageRecord(("storage", "Float", "0", "cpu", 6))})),
    "storage described twice": lambda: torch_zip(crafted({"a": one_tensor(float_storage("0", 6)),
                                                          "b": one_tensor(float_storage("0", 7))}), {"0": SIX}),
    "disallowed torch function": lambda: torch_zip(crafted({"w": Rebuild("print('hi')", fn=torch.load)})),
    "builtins eval": lambda: torch_zip(crafted({"w": Rebuild("1+1", fn=eval)})),
    "memo get never put": lambda: torch_zip(b"\x80\x02h\x05."),
    "extension registry": lambda: torch_zip(b"\x80\x02\x82\x01."),
    "huge bytes length": lambda: torch_zip(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc"),
    "huge legacy bytes length": lambda: b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"abc",
    "long text line": lambda: b"I" + b"9" * 3_000_000,
    "oversized data.pkl": lambda: torch_zip(b"\0" * (65 << 20), compression=zipfile.ZIP_DEFLATED),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", PICKLE_CASES)
@pytest.mark.parametrize("allow", [False, True])
def test_malformed_pickle(tmp_path, case, allow):
    path = tmp_path / f"{case.replace(' ', '_')}.pt"
    path.write_bytes(PICKLE_CASES[case]())
    expect_bad(path, allow_pickle=allow)


@pytest.mark.timeout(60)
def test_deep_nesting_is_listed_or_refused_without_crashing(tmp_path):
    """100,000 nested lists: a recursive unpickler would blow the stack; the walk must not."""
    path = tmp_path / "deep.pt"
    path.write_bytes(torch_zip(b"\x80\x02" + b"(" * 100_000 + b"."))
    expect_bad(path)
    nested = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."
    path.write_bytes(torch_zip(nested))
    with open_checkpoint(path) as ckpt:
        assert ckpt.tensors == {} and any("no tensors" in w for w in ckpt.warnings)


@pytest.mark.timeout(120)
def test_all_malformed_files_in_bounded_memory(tmp_path, tiny_gguf):
    """Every case again in a child process whose address space is capped at 1.5 GB: an attempt to allocate
    what a corrupt length claims would die there with MemoryError instead of BadInput."""
    files = []
    for i, data in enumerate(GGUF_CASES.values()):
        files.append(tmp_path / f"g{i}.gguf")
        files[-1].write_bytes(data)
    for i, make in enumerate(PICKLE_CASES.values()):
        files.append(tmp_path / f"p{i}.pt")
        files[-1].write_bytes(make())
    files.append(tmp_path / "cut.gguf")
    files[-1].write_bytes(tiny_gguf[: len(tiny_gguf) - 100])
    script = (
        "import resource, sys\n"
        "from glassbox.checkpoint import open_checkpoint\n"
        "import glassbox.checkpoint.gguf, glassbox.checkpoint.pickled, gguf.quants  # imports before the cap\n"
        "from glassbox.errors import BadInput\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        open_checkpoint(p).close()\n"
        "        print('ACCEPTED', p)\n"
        "    except BadInput:\n"
        "        pass\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True,
                            timeout=110, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ACCEPTED" not in result.stdout, result.stdout


@pytest.mark.parametrize("kind", ["gguf", "pickle"])
def test_cli_exit_2_one_line(tmp_path, kind):
    path = tmp_path / ("bad.gguf" if kind == "gguf" else "bad.pt")
    path.write_bytes(GGUF_CASES["absurd tensor count"] if kind == "gguf" else PICKLE_CASES["truncated zip"]())
    result = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(path), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], result.stderr

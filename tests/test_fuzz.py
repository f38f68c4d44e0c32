"""Property tests: valid safetensors, GGUF and pickle files, mutated (flipped header bits, huge lengths and
counts written over integers, truncation, spliced bytes). Every outcome is success or BadInput (the CLI's
exit 2 with one `error:` line): never another exception, never a hang, never an allocation sized by a length
the file claims, and a pickle's code never runs.

In-process, tracemalloc's peak bounds what the readers allocate (Python and numpy allocations both report
to it) while listing and reading every value; a few CLI runs repeat the check under an address-space limit
(RLIMIT_AS) in a subprocess. Example counts are kept modest so the suite stays fast."""

from __future__ import annotations

import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassbox.checkpoint import open_checkpoint
from glassbox.errors import BadInput

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"glassbox-fuzz-pickle-ran-{os.getpid()}"
HUGE = [2**31 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**64 - 1]
SLACK = 32 << 20  # what a reader may allocate beyond the file's own size (tables, small arrays)


class Payload:
    """Unpickling this (if anything ever did) creates MARKER: the proof that a pickle's code ran."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


def seed_files(root: Path) -> dict[str, Path]:
    files = {}
    files["safetensors"] = root / "seed.safetensors"
    safetensors.numpy.save_file({"a": np.arange(24, dtype=np.float32).reshape(4, 6),
                                 "b": np.ones(5, np.float16), "c": np.arange(3, dtype=np.int64)},
                                str(files["safetensors"]), metadata={"k": "v", "glassbox.atlas": "{}"})
    import gguf_util
    from tiny import tiny_model

    files["gguf"] = gguf_util.write_tiny_gguf(tiny_model("llama", hidden=16, vocab=32), root / "seed.gguf")
    files["pickle"] = root / "seed.pt"
    torch.save({"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(4)}, files["pickle"])
    files["pickle-legacy"] = root / "legacy.pt"
    torch.save({"w": torch.arange(6.0)}, files["pickle-legacy"], _use_new_zipfile_serialization=False)
    files["pickle-payload"] = root / "payload.pt"
    buf = io.BytesIO()
    pickle.dump({"w": torch.zeros(2), "x": Payload()}, buf, protocol=2)
    files["pickle-payload"].write_bytes(buf.getvalue())
    return files


SEEDS = seed_files(Path(__import__("tempfile").mkdtemp(prefix="glassbox-fuzz-")))


def mutations(size: int):
    """A list of edits: (kind, position, value). Positions favour the first 4 KiB, where headers live."""
    pos = st.one_of(st.integers(0, min(size, 4096) - 1), st.integers(0, size - 1))
    flip = st.tuples(st.just("flip"), pos, st.integers(0, 7))
    huge = st.tuples(st.just("huge"), pos, st.sampled_from(HUGE))
    cut = st.tuples(st.just("truncate"), st.integers(0, size - 1), st.just(0))
    splice = st.tuples(st.just("splice"), pos, st.binary(min_size=1, max_size=64))
    drop = st.tuples(st.just("drop"), pos, st.integers(1, 256))
    return st.lists(st.one_of(flip, huge, cut, splice, drop), min_size=1, max_size=4)


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, at, value in edits:
        at = min(at, max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[at] ^= 1 << value
        elif kind == "huge":
            buf[at:at + 8] = struct.pack("<Q", value)
        elif kind == "truncate":
            del buf[at:]
        elif kind == "splice":
            buf[at:at] = value
        elif kind == "drop":
            del buf[at:at + value]
    return bytes(buf)


def exercise(path: Path, allow_pickle: bool) -> None:
    """List the file and read every tensor's values, as `anatomy --check-values` would."""
    with open_checkpoint(path, allow_pickle=allow_pickle) as ck:
        for name in list(ck.tensors)[:16]:
            ck.tensor(name)


def check(path: Path, data: bytes, allow_pickle: bool = False) -> None:
    path.write_bytes(data)
    tracemalloc.start()
    try:
        exercise(path, allow_pickle)
    except BadInput as exc:
        assert str(exc).count("\n") == 0
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < len(data) * 4 + SLACK, f"allocated {peak} bytes for a {len(data)}-byte file"
    assert not MARKER.exists(), "a pickle's code ran"


FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@pytest.mark.parametrize("kind", ["safetensors", "gguf", "pickle", "pickle-legacy", "pickle-payload"])
def test_mutated_files(kind, tmp_path):
    seed = SEEDS[kind].read_bytes()
    suffix = SEEDS[kind].suffix

    @FUZZ
    @given(edits=mutations(len(seed)))
    def run(edits):
        check(tmp_path / f"m{suffix}", mutate(seed, edits), allow_pickle=kind.startswith("pickle"))

    run()


def test_seeds_are_valid_and_payload_refused(tmp_path):
    """The seeds themselves: the valid ones read, the payload pickle is refused without running."""
    for kind in ("safetensors", "gguf", "pickle", "pickle-legacy"):
        exercise(SEEDS[kind], allow_pickle=True)
    with pytest.raises(BadInput):
        exercise(SEEDS["pickle-payload"], allow_pickle=True)
    assert not MARKER.exists()


def _limit_memory():
    limit = 3 << 30  # far above what listing a kilobyte file needs; far below a claimed 2^40-byte length
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


CLI_CASES = [("safetensors", [("huge", 0, 2**40)]), ("safetensors", [("huge", 60, 2**62)]),
             ("safetensors", [("truncate", 100, 0)]), ("gguf", [("huge", 16, 2**62)]),
             ("gguf", [("huge", 8, 2**40)]), ("gguf", [("truncate", 300, 0)]),
             ("pickle", [("splice", 40, b"\x80\x02c__builtin__\neval\n")]), ("pickle-payload", [("flip", 3, 0)])]


@pytest.mark.parametrize("kind,edits", CLI_CASES, ids=[f"{k}-{e[0][0]}-{e[0][1]}" for k, e in CLI_CASES])
def test_cli_under_address_space_limit(kind, edits, tmp_path):
    path = tmp_path / f"m{SEEDS[kind].suffix}"
    path.write_bytes(mutate(SEEDS[kind].read_bytes(), edits))
    run = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(path), "--json", "--check-values"],
                         capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory)
    assert run.returncode in (0, 2), run.stderr
    assert "Traceback" not in run.stderr and "out of memory" not in run.stderr, run.stderr
    if run.returncode == 2:
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert not MARKER.exists()


def test_zip_entry_claiming_more_than_the_file_is_refused_cheaply(tmp_path):
    """Found by the fuzzer: one flipped bit made `byteorder` claim 32 MB in a 2 kB zip, and zipfile allocated it."""
    data = bytearray(SEEDS["pickle"].read_bytes())
    with zipfile.ZipFile(SEEDS["pickle"]) as z:
        name = next(n for n in z.namelist() if n.endswith("byteorder"))
    at = data.rindex(name.encode()) - 46 + 20  # the central directory entry's compressed-size field
    data[at + 3] ^= 0x02  # +32 MiB
    bad = tmp_path / "big-claim.pt"
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        assert z.getinfo(name).compress_size > 32 << 20  # the mutation is the one the fuzzer found
    check(bad, bytes(data), allow_pickle=True)  # within the allocation bound, one-line error if any
    with pytest.raises(BadInput, match="claims"):
        exercise(bad, allow_pickle=True)

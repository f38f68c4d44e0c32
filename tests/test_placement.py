"""--dtype, --device, --max-memory (issue 22): checked before any weight is read, loaded straight into the target
dtype, recorded in the JSON documents; `auto` keeps float32 (bit for bit) for every model that fits."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from tiny import tiny_model

import glassbox.run
import glassbox.run.load
from glassbox.cli import main
from glassbox.errors import BadInput
from glassbox.run import gguf_cache, hooks, load_model, memory, options, placement

CUDA = torch.cuda.is_available()


def _refuse(*_, **__):
    raise AssertionError("a weight was read before the options were checked")


@pytest.fixture
def no_weights(monkeypatch):
    """Reading any weight fails the test: load_model runs up to its checks, and they must refuse first."""
    for name in ("_assign", "_from_pretrained", "_mapped", "gguf_cache"):
        monkeypatch.setattr(glassbox.run.load, name, _refuse)


@pytest.fixture
def no_loading(monkeypatch, no_weights):
    """Not even load_model may run: the option is refused while the command line is read."""
    monkeypatch.setattr(glassbox.run, "load_model", _refuse)


def _fails(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "AssertionError" not in err, err
    return lines[0]


def commands(model: str) -> dict[str, list[str]]:
    """Every command that runs a model, with otherwise valid options."""
    return {
        "atlas": ["atlas", model],
        "heads show": ["heads", "show", model, "0.0"],
        "heads why": ["heads", "why", model, "0.0", "--text", "1 2 3"],
        "lens": ["lens", model, "--text", "a b"],
        "lens train": ["lens", "train", model, "--corpus", "t.txt", "--out", "x.safetensors"],
        "patch": ["patch", model, "--clean", "a", "--corrupt", "b"],
        "patch --path": ["patch", model, "--path", "0.0:1.0.k"],
        "cluster": ["cluster", model, "--texts", "t.txt"],
        "demo": ["demo", "--model", model],
        "overlay generate": ["overlay", "generate", "no-index", "--prompt", "a", "--model", model],
        "overlay eval": ["overlay", "eval", "no-index", "--heldout", "t.txt", "--model", model],
        "tour": ["tour", model, "--work", "tour-work"],
        "facts": ["facts", model, "--prompt", "a b c", "--subject", "a"],
        # their models load in worker processes (or the web app's job thread): the option is refused as the
        # command line is read, like everywhere else, and handed to the workers explicitly
        "serve": ["serve", model],
        "timeline": ["timeline", "run"],
        "sweep": ["sweep", "--out", "sweep-out", "--seeds", "0"],
        "atlas-over": ["atlas-over", "run"],
    }


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("case", sorted(commands("M")))
def test_device_cuda_without_cuda_refused_first(case, tiny_folder, tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("some text " * 50)
    line = _fails(commands(str(tiny_folder("llama")))[case] + ["--device", "cuda"], capsys)
    assert "--device cuda" in line and "no CUDA" in line


@pytest.mark.parametrize("argv, says", [
    (["--dtype", "float64"], "--dtype 'float64'"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "cuda:x"], "--device 'cuda:x'"),
    (["--max-memory", "lots"], "--max-memory 'lots'"),
    (["--max-memory", "0"], "more than zero"),
])
def test_bad_spellings_refused_first(argv, says, tiny_folder, capsys, no_loading):
    assert says in _fails(["atlas", str(tiny_folder("llama"))] + argv, capsys)


def test_dtype_rule_per_device():
    """The rule that refuses a dtype a device cannot run (pure, so it is checked without the device)."""
    why = placement.unsupported("cuda", "bfloat16", (7, 5))
    assert why and "7.5" in why and "float16" in why
    assert placement.unsupported("cuda", "bfloat16", (8, 0)) is None
    assert placement.unsupported("cuda", "float16", (7, 5)) is None
    assert placement.unsupported("mps", "bfloat16", mps_bf16=False)
    assert all(placement.unsupported("cpu", d) is None for d in ("float32", "bfloat16", "float16"))


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_dtype_the_gpu_cannot_do_refused_first(tiny_folder, capsys, no_weights):
    if torch.cuda.get_device_capability() >= placement.CUDA_BF16:
        pytest.skip("this GPU does bfloat16")
    assert "bfloat16" in _fails(["atlas", str(tiny_folder("llama")), "--device", "cuda", "--dtype", "bfloat16"],
                                capsys)


def test_too_big_for_the_budget_refused_first(tiny_folder, capsys, no_weights):
    line = _fails(["atlas", str(tiny_folder("llama")), "--max-memory", "1KB"], capsys)
    assert "needs" in line and "float32" in line and "--max-memory is 0.0 GB" in line and "bfloat16 needs" in line


def _giant(folder, vocab: int, hidden: int):
    """A real (sparse) safetensors file with one [vocab, hidden] float32 tensor and its config: the header is
    true, the bytes are holes, so it costs no disk and no memory until read."""
    import transformers

    transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4,
                             num_key_value_heads=4, intermediate_size=hidden).save_pretrained(folder)
    n = vocab * hidden * 4
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [vocab, hidden],
                                                       "data_offsets": [0, n]}}).encode()
    header += b" " * (-len(header) % 8)
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n)
    return path


def test_too_big_for_the_machine_refused_first(tmp_path, capsys, no_weights):
    """Four times the machine's memory in float32: refused with the figures, whatever is free."""
    whole = memory.total(torch.device("cpu"))
    hidden = 4096
    vocab = -(-whole // (hidden * 4)) * 4  # 4 × total memory in float32 bytes
    _giant(tmp_path, vocab, hidden)
    line = _fails(["atlas", str(tmp_path)], capsys)
    assert "needs" in line and "free on cpu" in line and "B parameters" in line


def test_auto_is_float32_bit_for_bit(tiny_folder):
    folder = tiny_folder("llama")
    ids = torch.tensor([[1, 5, 9, 5, 9, 3]])
    auto, f32 = load_model(folder), load_model(folder, dtype="float32", device="cpu")
    assert auto.placement == {"dtype": "float32", "device": "cpu"}
    assert torch.equal(hooks.run(auto, ids), hooks.run(f32, ids))


def test_bfloat16_loads_straight_and_agrees(tiny_folder):
    folder = tiny_folder("llama")
    ids = torch.tensor([[1, 5, 9, 5, 9, 3, 7, 2]])
    half = load_model(folder, dtype="bfloat16")
    assert half.placement == {"dtype": "bfloat16", "device": "cpu"}
    assert all(p.dtype == torch.bfloat16 for p in half.model.parameters())
    ref = hooks.run(load_model(folder), ids)
    out = hooks.run(half, ids).float()
    assert out.argmax(-1).eq(ref.argmax(-1)).float().mean() >= 0.75
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_chosen_dtype_is_the_default_of_load_model_and_reset_after_a_command(tiny_folder, capsys):
    folder = tiny_folder("llama")
    options._dtype("float16")
    try:
        assert load_model(folder).dtype == "float16"
    finally:
        options.reset()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["atlas", str(folder), "--no-validate", "--json", "--dtype", "bfloat16"])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dtype"] == "bfloat16" and doc["device"] == "cpu"
    assert placement.chosen() == ("auto", "auto") and load_model(folder).dtype == "float32"


def test_gguf_cache_keyed_by_dtype(tmp_path, monkeypatch):
    import gguf_util

    from glassbox.checkpoint.safetensors import open_safetensors

    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    path = gguf_util.write_tiny_gguf(tiny_model("llama"), tmp_path / "m.gguf")
    full = gguf_cache.gguf_cache(path)
    half = gguf_cache.gguf_cache(path, "bfloat16")
    assert full != half and half.name == full.name + "-bfloat16"
    with open_safetensors(half / "model.safetensors") as ck:
        kinds = {e.dtype for e in ck.tensors.values()}
    assert kinds == {"BF16"}
    loaded = load_model(path, dtype="bfloat16")
    assert loaded.dtype == "bfloat16" and loaded.model.config.model_type == "llama"


def test_sizes_and_batch_rows():
    assert memory.parse_size("8GB") == 8 * 2**30 and memory.parse_size("512 MiB") == 512 * 2**20
    assert memory.parse_size("1000") == 1000
    with pytest.raises(BadInput):
        memory.parse_size("-1GB")
    cpu = torch.device("cpu")
    memory.set_budget(2**30)
    try:
        assert memory.rows(2**20, cpu) == 512 and memory.rows(2**40, cpu) == 1
    finally:
        memory.set_budget(None)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_runs_like_the_cpu(tiny_folder):
    folder = tiny_folder("llama")
    ids = torch.tensor([[1, 5, 9, 5, 9, 3]])
    gpu = load_model(folder, dtype="float32", device="cuda")
    assert gpu.device.startswith("cuda")
    assert torch.allclose(hooks.run(gpu, ids.cuda()).cpu(), hooks.run(load_model(folder), ids), atol=1e-4)


def test_worker_commands_load_in_the_dtype_they_were_given(tmp_path, capsys):
    """timeline, atlas-over and sweep run their models in worker processes (--workers 2: a process pool), which
    do not share the driver's option state: the choice is handed to them, and the JSON says where they ran."""
    from glassbox.train.loop import declare, train

    run = tmp_path / "run"
    train(run, declare(preset="induction-2l", seed=0, steps=2))
    docs = {}
    for name, argv in {
        "timeline": ["timeline", str(run), "--json", "--no-plot", "--no-ablation"],
        "atlas-over": ["atlas-over", str(run), "--json", "--max-per-role", "1", "--every", "2"],
        "sweep": ["sweep", "--preset", "induction-2l", "--steps", "2", "--seeds", "0-1", "--out",
                  str(tmp_path / "sweep"), "--json", "--no-plot", "--no-ablation"],
    }.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--workers", "2", "--dtype", "bfloat16"])
        out, err = capsys.readouterr()
        assert exc.value.code == 0, err
        docs[name] = json.loads(out)
        assert (docs[name]["dtype"], docs[name]["device"]) == ("bfloat16", "cpu"), name
    assert {c["dtype"] for c in docs["timeline"]["checkpoints"]} == {"bfloat16"}
    assert {c["atlas"]["dtype"] for c in docs["atlas-over"]["checkpoints"]} == {"bfloat16"}
    assert json.loads((run / "atlas-over.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((run / "timeline.json").read_text())["dtype"] == "bfloat16"
    assert {r["dtype"] for r in docs["sweep"]["runs"]} == {"bfloat16"}
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["dtype"] == "bfloat16"
    # the bfloat16 timeline is not what a float32 one reuses: asked in float32, it is computed again
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["timeline", str(run), "--json", "--no-plot", "--no-ablation"])
    assert exc.value.code == 0
    again = json.loads(capsys.readouterr().out)
    assert again["dtype"] == "float32" and {c["dtype"] for c in again["checkpoints"]} == {"float32"}
    assert again["checkpoints"][-1]["heads"] != docs["timeline"]["checkpoints"][-1]["heads"]  # rounding shows
    # a model that does not fit is refused by the driver, before any worker starts: exit 2, one line
    for argv in (["atlas-over", str(run)], ["timeline", str(run), "--no-plot"],
                 ["sweep", "--preset", "induction-2l", "--seeds", "0-1", "--out", str(tmp_path / "never")]):
        assert "--max-memory is 0.0 GB" in _fails(argv + ["--workers", "2", "--max-memory", "1MB"], capsys)
    assert not (tmp_path / "never").exists()  # sweep refused before training anything


class Budget:
    """A worker that reports the memory budget it computes within."""

    def __call__(self, i: int) -> dict:
        return {"budget": memory.asked()}


def test_the_drivers_max_memory_travels_to_pool_workers():
    from glassbox.scale import seam

    memory.set_budget(3 << 30)
    try:
        out = seam.run_items(Budget, (), [seam.Item(f"i{i}", (i,)) for i in range(2)], seam.backend(None, workers=2))
    finally:
        memory.set_budget(None)
    assert out == [{"budget": 3 << 30}] * 2


def test_serve_runs_its_models_in_the_dtype_it_was_given(tiny_folder, tmp_path):
    """serve's jobs load models in their own thread, after the command line was read: the app is handed the
    choice, and its model cache keeps a bfloat16 model apart from a float32 one of the same file."""
    from glassbox.web import documents
    from glassbox.web.server import create_app

    folder = tiny_folder("llama")
    try:
        create_app(tmp_path, dtype="bfloat16")
        half = documents.load(folder)
        assert half.placement == {"dtype": "bfloat16", "device": "cpu"} and documents.is_loaded(folder)
        create_app(tmp_path)
        assert not documents.is_loaded(folder)  # the bfloat16 one is not what a default app serves
        assert documents.load(folder).dtype == "float32"
    finally:
        create_app(tmp_path)  # the module's default again, for the tests that follow

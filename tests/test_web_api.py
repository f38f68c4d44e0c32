"""The web API against a live server: what it serves (anatomy, patterns equal to the library's) and what
it refuses (traversal in every encoding, absolute paths, symlinks out, pickles, big bodies, other hosts)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest
from webkit import live_server, tiny_with_tokenizer


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("web")
    root = base / "root"
    root.mkdir()
    tiny_with_tokenizer("gpt2", root / "tiny")
    outside = base / "outside"
    tiny_with_tokenizer("gpt2", outside)  # a real model that must stay unreachable
    (base / "secret.txt").write_text("not for the web")
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "link-file").symlink_to(base / "secret.txt")
    (root / "model.bin").write_bytes(b"\x80\x04K\x01.")  # a (harmless) pickle: still never opened
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSBOX_CACHE", str(base / "cache"))
        with live_server(root, ["tiny"]) as url, httpx.Client(base_url=url, timeout=120) as client:
            yield client, root


TRAVERSALS = [
    "../outside", "..%2Foutside", "%2e%2e/outside", "%2e%2e%2foutside", "%252e%252e%252foutside",
    "%25252e%25252e/outside", "tiny/../../outside", "tiny/%2e%2e/%2e%2e/outside", "..\\outside",
    "/etc/passwd", "%2Fetc%2Fpasswd", "%252Fetc%252Fpasswd", "~/.bashrc", "link-out", "link-file",
    "tiny/\x00", "model.bin",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_names_leaving_the_root_are_refused(served, name):
    client, _ = served
    for path in ("/api/anatomy", "/api/atlas"):
        # the name goes on the wire exactly as written (already-encoded forms are not re-encoded)
        r = client.get(f"{path}?src={name}") if "%" in name else client.get(path, params={"src": name})
        assert 400 <= r.status_code < 500, (path, name, r.status_code)
        assert "error" in r.json()
    r = client.post("/api/pattern", json={"src": name, "layer": 0, "head": 0, "text": "the cat"})
    assert 400 <= r.status_code < 500


def test_static_files_only_by_name(served):
    client, _ = served
    assert client.get("/static/app.js").status_code == 200
    for name in ("..%2fserver.py", "%2e%2e%2fpaths.py", "app.js%00", "../paths.py"):
        assert client.get(f"/static/{name}").status_code == 404


def test_oversized_bodies_are_refused(served):
    client, _ = served
    big = {"src": "tiny", "layer": 0, "head": 0, "text": "the " * 40_000}
    r = client.post("/api/pattern", json=big)
    assert r.status_code == 413
    # chunked, with no Content-Length: counted as it arrives

    def chunks():
        for _ in range(200):
            yield b"x" * 1024

    r = client.post("/api/pattern", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_other_hosts_are_refused_on_loopback(served):
    client, _ = served
    assert client.get("/", headers={"host": "evil.example:80"}).status_code == 400
    assert client.get("/").status_code == 200


def test_openapi_schema_documents_the_api(served):
    client, _ = served
    schema = client.get("/api/openapi.json").json()
    for path in ("/api/anatomy", "/api/atlas", "/api/pattern", "/api/ov", "/api/timeline", "/api/jobs/{job_id}"):
        assert path in schema["paths"], path
    assert client.get("/docs").status_code == 404  # the CDN-backed docs pages are off


def test_anatomy_and_pattern_equal_the_library(served):
    import torch

    from glassbox.anatomy import describe
    from glassbox.checkpoint import open_checkpoint
    from glassbox.run import hooks, load_model

    client, root = served
    doc = client.get("/api/anatomy", params={"src": "tiny"}).json()
    with open_checkpoint(root / "tiny" / "model.safetensors") as ck:
        want = describe(ck).to_json()
    assert [t["heads"] for t in doc["tensors"]] == [t["heads"] for t in want["tensors"]]
    body = {"src": "tiny", "layer": 1, "head": 3, "text": "the cat sat on the mat the cat sat"}
    r = client.post("/api/pattern", json=body)
    while r.status_code == 202:  # the model loads as a job first
        job = r.json()["job"]
        assert job["state"] in ("queued", "running", "done")
        time.sleep(0.3)
        r = client.post("/api/pattern", json=body)
    assert r.status_code == 200, r.text
    got = np.frombuffer(base64.b64decode(r.json()["pattern_f32"]), dtype="<f4").reshape(r.json()["shape"])
    loaded = load_model(root / "tiny")
    ids = r.json()["ids"]
    _, cache = hooks.run_with_cache(loaded, torch.tensor([ids]), names=["blocks.1.attn.pattern"])
    np.testing.assert_allclose(got, cache["blocks.1.attn.pattern"][0, 3].numpy(), atol=1e-6)
    assert json.dumps(r.json()["tokens"])  # tokens are strings the page sets as text
    bad = client.post("/api/pattern", json=dict(body, layer=7))
    assert bad.status_code == 400 and "no head 7.3" in bad.json()["error"]


def test_a_pickle_only_folder_is_never_loaded(served):
    import torch

    client, root = served
    folder = root / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((root / "tiny" / "config.json").read_text())
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    body = {"src": "pickled", "layer": 0, "head": 0, "text": "the cat"}
    r = client.post("/api/pattern", json=body)
    deadline = time.time() + 120
    while r.status_code == 202 and time.time() < deadline:
        time.sleep(0.3)
        r = client.post("/api/pattern", json=body)
    assert r.status_code == 400 and "pickle" in r.json()["error"]

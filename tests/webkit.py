"""Helpers for the web tests: a tiny model with a real (word-level) tokenizer, a live server on a free port,
and Debian's chromium driven by Playwright (never `playwright install`: it downloads, and fails here)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORDS = ("the a cat dog sat on mat and then it was tired because she he gave book to Mary John went store "
         "drink when . , of in is ran saw big small red blue green one two three four five six seven eight nine "
         "ten I you we they this that with for at by from up down over under").split()
SCREENSHOTS = Path(__file__).resolve().parent.parent / "out" / "screenshots"


def tiny_with_tokenizer(arch: str, folder: Path, seed: int = 0) -> Path:
    """tests/tiny.py's random model plus a word-level tokenizer over WORDS (ids below its vocab of 96)."""
    from tiny import save_tiny
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    save_tiny(arch, folder, seed)
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(root: Path, sources: list[str] | None = None) -> Iterator[str]:
    """`glassbox serve`'s app on 127.0.0.1:<free port> in a thread; always shut down on exit."""
    import uvicorn

    from glassbox.web.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root, sources), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is missing (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def live_site(root: Path, sources: list[str], cache: Path | None = None,
         home: Path | None = None) -> Iterator[tuple[str, object]]:
    """A live server over `root` and a browser, with GLASSBOX_CACHE (default root/.cache) and, when given,
    GLASSBOX_HOME pointed into the test's folder: the fixture every browser test module starts from."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSBOX_CACHE", str(cache or root / ".cache"))
        if home is not None:
            mp.setenv("GLASSBOX_HOME", str(home))
        with live_server(root, sources) as url, browser() as b:
            yield url, b


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

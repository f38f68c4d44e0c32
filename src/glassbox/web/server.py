"""The FastAPI app behind `glassbox serve`: the page, its static files, and a small JSON API.

Every model or run is named by `src`: a bundled model's short name or a path under the served root
(paths.resolve refuses the rest). Heavy work goes to `jobs` and answers 202 with a job to poll; an atlas
already computed (disk cache) answers at once. The OpenAPI schema is at /api/openapi.json; the
interactive docs pages are off because they load their scripts from a CDN.
"""

from __future__ import annotations

import base64
import contextlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from glassbox import bundled
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.web import documents
from glassbox.web.jobs import Jobs
from glassbox.web.paths import PathRefused, is_index, is_run, resolve

MAX_BODY = 64 * 1024  # bytes; a 1,000-token text is ~5 KB
STATIC = ("app.js", "app.css")
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def installed_bundled() -> list[str]:
    """Bundled models whose package is installed (found without importing it)."""
    import importlib.util

    return [b.name for b in bundled.BUNDLED.values() if importlib.util.find_spec(b.package) is not None]


def static_text(name: str) -> str:
    return resources.files("glassbox.web").joinpath("static", name).read_text(encoding="utf-8")


class BodyCap:
    """ASGI middleware: refuse bodies over MAX_BODY (by Content-Length, and by counting when chunked)."""

    def __init__(self, app: Any, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _plain(send, 413, "request body too large")
        if length is not None:
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): read it all here, up to the cap, then hand the app a replay
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _plain(send, 413, "request body too large")
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HostCheck:
    """ASGI middleware: on a loopback bind, answer only requests addressed to loopback (DNS rebinding)."""

    def __init__(self, app: Any, allowed: tuple[str, ...] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in self.allowed:
                return await _plain(send, 400, "unexpected Host header")
        await self.app(scope, receive, send)


async def _plain(send: Any, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class PatternRequest(BaseModel):
    src: str = Field(..., max_length=1024, description="bundled model name or path under the root")
    layer: int = Field(..., ge=0, le=10_000)
    head: int = Field(..., ge=0, le=10_000)
    text: str = Field(..., max_length=20_000, description="the text to run (cut at 1,024 tokens)")


class LensRequest(BaseModel):
    src: str = Field(..., max_length=1024)
    text: str = Field(..., max_length=4_000, description="read through the logit lens (first 48 tokens)")


class PatchRequest(BaseModel):
    src: str = Field(..., max_length=1024)
    clean: str = Field(..., max_length=2_000)
    corrupt: str = Field(..., max_length=2_000, description="the same number of tokens as clean")
    metric: str = Field("kl", max_length=200, description="'logit_diff: A - B', 'prob: T', 'logprob: T' or 'kl'")
    over: str = Field("heads", pattern="^(heads|resid|mlp)$")


class GenerateRequest(BaseModel):
    src: str = Field(..., max_length=1024, description="an overlay index folder under the root")
    prompt: str = Field(..., max_length=2_000)
    max_tokens: int = Field(20, ge=1, le=64)
    mode: str = Field("table", pattern="^(table|mixture|select)$", description="table: no LM; else SmolLM2 selects")


class FeedbackRequest(BaseModel):
    trace: str = Field(..., max_length=64, pattern="^[A-Za-z0-9_-]+$")
    step: int = Field(..., ge=0, le=10_000)
    text: str = Field(..., max_length=200, description="the token text to prefer or reject at that step")
    prefer: bool = True


def create_app(root: str | Path = ".", sources: list[str] | None = None, loopback_only: bool = True,
               dtype: str = "auto", device: str = "auto") -> Any:
    """The ASGI app. `sources`: what the page lists first (default: the bundled default model if installed).
    `dtype`/`device`: where its models run (serve's --dtype/--device; auto|float32|bfloat16|float16,
    auto|cpu|cuda|cuda:N|mps), handed over explicitly: the jobs run in their own thread, after the command
    line's options were read."""
    root = Path(root).resolve()
    documents.where.update(dtype=dtype, device=device)
    jobs = Jobs()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        jobs.shutdown()

    app = FastAPI(title="glassbox", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  description="Browse a checkpoint from its bytes to its heads' roles. Every `src` is a bundled "
                              "model name or a path under the served root.")
    app.state.jobs = jobs

    def src_of(raw: str) -> tuple[str, Path]:
        try:
            return resolve(root, raw)
        except PathRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @app.exception_handler(BadInput)
    async def _bad(_: Request, exc: BadInput) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page({"mode": "api"}, inline=False))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such static file")
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(static_text(name), media_type=kind)

    @app.get("/api/sources", summary="What can be opened: the sources given, bundled models, files under root")
    def list_sources() -> dict[str, Any]:
        given = []
        for spec in sources if sources is not None else [bundled.DEFAULT_MODEL]:
            try:
                sid, path = resolve(root, spec)
                given.append({"src": sid, "kind": "run" if is_run(path) else "index" if is_index(path) else "model"})
            except PathRefused as exc:
                given.append({"src": spec, "kind": "missing", "error": str(exc)})
        return {"root": str(root), "sources": given, "bundled": installed_bundled()}

    @app.get("/api/anatomy", summary="`glassbox anatomy --json` for src, with formulas and file sizes")
    async def anatomy(src: str = Query(..., max_length=1024)) -> dict[str, Any]:
        sid, path = src_of(src)
        doc = await run_in_threadpool(documents.anatomy_doc, path)
        doc["src"] = sid
        return doc

    @app.get("/api/atlas", summary="The atlas of src if computed (disk cache), else null and any running job")
    async def atlas(src: str = Query(..., max_length=1024)) -> dict[str, Any]:
        sid, path = src_of(src)
        doc = await run_in_threadpool(documents.cached_atlas, path)
        return {"src": sid, "atlas": doc, "job": None if doc is not None else _job_for(f"atlas:{path}")}

    @app.get("/api/tour", summary="The tour of src if `glassbox tour` has made one, else null")
    async def tour(src: str = Query(..., max_length=1024)) -> dict[str, Any]:
        sid, path = src_of(src)
        return {"src": sid, "tour": await run_in_threadpool(documents.cached_tour, path)}

    @app.get("/api/facts", summary="The last `glassbox facts` trace and `facts edit` of src, else null")
    async def facts(src: str = Query(..., max_length=1024)) -> dict[str, Any]:
        sid, path = src_of(src)
        return {"src": sid, "facts": await run_in_threadpool(documents.cached_facts, path)}

    @app.post("/api/atlas", status_code=202, summary="Start computing the atlas of src (a job to poll)")
    def start_atlas(src: str = Query(..., max_length=1024)) -> dict[str, Any]:
        sid, path = src_of(src)
        if is_run(path):
            raise HTTPException(400, "a training run has a timeline, not an atlas; open one of its checkpoints")
        _retry_failed(f"atlas:{path}")  # asking again after a failure starts afresh
        return {"src": sid, "job": jobs.start(f"atlas:{path}", f"atlas of {sid}",
                                              lambda: documents.compute_atlas(path, sid))}

    def _retry_failed(key: str) -> None:
        job = _job_for(key)
        if job is not None and job["state"] == "error":
            jobs.forget(key)

    def _job_for(key: str) -> dict[str, Any] | None:
        jid = jobs._by_key.get(key)
        return jobs.get(jid) if jid is not None else None

    @app.get("/api/jobs/{job_id}", summary="A job's state and progress (step, done of total)")
    def job(job_id: int) -> dict[str, Any]:
        state = jobs.get(job_id)
        if state is None:
            raise HTTPException(404, "no such job")
        return state

    def _need_model(sid: str, path: Path) -> dict[str, Any] | None:
        """None when the model is in memory; else the job that loads it (the caller answers 202)."""
        if documents.is_loaded(path):
            return None
        job = jobs.start(f"load:{path}", f"load {sid}", lambda: documents.load(path, sid))
        if job["state"] == "error":  # say why once (a pickle-only folder, a broken file); the next ask retries
            jobs.forget(f"load:{path}")
            raise HTTPException(400, job["error"])
        return job

    def _model(raw: str) -> tuple[Any, JSONResponse | None]:
        """The loaded model a `src` names, or (None, the 202 answer naming the job that loads it)."""
        sid, path = src_of(raw)
        pending = _need_model(sid, path)
        if pending is not None:
            return None, JSONResponse({"job": pending}, status_code=202)
        return documents.load(path, sid), None

    @app.post("/api/pattern", summary="One head's attention on a text (float32 [q, k], base64) and its lens",
              responses={202: {"description": "the model is loading: poll the job, then ask again"}})
    async def pattern(req: PatternRequest) -> Any:
        loaded, wait = _model(req.src)
        if wait is not None:
            return wait
        doc = await run_in_threadpool(documents.pattern, loaded, req.layer, req.head, req.text)
        pat = doc.pop("pattern")
        doc["shape"] = list(pat.shape)
        doc["pattern_f32"] = base64.b64encode(pat.astype("<f4").tobytes()).decode()
        return doc

    @app.get("/api/ov", summary="What one head's OV circuit reads and writes (top tokens)",
             responses={202: {"description": "the model is loading"}})
    async def ov(src: str = Query(..., max_length=1024), layer: int = Query(..., ge=0),
                 head: int = Query(..., ge=0)) -> Any:
        loaded, wait = _model(src)
        if wait is not None:
            return wait
        if not (layer < loaded.n_layers and head < loaded.n_heads) or loaded.is_encoder:
            raise HTTPException(400, f"no OV readout for head {layer}.{head} of this model")
        return await run_in_threadpool(documents.ov_tokens, loaded, layer, head)

    @app.post("/api/lens", summary="The logit lens on a text: KL to the final layer and top token per cell",
              responses={202: {"description": "the model is loading"}})
    async def lens(req: LensRequest) -> Any:
        loaded, wait = _model(req.src)
        if wait is not None:
            return wait
        return await run_in_threadpool(documents.lens_doc, loaded, req.text)

    @app.post("/api/patch", summary="Activation patching (denoising), clean vs corrupt: effect per cell",
              responses={202: {"description": "the model is loading"}})
    async def patch(req: PatchRequest) -> Any:
        loaded, wait = _model(req.src)
        if wait is not None:
            return wait
        return await run_in_threadpool(documents.patch_doc, loaded, req.clean, req.corrupt, req.metric,
                                       req.over)

    @app.post("/api/overlay/generate", summary="Generate with an overlay index; every step traced in the store")
    async def overlay_generate(req: GenerateRequest) -> Any:
        sid, path = src_of(req.src)
        if not is_index(path):
            raise HTTPException(400, "not an overlay index (no meta.json)")
        return await run_in_threadpool(documents.overlay_generate, path, req.prompt, req.max_tokens, req.mode)

    @app.get("/api/overlay/trace", summary="A stored trace: every step's candidates and score terms")
    async def overlay_trace(id: str = Query(..., max_length=64, pattern="^[A-Za-z0-9_-]+$")) -> Any:
        return await run_in_threadpool(documents.overlay_trace, id)

    @app.post("/api/overlay/feedback", summary="Prefer or reject a token at a traced step (later generations use it)")
    async def overlay_feedback(req: FeedbackRequest) -> Any:
        return await run_in_threadpool(documents.overlay_feedback, req.trace, req.step, req.text, req.prefer)

    @app.post("/api/overlay/replay", summary="Regenerate a trace from its own record: identical or not")
    async def overlay_replay(id: str = Query(..., max_length=64, pattern="^[A-Za-z0-9_-]+$")) -> Any:
        return await run_in_threadpool(documents.overlay_replay, id)

    @app.get("/api/timeline", summary="A training run's timeline, write shares and loss",
             responses={202: {"description": "being computed"}})
    def timeline(src: str = Query(..., max_length=1024)) -> Any:
        sid, path = src_of(src)
        if not is_run(path):
            raise HTTPException(400, "not a training run (needs checkpoints/ and metrics.parquet)")
        key = f"timeline:{path}"
        cache = documents.cache_folder("timeline") / f"{documents.file_key(path)}.json"
        if cache.exists():
            return {"src": sid, "timeline": json.loads(cache.read_text(encoding="utf-8")), "job": None}

        def work() -> None:
            write_json(cache, documents.timeline_doc(path))

        return JSONResponse({"src": sid, "timeline": None, "job": jobs.start(key, f"timeline of {sid}", work)},
                            status_code=202)

    return HostCheck(BodyCap(app), LOOPBACK if loopback_only else None)


def page(config: dict[str, Any], inline: bool, payload: str | None = None, title: str = "glassbox") -> str:
    """The one HTML page: links the static files (server) or inlines them and the data (report)."""
    from html import escape

    conf = json.dumps(config).replace("<", "\\u003c")
    if inline:
        css = f"<style>{static_text('app.css')}</style>"
        code = static_text("app.js").replace("</script", "<\\/script")
        js = f"<script>{code}</script>"
        csp = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
               "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src data:\">")
    else:
        css = '<link rel="stylesheet" href="/static/app.css">'
        js = '<script src="/static/app.js"></script>'
        csp = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'self'; "
               "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:\">")
    data_tag = "" if payload is None else f'<script type="application/json" id="glassbox-data">{payload}</script>'
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{csp}"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"{css}</head><body><div id=\"app\"></div>"
            f'<script type="application/json" id="glassbox-config">{conf}</script>{data_tag}{js}</body></html>')

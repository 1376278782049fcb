"""The HTTP application: routes, limits and errors.

Routes: ``POST /v1/predict`` (any task head; the JSON ``lmcraft predict`` prints), ``POST /v1/embeddings``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (OpenAI-compatible, ``stream: true`` as
server-sent events), ``GET /health``, ``GET /v1/models``, ``GET /metrics`` and the playground at ``/``.

Every error is ``{"error": {"message", "type", "code"}}`` with its status: 404 unknown model or route, 413
body too large, 422 malformed JSON or a wrong field (named), or an input over the token limit, 429 queue
full (with ``Retry-After``), 504 over the time limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmcraft.serve.batcher import Overloaded
from lmcraft.serve.counting import CountRequests
from lmcraft.serve.limits import BodyLimit
from lmcraft.serve.metrics import ServerMetrics
from lmcraft.serve.models import ServedModel, model_names
from lmcraft.serve.openai_routes import add_openai_routes
from lmcraft.serve.options import ServeConfig
from lmcraft.serve.schemas import ApiError, EmbeddingRequest, PredictRequest, error_body

PLAYGROUND = Path(__file__).with_name("playground.html")


class ServerState:
    """What the routes share: the loaded models (filled by a background thread), the options, the metrics."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.directories = model_names(cfg.models)
        self.models: dict[str, ServedModel] = {}
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.metrics = ServerMetrics()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmcraft-model")

    def load(self) -> None:
        try:
            if self.cfg.threads > 0:
                torch.set_num_threads(self.cfg.threads)
            for name, directory in self.directories.items():
                self.models[name] = ServedModel.load(name, directory, self.cfg)
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
        self.ready.set()

    def model(self, name: str | None, capability: str) -> ServedModel:
        if not self.ready.is_set():
            raise ApiError(503, "the models are still loading; GET /health says when they are ready",
                           "unavailable", "loading")
        if self.load_error:
            raise ApiError(503, f"the models could not be loaded: {self.load_error}", "unavailable", "load_failed")
        if name is None:
            able = [m for m in self.models.values() if capability in m.capabilities]
            if not able:
                raise ApiError(404, f"no served model can answer {capability} requests", "invalid_request_error",
                               "model_not_found")
            return able[0]
        if name not in self.models:
            raise ApiError(404, f"no model {name!r}; served: {', '.join(self.models)}", "invalid_request_error",
                           "model_not_found")
        served = self.models[name]
        if capability not in served.capabilities:
            raise ApiError(400, f"model {name!r} cannot answer {capability} requests (it can: "
                                f"{', '.join(served.capabilities)})", "invalid_request_error", "unsupported")
        return served

    def check_length(self, served: ServedModel, values: list[Any], field: str) -> list[int]:
        """Token counts of ``values``; one over ``--max-input-tokens`` is a 422 unless ``--truncate``."""
        tokens = served.tokens(values)
        limit = self.cfg.max_input_tokens
        if limit > 0 and not self.cfg.truncate:
            for i, n in enumerate(tokens):
                if n > limit:
                    raise ApiError(422, f"{field}[{i}] has {n} tokens; the limit is {limit} (--max-input-tokens; "
                                        "--truncate cuts long inputs instead)", "invalid_request_error",
                                   "input_too_long")
        return [min(n, limit) if limit > 0 else n for n in tokens]

    async def within_time(self, work: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(work, self.cfg.timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than {self.cfg.timeout:g} s (--timeout)", "timeout",
                           "timeout") from None
        except Overloaded as error:
            raise ApiError(429, f"the server is busy: {error}; retry shortly", "overloaded", "queue_full",
                           headers={"Retry-After": "1"}) from None


def create_app(cfg: ServeConfig) -> FastAPI:
    state = ServerState(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        threading.Thread(target=state.load, name="lmcraft-load", daemon=True).start()  # /health: 503 until done

        async def start_batchers() -> None:
            await loop.run_in_executor(None, state.ready.wait)
            for served in state.models.values():
                served.start(state.executor, cfg, state.metrics)
        starter = loop.create_task(start_batchers())
        yield
        starter.cancel()
        for served in state.models.values():
            for batcher in (served.batcher, served.generator):
                if batcher is not None:
                    await batcher.stop()
        state.executor.shutdown(wait=True)

    app = FastAPI(title="lmcraft", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.lmcraft = state
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(CountRequests, metrics=state.metrics)  # added last, so outermost: counts the 413s too

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.message, error.kind, error.code), status_code=error.status,
                            headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(x) for x in item.get("loc", ()) if x != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        kind = "malformed JSON" if any(e.get("type") == "json_invalid" for e in error.errors()) else "invalid field"
        return JSONResponse(error_body(f"{kind}: " + "; ".join(problems), "invalid_request_error",
                                       "invalid_json" if kind == "malformed JSON" else "invalid_field"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(error.detail), "invalid_request_error", str(error.status_code)),
                            status_code=error.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> JSONResponse:
        if not state.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        return JSONResponse({"status": "ok", "models": list(state.models)})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in state.models.values()]}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        for served in state.models.values():
            waiting = sum(b.waiting for b in (served.batcher, served.generator) if b)
            state.metrics.queue_depth.labels(served.name).set(waiting)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> JSONResponse:
        served = state.model(body.model, "predict")
        try:
            examples = served.predictor.examples(body.inputs)
        except ValueError as error:  # an input the task cannot read: name it
            raise ApiError(422, f"inputs: {error}", "invalid_request_error", "invalid_input") from None
        tokens = state.check_length(served, body.inputs, "inputs")
        assert served.batcher is not None
        outputs = await state.within_time(served.batcher.submit([("predict", e) for e in examples], tokens))
        return JSONResponse({"model": served.name, "outputs": outputs})  # plain JSON already: no re-encoding

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        served = state.model(body.model, "embeddings")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        tokens = state.check_length(served, texts, "input")
        assert served.batcher is not None
        vectors = await state.within_time(served.batcher.submit([("embed", t) for t in texts], tokens))
        return {"object": "list", "model": served.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}}

    add_openai_routes(app, state)
    return app

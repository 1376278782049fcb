"""Counts every request in the metrics (route, status, latency) as a plain ASGI middleware: it only watches
the response start go by, so it adds no copy of the body and no extra task per request (Starlette's
``@app.middleware("http")`` costs a task and a stream per request, a large share of a small model's time)."""

from __future__ import annotations

import time
from typing import Any

from lmcraft.serve.metrics import ServerMetrics


class CountRequests:
    def __init__(self, app: Any, *, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the route template, set by the router
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - began)

"""The request-body limit, enforced as the body arrives (a declared length over the limit is refused before
reading; a chunked body is refused as soon as it passes it): 413 with the error shape of every route."""

from __future__ import annotations

import json
from typing import Any

from lmcraft.serve.schemas import error_body

Scope = dict[str, Any]


class BodyLimit:
    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(error_body(f"the request body is larger than {self.max_bytes:,} bytes (--max-body-bytes)",
                                     "invalid_request_error", "body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self._refuse(send)


class BodyTooLarge(Exception):
    pass

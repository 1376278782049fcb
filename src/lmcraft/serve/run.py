"""Starting the server: uvicorn on the app, with a graceful shutdown that lets requests in flight finish."""

from __future__ import annotations

import uvicorn

from lmcraft.serve.app import create_app
from lmcraft.serve.options import ServeConfig


def serve(cfg: ServeConfig) -> int:
    app = create_app(cfg)
    print(f"lmcraft serve: loading {', '.join(app.state.lmcraft.directories)}; http://{cfg.host}:{cfg.port}/ "
          "(the playground), GET /health says when the models are ready", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=int(cfg.timeout))
    return 0

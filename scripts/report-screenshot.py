"""docs/report.png: open a report.html in headless Chromium and save the whole page as one image.

    python scripts/report-screenshot.py REPORT_HTML [--out docs/report.png] [--width 1100] [--max-height 6000]

REPORT_HTML is what `lmcraft report` wrote, e.g. runs/quickstart-zh/report/report.html (`make demo`). Needs
selenium and Debian's chromium, chromium-driver and fonts-wqy-microhei (see tests/test_playground.py)."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_html", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--max-height", type=int, default=6000, help="cut the image at this many pixels")
    args = parser.parse_args()
    if not args.report_html.is_file():
        raise SystemExit(f"{args.report_html}: no such file (run `lmcraft report` first)")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.width},900",
                     "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(args.report_html.resolve().as_uri())
        height = min(int(driver.execute_script("return document.documentElement.scrollHeight")), args.max_height)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": args.width, "height": height, "scale": 1}})
        args.out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.quit()
    print(f"{args.out}: {args.width} × {height} px")


if __name__ == "__main__":
    main()

"""Screenshot a listening report the way the docs show it: Debian's headless chromium (driven by
Playwright), the first explained tag's section with its top cell playing, as a small palette PNG.

    .venv/bin/python scripts/screenshot_report.py out/demo/explanation.html docs/report.png
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--scheme", choices=("light", "dark"), default="light")
    args = p.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.emulate_media(color_scheme=args.scheme)
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
        page.locator("section.target").first.locator(".cell.top").first.click()
        page.wait_for_timeout(150)  # the playhead has moved into the cell
        png = page.locator("section.target").first.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    image.save(args.png, optimize=True)
    print(f"{args.png}: {args.png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()

"""Screenshot of the review page of an evaluation folder, for the README.

    python scripts/review_screenshot.py DIR OUT.png [--width 1280] [--height 1000] [--select N]

Serves ``DIR`` as ``python -m policies.review DIR`` does (on a free local port), opens the page in a headless
Chromium (the system's ``chromium`` and ``chromedriver``; nothing is downloaded), waits for the videos'
first frames, selects the N-th rollout and saves a PNG of the window. Labels are only read.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.evaluation.review import ReviewError, make_server  # noqa: E402
from tests.fixtures.browser import BrowserMissing, headless_chromium  # noqa: E402

SETTLE_S = 2.0  # Chromium's video controls show a loading ring for a moment after a seek
READY = "return document.body.dataset.ready === '1'"
SEEK = """document.querySelectorAll('video').forEach(v => {
  v.addEventListener('seeked', () => { v.dataset.shown = '1'; }, {once: true});
  const seek = () => { v.currentTime = Math.min(0.5, v.duration / 3); };
  if (v.readyState >= 1) seek(); else v.addEventListener('loadedmetadata', seek, {once: true});
});"""
VIDEOS_SHOWN = ("return [...document.querySelectorAll('video')].slice(0, 6)"
                ".every(v => v.dataset.shown === '1' || v.error)")


def screenshot(out_dir: str | Path, png: str | Path, width: int = 1280, height: int = 1000,
               select: int = 0, timeout: float = 20.0) -> Path:
    server = make_server(out_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    driver = headless_chromium(width, height)
    try:
        driver.get(server.url)
        end = time.monotonic() + timeout
        while not driver.execute_script(READY):
            if time.monotonic() > end:
                raise TimeoutError(f"the page of {out_dir} did not load in {timeout:.0f} s")
            time.sleep(0.1)
        # show a frame rather than a black box: seek a little into each video
        driver.execute_script(SEEK)
        while not driver.execute_script(VIDEOS_SHOWN) and time.monotonic() < end:
            time.sleep(0.1)
        if select:
            from selenium.webdriver.common.action_chains import ActionChains

            ActionChains(driver).send_keys("j" * select).perform()
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(SETTLE_S)
        png = Path(png)
        png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))
        return png
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("dir", help="an evaluation folder with episodes.json")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--select", type=int, default=0, help="select the N-th rollout (0: the first)")
    args = parser.parse_args(argv)
    try:
        png = screenshot(args.dir, args.out, args.width, args.height, args.select)
    except (ReviewError, BrowserMissing, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

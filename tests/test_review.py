"""The review page (``python -m policies.review DIR``): its server on a fixture folder, and the page itself in a
real headless Chromium (Selenium), writing labels to the labels file.

The browser tests fail when Chromium, chromedriver or Selenium are missing (run scripts/bootstrap.sh), unless
TOPBC_SKIP_BROWSER=1 is set.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import policies.evaluation.review as review
from data.success_labels import Label, read_labels, set_label
from policies.evaluation.review import ReviewError, make_server, merge_labels
from tests.fixtures.serving import serving

POLICIES = ("act_a", "act_b")
SKIP_ENV = "TOPBC_SKIP_BROWSER"


def make_review_dir(root: Path) -> Path:
    """An evaluation folder: 2 policies × 2 episodes; act_b's episode 1 has no video, progress or judge, and
    act_a's episode 1 carries a stale human label in the snapshot that the labels file does not have."""
    from policies.evaluation.video import write_video

    out = root / "eval"
    rng = np.random.default_rng(0)
    episodes = []
    for p, policy in enumerate(POLICIES):
        for e in range(2):
            n = 12
            video = None
            if (policy, e) != ("act_b", 1):
                frames = [np.full((32, 48, 3), 40 * (p * 2 + e) + 5 * t, np.uint8) for t in range(n)]
                video = f"videos/{policy}/episode_{e:06d}.mp4"
                write_video(frames, out / video, fps=10)
            episodes.append({
                "policy": policy, "episode_index": e, "dataset": str(root / f"rec_{policy}"), "length": n,
                "fps": 10.0, "video": video,
                "progress": [] if video is None else np.round(np.sort(rng.random(n)), 3).tolist(),
                "judge": ({"score": None, "threshold": None, "call": None} if video is None else
                          {"score": -1.5 + e, "threshold": -1.0, "call": bool(e)}),
                "label": True if (policy, e) == ("act_a", 1) else None,
                "source": "human" if (policy, e) == ("act_a", 1) else "none"})
    (out / "episodes.json").write_text(json.dumps({"labels_file": "labels.csv", "episodes": episodes}))
    return out


@pytest.fixture
def review_dir(tmp_path):
    return make_review_dir(tmp_path)


@pytest.fixture
def server(review_dir):
    srv = make_server(review_dir, port=0)
    with serving(srv):
        yield srv


def request(srv, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
    """One raw request (the path is sent exactly as given, unlike a browser's)."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {}) | ({"Content-Type": "application/json"} if data is not None else {})
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ---- the server --------------------------------------------------------------------------------------------
def test_episodes_merge_the_labels_file_over_the_snapshot(server, review_dir):
    status, _, body = request(server, "GET", "/api/episodes")
    assert status == 200
    eps = {(e["policy"], e["episode_index"]): e for e in json.loads(body)["episodes"]}
    assert len(eps) == 4
    # the snapshot's human label of act_a/1 is not in the file: cleared
    assert (eps[("act_a", 1)]["label"], eps[("act_a", 1)]["source"]) == (None, "none")
    set_label(review_dir / "labels.csv", "act_b", 0, False, "gripper slipped")
    eps = {(e["policy"], e["episode_index"]): e for e in json.loads(request(server, "GET", "/api/episodes")[2])["episodes"]}
    assert (eps[("act_b", 0)]["label"], eps[("act_b", 0)]["source"], eps[("act_b", 0)]["note"]) == \
        (False, "human", "gripper slipped")
    # a column or judge label stays where the file has none, and the file's label wins over it
    snap = [{"policy": "p", "episode_index": 0, "label": True, "source": "column"},
            {"policy": "p", "episode_index": 1, "label": False, "source": "judge"}]
    merged = merge_labels(snap, {("p", 1): Label(True)})
    assert [(m["label"], m["source"]) for m in merged] == [(True, "column"), (True, "human")]


def test_label_post_writes_the_file_and_unknown_episodes_are_refused(server, review_dir):
    labels = review_dir / "labels.csv"
    status, _, body = request(server, "POST", "/api/label", {"policy": "act_b", "episode_index": 7, "success": True})
    assert status == 400 and "episode 7" in json.loads(body)["error"] and "act_b" in json.loads(body)["error"]
    assert not labels.exists()  # refused before anything was written

    status, _, body = request(server, "POST", "/api/label",
                              {"policy": "act_a", "episode_index": 0, "success": True, "note": "clean push"})
    assert status == 200 and json.loads(body)["episode"]["label"] is True
    assert read_labels(labels) == {("act_a", 0): Label(True, "clean push")}
    # a label without a note keeps the note
    request(server, "POST", "/api/label", {"policy": "act_a", "episode_index": 0, "success": False})
    assert read_labels(labels) == {("act_a", 0): Label(False, "clean push")}
    before = labels.read_bytes()
    for bad in ({"policy": "nope", "episode_index": 0, "success": True},
                {"policy": "act_a", "episode_index": 0, "success": "maybe"},
                {"policy": "act_a", "episode_index": "0", "success": True}):
        status, _, body = request(server, "POST", "/api/label", bad)
        assert status == 400, bad
    assert labels.read_bytes() == before


def test_files_stay_inside_the_folder(server, review_dir, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (review_dir / "escape.txt").symlink_to(outside)
    (review_dir / "inside.json").symlink_to(review_dir / "episodes.json")
    assert request(server, "GET", "/files/episodes.json")[0] == 200  # control: the same file, asked plainly
    assert request(server, "GET", "/files/inside.json")[0] == 200
    for path in ("/files/../episodes.json", "/files/videos/../../secret.txt", "/files/%2e%2e/secret.txt",
                 "/files/..%2fsecret.txt", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/escape.txt"):
        status, _, body = request(server, "GET", path)
        assert status in (403, 404), path
        assert b"not yours" not in body and b"root:" not in body
    assert request(server, "GET", "/files/escape.txt")[0] == 403
    assert request(server, "GET", "/files/videos/nothing.mp4")[0] == 404


def test_files_have_their_types_and_ranges(server, review_dir):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(review_dir / "curve.png")
    Image.new("RGB", (4, 4)).save(review_dir / "roll.gif")
    video = review_dir / "videos/act_a/episode_000000.mp4"
    data = video.read_bytes()
    status, headers, body = request(server, "GET", "/files/videos/act_a/episode_000000.mp4")
    assert (status, headers["content-type"], headers["accept-ranges"], body) == (200, "video/mp4", "bytes", data)
    assert request(server, "GET", "/files/curve.png")[1]["content-type"] == "image/png"
    assert request(server, "GET", "/files/roll.gif")[1]["content-type"] == "image/gif"

    status, headers, body = request(server, "GET", "/files/videos/act_a/episode_000000.mp4",
                                    headers={"Range": "bytes=10-29"})
    assert (status, body, headers["content-range"]) == (206, data[10:30], f"bytes 10-29/{len(data)}")
    status, _, body = request(server, "GET", "/files/videos/act_a/episode_000000.mp4", headers={"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, _, body = request(server, "GET", "/files/videos/act_a/episode_000000.mp4", headers={"Range": "bytes=100-"})
    assert (status, body) == (206, data[100:])
    status, headers, _ = request(server, "GET", "/files/videos/act_a/episode_000000.mp4",
                                 headers={"Range": f"bytes={len(data)}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(data)}")


def test_report_is_remade(server, review_dir, monkeypatch):
    calls = []

    def remake_report(out_dir, labels=None, progress=True):
        calls.append((Path(out_dir), Path(labels)))
        return {"report": str(Path(out_dir) / "report.md"), "plots": ["a.png"],
                "policies": {"act_a": {"successes": 1, "episodes": 2, "success_rate": 0.5, "ci_low": 0.1,
                                       "ci_high": 0.9, "per_episode": [1, 0]}}}

    monkeypatch.setattr(review, "remake_report", remake_report)
    status, _, body = request(server, "POST", "/api/report", {})
    assert status == 200 and calls == [(review_dir, server.labels)]
    assert json.loads(body) == {"report": str(review_dir / "report.md"),
                                "policies": {"act_a": {"successes": 1, "episodes": 2, "success_rate": 0.5,
                                                       "ci_low": 0.1, "ci_high": 0.9}}}


def test_command_errors_name_the_folder(tmp_path, capsys):
    from policies.review import main

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "python -m policies.evaluate recordings=[...] out=" in err
    with pytest.raises(ReviewError, match="episodes.json"):
        make_server(tmp_path, port=0)
    out = make_review_dir(tmp_path)
    (out / "bad.csv").write_text("policy,episode\nact_a,0\n")
    assert main([str(out), f"labels={out / 'bad.csv'}", "port=0"]) == 2
    assert "lacks ['episode_index', 'success']" in capsys.readouterr().err


# ---- the page in a browser ----------------------------------------------------------------------------------
def require_browser():
    """Chromium, chromedriver and Selenium, or a failure saying to run scripts/bootstrap.sh (a skip only
    with TOPBC_SKIP_BROWSER=1)."""
    from tests.fixtures.browser import BrowserMissing, find_browser

    try:
        find_browser()
        import selenium  # noqa: F401
    except (BrowserMissing, ImportError) as exc:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{exc} ({SKIP_ENV}=1)")
        pytest.fail(f"the review page's browser test needs Chromium, chromedriver and selenium: {exc}; or set "
                    f"{SKIP_ENV}=1 to skip this test", pytrace=False)


def test_a_missing_browser_fails_unless_skipped(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="scripts/bootstrap.sh"):
        require_browser()
    monkeypatch.setenv(SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception):
        require_browser()


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module's page tests, or None where there is none (each test then fails,
    or skips, through :func:`require_browser` in its own body: a test failure, not a fixture error)."""
    from tests.fixtures.browser import BrowserMissing, headless_chromium

    try:
        driver = headless_chromium(1200, 900)
    except BrowserMissing:
        yield None
        return
    yield driver
    driver.quit()


def started(chromium):
    """The module's browser; where there is none, this test fails (or skips) here."""
    if chromium is None:
        require_browser()
    return chromium


def wait(driver, condition, timeout=30.0):
    """Poll ``condition`` until it holds; the limit is generous because it is only reached when a test fails
    (the page tests share the 2 cores with whatever else runs, and a page's first clip is encoded on request)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition())


def card(driver, policy: str, episode: int):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'.rollout[data-policy="{policy}"][data-episode="{episode}"]')


def page_labels(driver) -> dict:
    from selenium.webdriver.common.by import By

    return {(c.get_attribute("data-policy"), int(c.get_attribute("data-episode"))): c.get_attribute("data-label")
            for c in driver.find_elements(By.CSS_SELECTOR, ".rollout")}


def open_page(driver, srv) -> None:
    driver.get(srv.url)
    wait(driver, lambda: driver.execute_script("return document.body.dataset.ready === '1'"))


def keys(driver, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(text).perform()


def test_page_labels_rollouts_into_the_file(chromium, server, review_dir):
    browser = started(chromium)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    labels = review_dir / "labels.csv"
    open_page(browser, server)
    cards = browser.find_elements(By.CSS_SELECTOR, ".rollout")
    assert [(c.get_attribute("data-policy"), c.find_element(By.CSS_SELECTOR, ".policy").text) for c in cards] == \
        [("act_a", "act_a"), ("act_a", "act_a"), ("act_b", "act_b"), ("act_b", "act_b")]
    assert page_labels(browser) == {k: "none" for k in [("act_a", 0), ("act_a", 1), ("act_b", 0), ("act_b", 1)]}
    assert len(browser.find_elements(By.CSS_SELECTOR, ".rollout video")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, ".rollout svg.progress polyline")) == 3
    assert "threshold −1.00" in card(browser, "act_a", 1).find_element(By.CSS_SELECTOR, ".judge").text
    # the video is served so that Chromium reads it (ranges): its metadata loads
    wait(browser, lambda: browser.execute_script(
        "const v = document.querySelector('.rollout video'); return v.readyState >= 1 && v.duration > 0"))

    card(browser, "act_a", 0).find_element(By.CSS_SELECTOR, "button.success").click()
    wait(browser, lambda: card(browser, "act_a", 0).get_attribute("data-label") == "success")
    assert read_labels(labels) == {("act_a", 0): Label(True, "")}

    keys(browser, "j")  # the clicked rollout is selected; j moves to the next one
    assert "selected" in card(browser, "act_a", 1).get_attribute("class")
    keys(browser, "f")
    wait(browser, lambda: card(browser, "act_a", 1).get_attribute("data-label") == "failure")
    assert read_labels(labels) == {("act_a", 0): Label(True, ""), ("act_a", 1): Label(False, "")}
    counts = browser.find_element(By.CSS_SELECTOR, '#counts tr[data-policy="act_a"] .unlabelled').text
    assert counts == "0"

    browser.refresh()
    wait(browser, lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    assert page_labels(browser) == {("act_a", 0): "success", ("act_a", 1): "failure",
                                    ("act_b", 0): "none", ("act_b", 1): "none"}
    assert card(browser, "act_a", 0).get_attribute("data-source") == "human"
    assert set(read_labels(labels)) == {("act_a", 0), ("act_a", 1)}  # the other two are not in the file

    card(browser, "act_a", 0).find_element(By.CSS_SELECTOR, "button.clear").click()
    wait(browser, lambda: card(browser, "act_a", 0).get_attribute("data-label") == "none")
    assert read_labels(labels) == {("act_a", 1): Label(False, "")}

    # n: the note field of the selected rollout; keys typed there are text, not shortcuts
    keys(browser, "kn")  # already at the top: k stays
    browser.switch_to.active_element.send_keys("slipped")
    note = card(browser, "act_a", 0).find_element(By.CSS_SELECTOR, "input.note")
    assert note.get_attribute("value") == "slipped"
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # leaves the field; no label yet, nothing written
    keys(browser, "s")
    wait(browser, lambda: card(browser, "act_a", 0).get_attribute("data-label") == "success")
    assert read_labels(labels) == {("act_a", 0): Label(True, "slipped"), ("act_a", 1): Label(False, "")}
    keys(browser, "jn")  # Enter saves a labelled rollout's note at once
    browser.switch_to.active_element.send_keys("late grasp" + Keys.ENTER)
    wait(browser, lambda: read_labels(labels).get(("act_a", 1)) == Label(False, "late grasp"))
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)

    playing = "return !document.querySelector('.rollout.selected video').paused"
    keys(browser, " ")
    wait(browser, lambda: browser.execute_script(playing))
    keys(browser, " ")
    wait(browser, lambda: not browser.execute_script(playing))


def test_page_remakes_the_report(chromium, server, monkeypatch):
    browser = started(chromium)
    from selenium.webdriver.common.by import By

    report = {"policies": {"act_a": {"successes": 1, "episodes": 2, "success_rate": 0.5, "ci_low": 0.09,
                                     "ci_high": 0.91},
                           "act_b": {"successes": 0, "episodes": 2, "success_rate": 0.0, "ci_low": 0.0,
                                     "ci_high": 0.66}}}
    monkeypatch.setattr(review, "remake_report", lambda out_dir, labels=None, progress=True: report)
    open_page(browser, server)
    browser.find_element(By.ID, "report-button").click()
    wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#report .rate"))
    rates = {r.get_attribute("data-policy"): r.find_element(By.CSS_SELECTOR, ".rate").text
             for r in browser.find_elements(By.CSS_SELECTOR, "#report tr[data-policy]")}
    assert rates == {"act_a": "50.0 %", "act_b": "0.0 %"}


def test_labels_file_is_chosen(review_dir, tmp_path):
    from policies.evaluation.review import labels_path

    data = json.loads((review_dir / "episodes.json").read_text())
    assert labels_path(review_dir, data) == review_dir / "labels.csv"  # relative to the folder
    assert labels_path(review_dir, data, tmp_path / "mine.csv") == tmp_path / "mine.csv"
    assert labels_path(review_dir, {"labels_file": str(tmp_path / "abs.json")}) == tmp_path / "abs.json"
    assert labels_path(review_dir, {}) == review_dir / "labels.csv"
    srv = make_server(review_dir, labels=tmp_path / "mine.csv", port=0)
    try:
        assert srv.labels == tmp_path / "mine.csv"
    finally:
        srv.server_close()


EVIL_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="{target}/api/label" enctype="text/plain" target="sink">
<input name='{{"policy": "act_a", "episode_index": 0, "success": false, "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
async function attack() {{
  const body = JSON.stringify({{policy: "act_a", episode_index: 1, success: false}});
  const results = [];
  for (const init of [{{mode: "no-cors", method: "POST", headers: {{"Content-Type": "text/plain"}}, body}},
                      {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}}]) {{
    try {{ const r = await fetch("{target}/api/label", init); results.push(r.type + ":" + r.status); }}
    catch (e) {{ results.push("blocked"); }}
  }}
  document.getElementById("f").submit();
  document.body.dataset.done = results.join(",");
}}
attack();
</script></body></html>"""


def test_a_page_of_another_origin_cannot_write_a_label(chromium, server, review_dir):
    """A page served from another origin (another port) tries a no-cors fetch, a CORS fetch with JSON, and an
    HTML form post: none changes the labels file. The page's own writes are covered above (negative control)."""
    import http.server

    driver = started(chromium)
    target = server.url.rstrip("/")
    page = EVIL_PAGE.format(target=target).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        before = review_dir.joinpath("labels.csv").read_bytes() if review_dir.joinpath("labels.csv").exists() else None
        driver.get(f"http://localhost:{evil.server_address[1]}/")
        wait(driver, lambda: driver.execute_script("return document.body.dataset.done !== undefined"))
        import time

        time.sleep(1.0)  # the form's post, sent last, answered
        after = review_dir.joinpath("labels.csv").read_bytes() if review_dir.joinpath("labels.csv").exists() else None
        assert after == before and read_labels(review_dir / "labels.csv") == {}
        # the CORS fetch was refused by the browser or answered with an error; the no-cors one is opaque
        done = driver.execute_script("return document.body.dataset.done").split(",")
        assert done[0] == "opaque:0" and done[1] in ("blocked", "cors:403")
    finally:
        evil.shutdown()
        evil.server_close()


# ---- blind review ---------------------------------------------------------------------------------------------
def blind_map(review_dir, seed=11):
    from policies.evaluation.blind import BlindMap, blind_seed

    return BlindMap(review.load_episodes(review_dir)["episodes"], blind_seed(review_dir, seed))


@pytest.fixture
def blind_server(review_dir):
    from policies.evaluation.blind import BlindReviewHandler

    srv = make_server(review_dir, port=0, blind=blind_map(review_dir), handler=BlindReviewHandler)
    with serving(srv):
        yield srv


def test_blind_order_is_seeded_and_recorded(review_dir):
    from policies.evaluation.blind import BLIND_FILE, blind_seed

    keys = blind_map(review_dir, 11).keys
    assert sorted(keys) == [(p, e) for p in POLICIES for e in range(2)]
    assert blind_map(review_dir, 11).keys == keys  # reproducible
    assert any(blind_map(review_dir, s).keys != keys for s in range(5))  # the seed shuffles
    blind_map(review_dir, 4)
    assert json.loads((review_dir / BLIND_FILE).read_text())["blind_seed"] == 4  # the last seed given, recorded
    assert blind_seed(review_dir, None) == 4  # reused when none is given: trial numbers survive a restart
    (review_dir / BLIND_FILE).write_text("[]")
    with pytest.raises(ReviewError, match="not a blind review's record"):
        blind_seed(review_dir, None)


def test_blind_server_hides_policies_and_maps_labels_back(blind_server, review_dir):
    keys = blind_server.blind.keys
    status, _, body = request(blind_server, "GET", "/api/episodes")
    assert status == 200 and not any(p.encode() in body for p in POLICIES)
    eps = json.loads(body)["episodes"]
    assert {e["policy"] for e in eps} == {"blind"} and sorted(e["episode_index"] for e in eps) == [0, 1, 2, 3]
    # control: the same request to a plain server names them
    plain = make_server(review_dir, port=0)
    assert json.dumps(plain.episodes()).count("act_a") > 0
    plain.server_close()
    t = next(e["episode_index"] for e in eps if e.get("video"))
    status, _, body = request(blind_server, "POST", "/api/label", {"policy": "blind", "episode_index": t,
                                                                   "success": True, "note": "ok"})
    assert status == 200 and not any(p.encode() in body for p in POLICIES)
    assert read_labels(review_dir / "labels.csv") == {keys[t]: Label(True, "ok")}  # the real policy and episode
    video = next(e["video"] for e in eps if e["episode_index"] == t)
    status, _, data = request(blind_server, "GET", f"/files/{video}")
    real = review.load_episodes(review_dir)["episodes"]
    real_video = next(e["video"] for e in real if (e["policy"], e["episode_index"]) == keys[t])
    assert status == 200 and data == (review_dir / real_video).read_bytes()
    for path in ("/files/episodes.json", "/files/labels.csv", f"/files/{real_video}", "/files/blind/trial_0099.mp4"):
        assert request(blind_server, "GET", path)[0] == 403, path
    status, _, body = request(blind_server, "POST", "/api/report", {})
    assert status == 403 and b"act_" not in body
    status, _, _ = request(blind_server, "POST", "/api/label", {"policy": "blind", "episode_index": 9,
                                                                 "success": True})
    assert status == 400 and set(read_labels(review_dir / "labels.csv")) == {keys[t]}


def test_blind_page_shows_no_policy_and_labels_map_back(chromium, blind_server, review_dir):
    browser = started(chromium)
    from selenium.webdriver.common.by import By

    real = blind_server.blind.keys
    open_page(browser, blind_server)
    html = browser.page_source
    assert not any(p in html for p in POLICIES) and "Rollout review (blind)" in html
    titles = [c.find_element(By.CSS_SELECTOR, "h3").text for c in browser.find_elements(By.CSS_SELECTOR, ".rollout")]
    assert titles == [f"trial {i}" for i in range(4)]
    assert not browser.find_element(By.ID, "report-button").is_displayed()
    wait(browser, lambda: browser.execute_script(
        "const v = document.querySelector('.rollout video'); return v.readyState >= 1 && v.duration > 0"))
    card(browser, "blind", 2).find_element(By.CSS_SELECTOR, "button.failure").click()
    wait(browser, lambda: card(browser, "blind", 2).get_attribute("data-label") == "failure")
    keys(browser, "js")  # the next trial, success
    wait(browser, lambda: card(browser, "blind", 3).get_attribute("data-label") == "success")
    assert read_labels(review_dir / "labels.csv") == {real[2]: Label(False, ""), real[3]: Label(True, "")}
    assert not any(p in browser.page_source for p in POLICIES)  # still nothing after labelling

"""The corpus review (``python -m policies.review ANNOTATION_DIR weighting=...``): the order of the episodes worth
labelling (``next=N``), the server's corpus API and label writes, and the page in a headless Chromium.

A tiny annotation (six short episodes of a synthetic dataset with a camera, a static-control column) is made once;
its weights under ``weighting=episode_quality`` are computed here through training's own function and compared
with what the command prints and the page shows.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from configs import load_config
from data.success_labels import episode_judgements, read_labels, set_label
from pipeline.plots import episode_png_name
from policies.evaluation.corpus import Corpus, clip_name, make_corpus_server
from policies.review import main
from policies.training import episode_weights
from policies.weighting.calibrated import acquisition_order
from tests.fixtures.annotate import make_dataset_with_columns, run_annotate
from tests.fixtures.serving import serving
from tests.test_review import (
    card,
    chromium,  # noqa: F401 - the module's browser fixture
    keys,
    open_page,
    request,
    started,
    wait,
)

WEIGHTING = ["weighting=episode_quality", "debug=tiny_act"]  # tiny_act: a policy of the shards' short windows
CAM = "observation.images.top"


@pytest.fixture(scope="module")
def annotation(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus_review")

    def columns(ep, arrays):
        n = len(arrays["next.reward"])
        return {"static.ramp": np.linspace(0.0, 0.3, n) + 0.05 * ep}

    ds = make_dataset_with_columns(root / "ds", columns, episodes=6, length=[10, 12, 9, 11, 10, 12], fps=4,
                                   image_size=(24, 32), seed=3)
    out = root / "ann"
    assert run_annotate(ds, out, "window.horizon=8", "window.obs_steps=1", "control.static=true",
                        "reward.control_column=static.ramp").ok
    return out


@pytest.fixture(scope="module")
def expected(annotation, tmp_path_factory):
    """The rule's per-episode weights and the manifest's episodes, computed here without the review code."""
    cfg = load_config("train", [f"data.shards={annotation}", f"out={tmp_path_factory.mktemp('run') / 'r'}",
                                *WEIGHTING])
    rule, _, _ = episode_weights(cfg)
    manifest = json.loads((annotation / "manifest.json").read_text())
    assert len(set(rule.values())) > 3, "the weights must differ for the order to mean anything"
    return rule, manifest["episodes"]


@pytest.fixture
def labels(annotation):
    path = annotation / "labels.csv"  # the default labels file of a corpus review
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def corpus(annotation, expected):
    return Corpus(annotation, WEIGHTING)


@pytest.fixture
def server(corpus, labels):
    srv = make_corpus_server(corpus, port=0)
    with serving(srv):
        yield srv


def printed_next(capsys, annotation, *extra) -> list[int]:
    capsys.readouterr()
    assert main([str(annotation), *WEIGHTING, *extra]) == 0
    out = capsys.readouterr().out
    return [int(line) for line in out.split()]


# ---- next=N ---------------------------------------------------------------------------------------------------
def test_next_prints_the_order_and_drops_what_is_labelled(annotation, expected, labels, capsys):
    rule, episodes = expected
    heavy = acquisition_order("heaviest", rule, {}, episodes)
    assert heavy == sorted(rule, key=lambda e: (-rule[e], e))
    assert printed_next(capsys, annotation, "next=4") == heavy[:4]
    assert printed_next(capsys, annotation, "next=10") == heavy  # all six, no more
    assert not labels.exists()  # next= writes nothing
    # negative control: once the first is labelled it is no longer printed, and the rest keep their order
    set_label(labels, "", heavy[0], good=True)
    assert printed_next(capsys, annotation, "next=10") == heavy[1:]


def test_uncertain_order_refits_on_the_labels(annotation, expected, labels, capsys):
    rule, episodes = expected
    heavy = acquisition_order("heaviest", rule, {}, episodes)
    given = {heavy[0]: True, heavy[1]: True, heavy[-1]: False, heavy[-2]: False}  # enough for a fit
    for e, good in given.items():
        set_label(labels, "", e, good=good)
    assert episode_judgements(labels) == given
    want = acquisition_order("uncertain", rule, given, episodes)
    assert sorted(want) == sorted(set(rule) - set(given))
    assert printed_next(capsys, annotation, "order=uncertain", "next=10") == want
    assert printed_next(capsys, annotation, "order=mix", "next=10") == acquisition_order("mix", rule, given, episodes)
    spread = printed_next(capsys, annotation, "order=spread", "next=10")
    assert spread == acquisition_order("spread", rule, given, episodes) == heavy[2:4]  # equally far: heavier first


def test_labels_only_shows_training_on_the_good_ones_alone(annotation, expected, labels):
    rule, _ = expected
    heavy = sorted(rule, key=lambda e: (-rule[e], e))
    before = Corpus(annotation, [*WEIGHTING, "labels_only=true"])  # nothing labelled yet: the rule still orders
    assert before.rule == rule and before.order() == heavy
    set_label(labels, "", heavy[0], good=False)
    none_good = Corpus(annotation, [*WEIGHTING, "labels_only=true"])  # training refused, the page still orders
    assert none_good.training is None and none_good.order() == heavy[1:]
    assert any("marks none of the" in n for n in none_good.notes)
    set_label(labels, "", heavy[1], good=True)
    only = Corpus(annotation, [*WEIGHTING, "labels_only=true"])
    assert only.order() == heavy[2:]
    assert only.training[heavy[1]] > 0 and all(only.training[e] == 0 for e in rule if e != heavy[1])
    usual = Corpus(annotation, WEIGHTING)  # control: without it the unlabelled episodes weigh
    assert all(usual.training[e] > 0 for e in heavy[2:]) and usual.training[heavy[0]] == 0


def test_command_errors_are_one_line(annotation, tmp_path, capsys):
    from tests.test_review import make_review_dir

    capsys.readouterr()
    assert main([str(annotation), *WEIGHTING, "order=sideways", "next=3"]) == 2
    assert "order='sideways'" in capsys.readouterr().err
    assert main([str(annotation), *WEIGHTING, "next=0"]) == 2
    assert "next=0" in capsys.readouterr().err
    assert main([str(annotation), "weighting=nonesuch", "next=3"]) == 2
    assert "nonesuch" in capsys.readouterr().err
    # a rollout folder takes no weighting (it has no manifest.json)
    rollouts = make_review_dir(tmp_path)
    assert main([str(rollouts), "weighting=episode_quality"]) == 2
    err = capsys.readouterr().err
    assert "weighting=episode_quality is for a corpus review" in err and len(err.strip().splitlines()) == 1


def test_a_labels_file_not_ours_is_refused_untouched(annotation, expected, tmp_path):
    rollout_labels = tmp_path / "rollouts.csv"
    set_label(rollout_labels, "act", 0, True)  # a rollout's labels file: policy act
    before = rollout_labels.read_bytes()
    with pytest.raises(Exception, match="policies \\['act'\\]"):
        Corpus(annotation, WEIGHTING, labels=rollout_labels)
    not_labels = tmp_path / "notes.csv"
    not_labels.write_text("name,value\na,1\n")
    with pytest.raises(Exception, match="notes.csv"):
        Corpus(annotation, WEIGHTING, labels=not_labels)
    assert rollout_labels.read_bytes() == before and not_labels.read_text() == "name,value\na,1\n"


# ---- the server -------------------------------------------------------------------------------------------------
def test_api_lists_weights_ranks_curves_and_the_order(server, annotation, expected):
    rule, episodes = expected
    status, _, body = request(server, "GET", "/api/episodes")
    assert status == 200
    data = json.loads(body)
    heavy = acquisition_order("heaviest", rule, {}, episodes)
    assert data["corpus"]["weighting"] == "episode_quality" and data["corpus"]["next"] == heavy
    assert [e["episode_index"] for e in data["episodes"]] == heavy  # nothing labelled: the order is the list
    manifest = {e["episode_index"]: e for e in episodes}
    total = sum(rule.values())
    for rank, ep in enumerate(data["episodes"], start=1):
        i = ep["episode_index"]
        assert ep["weight"] == pytest.approx(rule[i]) and ep["rank"] == rank and ep["next"] == rank - 1
        assert ep["share"] == pytest.approx(rule[i] / total)
        assert ep["curve"]["raw"] == manifest[i]["raw_scores"]
        assert ep["curve"]["control"] == manifest[i]["control_raw_scores"] is not None
        assert ep["curve"]["prefix_ends"] == manifest[i]["prefix_ends"]
        assert ep["label"] is None and ep["videos"] == [{"camera": CAM, "file": clip_name(i, CAM)}]
        assert ep["plot"] == f"plots/{episode_png_name(i)}" and (annotation / ep["plot"]).is_file()
    # a clip is made on its first request, from the source dataset, and kept
    clip = clip_name(heavy[0], CAM)
    assert not (annotation / clip).exists()
    status, headers, video = request(server, "GET", "/files/" + clip)
    assert status == 200 and headers["content-type"] == "video/mp4" and video[4:8] == b"ftyp"
    assert (annotation / clip).read_bytes() == video


def test_label_post_writes_good_and_foreign_writes_are_refused(server, labels, expected):
    rule, episodes = expected
    heavy = acquisition_order("heaviest", rule, {}, episodes)
    first, second = heavy[0], heavy[1]
    port = server.server_address[1]
    # another origin, and a form's content type: refused, nothing written
    status, _, _ = request(server, "POST", "/api/label", {"episode_index": first, "good": True},
                           headers={"Origin": "http://evil.example"})
    assert status == 403
    from tests.test_safety import raw

    body = json.dumps({"episode_index": first, "good": True}).encode()
    status, _ = raw(server, "POST", "/api/label", body, {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)),
                                                        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, _, answer = request(server, "POST", "/api/label", {"episode_index": 99, "good": True})
    assert status == 400 and "episode 99" in json.loads(answer)["error"]
    assert not labels.exists()
    # negative control: the page's own request writes the good column at once
    status, _, answer = request(server, "POST", "/api/label",
                                {"episode_index": first, "good": False, "note": "wanders first"},
                                headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and json.loads(answer)["episode"]["label"] is False
    lab = read_labels(labels, need="any")[("", first)]
    assert (lab.good, lab.success, lab.note) == (False, None, "wanders first")
    assert episode_judgements(labels) == {first: False}
    # what train.py labels= reads, and the listing after it: the labelled one is out of the order, last
    data = json.loads(request(server, "GET", "/api/episodes")[2])
    assert data["corpus"]["next"] == heavy[1:] and data["episodes"][-1]["episode_index"] == first
    assert data["episodes"][-1]["label"] is False and data["episodes"][-1]["trained"] == 0.0
    request(server, "POST", "/api/label", {"episode_index": second, "good": True})
    request(server, "POST", "/api/label", {"episode_index": first, "good": None})  # clear
    assert episode_judgements(labels) == {second: True}


def test_without_the_source_dataset_the_page_says_why(corpus, annotation):
    moved = copy.copy(corpus)
    moved.manifest = copy.deepcopy(corpus.manifest)
    moved.manifest["source"]["root"] = str(annotation / "gone")
    moved._source, moved.clips = None, {}
    videos, why = moved.videos(corpus.episodes[0])
    assert videos == [] and "not on this machine" in why and str(annotation / "gone") in why
    # negative control: with the source where the manifest says, there is a clip per camera
    assert corpus.videos(corpus.episodes[0])[0] == [{"camera": CAM, "file": clip_name(0, CAM)}]


# ---- the page -----------------------------------------------------------------------------------------------------
def page_order(driver) -> list[int]:
    from selenium.webdriver.common.by import By

    return [int(c.get_attribute("data-episode")) for c in driver.find_elements(By.CSS_SELECTOR, ".rollout")
            if c.get_attribute("data-label") == "none"]


def test_page_labels_demonstrations_in_order(chromium, server, labels, expected):  # noqa: F811
    browser = started(chromium)
    from selenium.webdriver.common.by import By

    rule, episodes = expected
    heavy = acquisition_order("heaviest", rule, {}, episodes)
    open_page(browser, server)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Demonstration review"
    # what a label means is said on the page: whether a demonstration is worth copying, not whether it wandered
    assert "good (worth copying)" in browser.find_element(By.ID, "label-keys").text
    assert page_order(browser) == heavy
    assert len(browser.find_elements(By.CSS_SELECTOR, ".rollout video")) == len(heavy)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".rollout svg.progress polyline.control")) == len(heavy)
    top = card(browser, "", heavy[0])
    assert "selected" in top.get_attribute("class")
    assert f"rank 1 of {len(heavy)}" in top.find_element(By.CSS_SELECTOR, ".weight").text
    assert top.find_element(By.CSS_SELECTOR, "a.plotlink").text == "the annotation's plot"
    # the clip is made and served so that Chromium reads it
    wait(browser, lambda: browser.execute_script(
        "const v = document.querySelector('.rollout video'); return v.readyState >= 1 && v.duration > 0"), 30)

    keys(browser, "g")  # the selected (first) one is good
    wait(browser, lambda: episode_judgements(labels) == {heavy[0]: True}, 30)
    wait(browser, lambda: page_order(browser) == heavy[1:], 30)
    # the selection moved on to the one now first in the order: b marks it bad
    wait(browser, lambda: "selected" in card(browser, "", heavy[1]).get_attribute("class"), 30)
    keys(browser, "b")
    wait(browser, lambda: episode_judgements(labels) == {heavy[0]: True, heavy[1]: False}, 30)
    wait(browser, lambda: page_order(browser) == heavy[2:], 30)
    # the page has re-read the order (and re-laid the list out) once the selection moves on: click after that, not
    # into a list being laid out again (a click that lands beside the button writes nothing)
    wait(browser, lambda: "selected" in card(browser, "", heavy[2]).get_attribute("class"), 30)
    # a click on a card's Good button
    card(browser, "", heavy[4]).find_element(By.CSS_SELECTOR, "button.success").click()
    wait(browser, lambda: episode_judgements(labels).get(heavy[4]) is True, 30)
    want = acquisition_order("heaviest", rule, episode_judgements(labels), episodes)
    wait(browser, lambda: page_order(browser) == want, 30)
    assert card(browser, "", heavy[1]).get_attribute("data-label") == "bad"
    # after a reload the page shows the file's labels
    browser.refresh()
    wait(browser, lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
    assert page_order(browser) == want
    assert card(browser, "", heavy[0]).get_attribute("data-label") == "good"

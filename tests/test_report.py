"""Reward-quality report: metrics against independent computations, undefined VOC, rendering, comparison."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from pipeline.progress import voc
from pipeline.report import compare, main, success_detection, voc_summary, write_report
from tests.fixtures.annotate import run_annotate
from tests.fixtures.datasets import make_synthetic_dataset


def test_auroc_and_threshold_match_independent_values():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(-3.0, 1.0, 12), rng.normal(-2.0, 1.0, 9)])
    labels = np.array([0] * 12 + [1] * 9)
    det = success_detection(scores, labels)
    u = mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    assert det["auroc"] == pytest.approx(u / (9 * 12), abs=1e-6)
    # the chosen threshold maximises balanced accuracy over every candidate cut
    bal = [(np.mean(scores[labels == 1] >= c) + np.mean(scores[labels == 0] < c)) / 2 for c in scores]
    assert det["balanced_accuracy"] == pytest.approx(max(bal))
    # log-probs far below zero are not squashed into ties
    det2 = success_detection(scores - 500.0, labels)
    assert det2["auroc"] == pytest.approx(det["auroc"])
    # negative control: flipping the labels gives 1 - AUROC
    assert success_detection(scores, 1 - labels)["auroc"] == pytest.approx(1 - det["auroc"], abs=1e-6)
    assert success_detection(scores, np.ones_like(labels))["auroc"] is None


def test_voc_on_hand_made_curves_and_undefined_counted():
    t = np.arange(10.0)
    curves = [t, t[::-1], np.ones(10), np.array([0.2]), np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9.0])]
    vocs = [voc(c) for c in curves]
    assert vocs[0] == pytest.approx(1.0) and vocs[1] == pytest.approx(-1.0)
    assert vocs[4] == pytest.approx(spearmanr(curves[4], np.arange(10)).statistic)
    s = voc_summary(vocs)
    assert s["undefined"] == 2 and s["defined"] == 3
    assert s["mean"] == pytest.approx(np.mean([vocs[0], vocs[1], vocs[4]]))


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, tiny_vlm_dir):
    root = tmp_path_factory.mktemp("rep")
    ds = make_synthetic_dataset(root / "ds", episodes=3, length=[14, 10, 12], fps=4, image_size=(32, 32),
                                cameras=("top",), seed=2)
    col, top = root / "column", root / "topreward"
    run_annotate(ds, col, "window.horizon=4")
    run_annotate(ds, top, "window.horizon=4", "reward=topreward", f"reward.model={tiny_vlm_dir}", "reward.sample_fps=2.0")
    labels = root / "labels.json"
    labels.write_text(json.dumps({"0": 1, "1": 0, "2": 1}))
    return root, col, top, labels


def test_report_renders_markdown_png_json(annotated):
    root, col, top, labels = annotated
    r = write_report(col, labels=str(labels))
    rep = col / "report"
    for name in ["report.md", "report.json", "voc_hist.png", "roc.png", "worst_episodes.png"]:
        assert (rep / name).stat().st_size > 0, name
    data = json.loads((rep / "report.json").read_text())
    manifest = json.loads((col / "manifest.json").read_text())
    assert data["episodes"] == 3 and data["ground_truth"] == "next.reward"
    # the column reward against its own column: VOC vs ground truth is 1 where defined
    for e in data["per_episode"]:
        assert e["voc_ground_truth"] == pytest.approx(1.0)
        m = next(x for x in manifest["episodes"] if x["episode_index"] == e["episode_index"])
        assert e["voc"] == pytest.approx(m["voc"], abs=1e-9)
        assert e["success_score"] == pytest.approx(np.mean(m["raw_scores"][-3:]))
    scores = np.array([e["success_score"] for e in data["per_episode"]])
    u = mannwhitneyu(scores[[0, 2]], scores[[1]]).statistic
    assert data["auroc"] == pytest.approx(u / 2)
    assert "voc_mean" in data and "voc_undefined" in data and r["voc_mean"] == data["voc_mean"]
    text = (rep / "report.md").read_text()
    assert "`column` reward" in text and "AUROC" in text and "![ROC](roc.png)" in text


TEST_MODEL_WARNING = "tiny random test model"


@pytest.fixture(scope="module")
def neutral_top(annotated, tiny_vlm_dir):
    """The topreward annotation of the same dataset, by the tiny model reached through a neutrally named
    folder (the model's own folder is named tiny_*): nothing below may depend on the folder's name."""
    root = annotated[0]
    model = root / "models" / "qwen3vl"
    model.parent.mkdir()
    model.symlink_to(tiny_vlm_dir, target_is_directory=True)
    assert "tiny" not in str(model).lower()
    out = root / "topreward_neutral"
    run_annotate(root / "ds", out, "window.horizon=4", "reward=topreward", f"reward.model={model}",
                 "reward.sample_fps=2.0")
    return model, out


def test_report_says_which_model_and_compares(annotated, neutral_top):
    root, col, top, labels = annotated
    model, ann = neutral_top
    r = write_report(ann, labels="none")
    assert r["reward"]["type"] == "topreward" and r["auroc"] is None and r["reward"]["model"] == str(model)
    text = (ann / "report" / "report.md").read_text()
    assert f"`topreward` reward, model `{model}` (Qwen3VLForConditionalGeneration)" in text
    # negative control: the column reward's report names its column and no model
    write_report(col, labels="none", out=root / "column_report")
    col_text = (root / "column_report" / "report.md").read_text()
    assert "`column` reward: the dataset's own `next.reward` column" in col_text and "model `" not in col_text
    assert TEST_MODEL_WARNING not in col_text
    out = compare([col, ann], root / "cmp", labels="none")
    assert (root / "cmp" / "compare_curves.png").stat().st_size > 0
    table = (root / "cmp" / "compare.md").read_text()
    assert "| column |" in table and "| topreward |" in table
    assert out["common_episodes"] == [0, 1, 2]


def test_test_model_warning_does_not_depend_on_the_folder_name(neutral_top, tmp_path):
    """The warning comes from the provenance the scorer records from the model's config, not from its path."""
    model, ann = neutral_top
    assert json.loads((ann / "manifest.json").read_text())["reward"]["random_test_model"] is True
    write_report(ann, labels="none")
    assert TEST_MODEL_WARNING in (ann / "report" / "report.md").read_text()
    # negative control: the same annotation recorded as scored by a real model gets no warning
    real = tmp_path / "real"
    shutil.copytree(ann, real, ignore=shutil.ignore_patterns("report"))
    manifest = json.loads((real / "manifest.json").read_text())
    manifest["reward"]["random_test_model"] = False
    (real / "manifest.json").write_text(json.dumps(manifest))
    write_report(real, labels="none")
    assert TEST_MODEL_WARNING not in (real / "report" / "report.md").read_text()


def test_cli_errors(annotated, tmp_path, capsys):
    root, col, top, labels = annotated
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(col), "labels=no.such.column"]) == 2
    assert "available" in capsys.readouterr().err
    assert main([str(col), "labels=none"]) == 0


def test_episodes_table_is_worst_first_by_the_column_it_names(annotated):
    """The table sorts on the column it names and shows it first: undefined values, then ascending."""
    root, col, top, labels = annotated
    r = write_report(top, labels="none")
    text = (top / "report" / "report.md").read_text()
    assert "## Episodes, worst first (by VOC vs ground truth)" in text
    table = text.split("## Episodes, worst first (by VOC vs ground truth)")[1].split("\n\n")[1].splitlines()[2:]
    shown = [row.split("|")[3].strip() for row in table if row.startswith("|")]
    values = {e["episode_index"]: e["voc_ground_truth"] for e in r["per_episode"]}
    expected = sorted(values.values(), key=lambda v: (v is not None, v if v is not None else 0))
    assert len(shown) == len(values) == 3
    assert [None if s == "—" else float(s) for s in shown] == pytest.approx(
        [None if v is None else round(v, 3) for v in expected], abs=1e-3)
    defined = [float(s) for s in shown if s != "—"]
    assert defined == sorted(defined) and len(set(defined)) > 1  # control: the values differ, so order matters


def test_report_command_checks_typed_values(tmp_path, capsys):
    # the value is checked before any annotation folder is read: the folder need not exist
    assert main([str(tmp_path / "absent"), "worst=many"]) == 2
    assert "worst='many' must be an integer" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()


def test_report_reads_the_review_pages_labels_file(annotated, tmp_path):
    """One labels format for the whole project (data/success_labels.py): the CSV a person writes through
    policies.review, for one dataset, gives the report the same labels as the JSON map; a file about several
    policies is refused (their episode indices would collide)."""
    from configs import ConfigError
    from data.success_labels import Label, write_labels
    from pipeline.report import read_success_labels

    root, col, top, labels = annotated
    manifest = json.loads((col / "manifest.json").read_text())
    csv_file = tmp_path / "labels.csv"
    write_labels(csv_file, {("", 0): Label(True), ("", 1): Label(False, "dropped it"), ("", 2): Label(True)})
    assert read_success_labels(str(csv_file), manifest, None)[0] == read_success_labels(str(labels), manifest, None)[0]
    assert read_success_labels(str(csv_file), manifest, None)[0] == {0: 1, 1: 0, 2: 1}
    write_labels(csv_file, {("act", 0): Label(True), ("diffusion", 0): Label(False)})
    with pytest.raises(ConfigError, match="several policies"):
        read_success_labels(str(csv_file), manifest, None)

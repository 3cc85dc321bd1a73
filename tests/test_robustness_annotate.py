"""What a user sees when annotation's inputs are damaged or a run is stopped: one line naming the file and
what to do (the traceback only with --debug), Ctrl-C's resume hint and exit 130, plain paths, no doubled
prefixes, and the report's summary without success labels."""

from __future__ import annotations

import shutil

import pytest

from pipeline.annotate import main
from pipeline.annotate.run import RESUME_HINT, AnnotateResult, summary_text
from tests.fixtures.datasets import make_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", episodes=3, length=5, fps=10,
                                  image_size=(32, 32), cameras=("top",), seed=2)


def _copy(dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    return root


def _cmd(root, out, *extra):
    return [f"dataset.root={root}", f"out={out}", "progress_bar=false", "plots=false", *extra]


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("content, says", [
    ("truncated", "is not valid JSON"),
    ("{}", "lacks ['codebase_version', 'fps', 'features']"),
])
def test_a_damaged_info_json_is_named_in_one_line(dataset, tmp_path, capsys, content, says):
    root = _copy(dataset, tmp_path)
    info = root / "meta" / "info.json"
    info.write_text(info.read_text()[:100] if content == "truncated" else content)
    assert main(_cmd(root, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [line for line in err.splitlines() if str(info) in line], err[-2000:]
    (line,) = _errors(err)
    assert says in line and "restore it" in line
    assert "json/decoder.py" not in err and "DatasetInfo.__init__" not in err  # no traceback of either
    # --debug shows where it came from
    assert main([*_cmd(root, tmp_path / "out"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "SourceError" in err and says in err


@pytest.mark.parametrize("overlap", [True, False])
def test_ctrl_c_says_how_to_resume_and_the_rerun_keeps_finished_episodes(dataset, tmp_path, capsys,
                                                                          monkeypatch, overlap):
    """Ctrl-C lands on the main thread, which runs the reward model (with the stages overlapped too)."""
    import pipeline.annotate.run as run

    original, calls = run.score_episode, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(run, "score_episode", interrupted_on_the_second)
    out = tmp_path / "out"
    # a shard per episode: the first is committed (the episode scored before the Ctrl-C is finished)
    cmd = _cmd(dataset, out, "shards.max_count=1", f"pipeline.overlap={str(overlap).lower()}")
    assert main(cmd) == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == RESUME_HINT
    assert RESUME_HINT == "interrupted; re-run the same command to resume (finished episodes are kept)"
    assert "Traceback" not in captured.err and "KeyboardInterrupt" not in captured.err
    assert not list((out / "shards").glob(".*.tmp")), "no half-written shard is left"
    monkeypatch.setattr(run, "score_episode", original)
    assert main(cmd) == 0
    text = capsys.readouterr().out
    assert "annotated 2 episodes" in text and "; 1 done earlier)" in text


def test_failure_lines_name_each_episode_once(tmp_path):
    result = AnnotateResult(out=tmp_path, failures=[
        {"episode_index": 3, "reason": "episode 3: action has NaN/inf at frames [1] (1 frames)"},
        {"episode_index": 4, "reason": "episode 4 has 1 frame(s): progress needs at least 2 frames"},
        {"episode_index": 5, "reason": "video file /d/file-007.mp4 of episode 5 (top) is missing"}])
    lines = summary_text(result).splitlines()
    assert "  episode 3: action has NaN/inf at frames [1] (1 frames)" in lines
    assert "  episode 4 has 1 frame(s): progress needs at least 2 frames" in lines
    assert "  episode 5: video file /d/file-007.mp4 of episode 5 (top) is missing" in lines
    assert not any("episode 3: episode 3" in line or "episode 4: episode 4" in line for line in lines)


def test_open_errors_print_paths_and_ids_plainly(dataset, tmp_path, capsys):
    root = _copy(dataset, tmp_path)
    shutil.rmtree(root / "meta" / "episodes")
    (root / "meta" / "tasks.parquet").unlink()
    assert main(_cmd(root, tmp_path / "out")) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert f"dataset.root={root}" in line
    assert "PosixPath" not in line and "None" not in line


def test_report_without_labels_says_so(dataset, tmp_path, capsys):
    from pipeline.report import main as report

    out = tmp_path / "out"
    assert main(_cmd(dataset, out)) == 0
    capsys.readouterr()
    assert report([str(out), "labels=none"]) == 0
    text = capsys.readouterr().out
    assert "no success labels" in text and "—" not in text.split("report:")[0]
    assert report([str(tmp_path / "missing")]) == 2  # the shared runner: one error line, exit 2
    assert _errors(capsys.readouterr().err)


def test_a_different_run_is_refused_naming_the_key_that_changed(dataset, tmp_path, capsys):
    """Choosing another reward changes many derived keys; the refusal names the choice itself first."""
    root, out = _copy(dataset, tmp_path), tmp_path / "ann"
    assert main(_cmd(root, out)) == 0
    assert main(_cmd(root, out)) == 0  # control: the same command resumes
    capsys.readouterr()
    assert main(_cmd(root, out, "reward=vlm_errors", "reward.column=next.reward")) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "different run (reward.name: 'column' -> 'vlm_errors'" in err[0]
    assert "more)" in err[0] or err[0].count("->") <= 5


def test_typed_values_are_checked_for_annotate_too(dataset, tmp_path, capsys):
    root = _copy(dataset, tmp_path)
    assert main(_cmd(root, tmp_path / "ann", "window.horizon=ten")) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "window.horizon='ten' must be an integer" in err[0]
    assert not (tmp_path / "ann").exists()  # nothing written before the check


def test_commands_silence_library_noise_but_not_warnings(capsys):
    """Lightning's tips and device lines and the datasets "Map" bars are off once a command runs; its
    warnings still show (negative control)."""
    import logging

    import datasets

    from configs.commands import QUIET_LOGGERS, run_command

    datasets.enable_progress_bars()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    assert run_command(lambda argv: 0, []) == 0
    assert not datasets.is_progress_bar_enabled()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)
    datasets.enable_progress_bars()

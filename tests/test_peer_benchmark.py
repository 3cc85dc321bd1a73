"""benchmarks.peer's agreement part: our one-pass scorer and lerobot's TOPReward port give the same log p(" True")
on the same frames, instruction and resolution; changing the instruction or the frame order breaks it."""

from __future__ import annotations

import pytest

from benchmarks.peer import AGREEMENT_TOL, BACKEND, agreement, lerobot_port
from pipeline.rewards.topreward import TOPRewardScorer
from tests.fixtures.datasets import make_synthetic_dataset


@pytest.fixture(scope="module")
def setup(tiny_vlm_dir, tmp_path_factory):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = make_synthetic_dataset(tmp_path_factory.mktemp("peer") / "ds", episodes=1, length=16, fps=2,
                                  image_size=(32, 32), repo_id="local/peer")
    dataset = LeRobotDataset("local/peer", root=root, video_backend=BACKEND)
    scorer = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=2.0, resolution=32)
    model, encoder = lerobot_port(tiny_vlm_dir)
    return scorer, model, encoder, dataset


def test_same_frames_same_scores(setup):
    scorer, model, encoder, dataset = setup
    a = agreement(scorer, model, encoder, dataset)
    assert a["prefixes"] == 8 and a["resolution_ours"] == a["resolution_lerobot"] == [32, 32]
    assert a["max_abs_diff"] <= AGREEMENT_TOL
    # the scores vary between prefixes, so the agreement is not that of constants
    assert a["logp_true_range"] > 10 * AGREEMENT_TOL


@pytest.mark.parametrize("control", ["instruction", "reversed"])
def test_negative_controls_break_the_agreement(setup, control):
    scorer, model, encoder, dataset = setup
    assert agreement(scorer, model, encoder, dataset, control=control)["max_abs_diff"] > 10 * AGREEMENT_TOL

"""benchmarks.train_step's two command lines configure the same ACT, batch, steps, seed and loader workers:
train.py's (configs.load_config) and lerobot-train's (its own draccus parser), parsed without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.train_step import ACT_SETTINGS, lerobot_argv, ours_argv, parse


def test_both_trainers_get_the_same_settings(tmp_path):
    import draccus
    import lerobot.policies  # noqa: F401 - registers the policy types lerobot-train's parser chooses from
    from lerobot.configs.train import TrainPipelineConfig

    from configs import load_config

    args = parse(["--batch", "8", "--steps", "12", "--warmup", "3", "--workers", "1", "--seed", "3"])
    theirs = draccus.parse(TrainPipelineConfig, args=lerobot_argv(tmp_path / "src", tmp_path / "lr", args))
    ours = load_config("train", ours_argv(tmp_path / "shards", tmp_path / "run", args))
    assert type(theirs.policy).__name__ == "ACTConfig"
    for key, value in ACT_SETTINGS.items():
        assert getattr(theirs.policy, key) == ours.policy[key] == value, key
    # the optimiser is lerobot's ACT preset on both sides; its fields are the same
    for key in ("optimizer_lr", "optimizer_weight_decay", "optimizer_lr_backbone"):
        assert getattr(theirs.policy, key) == pytest.approx(ours.policy[key]), key
    assert (theirs.batch_size, theirs.steps, theirs.num_workers, theirs.seed) == (8, 12, 1, 3)
    assert (ours.data.batch_size, ours.trainer.max_steps, ours.data.num_workers, ours.seed) == (8, 12, 1, 3)
    assert Path(theirs.dataset.root) == tmp_path / "src"
    assert not theirs.save_checkpoint and not theirs.wandb.enable and not theirs.policy.push_to_hub


@pytest.mark.parametrize("argv", [["--warmup", "0"], ["--steps", "5", "--warmup", "5"]])
def test_warmup_must_leave_timed_steps(argv):
    with pytest.raises(SystemExit):
        parse(argv)

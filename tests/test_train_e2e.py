"""Synthetic LeRobot dataset → pipeline.annotate → our loader and train.py, checked against lerobot itself."""

import json

import numpy as np
import pytest
import torch

from configs import load_config
from data.batches import ShardStream, WindowNeeds
from data.manifest import shard_paths
from policies.training import train
from tests.fixtures.bc import tiny_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    from pipeline.annotate import annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    work = tmp_path_factory.mktemp("e2e")
    src = make_synthetic_dataset(work / "source", episodes=3, length=20, fps=10, image_size=(32, 32), seed=0)
    cfg = load_config("annotate", [f"dataset.root={src}", f"out={work / 'shards'}", "progress_bar=false",
                                   "plots=false", "window.obs_steps=2", "window.horizon=8", "image.format=png"])
    assert annotate(cfg).ok
    return src, work / "shards"


def test_loader_windows_equal_lerobot_delta_timestamps(annotated):
    """Diffusion's windows (obs t-1..t, actions t-1..t+6) from our shards equal lerobot's delta_timestamps."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src, shards = annotated
    fps = json.loads((src / "meta" / "info.json").read_text())["fps"]
    o, h = 2, 8
    ds = LeRobotDataset("local/synthetic", root=src, video_backend="pyav", delta_timestamps={
        "observation.state": [k / fps for k in range(1 - o, 1)],
        "action": [k / fps for k in range(1 - o, 1 - o + h)]})
    needs = WindowNeeds(obs_steps=o, future_actions=h - o + 1, past_actions=o - 1, features=("observation.state",))
    it = ShardStream(shard_paths(shards), needs, batch_size=1, steps_per_epoch=1, shuffle_buffer=1).samples()
    checked = set()
    for _ in range(len(ds)):
        ex = next(it)
        ref = ds[int(ex["index"])]
        assert int(ref["episode_index"]) == int(ex["episode_index"]) and int(ref["frame_index"]) == int(ex["frame_index"])
        torch.testing.assert_close(ex["action"], ref["action"])
        assert torch.equal(ex["action_is_pad"], ref["action_is_pad"])
        torch.testing.assert_close(ex["observation.state"], ref["observation.state"])
        checked.add((int(ex["episode_index"]), int(ex["frame_index"])))
    assert checked == {(e, t) for e in range(3) for t in range(20)}  # every sample once, none twice


def test_train_on_annotated_shards_and_export(annotated, tmp_path):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    _, shards = annotated
    summary = train(tiny_cfg(shards, tmp_path / "run", "diffusion", "rabc", steps=4, steps_per_epoch=2))
    cfg = PreTrainedConfig.from_pretrained(summary.export)
    pol = get_policy_class(cfg.type).from_pretrained(summary.export)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(summary.export))
    obs = {"observation.state": torch.zeros(6), "observation.images.top": torch.rand(3, 32, 32)}
    a = post(pol.select_action(pre(obs)))
    assert a.shape == (1, 4) and torch.isfinite(a).all()
    assert np.isfinite(summary.final_loss) and summary.steps == 4
    # the export holds exactly the trained checkpoint's policy weights
    from safetensors.torch import load_file

    from policies.module import BCModule

    trained = BCModule.load_from_checkpoint(summary.checkpoint, map_location="cpu").policy.state_dict()
    exported = load_file(summary.export / "model.safetensors")
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], trained[k]) for k in exported)
    # negative control: a freshly built policy has other weights
    fresh = get_policy_class(cfg.type)(cfg).state_dict()
    assert any(not torch.equal(exported[k], fresh[k]) for k in exported)

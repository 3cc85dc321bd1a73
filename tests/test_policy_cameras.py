"""The cameras a policy sees: the backbone's ImageNet weights (lerobot's default where they can be had, random
initialisation said in one line where they cannot, never named in an export's config), and Diffusion's need for
cameras of one size (data.cameras picks them), and ACT exports of cameras of two sizes."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch

from configs import load_config
from policies.adapters import base
from policies.adapters.base import PolicyConfigError, backbone_weights

NAME = "ResNet18_Weights.IMAGENET1K_V1"


def test_the_default_is_lerobots_imagenet_weights_and_the_overlays_pin_null():
    for policy in ("act", "diffusion"):
        assert load_config("train", [f"policy={policy}"]).policy.pretrained_backbone_weights == NAME
        assert load_config("train", [f"policy={policy}", f"debug=tiny_{policy}"]).policy.pretrained_backbone_weights is None
    demo_train = load_config("demo").train
    assert "policy.pretrained_backbone_weights=null" in [str(o).split("  #")[0] for o in demo_train]


def test_cached_weights_are_used_without_a_download(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.get_weight(NAME).url
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / Path(url).name).write_bytes(b"cached")

    def no_download(*a, **k):
        raise AssertionError("downloaded although cached")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    assert backbone_weights(NAME) == NAME


def test_offline_falls_back_to_random_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    calls = []

    def offline(url, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert backbone_weights(NAME) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random initialisation" in err[0] and NAME in err[0] and len(calls) == 1
    # negative control: where the download works, the name is kept
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **k: {})
    assert backbone_weights(NAME) == NAME and capsys.readouterr().err == ""


def test_a_wrong_name_is_refused_naming_the_key():
    with pytest.raises(PolicyConfigError, match=r"pretrained_backbone_weights='ResNet99'.*null"):
        backbone_weights("ResNet99")


def test_only_policies_with_a_camera_look_for_weights(tmp_path, monkeypatch):
    from data.manifest import load_manifest
    from tests.fixtures.bc import make_adapter
    from tests.fixtures.shards import write_tiny_shards

    looked = []
    monkeypatch.setattr(base, "backbone_weights", lambda name: looked.append(name) or None)
    state = load_manifest(write_tiny_shards(tmp_path / "state", episodes=1, length=20, images=False))
    adapter, *_ = make_adapter("act", state, pretrained_backbone_weights=NAME)
    assert looked == [] and adapter.config.pretrained_backbone_weights == NAME  # no camera: no backbone built
    images = load_manifest(write_tiny_shards(tmp_path / "images", episodes=1, length=20))
    adapter, *_ = make_adapter("act", images, pretrained_backbone_weights=NAME)
    assert looked == [NAME] and adapter.config.pretrained_backbone_weights is None  # negative control


def test_an_export_says_null(tmp_path):
    from policies.training import train
    from tests.fixtures.bc import tiny_cfg
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "shards", episodes=2, length=20)
    summary = train(tiny_cfg(shards, tmp_path / "run", "act", "none", steps=2))
    from policies.module import BCModule

    module = BCModule.load_from_checkpoint(summary.checkpoint, map_location="cpu", device="cpu")
    module.policy.config.pretrained_backbone_weights = NAME  # as a run with ImageNet weights would have it
    module.export(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["pretrained_backbone_weights"] is None
    assert module.policy.config.pretrained_backbone_weights == NAME  # the live module is left as it was


def test_diffusion_with_cameras_of_two_sizes_says_what_to_do(tmp_path):
    from omegaconf import OmegaConf

    from configs import ConfigError
    from data.manifest import load_manifest
    from policies.adapters.base import get_adapter_class
    from policies.training import select_cameras
    from tests.fixtures.shards import write_tiny_shards

    features = dict(load_manifest(write_tiny_shards(tmp_path / "s", episodes=1, length=20))["features"])
    (top,) = [k for k, f in features.items() if f["dtype"] == "video"]
    features["observation.images.wrist"] = {**features[top], "shape": [24, 40, 3]}
    node = OmegaConf.to_container(load_config("train", ["policy=diffusion", "debug=tiny_diffusion"]).policy)
    diffusion = get_adapter_class("diffusion")
    with pytest.raises(PolicyConfigError, match=r"one size.*wrist 24x40x3.*data\.cameras="):
        diffusion(node, features)
    adapter = diffusion(node, select_cameras(features, ["wrist"]))  # one camera: lerobot accepts it
    assert list(adapter.config.image_features) == ["observation.images.wrist"]
    assert select_cameras(features, "all") == features
    with pytest.raises(ConfigError, match=r"'side' is not one camera.*observation.images.wrist"):
        select_cameras(features, ["side"])


def test_act_export_with_cameras_of_two_sizes_says_how_to_feed_them(tmp_path, capsys):
    """ACT takes cameras of different sizes; one lerobot resize step serves one size, so the export keeps none,
    says so in one line and lists each camera's training size in its topbc.json."""
    from omegaconf import OmegaConf

    from data.manifest import load_manifest
    from policies.adapters.base import get_adapter_class
    from policies.module import camera_sizes, deployment_preprocessor
    from tests.fixtures.shards import write_tiny_shards

    manifest = load_manifest(write_tiny_shards(tmp_path / "s", episodes=1, length=20))
    features = dict(manifest["features"])
    (top,) = [k for k, f in features.items() if f["dtype"] == "video"]
    node = OmegaConf.to_container(load_config("train", ["policy=act", "debug=tiny_act"]).policy)
    act = get_adapter_class("act")

    def steps(feats):
        adapter = act(node, feats)
        pre, _ = adapter.make_processors(manifest["stats"])
        return adapter.config, [type(s).__name__ for s in deployment_preprocessor(pre, adapter.config).steps]

    # negative control: cameras of one size get the resize step, and nothing is said
    _, one = steps(features)
    assert "ImageCropResizeProcessorStep" in one and "note:" not in capsys.readouterr().err
    two = {**features, "observation.images.wrist": {**features[top], "shape": [24, 40, 3]}}
    config, kept = steps(two)
    assert "ImageCropResizeProcessorStep" not in kept
    note = capsys.readouterr().err
    assert "different sizes" in note and "observation.images.wrist 24x40" in note and note.count("\n") == 1
    h, w = features[top]["shape"][:2]
    assert camera_sizes(config) == {top: [h, w], "observation.images.wrist": [24, 40]}


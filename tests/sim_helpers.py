"""A tiny randomly initialised ACT export with the demo corpus's features (no training, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data import sim as simlib


def tiny_act_export(out: str | Path, image_size: tuple[int, int] = (32, 32), camera: str | None = simlib.CAMERA,
                    extra_inputs: dict[str, tuple] | None = None, seed: int = 0,
                    environment_state: bool = False) -> Path:
    """``save_pretrained`` of a small ACT and its processors into ``out``, as an export folder looks.

    ``extra_inputs`` adds state inputs (key -> shape) the simulator does not provide (for mismatch tests);
    ``camera=None`` makes a policy without images, ``environment_state`` adds the 39-d environment state.
    """
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(seed)
    h, w = image_size
    inputs = {simlib.STATE_KEY: PolicyFeature(type=FeatureType.STATE, shape=(simlib.STATE_DIM,))}
    if camera is not None:
        inputs[simlib.image_key(camera)] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w))
    if environment_state:
        inputs[simlib.ENV_STATE_KEY] = PolicyFeature(type=FeatureType.ENV, shape=(simlib.ENV_STATE_DIM,))
    for key, shape in (extra_inputs or {}).items():
        inputs[key] = PolicyFeature(type=FeatureType.STATE, shape=tuple(shape))
    cfg = ACTConfig(
        input_features=inputs,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(simlib.ACTION_DIM,))},
        chunk_size=4, n_action_steps=4, dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1,
        n_decoder_layers=1, use_vae=False, pretrained_backbone_weights=None, device="cpu",
        normalization_mapping={"VISUAL": NormalizationMode.MEAN_STD, "STATE": NormalizationMode.MEAN_STD,
                               "ENV": NormalizationMode.MEAN_STD, "ACTION": NormalizationMode.MEAN_STD},
    )
    stats = {key: {"mean": np.zeros(f.shape, np.float32), "std": np.ones(f.shape, np.float32)}
             for key, f in inputs.items() if f.type in (FeatureType.STATE, FeatureType.ENV)}
    if camera is not None:
        stats[simlib.image_key(camera)] = {"mean": np.full((3, 1, 1), 0.5, np.float32),
                                           "std": np.full((3, 1, 1), 0.25, np.float32)}
    stats["action"] = {"mean": np.zeros(simlib.ACTION_DIM, np.float32),
                       "std": np.full(simlib.ACTION_DIM, 0.5, np.float32)}
    policy = ACTPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    out = Path(out)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out

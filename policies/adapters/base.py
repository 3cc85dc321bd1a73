"""Policies the trainer can train: a name → adapter table (lazy imports) and the adapter interface.

An adapter builds the real lerobot policy from the composed ``policy`` node (``configs/policy/<name>.yaml`` lists
what differs from the lerobot config class's defaults and composing fills in the other fields; the class of each
policy is named in :mod:`configs.policies`), says which windows it trains on, shapes a shard batch the way
lerobot's ``forward`` expects it, and computes the PER-SAMPLE loss (lerobot's ``forward`` returns only the batch
mean).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from configs import UserError
from configs.policies import config_class as policy_config_class
from data.batches import WindowNeeds

POLICIES: dict[str, str] = {
    "act": "policies.adapters.act:ACTAdapter",
    "diffusion": "policies.adapters.diffusion:DiffusionAdapter",
}


class PolicyConfigError(UserError, ValueError):
    """An unknown policy name or a bad field of its config."""


def get_adapter_class(name: str) -> type[PolicyAdapter]:
    if name not in POLICIES:
        raise PolicyConfigError(f"unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    module, _, cls = POLICIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


DOWNLOAD_TIMEOUT_S = 20.0  # an offline machine whose connections hang rather than fail gives up after this


def backbone_weights(name: str) -> str | None:
    """``name`` (a torchvision weights enum, lerobot's ``ResNet18_Weights.IMAGENET1K_V1``) when its file is in
    torch's cache or can be downloaded now; else None — random initialisation — said in one line. Where the
    weights cannot be had (offline), training goes on rather than failing inside lerobot's backbone."""
    import socket
    import sys

    import torch
    import torchvision

    try:
        weights = torchvision.models.get_weight(str(name))
    except (ValueError, KeyError, AttributeError) as exc:
        raise PolicyConfigError(f"policy.pretrained_backbone_weights={name!r} is not a torchvision weights name "
                                f"({exc}); e.g. ResNet18_Weights.IMAGENET1K_V1, or null for random initialisation") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return str(name)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
        return str(name)
    except Exception as exc:  # noqa: BLE001 - no network, a proxy, a refused or cut connection: all the same here
        print(f"note: the ImageNet weights {name} for the vision backbone cannot be had ({type(exc).__name__}: "
              f"{str(exc)[:80]}); it starts from random initialisation (policy.pretrained_backbone_weights=null "
              "says so and silences this)", file=sys.stderr)
        return None
    finally:
        socket.setdefaulttimeout(old)


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    return v


class PolicyAdapter:
    """Base of the per-policy adapters (see the module docstring)."""

    name: str = ""
    # tuple-typed lerobot config fields that YAML gives as lists
    tuple_fields: tuple[str, ...] = ()

    @classmethod
    def config_class(cls):
        return policy_config_class(cls.name)

    @classmethod
    def policy_class(cls):
        raise NotImplementedError

    def __init__(self, policy_cfg: dict, features: dict, device: str = "cpu"):
        """``policy_cfg``: fields of the lerobot config (the ``policy`` node, ``name`` is dropped);
        ``features``: the lerobot feature dicts stored in the shards (manifest ``features``)."""
        from lerobot.configs.types import FeatureType
        from lerobot.utils.feature_utils import dataset_to_policy_features

        cfg_cls = self.config_class()
        fields = {f.name for f in dataclasses.fields(cfg_cls)}
        values = {k: v for k, v in dict(policy_cfg).items() if k != "name"}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise PolicyConfigError(f"policy {self.name}: unknown fields {unknown} in configs/policy/{self.name}.yaml; "
                                    f"fields of {cfg_cls.__name__}: {', '.join(sorted(fields))}")
        for k in list(values):
            if isinstance(values[k], list | tuple):
                values[k] = _plain(list(values[k]))
        if "normalization_mapping" in values:
            from lerobot.configs.types import NormalizationMode

            try:
                values["normalization_mapping"] = {str(k): NormalizationMode(str(v))
                                                   for k, v in dict(values["normalization_mapping"]).items()}
            except ValueError as exc:
                raise PolicyConfigError(f"policy {self.name}: normalization_mapping: {exc}; valid modes: "
                                        f"{', '.join(m.value for m in NormalizationMode)}") from exc
        pf = dataset_to_policy_features({k: {**v, "shape": tuple(v["shape"])} for k, v in features.items()})
        values["input_features"] = {k: f for k, f in pf.items() if f.type is not FeatureType.ACTION}
        values["output_features"] = {k: f for k, f in pf.items() if f.type is FeatureType.ACTION}
        if not values["output_features"]:
            raise PolicyConfigError(f"the shards store no action feature (features: {sorted(features)})")
        values["device"] = device
        if values.get("pretrained_backbone_weights") and any(f.type is FeatureType.VISUAL for f in pf.values()):
            values["pretrained_backbone_weights"] = backbone_weights(values["pretrained_backbone_weights"])
        try:
            self.config = cfg_cls(**values)
            self.config.validate_features()
        except (ValueError, NotImplementedError) as exc:
            raise PolicyConfigError(f"policy {self.name}: {exc}") from exc

    # -- what the data must hold
    def needs(self) -> WindowNeeds:
        raise NotImplementedError

    @property
    def observation_features(self) -> tuple[str, ...]:
        return tuple(self.config.input_features)

    def make_policy(self):
        return self.policy_class()(self.config)

    def make_processors(self, stats: dict):
        from lerobot.policies.factory import make_pre_post_processors

        return make_pre_post_processors(self.config, dataset_stats=stats)

    # -- shard batch → lerobot batch (before the preprocessor)
    def policy_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def per_sample_loss(self, policy, batch: dict[str, Tensor]) -> Tensor:
        """One loss per sample of a preprocessed batch, (B,)."""
        raise NotImplementedError

    @staticmethod
    def masked_mean(err: Tensor, is_pad: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample mean of ``err`` (B, H, D) over the valid (not padded) steps; also the valid counts."""
        valid = (~is_pad).unsqueeze(-1).to(err.dtype)
        count = valid.sum(dim=(1, 2)) * err.shape[-1]
        return (err * valid).sum(dim=(1, 2)) / count.clamp_min(1), count


def batch_to(batch: dict[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}

"""The lerobot config class of each policy (``policy=NAME``) and its field defaults as plain data.

``configs/policy/NAME.yaml`` lists only the fields whose value differs from the class's default;
:func:`configs.load_config` fills in every other field with lerobot's default (:func:`with_defaults`), so every
field can be read as ``cfg.policy.FIELD`` and set as ``policy.FIELD=V`` (the composed config is in struct mode:
an override must name an existing key). The policy adapters (``policies/adapters``) build the lerobot config
from the class named here.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

# policy name -> (module, class) of its lerobot config
POLICY_CONFIGS: dict[str, tuple[str, str]] = {
    "act": ("lerobot.policies.act.configuration_act", "ACTConfig"),
    "diffusion": ("lerobot.policies.diffusion.configuration_diffusion", "DiffusionConfig"),
}

# fields never filled in: the adapter sets them from the shards' manifest and the trainer's accelerator. Besides
# these, a field whose default is not plain data (numbers, strings, bools, None, lists, mappings, enums) is left
# out; ACTConfig and DiffusionConfig of lerobot 0.6 have none.
NOT_FILLED = ("input_features", "output_features", "device")

def config_class(name: str) -> type:
    """The lerobot config class of policy ``name``, a key of :data:`POLICY_CONFIGS` (imported on first use)."""
    module, cls = POLICY_CONFIGS[name]
    return getattr(importlib.import_module(module), cls)


class _NotPlain(TypeError):
    pass


def _plain(value: Any) -> Any:
    """``value`` as YAML-representable data: an enum as its ``.value``, a tuple as a list."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    raise _NotPlain(type(value).__name__)


@functools.cache
def _defaults(name: str) -> tuple[tuple[str, Any], ...]:
    out = []
    for f in dataclasses.fields(config_class(name)):
        if not f.init or f.name in NOT_FILLED:
            continue
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        try:
            out.append((f.name, _plain(value)))
        except _NotPlain:
            continue
    return tuple(out)


def lerobot_defaults(name: str) -> dict[str, Any]:
    """Field -> lerobot's default, as plain data, of every field of policy ``name``'s config class that a config
    file may set, in the class's order (a fresh copy)."""
    return {k: _plain(v) for k, v in _defaults(name)}


def keys_at_default(name: str, values: dict) -> list[str]:
    """The keys of ``values`` (a policy YAML's mapping) that hold lerobot's default: a policy YAML lists none."""
    defaults = lerobot_defaults(name)
    return [k for k, v in values.items() if k in defaults and _plain(v) == defaults[k]]


def with_defaults(name: str, node: DictConfig) -> DictConfig:
    """``node`` (a policy YAML) with every field it does not set at lerobot's default, in the class's order; its
    own keys keep their values (interpolations unresolved) and a key that is not a field stays for the adapter to
    name."""
    own = OmegaConf.to_container(node, resolve=False)
    merged = {k: own.pop(k) if k in own else v for k, v in lerobot_defaults(name).items()}
    return OmegaConf.create({**merged, **own})

"""configs/policy/*.yaml list only what differs from lerobot's config defaults; composing fills in the rest."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from configs import CONFIG_DIR, ConfigError, load_config
from configs.policies import (
    NOT_FILLED,
    POLICY_CONFIGS,
    config_class,
    keys_at_default,
    lerobot_defaults,
)


def policy_yaml(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "policy" / f"{name}.yaml"))


@pytest.mark.parametrize("name", sorted(POLICY_CONFIGS))
def test_policy_yaml_lists_only_fields_that_differ_from_lerobot(name):
    node = policy_yaml(name)
    fields = {f.name for f in dataclasses.fields(config_class(name))}
    assert node and set(node) <= fields, sorted(set(node) - fields)
    assert keys_at_default(name, node) == []


def test_a_default_in_a_policy_yaml_is_caught():
    """Negative controls: a value equal to lerobot's default is named, whatever its YAML form (a tuple default
    written as a list, an enum-valued mapping written as strings)."""
    assert keys_at_default("act", {**policy_yaml("act"), "dim_model": 512}) == ["dim_model"]
    assert keys_at_default("act", {"normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD",
                                                             "ACTION": "MEAN_STD"}}) == ["normalization_mapping"]
    assert keys_at_default("diffusion", {"down_dims": [512, 1024, 2048], "horizon": 16}) == ["down_dims"]


def test_a_field_the_yaml_omits_can_be_overridden():
    assert "n_decoder_layers" not in policy_yaml("act")
    assert load_config("train", ["policy=act", "policy.n_decoder_layers=2"]).policy.n_decoder_layers == 2
    assert load_config("train", ["policy=diffusion", "policy.compile_model=true"]).policy.compile_model is True
    with pytest.raises(ConfigError, match="no_such_field"):
        load_config("train", ["policy=act", "policy.no_such_field=1"])


@pytest.mark.parametrize("name", sorted(POLICY_CONFIGS))
def test_composed_policy_holds_lerobot_defaults_for_what_the_yaml_omits(name):
    composed = OmegaConf.to_container(load_config("train", [f"policy={name}"]).policy)
    defaults = lerobot_defaults(name)
    own = policy_yaml(name)
    assert set(composed) == set(defaults) | {"name"} and not set(NOT_FILLED) & set(composed)
    assert {k: v for k, v in composed.items() if k in defaults and k not in own} == \
        {k: v for k, v in defaults.items() if k not in own}
    assert {k: composed[k] for k in own} == own


def test_an_omitted_field_reads_as_lerobot_default():
    assert "kl_weight" not in policy_yaml("act")
    assert load_config("train", ["policy=act"]).policy.kl_weight == 10.0
    assert list(load_config("train", ["policy=diffusion"]).policy.down_dims) == [512, 1024, 2048]


def test_adapters_build_the_config_class_named_in_configs():
    from policies.adapters.base import POLICIES, get_adapter_class

    assert set(POLICIES) == set(POLICY_CONFIGS)
    for name in POLICIES:
        assert get_adapter_class(name).config_class() is config_class(name)

"""Shared fixtures. Models and datasets are built offline; nothing here touches a hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny random dense Qwen3-VL + processor saved to a folder (loaded through from_pretrained)."""
    from tests.fixtures.tiny_vlm import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl"), seed=0)


@pytest.fixture(scope="session")
def tiny_moe_vlm_dir(tmp_path_factory):
    """The same, with a mixture-of-experts language model (Qwen3-VL-MoE)."""
    from tests.fixtures.tiny_vlm import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("tiny_qwen3vl_moe"), seed=1, moe=True)

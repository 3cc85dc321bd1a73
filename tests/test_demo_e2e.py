"""`make demo` at a tiny size, end to end: corpus → annotation → training → export → evaluation → report."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from configs import load_config
from demo import run


@pytest.mark.parametrize("inputs", ["state", "image"])
def test_tiny_demo_end_to_end(tmp_path, inputs):
    cfg = load_config("demo", [f"inputs={inputs}", f"out={tmp_path / 'demo'}", f"corpus_dir={tmp_path / 'corpus'}",
                               "episodes=3", "episode_length=30", "steps=3", "rollouts=2", "max_rollout_steps=10"])
    # a tiny ACT for speed (later overrides of a stage win)
    cfg.train = [*cfg.train, "policy.dim_model=32", "policy.dim_feedforward=64", "policy.n_encoder_layers=1",
                 "policy.chunk_size=8", "policy.n_action_steps=4", "data.batch_size=4", "data.num_workers=0",
                 "data.steps_per_epoch=3", "trainer.progress_bar=false"]
    OmegaConf.resolve(cfg)
    stages = run(cfg)
    out = tmp_path / "demo"
    export = out / "train" / "export"
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (export / name).is_file(), name
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert ev["episodes"] == 2 and 0.0 <= ev["ci_low"] <= ev["success_rate"] <= ev["ci_high"] <= 1.0
    assert ev["policy"] == str(export)
    assert stages["train"]["steps"] == 3
    assert stages["corpus"]["episodes"] == 3 and sum(stages["corpus"]["qualities"].values()) == 3
    # the scripted references ran on the same seeds: the expert solves push-v3 more often than chance allows
    refs = stages["references"]
    assert refs["expert"]["seeds"] == ev["seeds"] == refs["random"]["seeds"]
    report = (out / "report.md").read_text()
    assert "ACT, episode_quality" in report and "expert (reference)" in report and str(export) in report
    assert (out / "annotation" / "report" / "report.json").is_file()
    assert (out / "annotation" / "plots" / "overview.png").is_file()
    # the policy reads what the chosen inputs promise: the camera (as lerobot-eval's env gives it) or the 39-d state
    policy_cfg = json.loads((export / "config.json").read_text())
    has_camera = any(k.startswith("observation.images.") for k in policy_cfg["input_features"])
    assert has_camera == (inputs == "image")
    assert ("observation.environment_state" in policy_cfg["input_features"]) == (inputs == "state")
    assert ("lerobot-eval" in report) == (inputs == "image")

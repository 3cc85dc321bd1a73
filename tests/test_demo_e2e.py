"""`make demo` at a tiny size, end to end: corpus → annotation → training → export → evaluation → report."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from scipy.stats import binomtest

from configs import load_config
from demo import run

# long enough for the scripted expert to solve push-v3 on the evaluation seeds 1000 and 1001 (it needs 64 and
# 45 steps); at 10 steps neither reference succeeds and the random policy's return exceeds the expert's
ROLLOUT_STEPS = 80


@pytest.mark.parametrize("inputs", ["state", "image"])
def test_tiny_demo_end_to_end(tmp_path, inputs):
    cfg = load_config("demo", [f"inputs={inputs}", f"out={tmp_path / 'demo'}", f"corpus_dir={tmp_path / 'corpus'}",
                               "episodes=3", "episode_length=30", "steps=3", "rollouts=2",
                               f"max_rollout_steps={ROLLOUT_STEPS}"])
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
    assert ev["episodes"] == 2 and ev["success_rate"] == ev["successes"] / 2
    assert ev["policy"] == str(export)
    assert stages["train"]["steps"] == 3
    assert stages["corpus"]["episodes"] == 3 and sum(stages["corpus"]["qualities"].values()) == 3
    refs = stages["references"]
    assert refs["expert"]["seeds"] == ev["seeds"] == refs["random"]["seeds"] == [1000, 1001]
    # each interval is the 95% Wilson score interval of its counts, as scipy computes it
    for r in (ev, refs["expert"], refs["random"]):
        ci = binomtest(r["successes"], r["episodes"]).proportion_ci(confidence_level=0.95, method="wilson")
        assert r["successes"] == sum(e["success"] for e in r["per_episode"])
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
        # negative control: the comparison tells Wilson from Clopper-Pearson on the same counts
        exact = binomtest(r["successes"], r["episodes"]).proportion_ci(confidence_level=0.95, method="exact")
        assert (r["ci_low"], r["ci_high"]) != pytest.approx((exact.low, exact.high), abs=1e-3)
    # the scripted references on the same seeds: the expert solves both (first successes at steps 64 and 45),
    # the random policy neither, and the expert's return is an order of magnitude higher (≈ 19 vs ≈ 0.6)
    assert refs["expert"]["successes"] == 2 and refs["random"]["successes"] == 0
    assert refs["expert"]["mean_return"] > 10 * refs["random"]["mean_return"] > 0
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

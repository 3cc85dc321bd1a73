"""pipeline.annotate with reward=topreward on the tiny offline Qwen3-VL: shards carry the scorer's progress."""

from __future__ import annotations

import numpy as np
import pytest

from data.manifest import load_manifest
from data.source import open_dataset
from pipeline.rewards.topreward import TOPRewardScorer
from tests.fixtures.annotate import decoded_samples, run_annotate
from tests.fixtures.datasets import make_synthetic_dataset


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("tr") / "ds", episodes=2, length=[12, 9], fps=4,
                                  image_size=(32, 32), cameras=("top",), seed=5)


def test_topreward_annotation_matches_the_scorer(small_dataset, tiny_vlm_dir, tmp_path):
    out = tmp_path / "out"
    result = run_annotate(small_dataset, out, "reward=topreward", f"reward.model={tiny_vlm_dir}",
                          "reward.sample_fps=2", "window.horizon=3", "window.obs_steps=1", "plots=false")
    assert result.ok and result.model_seconds > 0
    m = load_manifest(out)
    assert m["reward"]["type"] == "topreward" and m["reward"]["model"] == str(tiny_vlm_dir)
    assert m["reward"]["sample_fps"] == 2.0 and "Decide whether" in m["reward"]["prompt"]
    assert m["reward"]["package_version"] and m["reward"]["transformers_version"]
    assert m["reward"]["resolutions_used"] == [[32, 32]]

    scorer = TOPRewardScorer.from_pretrained(tiny_vlm_dir, sample_fps=2.0)
    src = open_dataset(small_dataset)
    samples = decoded_samples(out)
    curves = {}
    for ep, summary in zip(src.episodes(), m["episodes"], strict=True):
        ref = scorer.score(src.decode_frames(ep, "observation.images.top"), src.fps, ep.task)
        np.testing.assert_allclose(summary["raw_scores"], ref.raw, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(summary["prefix_ends"], ref.prefix_ends)
        np.testing.assert_allclose(summary["logp_false"], ref.logp_false, atol=1e-6)
        assert summary["success_score"] == pytest.approx(ref.success_score, abs=1e-6)
        assert summary["resolution"] == list(ref.resolution) and summary["missing_prefixes"] == 0
        assert summary["sampled_indices"] == ref.sampled_indices.tolist()
        p = ref.frame_progress().astype(np.float32)
        assert np.ptp(p) > 0, "prefixes should score differently, or the comparison proves little"
        got = np.array([samples[f"{ep.index:06d}_{t:06d}"]["progress"][0] for t in range(ep.length)])
        np.testing.assert_allclose(got, p, atol=1e-6)
        curves[ep.index] = p
    # negative control: another instruction scores differently
    other = scorer.score(src.decode_frames(src.episodes()[0], "observation.images.top"), src.fps, "open the door")
    assert not np.allclose(other.raw, m["episodes"][0]["raw_scores"], atol=1e-4)

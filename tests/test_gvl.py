"""GVL baseline: robust parsing, seeded shuffling and un-shuffling, NaN accounting, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from configs import load_config
from pipeline.progress import PrefixScores
from pipeline.rewards.gvl import GVLError, GVLScorer, check_prompt, parse_completions

TASK = "push the puck to the goal"


def test_parse_well_formed():
    text = "".join(f"Frame {i}: Frame Description: arm moves, Task Completion Percentage: {10 * i}%\n"
                   for i in range(1, 6))
    p = parse_completions(text, 5)
    np.testing.assert_array_equal(p.values, [10, 20, 30, 40, 50])
    assert (p.nan_count, p.missing, p.malformed, p.out_of_range) == (0, 0, 0, 0)


def test_parse_variants_decimals_and_case():
    text = "frame 2 : task completion percentages = 12.5 %  FRAME 1: Task Completion Percentage:0%"
    p = parse_completions(text, 2)
    np.testing.assert_array_equal(p.values, [0.0, 12.5])


def test_parse_malformed_partial_out_of_range_duplicates():
    text = (
        "Frame 1: Frame Description: start, Task Completion Percentage: 5%\n"
        "Frame 2: Frame Description: the gripper closes, Task Completion Percentage: about half\n"  # malformed
        "Frame 3: Task Completion Percentage: 140%\n"  # out of range
        "Frame 3: Task Completion Percentage: 30%\n"  # duplicate: the first entry counts
        "Frame 4: Task Completion Percentage: -3%\n"  # out of range
        "Frame 9: Task Completion Percentage: 90%\n"  # no such frame
    )  # frame 5 never appears (partial output)
    p = parse_completions(text, 5)
    np.testing.assert_array_equal(np.isnan(p.values), [False, True, True, True, True])
    assert p.values[0] == 5.0
    assert (p.malformed, p.out_of_range, p.duplicates, p.unknown_frames, p.missing) == (1, 2, 1, 1, 1)
    assert p.nan_count == 4


def test_parse_garbage_and_empty():
    for text in ["", "no frames here", "Frame one: 50%"]:
        p = parse_completions(text, 3)
        assert p.nan_count == 3 and p.missing == 3


def gvl_prompt() -> dict[str, str]:
    """The prompt texts reward=gvl passes (configs/reward/gvl.yaml)."""
    return dict(load_config("annotate", ["reward=gvl"]).reward.prompt)


@pytest.fixture(scope="module")
def gvl(tiny_vlm_dir):
    return GVLScorer.from_pretrained(tiny_vlm_dir, sample_fps=2.0, max_frames=6, seed=7,
                                     max_new_tokens_per_frame=6, prompt=gvl_prompt())


def clip(n=40, size=32):
    return np.random.default_rng(1).integers(0, 255, (n, size, size, 3)).astype(np.uint8)


def test_unshuffle_puts_values_back_in_time_order(gvl, monkeypatch):
    idx = gvl.frame_indices(40, 10.0)
    n = len(idx)
    order = gvl.shuffle(n, episode_key=3)
    assert not np.array_equal(order, np.arange(n))  # the frames really are shown out of order
    truth = np.linspace(0, 100, n)  # time-ordered true completion of each sampled frame
    seen = {}

    def fake_generate(text, images, max_new_tokens):
        seen["images"] = images
        return "".join(f"Frame {j + 1}: Task Completion Percentage: {truth[order[j]]:.1f}%\n" for j in range(n))

    monkeypatch.setattr(gvl, "generate", fake_generate)
    res = gvl.score(clip(), 10.0, TASK, episode_key=3)
    np.testing.assert_allclose(res.raw, truth / 100)
    np.testing.assert_array_equal(res.prefix_ends, idx + 1)
    np.testing.assert_allclose(res.progress, truth / 100)
    assert len(seen["images"]) == n + 1  # the 0 % reference first, then the shuffled frames
    # the same seed and episode give the same order; another episode another
    np.testing.assert_array_equal(gvl.shuffle(n, 3), order)
    assert not np.array_equal(gvl.shuffle(n, 4), order)


def test_partial_output_leaves_nan_and_interpolates_the_rest(gvl, monkeypatch):
    n = len(gvl.frame_indices(40, 10.0))
    order = gvl.shuffle(n, 0)
    shown_values = {0: 0.0, 2: 60.0, 3: 100.0}  # shown positions 1, 4, 5.. never answered

    def fake_generate(text, images, max_new_tokens):
        return "".join(f"Frame {j + 1}: Task Completion Percentage: {v}%\n" for j, v in shown_values.items())

    monkeypatch.setattr(gvl, "generate", fake_generate)
    res = gvl.score(clip(), 10.0, TASK)
    assert res.parse.nan_count == n - 3
    assert int(np.isnan(res.raw).sum()) == n - 3
    np.testing.assert_array_equal(np.flatnonzero(~np.isnan(res.raw)), np.sort(order[list(shown_values)]))
    fp = res.frame_progress()
    assert fp.shape == (40,) and np.isfinite(fp).all()
    assert fp.min() == 0.0 and fp.max() == 1.0


def test_tiny_model_generates_and_nothing_is_invented(gvl):
    """The random model writes no usable numbers: the episode fails with the counts, nothing is filled in."""
    with pytest.raises(GVLError, match=r"no usable completion percentage for any of 6 frames \(missing"):
        gvl.score(clip(), 10.0, TASK)


def test_provenance_and_bad_input(gvl, tiny_vlm_dir):
    prov = gvl.provenance
    assert prov["type"] == "gvl" and prov["model"] == str(tiny_vlm_dir) and prov["decoding"] == "greedy"
    assert "{task}" in prov["prompt"]["intro"]
    with pytest.raises(GVLError, match="instruction"):
        gvl.score(clip(), 10.0, "")
    with pytest.raises(GVLError, match="uint8"):
        gvl.score(clip().astype(np.float32), 10.0, TASK)


def test_annotate_with_gvl_records_provenance_nans_and_failures(tiny_vlm_dir, tmp_path, monkeypatch):
    """reward=gvl through pipeline.annotate: the parsed values become the shards' progress; an episode whose
    text has no usable number fails with the reason, the others are kept."""
    from data.manifest import load_manifest
    from tests.fixtures.annotate import decoded_samples, run_annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "ds", episodes=3, length=[16, 12, 14], fps=4, image_size=(32, 32),
                                cameras=("top",), seed=1)

    def fake_generate(self, text, images, max_new_tokens):
        n = len(images) - 1
        if n == 7:  # episode 2 (14 frames sampled at 2 of 4 fps = 7 frames): nothing readable
            return "I cannot tell."
        # answer every frame but the last shown one, with the shown position as the value
        return "".join(f"Frame {j}: Task Completion Percentage: {10 * j}%\n" for j in range(1, n))

    monkeypatch.setattr(GVLScorer, "generate", fake_generate)
    out = tmp_path / "gvl"
    result = run_annotate(ds, out, "window.horizon=4", "reward=gvl", f"reward.model={tiny_vlm_dir}",
                          "reward.seed=3")
    m = load_manifest(out)
    assert m["reward"]["type"] == "gvl" and m["reward"]["model"] == str(tiny_vlm_dir)
    assert m["reward"]["prompt"]["frame"] == "Frame {i}: " and m["reward"]["seed"] == 3
    assert [f["episode_index"] for f in m["failures"]] == [2]
    assert "no usable completion percentage" in m["failures"][0]["reason"]
    # the whole provenance: every setting of configs/reward/gvl.yaml as run (seed=3), the model's class and the
    # package versions, nothing else
    from importlib.metadata import version

    import transformers

    cfg = load_config("annotate", ["reward=gvl"]).reward
    assert m["reward"] == {
        "type": "gvl", "model": str(tiny_vlm_dir), "revision": None,
        "model_class": "Qwen3VLForConditionalGeneration", "random_test_model": True, "prompt": dict(cfg.prompt),
        "sample_fps": cfg.sample_fps, "max_frames": cfg.max_frames, "resolution": cfg.resolution,
        "max_frame_pixels": cfg.max_frame_pixels, "seed": 3, "decoding": "greedy",
        "transformers_version": transformers.__version__, "package_version": version("topbc"),
        "lerobot_version": version("lerobot"),
    }
    assert m["reward"]["prompt"]["intro"].startswith("You are an expert roboticist") and cfg.seed != 3
    # what the call returns: episodes 0 and 1 (16 + 12 frames) annotated, episode 2 failed with the reason
    assert not result.ok and result.episodes_ok == [0, 1] and result.frames == 16 + 12
    assert result.failures == m["failures"] and result.manifest["reward"] == m["reward"]
    samples = decoded_samples(out)
    scorer = GVLScorer.from_pretrained(tiny_vlm_dir, seed=3)
    for e in m["episodes"]:
        n = len(e["prefix_ends"])
        order = scorer.shuffle(n, e["episode_index"])
        assert e["order"] == order.tolist() and e["nan_frames"] == 1
        assert e["order"] != sorted(e["order"])  # the frames really were shown shuffled
        expected = np.full(n, np.nan)
        expected[order[: n - 1]] = np.arange(1, n) * 0.1
        np.testing.assert_allclose(e["raw_scores"], expected, equal_nan=True)
        prog = PrefixScores(e["prefix_ends"], expected, e["length"]).frame_progress()
        for t in range(e["length"]):
            s = samples[f"{e['episode_index']:06d}_{t:06d}"]
            assert s["progress"][0] == pytest.approx(prog[t], abs=1e-6)


def test_prompt_comes_from_the_caller(tiny_vlm_dir):
    """The scorer reads no config: the prompt texts are a parameter (reward=gvl passes gvl.yaml's `prompt`)."""
    from pipeline.rewards.registry import RewardError, build_reward

    assert check_prompt(gvl_prompt()) == gvl_prompt() and set(gvl_prompt()) == {"intro", "reference", "frame"}
    with pytest.raises(GVLError, match=r"missing \['frame'\], unknown \['outro'\]"):
        check_prompt({"intro": "a", "reference": "b", "outro": "c"})
    bare = GVLScorer.from_pretrained(tiny_vlm_dir, max_frames=4)
    assert bare.provenance["prompt"] is None
    with pytest.raises(GVLError, match="no prompt; pass prompt="):
        bare.score(clip(), 10.0, TASK)
    reward = load_config("annotate", ["reward=gvl", f"reward.model={tiny_vlm_dir}",
                                      "reward.prompt.frame='Image {i}: '"])
    assert build_reward(reward.reward).scorer.prompt == {**gvl_prompt(), "frame": "Image {i}: "}
    node = {k: v for k, v in dict(reward.reward).items() if k != "prompt"}
    with pytest.raises(RewardError, match="reward=gvl needs reward.prompt"):
        build_reward(node)

"""labels=: a person's success labels for a few episodes of the shards. Episodes labelled failure weigh 0 under
every rule; training says which episodes the weights lean on and how the rule ranks the labelled ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs import ConfigError
from data.batches import episode_success
from data.manifest import load_manifest
from data.progress_table import fit_progress_table
from policies.run_folder import CheckpointError
from policies.run_weights import heaviest_episodes, sample_weights, weight_notes
from policies.training import build, train
from tests.fixtures.bc import tiny_cfg
from tests.fixtures.shards import NO_RAW_SCORES, write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("label_shards"), episodes=4, length=16, obs_steps=2, horizon=8,
                             images=False)


# tiny shards carry no raw scores: episode quality from the success score and time to the top alone
EPISODE_QUALITY = NO_RAW_SCORES


def _labels(path, rows: dict[int, str]):
    path.write_text("episode_index,success\n" + "".join(f"{e},{v}\n" for e, v in rows.items()))
    return path


def _table_weights(module, shards):
    manifest = load_manifest(shards)
    table = fit_progress_table(shards, module.adapter.needs().future_actions, manifest)
    return table, *sample_weights(module, table, manifest)


@pytest.mark.parametrize("weighting", ["episode_quality", "none"])
def test_episodes_labelled_failure_weigh_zero_under_any_rule(shards, tmp_path, weighting):
    labels = _labels(tmp_path / "labels.csv", {1: "failure", 2: "success"})
    extra = EPISODE_QUALITY if weighting == "episode_quality" else ()
    plain, _, _ = build(tiny_cfg(shards, tmp_path / "a", "act", weighting, *extra, steps=1))
    labelled, _, _ = build(tiny_cfg(shards, tmp_path / "b", "act", weighting, *extra, f"labels={labels}", steps=1))
    table, rule, w = _table_weights(labelled, shards)
    _, _, w_plain = _table_weights(plain, shards)
    out = np.asarray(table.episode) == 1
    assert out.any() and (w[out] == 0).all()
    np.testing.assert_array_equal(w[~out], w_plain[~out])  # the others keep the rule's weights, the success too
    assert (w_plain[out] > 0).all() and (rule[out] > 0).all()  # negative control: the rule alone keeps them
    assert labelled.run_info["left_out"] == [1] and plain.run_info["left_out"] == []
    assert "labels: 1 of 2 labelled episodes are failures and weigh 0 (1)" in labelled.weight_notes


def test_training_names_the_episodes_the_weights_lean_on(shards, tmp_path):
    labels = _labels(tmp_path / "labels.csv", {0: "failure", 1: "success", 3: "success"})
    module, _, manifest = build(tiny_cfg(shards, tmp_path / "r", "act", "episode_quality", *EPISODE_QUALITY,
                                         f"labels={labels}", "calibrate=true", steps=1))
    table, rule, w = _table_weights(module, shards)
    episodes = np.asarray(table.episode)
    per = {e: w[episodes == e].sum() / w.sum() for e in range(4)}
    top = sorted(per, key=per.get, reverse=True)
    check, lean, left, rank, calibrated, sampling = module.weight_notes
    assert check.startswith("reward check (weighting.shrink=above_static) skipped")  # these shards have no control
    assert sampling.startswith("sampling=resample: each sample read is kept with probability w / max w")
    assert "3 labelled (2 good) cannot support a fit" in calibrated  # fewer than MIN_LABELS: the rule weighs
    assert f": {top[0]} ({100 * per[top[0]]:.0f}%), {top[1]} ({100 * per[top[1]]:.0f}%)" in lean
    ess = w.sum() ** 2 / (w * w).sum() / len(w)
    assert f"effective sample size {100 * ess:.0f}% of {len(w)} samples" in lean
    assert "the 4 episodes with the most weight carry 100%" in lean  # 4 episodes, one left out: all of it
    assert left == "labels: 1 of 3 labelled episodes are failures and weigh 0 (0)"
    # the rule's own weights (before the labels) rank 2 successes against 1 failure: by hand
    mean_rule = {e: rule[episodes == e].mean() for e in range(4)}
    expected = np.mean([float(mean_rule[s] > mean_rule[0]) + 0.5 * float(mean_rule[s] == mean_rule[0])
                        for s in (1, 3)])
    assert f"AUROC {expected:.2f}" in rank
    assert set(episode_success(manifest)) == {0, 1, 2, 3}


def test_weight_notes_by_hand():
    episodes = np.repeat([0, 1, 2], 4)
    rule = np.repeat([3.0, 1.0, 0.5], 4)
    w = np.where(episodes == 0, 0.0, rule)  # episode 0 labelled failed
    lean, left, rank = weight_notes(episodes, rule, w, {0: False, 1: True, 2: True}, top=1)
    assert "the 1 episodes with the most weight carry 67% of it: 1 (67%)" in lean  # 4 of 6
    assert "effective sample size 60% of 12 samples" in lean  # 6² / (4·1 + 4·0.25) = 7.2 of 12
    # the rule weighed the labelled failure most: AUROC 0, and the warning that the reward may mislead
    assert "AUROC 0.00" in rank and "may do worse than weighting=none" in rank
    good = weight_notes(episodes, rule, w, {0: True, 2: False})[-1]
    assert "AUROC 1.00" in good and "may do worse" not in good  # negative control
    silent = weight_notes(episodes, rule, np.zeros(12), {})
    assert silent == ["weights: every sample weighs 0, nothing would be learned; check the weighting and labels="]


def test_heaviest_episodes_by_hand():
    episodes = np.array([5, 5, 2, 2, 2, 9])
    w = np.array([1.0, 1.0, 0.5, 0.5, 1.0, 2.0])  # sums: 5 → 2.0, 2 → 2.0, 9 → 2.0 … then one heavier
    assert heaviest_episodes(episodes, w) == [(2, 2.0), (5, 2.0), (9, 2.0)]  # ties: the lower index first
    w[5] = 3.0
    assert heaviest_episodes(episodes, w, 2) == [(9, 3.0), (2, 2.0)]


def test_labels_of_episodes_the_shards_lack_are_refused(shards, tmp_path):
    labels = _labels(tmp_path / "labels.csv", {2: "success", 7: "failure"})
    with pytest.raises(ConfigError, match=r"labels=.*labels episodes \[7\].*holds 4 episodes, 0–3"):
        train(tiny_cfg(shards, tmp_path / "run", "act", "none", f"labels={labels}", steps=1))
    assert not (tmp_path / "run").exists()


def test_resume_with_other_labels_is_refused(shards, tmp_path):
    first = train(tiny_cfg(shards, tmp_path / "a", "act", "none", steps=2))
    labels = _labels(tmp_path / "labels.csv", {3: "failure"})
    with pytest.raises(CheckpointError, match=r"left_out: \[\] \(checkpoint\) vs \[3\].*labels"):
        train(tiny_cfg(shards, tmp_path / "a", "act", "none", f"labels={labels}", f"resume={first.checkpoint}",
                       steps=4))
    # the same (no) labels resume; a checkpoint written before labels= existed has no left_out and resumes too
    ck = torch.load(first.checkpoint, map_location="cpu", weights_only=False)
    del ck["topbc"]["run"]["left_out"]
    torch.save(ck, tmp_path / "old.ckpt")
    assert train(tiny_cfg(shards, tmp_path / "a", "act", "none", f"resume={tmp_path / 'old.ckpt'}",
                          steps=4)).steps == 4


@pytest.mark.parametrize("weighting", ["episode_quality", "none"])
def test_labels_only_trains_on_the_episodes_labelled_good_alone(shards, tmp_path, weighting):
    labels = _labels(tmp_path / "labels.csv", {0: "failure", 2: "success"})  # 1 and 3 unlabelled
    extra = EPISODE_QUALITY if weighting == "episode_quality" else ()
    only, _, _ = build(tiny_cfg(shards, tmp_path / "a", "act", weighting, *extra, f"labels={labels}",
                                "labels_only=true", steps=1))
    usual, _, _ = build(tiny_cfg(shards, tmp_path / "b", "act", weighting, *extra, f"labels={labels}", steps=1))
    table, _, w = _table_weights(only, shards)
    _, _, w_usual = _table_weights(usual, shards)
    episodes = np.asarray(table.episode)
    assert (w[episodes != 2] == 0).all() and (w[episodes == 2] > 0).all()
    np.testing.assert_array_equal(w[episodes == 2], w_usual[episodes == 2])  # the good one keeps its weight
    assert (w_usual[np.isin(episodes, [1, 3])] > 0).all()  # control: without it the unlabelled ones weigh
    assert only.run_info["left_out"] == [0, 1, 3] and usual.run_info["left_out"] == [0]
    assert any("labels_only: training on the 1 episodes labelled good alone (2)" in n for n in only.weight_notes)


def test_labels_only_needs_labels_and_a_good_one(shards, tmp_path):
    with pytest.raises(ConfigError, match="labels_only=true .* pass labels=FILE"):
        train(tiny_cfg(shards, tmp_path / "r", "act", "none", "labels_only=true", steps=1))
    labels = _labels(tmp_path / "labels.csv", {0: "failure", 1: "failure"})
    with pytest.raises(ConfigError, match="labels_only=true and labels=.* marks none of the 4 episodes good"):
        train(tiny_cfg(shards, tmp_path / "r", "act", "none", f"labels={labels}", "labels_only=true", steps=1))
    assert not (tmp_path / "r").exists()


def _batch_episodes(dm, samples: int = 120) -> set[int]:
    it = dm.stream().samples()  # the stream batches are cut from: two passes over the 64 samples
    return {int(next(it)["episode_index"]) for _ in range(samples)}


def test_episodes_left_out_are_not_read_so_every_sample_of_a_batch_trains(shards, tmp_path):
    labels = _labels(tmp_path / "labels.csv", {0: "failure", 2: "success"})
    module, dm, _ = build(tiny_cfg(shards, tmp_path / "a", "act", "none", f"labels={labels}", "labels_only=true",
                                   steps=1))
    assert _batch_episodes(dm) == {2}  # 1 and 3 unlabelled, 0 bad: none of them in a batch
    batch = next(iter(dm.stream()))
    assert (module.weights(batch) > 0).all()
    module, dm, _ = build(tiny_cfg(shards, tmp_path / "b", "act", "none", f"labels={labels}", steps=1))
    assert _batch_episodes(dm) == {1, 2, 3}  # only the one labelled bad is skipped without labels_only
    # control: skip_left_out=false with loss weights reads them all; those left out weigh 0 in the loss
    module, dm, _ = build(tiny_cfg(shards, tmp_path / "c", "act", "none", f"labels={labels}", "labels_only=true",
                                   "data.skip_left_out=false", "data.sampling=weights", steps=1))
    assert _batch_episodes(dm) == {0, 1, 2, 3}
    batch = next(iter(dm.stream()))
    w = module.weights(batch)
    assert (w[batch["episode_index"] != 2] == 0).all() and (w[batch["episode_index"] == 2] > 0).all()

"""The target check and the configs of experiments/rabc.py, on hand-built evaluation counts."""

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import rabc as exp
from policies.evaluation import wilson_interval


def ev(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "success_rate": k / n, "ci_low": lo, "ci_high": hi}


def test_target_check_ratio_interval_and_best():
    evals = {"none": [ev(30, 100), ev(10, 100)],          # plain BC 20% [15, 26]
             "expert_only": [ev(95, 100), ev(95, 100)],   # 95%
             "good": [ev(90, 100), ev(88, 100)],          # 89% = 93.7% of expert-only, far above plain BC
             "close": [ev(28, 100), ev(26, 100)]}         # 27%: intervals overlap plain BC's
    lines, best = exp.target_check(evals)
    assert best == {"variant": "good", "ratio": pytest.approx(0.89 / 0.95), "beats_plain_bc": True,
                    "meets_target": True}
    assert len(lines) == 2 and lines[0].startswith("- `good`: 89%") and "94% of expert-only" in lines[0]
    assert "`close`" in lines[1] and "does not beat plain BC" in lines[1]
    # negative controls: below 90% of expert-only, or inside plain BC's interval, does not meet the target
    _, b = exp.target_check({**evals, "good": [ev(84, 100), ev(84, 100)]})
    assert b["variant"] == "good" and b["beats_plain_bc"] and not b["meets_target"]
    _, b = exp.target_check({"none": [ev(80, 100)], "expert_only": [ev(90, 100)], "good": [ev(86, 100)]})
    assert b["ratio"] >= 0.9 and not b["beats_plain_bc"] and not b["meets_target"]
    assert exp.target_check({"good": [ev(1, 2)]}) == (["(plain BC or expert-only BC has no finished run yet)"], {})


def test_report_pools_tasks(tmp_path):
    def task(none, expert, rule):
        return {"setup": {}, "command": "x", "corpus": {}, "corpus_successes": 0, "variants": {
            name: {"runs": [{"seed": 0, "train_seconds": 1.0, "eval": e}], "weights": {}}
            for name, e in (("none", none), ("expert_only", expert), ("rule", rule))}}
    for name, args in {"a-v3": (ev(10, 50), ev(45, 50), ev(44, 50)), "b-v3": (ev(20, 50), ev(40, 50), ev(30, 50))}.items():
        (tmp_path / name).mkdir()
        res = task(*args)
        if name == "b-v3":  # a rule run on one task only: shown, never pooled against references of both
            res["variants"]["only_b"] = {"runs": [{"seed": 0, "train_seconds": 1.0, "eval": ev(50, 50)}]}
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    text = exp.report(tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    assert (tmp_path / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![success" in text
    assert "## a-v3" in text and "## b-v3" in text and "## All tasks" in text
    # pooled over tasks: rule 74/100 vs expert-only 85/100 = 87% (misses the 90% target), plain BC 30/100
    assert "| rule | 74% [65, 82] | 88% [76, 94] | 60% [46, 72] |" in text
    pooled_part = text.split("## All tasks")[1]
    assert "`rule`: 74% [65, 82] = 87% of expert-only BC" in pooled_part
    assert "| only_b | (not run on every task) |  | 100% [93, 100] |" in pooled_part
    assert "`only_b`" not in pooled_part and "`only_b`" in text.split("## All tasks")[0]
    with pytest.raises(FileNotFoundError, match="no .*results.json"):
        exp.report(tmp_path / "empty")


def test_experiment_sizes_come_from_the_overlays():
    """The sizes live in configs/experiment/rabc_*.yaml; CLI sizes override them, and derived ones."""
    import argparse

    none = argparse.Namespace()
    setup = exp.experiment_setup("push-v3", none)
    assert setup["mix"] == {"expert": 0.4, "noisy": 0.1, "detour": 0.2, "failure": 0.3}
    assert setup["detour_kinds"] == ["wander", "stall", "wrong_goal"]
    assert (setup["episodes"], setup["episode_length"], setup["steps"], setup["chunk"], setup["rollouts"],
            setup["max_rollout_steps"], setup["eval_seed"]) == (50, 150, 800, 10, 67, 150, 1000)
    train = exp.train_config(exp.policy_overrides(none))
    assert train.data.steps_per_epoch == 800 and train.policy.optimizer_lr_backbone == 3e-4
    given = argparse.Namespace(dim_model=64, steps=2000, lr=1e-3, chunk=16, rollouts=5, episodes=7)
    train = exp.train_config(exp.policy_overrides(given))
    assert (train.policy.dim_model, train.policy.dim_feedforward, train.policy.n_heads) == (64, 256, 2)
    assert (train.trainer.max_steps, train.data.steps_per_epoch) == (2000, 2000)
    policy = train.policy
    assert (policy.optimizer_lr, policy.optimizer_lr_backbone, policy.chunk_size) == (1e-3, 1e-3, 16)
    assert exp.stage_config("evaluate", exp.evaluate_overrides(given)).episodes == 5
    corpus = exp.stage_config("corpus", ["task=push-v3", *exp.corpus_overrides(given)])
    assert corpus.episodes == 7 and corpus.camera is None and corpus.environment_state is True


def test_report_per_reward_profile(tmp_path):
    """Simulated profiles: their runs live under TASK/reward_<profile>/, borrow the task's reward-free
    references, and are pooled per rule × reward in one table."""
    def res(variants):
        return {"setup": {}, "commands": ["x"], "corpus": {}, "corpus_successes": 0, "variants": {
            n: {"runs": [{"seed": 0, "train_seconds": 1.0, "eval": e}], "weights": {}} for n, e in variants.items()}}
    for task, (none, expert, col, prof) in {"a-v3": (ev(10, 50), ev(45, 50), ev(40, 50), ev(20, 50)),
                                            "b-v3": (ev(20, 50), ev(40, 50), ev(30, 50), ev(25, 50))}.items():
        (tmp_path / task / "reward_qwen3vl_8b_like").mkdir(parents=True)
        (tmp_path / task / "results.json").write_text(json.dumps(res(
            {"none": none, "expert_only": expert, "rule": col})))
        (tmp_path / task / "reward_qwen3vl_8b_like" / "results.json").write_text(json.dumps(res({"rule": prof})))
    by = exp.load_results(tmp_path)
    assert list(by) == ["column", "qwen3vl_8b_like"]
    assert list(by["qwen3vl_8b_like"]["a-v3"]["variants"]) == ["none", "expert_only", "rule"]  # references first
    text = exp.report(tmp_path)
    assert "## a-v3 — reward `qwen3vl_8b_like` (simulated VLM errors)" in text
    summary = text.split("## Success per rule and reward")[1]
    # rule: 70/100 on the column, 45/100 on the profile; plain BC borrowed by both: 30/100
    assert "| rule | 70% [60, 78] | 45% [36, 55] |" in summary
    assert "| none | 30% [22, 40] | 30% [22, 40] |" in summary
    assert "SIMULATED" in summary and (tmp_path / "success_vs_reward.png").stat().st_size > 0
    # the profile's target check sees the borrowed references: 45% is 53% of expert-only (85%)
    assert "`rule`: 45% [36, 55] = 53% of expert-only BC" in text.split("## All tasks — reward")[1]

    # another policy's runs (TASK/policy_diffusion/...) get their own summary: never pooled or plotted with ACT's
    (tmp_path / "a-v3" / "policy_diffusion" / "reward_oracle").mkdir(parents=True)
    (tmp_path / "a-v3" / "policy_diffusion" / "results.json").write_text(json.dumps(res(
        {"none": ev(5, 50), "expert_only": ev(50, 50)})))
    (tmp_path / "a-v3" / "policy_diffusion" / "reward_oracle" / "results.json").write_text(json.dumps(res(
        {"rule": ev(35, 50)})))
    text = exp.report(tmp_path)
    act, diffusion = text.split("## Success per rule and reward")[1:]
    assert "diffusion" not in act and "| rule | 70% [60, 78] | 45% [36, 55] |" in act
    assert diffusion.startswith(" — diffusion") and "| rule |  | 70% [56, 81] |" in diffusion
    assert "| none | 10% [4, 21] | 10% [4, 21] |" in diffusion
    assert (tmp_path / "success_vs_reward_diffusion.png").stat().st_size > 0


def test_recommended_is_the_demos_rule_and_profiles_annotate_with_the_control():
    from omegaconf import OmegaConf

    import configs
    from configs import load_config

    rule = load_config("demo").weighting
    recommended = exp.variant_overrides("recommended")
    # the rule and every parameter of its YAML, so that a changed parameter restarts the recommended runs
    assert recommended[0] == f"weighting={rule}"
    yaml = OmegaConf.load(Path(configs.__file__).parent / "weighting" / f"{rule}.yaml")
    assert recommended[1:] == [f"weighting.{k}={v}" for k, v in yaml.items()] and len(recommended) > 5
    assert "weighting.time_scale=rise" in recommended and "weighting.beta=0.25" in recommended  # Decision 11
    assert exp.variant_overrides("recommended_reviewed")[:-3] == recommended
    # the labelled variants that ran before data.skip_left_out keep reading their left-out episodes; the new don't
    assert exp.variant_overrides("labels_only_g15")[-1] == "data.skip_left_out=false"
    assert not any(o.startswith("data.skip_left_out") for o in exp.variant_overrides("labels_only_g15_full"))
    # the rules that ran before the default changed keep the episode's scale
    assert "weighting.time_scale=episode" in exp.variant_overrides("episode_quality_sharp")
    assert exp.variant_overrides("filter") == ["weighting=filter"]
    assert exp.reward_overrides("column", "next.reward") == ["reward=column", "reward.column=next.reward"]
    assert exp.reward_overrides("weak", "next.reward") == ["reward=vlm_errors", "reward.profile=weak",
                                                            "control.static=true"]
    assert exp.main(["--reward", "nonsense", "--tasks", "push-v3"]) == 2
    # the second simulator: its own folder name and the simulator key
    assert exp.reward_key("weak", "rank") == "rank_weak" and exp.reward_key("weak") == "weak"
    assert exp.reward_key("column", "rank") == "column"
    assert exp.reward_overrides("rank_weak", "next.reward") == ["reward=vlm_errors", "reward.profile=weak",
                                                                 "reward.simulator=rank", "control.static=true"]


def test_auroc_is_mann_whitney():
    from scipy.stats import mannwhitneyu

    from pipeline.report.metrics import auroc

    rng = np.random.default_rng(0)
    score, positive = np.round(rng.normal(size=40), 1), rng.random(40) < 0.4  # rounded: ties occur
    u = mannwhitneyu(score[positive], score[~positive]).statistic
    assert auroc(score, positive) == pytest.approx(u / (positive.sum() * (~positive).sum()))
    assert auroc([1, 2, 3, 4], [False, False, True, True]) == 1.0 and auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0


def test_diffusion_block_has_its_own_setup_window_and_folder(tmp_path):
    import argparse

    act, diffusion = argparse.Namespace(steps=2000), argparse.Namespace(policy="diffusion", steps=2000)
    cfg = exp.train_config(exp.policy_overrides(diffusion))
    assert (cfg.policy.name, list(cfg.policy.down_dims), cfg.trainer.max_steps) == ("diffusion", [64, 128, 256], 2000)
    assert exp.train_config(exp.policy_overrides(argparse.Namespace(policy="diffusion"))).trainer.max_steps == 4000
    assert cfg.policy.normalization_mapping.ENV == "MEAN_STD"  # as ACT's; lerobot's default leaves it raw
    assert exp.annotation_window(cfg) == (1, 16)  # n_obs_steps, horizon - n_obs_steps + 1
    assert exp.annotation_window(exp.train_config(exp.policy_overrides(act))) == (1, 10)
    setup = exp.experiment_setup("push-v3", diffusion, "oracle")
    assert setup["policy"] == "diffusion" and "policy" not in exp.experiment_setup("push-v3", act)
    assert exp.reward_dir(tmp_path, "oracle", "diffusion") == tmp_path / "policy_diffusion" / "reward_oracle"
    assert exp.reward_dir(tmp_path, "column") == tmp_path
    # what the runs depend on includes the scheduler (another one: the runs start over) and any --set override
    assert (setup["noise_scheduler"], setup["inference_steps"], setup["warmup"]) == ("DDIM", 10, 500)
    tuned = argparse.Namespace(policy="diffusion", train_set=["policy.num_inference_steps=20"])
    assert exp.experiment_setup("push-v3", tuned)["inference_steps"] == 20
    assert exp.experiment_setup("push-v3", tuned)["set"] == ["policy.num_inference_steps=20"]
    assert "set" not in exp.experiment_setup("push-v3", act)


def test_the_diffusion_block_resolves_to_ddim_with_ten_steps():
    """The policy the Diffusion block builds samples with DDIM in 10 steps; configs/policy/diffusion.yaml alone
    (lerobot's defaults) builds DDPM with all 100 training timesteps (the negative control)."""
    import argparse

    from diffusers import DDIMScheduler, DDPMScheduler
    from omegaconf import OmegaConf

    from configs import load_config
    from policies.adapters.base import get_adapter_class

    features = {k: {"dtype": "float32", "shape": [n], "names": None} for k, n in
                (("observation.state", 4), ("observation.environment_state", 39), ("action", 4))}
    block = exp.train_config(exp.policy_overrides(argparse.Namespace(policy="diffusion"))).policy
    # the default's scheduler at the block's U-Net size (lerobot's default U-Net has ~270M parameters)
    default = load_config("train", ["policy=diffusion", "policy.pretrained_backbone_weights=null",
                                    f"policy.down_dims=[{','.join(map(str, block.down_dims))}]"]).policy
    built = {}
    for name, node in (("block", block), ("default", default)):
        adapter = get_adapter_class("diffusion")(OmegaConf.to_container(node, resolve=True), features)
        model = adapter.make_policy().diffusion
        built[name] = (type(model.noise_scheduler), model.num_inference_steps,
                       model.noise_scheduler.config.num_train_timesteps)
    assert built == {"block": (DDIMScheduler, 10, 100), "default": (DDPMScheduler, 100, 100)}
    assert list(block.down_dims) == [64, 128, 256] and (block.horizon, block.n_action_steps, block.n_obs_steps) == (16, 4, 1)


def test_the_simulated_review_labels_the_heaviest_episodes(tmp_path, monkeypatch):
    """recommended_reviewed: a SIMULATED person labels the REVIEWED episodes the recommended rule weighs most,
    with the corpus's own success; training then leaves the failures among them out."""
    import argparse

    from data.success_labels import episode_labels
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "s", episodes=4, length=16, obs_steps=2, horizon=10, images=False)
    manifest = json.loads((shards / "manifest.json").read_text())
    for e in manifest["episodes"]:  # the recommended rule reads raw scores (scale=dataset): give it some
        e["raw_scores"] = list(np.linspace(-5.0, e["success_score"], e["length"]))
    (shards / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(exp, "REVIEWED", 2)
    doc = {"episodes": [{"episode_index": e, "success": e != 1} for e in range(4)]}
    path = exp.reviewed_labels(shards, argparse.Namespace(), doc, tmp_path / "reviewed.csv")
    cfg = exp.train_config([f"data.shards={shards}", *exp.policy_overrides(argparse.Namespace()),
                            f"weighting={exp.recommended_rule()}", f"out={tmp_path / 'fit'}"])
    table, w = exp.sample_weights(cfg)
    per = {e: w[np.asarray(table.episode) == e].sum() for e in range(4)}
    heaviest = sorted(per, key=per.get, reverse=True)
    assert per[heaviest[1]] > per[heaviest[2]]  # a strict order: the two heaviest are well defined
    assert episode_labels(path) == {e: e != 1 for e in heaviest[:2]}
    assert exp.variant_overrides("recommended_reviewed") == [*exp.recommended_overrides(), "labels=REVIEWED",
                                                             "calibrate=false", exp.READ_LEFT_OUT]
    assert "recommended_reviewed" not in exp.DEFAULT_VARIANTS


def test_the_simulated_person_labels_in_the_acquisition_order(tmp_path):
    """labels_k*: a SIMULATED person labels K episodes good (expert, noisy) or bad, each the first of the
    acquisition order given the labels so far; heaviest = the recommended rule's heaviest episodes."""
    import argparse

    from data.success_labels import episode_judgements
    from policies.training import episode_weights
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "s", episodes=6, length=16, obs_steps=2, horizon=10, images=False)
    manifest = json.loads((shards / "manifest.json").read_text())
    for i, e in enumerate(manifest["episodes"]):  # distinct raw curves, so the rule's weights differ
        e["success_score"] = -1.0 - 0.5 * i
        e["raw_scores"] = list(np.linspace(-5.0, e["success_score"], e["length"]))
    (shards / "manifest.json").write_text(json.dumps(manifest))
    qualities = ["expert", "failure", "noisy", "detour", "expert", "failure"]
    doc = {"episodes": [{"episode_index": e, "quality": q} for e, q in enumerate(qualities)]}
    args = argparse.Namespace()
    path = exp.person_labels(shards, args, doc, tmp_path / "p.csv", 3, "heaviest")
    cfg = exp.train_config([f"data.shards={shards}", *exp.policy_overrides(args), *exp.recommended_overrides(),
                            f"out={tmp_path / 'fit'}"])
    heavy, _, _ = episode_weights(cfg)
    top3 = sorted(heavy, key=lambda e: (-heavy[e], e))[:3]
    assert len(set(heavy.values())) == 6  # a strict order
    assert episode_judgements(path) == {e: qualities[e] in ("expert", "noisy") for e in top3}
    assert "SIMULATED person" in path.read_text()
    assert exp.labels_given("labels_k10_mix") == "10" and exp.labels_given("recommended") == "0"
    assert exp.variant_overrides("labels_k5")[-2:] == ["labels=PERSON:5:heaviest", exp.READ_LEFT_OUT]
    # gN: labelling in the same order stops as soon as N of the labels are good
    ranked = sorted(heavy, key=lambda e: (-heavy[e], e))
    good = [qualities[e] in ("expert", "noisy") for e in ranked]
    stop = [i for i in range(6) if sum(good[:i + 1]) == 2][0] + 1
    until = episode_judgements(exp.person_labels(shards, args, doc, tmp_path / "g.csv", "g2", "heaviest"))
    assert until == {e: qualities[e] in ("expert", "noisy") for e in ranked[:stop]} and sum(until.values()) == 2
    assert stop > 2  # the heaviest two are not both good: the person labels on (control on the stopping rule)
    assert exp.labels_given("labels_only_g15") == "until 15 good"
    assert exp.variant_overrides("labels_only_g15_full")[-2:] == ["labels=PERSON:g15:heaviest", "labels_only=true"]


def test_the_simulated_person_labels_the_heaviest_of_the_variants_own_rule(tmp_path, monkeypatch):
    """labels=PERSON:K:ORDER:own: heaviness by the variant's own rule (what a user of that rule sees first on the
    review page), the file keyed by the variant so that another rule's labels of the same K and order are not
    reused; control: without :own the recommended rule orders, and here the two orders differ."""
    import argparse

    from data.success_labels import episode_judgements
    from policies.training import episode_weights
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "s", episodes=6, length=16, obs_steps=2, horizon=10, images=False)
    manifest = json.loads((shards / "manifest.json").read_text())
    for i, e in enumerate(manifest["episodes"]):  # the later the episode, the higher its success score
        e["success_score"] = -4.0 + 0.5 * i
        e["raw_scores"] = list(np.linspace(-5.0, e["success_score"], e["length"]))
    (shards / "manifest.json").write_text(json.dumps(manifest))
    qualities = ["expert", "failure", "noisy", "detour", "expert", "failure"]
    doc = {"episodes": [{"episode_index": e, "quality": q} for e, q in enumerate(qualities)]}
    args = argparse.Namespace()
    uniform = ["weighting=none"]  # every episode alike: the heaviest are the first by index
    monkeypatch.setitem(exp.VARIANTS, "t_own", ([*uniform, "labels=PERSON:2:heaviest:own", "calibrate=false"],
                                                 "all"))
    k, order, rule, file = exp.person_spec("labels=PERSON:2:heaviest:own", "t_own", tmp_path)
    assert (k, order, rule, file) == ("2", "heaviest", uniform, tmp_path / "person_k2_heaviest_t_own.csv")
    own = episode_judgements(exp.person_labels(shards, args, doc, file, k, order, rule))

    def top2(overrides):
        cfg = exp.train_config([f"data.shards={shards}", *exp.policy_overrides(args), *overrides,
                                f"out={tmp_path / 'fit'}"])
        heavy, _, _ = episode_weights(cfg)
        return sorted(heavy, key=lambda e: (-heavy[e], e))[:2]

    assert set(own) == set(top2(uniform)) == {0, 1}
    _, _, none, legacy = exp.person_spec("labels=PERSON:2:heaviest", "t_own", tmp_path)
    assert none is None and legacy == tmp_path / "person_k2_heaviest.csv"
    recommended = episode_judgements(exp.person_labels(shards, args, doc, legacy, "2", "heaviest"))
    assert set(recommended) == set(top2(exp.recommended_overrides())) == {4, 5}  # control: another order
    with pytest.raises(ValueError, match="third field"):
        exp.person_spec("labels=PERSON:2:heaviest:mine", "t_own", tmp_path)
    # a report reads the variant's weights with the file its runs wrote (weight_phases); none written: said so
    assert exp.recorded_overrides("t_own", tmp_path) == [*uniform, f"labels={file}", "calibrate=false"]
    assert exp.recorded_overrides("episode_quality_rise_gate", tmp_path) == \
        exp.variant_overrides("episode_quality_rise_gate")  # control: a label-free variant is left as it is
    monkeypatch.setitem(exp.VARIANTS, "t_own", ([*uniform, "labels=PERSON:5:heaviest:own"], "all"))
    with pytest.raises(FileNotFoundError, match="person_k5_heaviest_t_own.csv: no labels file of variant 't_own'"):
        exp.recorded_overrides("t_own", tmp_path)


def test_a_label_budget_for_any_label_free_variant(capsys):
    """--labels K --order ORDER: every variant but the references runs as VARIANT+kK_ORDER, its overrides the
    variant's plus the SIMULATED person's labels in that order under its own rule (the same as the declared
    rise_gate_k10 for today's default); a variant that has labels already, a reference or an unknown order is
    refused, naming it."""
    composite = exp.variant_spec("episode_quality_rise_gate+k10_heaviest")
    assert composite == exp.VARIANTS["rise_gate_k10_zero"]  # train.py's default since Decision 12: calibrate=false
    assert exp.variant_spec("episode_quality_rise_gate+kg15_spread")[0][-2] == "labels=PERSON:g15:spread:own"
    # the grid's overlay keeps calibrating the variants that ran before Decision 12 and say nothing of it
    args = exp.argparse.Namespace()
    assert exp.train_config(exp.policy_overrides(args)).calibrate is True
    assert exp.train_config([*exp.policy_overrides(args), *composite[0][-1:]]).calibrate is False
    assert exp.labels_given("episode_quality_rise_gate+k5_uncertain") == "5"
    rule = exp.person_spec(f"{exp.PERSON}5:heaviest:own", "recommended+k5_heaviest", exp.Path("x"))[2]
    assert rule == exp.recommended_overrides()  # the recommended rule resolved, as training reads it
    assert exp.is_labelled("none+k5_heaviest") and not exp.is_labelled("episode_quality_rise_gate")
    for bad, why in (("labels_only_g15_full+k10_heaviest", "trains on labels"), ("none+k10_heaviest", "reference"),
                     ("episode_quality_gate+k10_sideways", "order 'sideways'"), ("nothing+k10_heaviest", "unknown"),
                     ("episode_quality_gate+k0_heaviest", "unknown")):
        with pytest.raises(KeyError, match=why):
            exp.variant_spec(bad)
    assert exp.main(["--tasks", "push-v3", "--labels", "10", "--order", "sideways",
                     "--variants", "none,episode_quality_gate"]) == 2
    assert "'episode_quality_gate+k10_sideways': order 'sideways'" in capsys.readouterr().err
    # the references keep their names (control: the rule is renamed), and a control reader needs a profile's reward
    import logging

    level = logging.getLogger("lerobot").level
    assert exp.main(["--tasks", "push-v3", "--labels", "5", "--variants", "none,episode_quality_gate"]) == 2
    assert "['episode_quality_gate+k5_heaviest'] read the static-video control" in capsys.readouterr().err
    assert logging.getLogger("lerobot").level == level  # refused before the libraries are quieted


def test_gap_shares_by_hand():
    def runs(*counts):
        return {"runs": [{"seed": s, "eval": {"successes": k, "episodes": 10}} for s, k in enumerate(counts)]}

    per_task = {"push-v3": {"variants": {"none": runs(2, 4), "expert_only": runs(10, 8), "rule": runs(6, 8),
                                         "worse": runs(0, 0)}},
                "pick-place-v3": {"variants": {"none": runs(0, 0), "expert_only": runs(10, 10), "rule": runs(10, 0)}}}
    rows = exp.gap_shares(per_task)
    rule = next(r for r in rows[2:] if r.startswith("| rule |"))
    # pooled over both tasks: plain 6/40, expert 38/40, rule 24/40 -> (24-6)/(38-6) = 56%; seed 0: (16-2)/(20-2)
    # = 78%, seed 1: (8-4)/(18-4) = 29%
    assert "| push-v3, pick-place-v3 |" in rule and "| 56% |" in rule and "s0: 78%, s1: 29%" in rule
    worse = next(r for r in rows if r.startswith("| worse |"))  # only where it and both references ran: push-v3
    assert "| push-v3 |" in worse and "| -50% |" in worse  # (0 - 6) / (18 - 6) of 20 rollouts


def test_draw_summary_by_hand():
    def runs(*counts):
        return {"runs": [{"seed": s, "eval": {"successes": k, "episodes": 10}} for s, k in enumerate(counts)]}

    per_task = {"push-v3": {"variants": {"good_n5": runs(8, 6, 4), "good_n5_d1": runs(2), "good_n5_d2": runs(9),
                                         "good_n7": runs(5)}},
                "pick-place-v3": {"variants": {"good_n5": runs(6), "good_n5_d1": runs(4)}}}
    rows = exp.draw_summary(per_task)
    assert len(rows) == 3  # one N with draws; good_n7 (draw 0 alone) is no draw row
    # only push-v3 holds every draw: 80%, 20%, 90% -> mean 63%, range 70; draw 0's seeds 80/60/40: range 40
    assert rows[2] == ("| 5 (push-v3) | 80%, 20%, 90% | 63% | 70 points | s0: 80%, s1: 60%, s2: 40% | "
                       "40 points |")
    assert exp.draw_summary({"push-v3": {"variants": {"good_n5": runs(8)}}}) == []  # no draws: no table (control)


def test_the_first_calibrations_variants_are_recorded_not_rerun(capsys):
    """The labels_k* rows ran a calibration the code no longer has: asking for them again is refused, naming the
    variants that replace them; control: the revised calibration's and the reference's variants resolve."""
    import experiments.rabc as exp

    assert exp.main(["--tasks", "push-v3", "--variants", "none,labels_k10"]) == 2
    err = capsys.readouterr().err
    assert "['labels_k10'] ran the first calibration" in err and "labels2_k*" in err
    assert exp.labels_given("labels2_k10_heaviest") == "10" and exp.labels_given("labels_zero_k20") == "20"
    assert "calibrate=false" in exp.variant_overrides("labels_zero_k10")
    assert "calibrate=false" not in exp.variant_overrides("labels2_k10_heaviest")


def test_good_subsets_are_fixed_draws_of_the_good_episodes():
    good = [0, 3, 4, 7, 9, 12, 15, 20, 21, 30]
    five = exp.good_subset(good, 5)
    assert len(five) == 5 == len(set(five)) and set(five) <= set(good)
    assert exp.good_subset(list(reversed(good)), 5) == five  # the draw is the task's, not the list's order
    assert set(exp.good_subset(good, 8)) != set(good[:8])  # a draw, not the first N (control)
    assert exp.good_subset(good, 10) == good
    with pytest.raises(ValueError, match="good_n11: the corpus has only 10 good episodes"):
        exp.good_subset(good, 11)
    # plain BC on the subset, reward-free, and not among the default variants
    assert exp.VARIANTS["good_n10"] == (["weighting=none"], "good10")
    assert "good_n10" in exp.REFERENCE_VARIANTS and "good_n10" not in exp.DEFAULT_VARIANTS
    # further draws: another seed, another subset of the same size; draw 0 is good_n{N}'s
    assert exp.good_subset_of("good5", good) == five == exp.good_subset_of("good5d0", good)
    d1 = exp.good_subset_of("good5d1", good)
    assert len(d1) == 5 and set(d1) <= set(good) and d1 != five
    assert exp.good_subset_of("good", good) == good
    assert exp.VARIANTS["good_n15_d3"] == (["weighting=none"], "good15d3")
    assert "good_n20_d4" in exp.REFERENCE_VARIANTS and "good_n20_d4" not in exp.DEFAULT_VARIANTS


def test_the_grid_keeps_its_rows_without_the_reward_check_unless_a_variant_asks():
    from experiments.rabc import VARIANTS, train_config, variant_overrides

    assert train_config(["weighting=episode_quality"]).weighting.shrink == "none"  # every earlier row's reading
    assert train_config(variant_overrides("episode_quality_gate")).weighting.shrink == "above_static"
    assert train_config(variant_overrides("recommended")).weighting.shrink == "above_static"  # today's default
    assert "shrink" not in train_config(list(VARIANTS["none"][0])).weighting  # a rule without the parameter
    from configs import load_config

    assert load_config("train", ["weighting=episode_quality"]).weighting.shrink == "above_static"  # control


def test_success_only_trains_on_every_success_detours_included():
    """The success_only reference (perfect success labels, nothing else): its shards hold every episode that
    succeeds, detours included, failures not; good_only's hold no detour (control)."""
    doc = {"episodes": [{"episode_index": i, "quality": q, "success": q != "failure"}
                        for i, q in enumerate(["expert", "detour", "failure", "noisy", "detour", "failure"])]}
    assert exp.subset_episodes("success", doc) == [0, 1, 3, 4]
    assert exp.subset_episodes("good", doc) == [0, 3]
    assert exp.VARIANTS["success_only"] == (["weighting=none"], "success")
    assert "success_only" in exp.REFERENCE_VARIANTS and "success_only" not in exp.DEFAULT_VARIANTS


def test_sample_weights_of_plain_bc_are_one_but_for_the_labelled_bad(tmp_path):
    """The experiment's weight report also reads rules without statistics (the references, plain BC): every sample
    weighs 1, and with labels the bad episodes 0 (control: the same run without labels keeps them at 1)."""
    import argparse

    from data.success_labels import Label, write_labels
    from tests.fixtures.shards import write_tiny_shards

    shards = write_tiny_shards(tmp_path / "s", episodes=4, length=16, obs_steps=2, horizon=10, images=False)
    base = [f"data.shards={shards}", *exp.policy_overrides(argparse.Namespace()), "weighting=none"]
    table, w = exp.sample_weights(exp.train_config([*base, f"out={tmp_path / 'a'}"]))
    assert len(w) == len(table.episode) > 0 and np.all(w == 1.0)
    labels = write_labels(tmp_path / "l.csv", {("", 2): Label(None, "", False), ("", 0): Label(None, "", True)})
    table, w = exp.sample_weights(exp.train_config([*base, f"labels={labels}", f"out={tmp_path / 'b'}"]))
    bad = np.asarray(table.episode) == 2
    assert bad.any() and np.all(w[bad] == 0.0) and np.all(w[~bad] == 1.0)

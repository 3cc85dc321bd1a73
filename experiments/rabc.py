"""Reward-aligned BC on mixed-quality MetaWorld corpora: does weighting beat plain BC?

    python -m benchmarks.rabc_experiment [--tasks push-v3,pick-place-v3 --seeds 3 --rollouts 67 --steps N ...]
    python -m benchmarks.rabc_experiment --report OUT      # tables and the target check of finished runs

Per task, one mixed corpus (expert / noisy / detour / failure demonstrations from ``python -m data.demo``; the
detours include the systematic ``wrong_goal`` (the task done towards a wrong goal first) and ``stall``, the
failures ``push_away``, ``wrong_goal``, ``stall`` and ``random``; state only: the 4-d ``observation.state`` plus
MetaWorld's 39-d observation as ``observation.environment_state``, no camera, nothing rendered), annotated with
the ``column`` reward (the simulator's own dense reward ``next.reward``: the same annotation → shards →
weighting pipeline a TOPReward annotation feeds). The same small state-only ACT is trained with each weighting
rule, and with plain BC on the expert episodes only (the upper reference; the expert subset is chosen with the
corpus's quality labels, which nothing else trains on), over several training seeds; every export is rolled out
on held-out setups (seeds from 1000; the corpus uses 0..). The sizes of every stage (corpus mix and length,
annotation window, policy and training, rollouts) are the overlays ``configs/experiment/rabc_*.yaml``; the
command-line size options override them.

Each task writes ``OUT/TASK/results.json`` after every run (a rerun skips runs whose evaluation is already
there), so tasks can run as separate processes side by side (``--tasks push-v3`` and ``--tasks pick-place-v3``).
``--report OUT`` reads them all and writes ``OUT/report.md`` and ``OUT/success.png`` (bars per variant and task): per task and pooled over tasks, per variant the
success (pooled over seeds and per seed, 95% Wilson intervals), training time, and the weight statistics over
every training sample (mean weight, zero fraction, effective sample size as a fraction of the sample count,
and the share of the total weight per demonstration-quality label; the labels are used for this report only),
and whether the best label-free rule meets the target: ≥ 90% of expert-only BC's success and a pooled interval
entirely above plain BC's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("MUJOCO_GL", "egl")

TASKS = ("push-v3", "pick-place-v3")
SHARP_BETA = 0.25  # the sharper temperature of the *_sharp variants, fixed before any of them was run
# the time to the top on the episode's own scale: the default of episode_quality until the simulated-error grid;
# the variants that ran with it keep it
EPISODE_TIME = "weighting.time_scale=episode"
# variant name -> (train overrides, which shards: "all" or "expert")
# the labelled variants that ran before data.skip_left_out existed read their left-out episodes and weighed them 0
# (fewer training samples per batch); they keep that, so their recorded runs stay theirs
READ_LEFT_OUT = "data.skip_left_out=false"
# the simulated person's labels: labels=PERSON:K:ORDER, heaviness by the recommended rule of the day (the file,
# person_kK_ORDER.csv, is written once per cell and reused); labels=PERSON:K:ORDER:own, heaviness by the variant's
# own rule (its overrides other than the labels'), the file keyed by the variant: what a user of that rule would
# label on the review page (policies.review orders by the rule it is given)
PERSON = "labels=PERSON:"
OWN = "own"
LABEL_KEYS = ("labels=", "calibrate=", "labels_only=")  # the overrides that say how labels are used, not the rule
VARIANTS: dict[str, tuple[list[str], str]] = {
    "none": (["weighting=none"], "all"),
    "expert_only": (["weighting=none"], "expert"),
    "rabc": (["weighting=rabc"], "all"),
    "top_awr": (["weighting=top_awr"], "all"),
    "top_awr_centered": (["weighting=top_awr", "weighting.centered=true"], "all"),
    "awr": (["weighting=awr"], "all"),
    "filter": (["weighting=filter"], "all"),
    "episode_quality": (["weighting=episode_quality", EPISODE_TIME, "weighting.beta=1.0"], "all"),
    "episode_quality_sharp": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}"], "all"),
    # filtered BC on the best episodes by z_e ("%BC", Chen et al. 2021); added after the variants above had run
    "episode_filter": (["weighting=episode_quality", EPISODE_TIME, "weighting.transform=top"], "all"),
    "episode_filter_25": (["weighting=episode_quality", EPISODE_TIME, "weighting.transform=top", "weighting.top_fraction=0.25"],
                          "all"),
    "episode_quality_sharper": (["weighting=episode_quality", EPISODE_TIME, "weighting.beta=0.1"], "all"),  # added last
    # the rule README recommends and the demo runs (configs/demo.yaml `weighting`, with its YAML's parameters):
    # resolved when the experiment runs, so its runs restart when the recommendation changes
    "recommended": (["weighting=RECOMMENDED"], "all"),
    # candidates against the reward model's errors (docs/weighting.md), read the static-video control: only on a
    # simulated profile's annotation, which carries it
    "episode_quality_minus_static": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}",
                                      "weighting.success_from=minus_static"], "all"),
    "episode_quality_shrunk": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}",
                                "weighting.shrink=static"], "all"),
    # candidate: the default with the time to the top on the task's raw scale; added after the grid, when the
    # 32B-like runs' heaviest episodes turned out to be failures whose flat or falling curves reach their own top
    # at frame 0 (docs/experiments.md)
    "episode_quality_time_dataset": (["weighting=episode_quality", f"weighting.beta={SHARP_BETA}",
                                      "weighting.time_scale=dataset"], "all"),
    # the recommended rule after a person's look at the episodes it weighs most (labels=; a SIMULATED person
    # who labels those REVIEWED episodes with the corpus's own success): not label-free
    "recommended_reviewed": (["weighting=RECOMMENDED", "labels=REVIEWED", "calibrate=false", READ_LEFT_OUT], "all"),
    # pre-registered in docs/experiments.md ("A person's few labels, on two simulators of the errors"):
    # a label-free candidate: the time to the top on the episode's own scale, for curves that rose
    "episode_quality_rise": (["weighting=RECOMMENDED", "weighting.time_scale=rise"], "all"),
    # a SIMULATED person labels K of the 50 episodes good (expert, noisy) or bad (detour, failure), one at a time
    # in the acquisition order; labels= then calibrates the weights (policies/weighting/calibrated.py)
    "labels_k5": (["weighting=RECOMMENDED", "labels=PERSON:5:heaviest", READ_LEFT_OUT], "all"),
    "labels_k10": (["weighting=RECOMMENDED", "labels=PERSON:10:heaviest", READ_LEFT_OUT], "all"),
    "labels_k10_uncertain": (["weighting=RECOMMENDED", "labels=PERSON:10:uncertain", READ_LEFT_OUT], "all"),
    "labels_k10_mix": (["weighting=RECOMMENDED", "labels=PERSON:10:mix", READ_LEFT_OUT], "all"),
    # pre-registered second (docs/experiments.md, "The revised calibration"): the same person, the calibration as
    # revised (the rule's weight a feature, one feature at most, kept only where its leave-one-out accuracy beats
    # the base rate's; policies/weighting/calibrated.py); the labels_k* rows above ran the first calibration
    **{f"labels2_k{k}_{order}": (["weighting=RECOMMENDED", f"labels=PERSON:{k}:{order}", READ_LEFT_OUT], "all")
       for k in (5, 10) for order in ("heaviest", "uncertain", "spread")},
    # reference for the calibration (added with the amendment in docs/experiments.md, before its runs): the same
    # ten labels, which only zero the bad episodes (calibrate=false, what labels= did before calibration)
    "labels_zero_k10": (["weighting=RECOMMENDED", "labels=PERSON:10:heaviest", "calibrate=false", READ_LEFT_OUT], "all"),
    # exploratory, declared before its runs (docs/experiments.md): twenty labels, heaviest first, zeroing only
    "labels_zero_k20": (["weighting=RECOMMENDED", "labels=PERSON:20:heaviest", "calibrate=false", READ_LEFT_OUT], "all"),
    # pre-registered third (docs/experiments.md, "Labels the policy trusts alone"): plain BC on the episodes the
    # SIMULATED person labelled good, nothing else (labels_only=true), after ten labels or until fifteen are good
    "labels_only_k10": (["weighting=none", "labels=PERSON:10:heaviest", "labels_only=true", READ_LEFT_OUT], "all"),
    "labels_only_g15": (["weighting=none", "labels=PERSON:g15:heaviest", "labels_only=true", READ_LEFT_OUT], "all"),
    # pre-registered fourth (docs/experiments.md, "Which good episodes", and its amendment): the same with every
    # sample of a batch from an episode labelled good (data.skip_left_out, the default since), labelled in the
    # heaviest order and in the spread order
    "labels_only_g15_full": (["weighting=none", "labels=PERSON:g15:heaviest", "labels_only=true"], "all"),
    "labels_only_g15_spread": (["weighting=none", "labels=PERSON:g15:spread", "labels_only=true"], "all"),
    # pre-registered (docs/experiments.md, "Weighted resampling"): today's default rule (= episode_quality_sharp)
    # with data.sampling=resample: samples kept with probability w / max w, every sample of a batch training
    "episode_quality_resample": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}",
                                  "data.sampling=resample"], "all"),
    # pre-registered (docs/experiments.md, "A label-free check of the reward"): today's default, its weights
    # uniform in a task where fewer than half the episodes score above their static-video control
    "episode_quality_gate": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}",
                              "data.sampling=resample", "weighting.shrink=above_static"], "all"),
    # pre-registered (docs/experiments.md, "Decision 10"): today's default with the time to the top counted only for
    # a curve that rose (time_scale=rise), so a stall's early own top earns no time bonus
    "episode_quality_rise_gate": (["weighting=episode_quality", "weighting.time_scale=rise",
                                   f"weighting.beta={SHARP_BETA}", "data.sampling=resample",
                                   "weighting.shrink=above_static"], "all"),
    # declared before its runs (docs/experiments.md, "Runs 11"): ten labels on today's default as train.py trains
    # them (calibrate=true, the left-out episodes not read), the SIMULATED person labelling the heaviest under that
    # same rule (:own); and the same labels only zeroing the bad episodes (calibrate=false)
    **{f"rise_gate_k10{tail}": (["weighting=episode_quality", "weighting.time_scale=rise",
                                 f"weighting.beta={SHARP_BETA}", "data.sampling=resample",
                                 "weighting.shrink=above_static", f"{PERSON}10:heaviest:{OWN}", *extra], "all")
       for tail, extra in (("", []), ("_zero", ["calibrate=false"]))},
    # pre-registered with it (docs/experiments.md, "Weighted resampling", the K = 10 candidate): ten labels in the
    # heaviest order zeroing the bad episodes (not read: data.skip_left_out), the rest resampled by today's rule
    "labels_zero_k10_resample": (["weighting=episode_quality", EPISODE_TIME, f"weighting.beta={SHARP_BETA}",
                                  "labels=PERSON:10:heaviest", "calibrate=false", "data.sampling=resample"], "all"),
    # the ceiling of labelling: every episode labelled, plain BC on the good ones
    "good_only": (["weighting=none"], "good"),
    # perfect success labels and nothing else (declared before its runs, docs/experiments.md, "Success labels
    # alone"): plain BC on every episode that succeeds, detours included: what a reward that detects success
    # without error, but cannot tell a detour from a direct success, gives at best by filtering
    "success_only": (["weighting=none"], "success"),
    # how many good demonstrations the policy needs (declared before its runs, docs/experiments.md): plain BC on N
    # of the good ones, a random draw fixed per task (good_subset): what labels buy when only the episodes a person
    # labelled good are trusted
    **{f"good_n{n}": (["weighting=none"], f"good{n}") for n in (5, 10, 15, 20)},
    # how much *which* N good episodes matters (declared before its runs, docs/experiments.md, "Which good
    # episodes"): further random draws of N good ones (draw d: numpy seed d; good_n{N} is draw 0)
    **{f"good_n{n}_d{d}": (["weighting=none"], f"good{n}d{d}") for n in (10, 15, 20) for d in range(1, 5)},
}
GOOD_QUALITIES = ("expert", "noisy")  # the simulated person's rule: action noise may not be visible; a detour is
REVIEWED = 10  # episodes the simulated person labels: the recommended rule's ten heaviest (of 50)
# the first calibration's rows (commit f35ded4's policies/weighting/calibrated.py): recorded, not run again
FIRST_CALIBRATION = ("labels_k5", "labels_k10", "labels_k10_uncertain", "labels_k10_mix")
LABELLED_VARIANTS = ("recommended_reviewed", *FIRST_CALIBRATION, "labels_zero_k10", "labels_zero_k20",
                     "labels_only_k10", "labels_only_g15", "labels_only_g15_full", "labels_only_g15_spread",
                     "labels_zero_k10_resample", "rise_gate_k10", "rise_gate_k10_zero",
                     *(n for n in VARIANTS if n.startswith("labels2_")))
CONTROL_VARIANTS = ("episode_quality_minus_static", "episode_quality_shrunk", "episode_quality_gate",
                    "episode_quality_rise_gate", "rise_gate_k10", "rise_gate_k10_zero")
# awr: see the single-task table in docs/experiments.md; the control readers need a simulated profile
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in ("awr", "success_only") and not v.startswith("good_n")
                    and v not in (*CONTROL_VARIANTS, *LABELLED_VARIANTS)]
# trained on labels (expert_only, good_only) or the baseline: not candidates
REFERENCE_VARIANTS = ("none", "expert_only", "good_only", "success_only",
                      *(v for v in VARIANTS if v.startswith("good_n")))
COLUMN = "column"  # the simulator's own dense reward, annotated with reward=column (the perfect signal)
# the simulated VLM-error profiles in the order of the error they carry (configs/reward/vlm_errors_profiles/)
PROFILE_ORDER = ("oracle", "qwen3vl_32b_like", "qwen3vl_8b_like", "weak")


def recommended_rule() -> str:
    """The weighting README recommends: the demo's default (configs/demo.yaml)."""
    from configs import load_config

    return str(load_config("demo").weighting)


def recommended_overrides() -> list[str]:
    """Today's recommendation as train overrides: the rule and every parameter of its YAML, so that a changed
    parameter (not only a changed rule) makes the results of ``recommended`` restart."""
    from omegaconf import OmegaConf

    import configs

    rule = recommended_rule()
    params = OmegaConf.load(Path(configs.__file__).parent / "weighting" / f"{rule}.yaml")
    return [f"weighting={rule}", *(f"weighting.{k}={v}" for k, v in params.items())]


# VARIANT+kK_ORDER (--labels K --order ORDER): a label-free variant with a SIMULATED person's K labels (gN: until N
# are good) in ORDER, the heaviest under the variant's own rule (labels=PERSON:K:ORDER:own); the labels as
# train.py's defaults use them (calibrate=false since Decision 12; the grid's overlay pins true for the older rows)
COMPOSITE = re.compile(r"^(?P<base>\w+)\+k(?P<k>g?[1-9]\d*)_(?P<order>[a-z]+)$")


def variant_spec(name: str) -> tuple[list[str], str]:
    """(train overrides, which shards) of variant ``name``: one of VARIANTS, or a ``VARIANT+kK_ORDER``
    (:data:`COMPOSITE`); KeyError naming what is wrong otherwise."""
    if name in VARIANTS:
        return VARIANTS[name]
    m = COMPOSITE.match(name)
    if m is None or m["base"] not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}, or VARIANT+kK_ORDER")
    from policies.weighting.calibrated import ORDERS

    extra, which = VARIANTS[m["base"]]
    if m["base"] in REFERENCE_VARIANTS or any(o.startswith(LABEL_KEYS) for o in extra):
        raise KeyError(f"{name!r}: {m['base']} trains on labels or is a reference already; give the labels to a "
                       "label-free rule")
    if m["order"] not in ORDERS:
        raise KeyError(f"{name!r}: order {m['order']!r} is none of {', '.join(ORDERS)}")
    return [*extra, f"{PERSON}{m['k']}:{m['order']}:{OWN}", "calibrate=false"], which


def is_labelled(name: str) -> bool:
    """Whether variant ``name`` trains with a person's labels."""
    return name in LABELLED_VARIANTS or COMPOSITE.match(name) is not None


def variant_overrides(name: str) -> list[str]:
    """The train overrides of variant ``name`` (``recommended`` resolved to today's recommendation)."""
    extra, _ = variant_spec(name)
    return [r for o in extra for r in (recommended_overrides() if o == "weighting=RECOMMENDED" else [o])]


SIMULATORS = ("additive", "rank")  # the two simulators of VLM errors (reward.simulator; docs/reward_errors.md)
RANK = "rank_"  # a reward named rank_<profile> is <profile> on the second simulator


def reward_key(profile: str, simulator: str = "additive") -> str:
    """The reward's name in the results (and its folder ``reward_<name>``): the profile on the first simulator,
    ``rank_<profile>`` on the second; ``column`` is no simulator's."""
    return profile if simulator == "additive" or profile == COLUMN else RANK + profile


def reward_overrides(reward: str, column: str) -> list[str]:
    """How the corpus is annotated for reward ``reward``: ``column`` (the dataset column ``column``) or a
    simulated VLM-error profile (reward=vlm_errors; with its static-video control, which costs nothing here),
    ``rank_<profile>`` on the second simulator."""
    if reward == COLUMN:
        return ["reward=column", f"reward.column={column}"]
    if reward.startswith(RANK):
        return ["reward=vlm_errors", f"reward.profile={reward.removeprefix(RANK)}", "reward.simulator=rank",
                "control.static=true"]
    return ["reward=vlm_errors", f"reward.profile={reward}", "control.static=true"]


def reward_dir(task_dir: Path, reward: str, policy: str = "act") -> Path:
    """Where the runs on reward ``reward`` live: the task folder for the column, ``reward_<profile>`` below it
    for a simulated profile (corpus, expert annotation and the reward-free references stay at the task); a
    policy other than the tables' ACT has its own ``policy_<name>`` folder (its annotation window differs)."""
    base = task_dir if policy == "act" else task_dir / f"policy_{policy}"
    return base if reward == COLUMN else base / f"reward_{reward}"
# the sizes of each stage: configs/experiment/<overlay>.yaml merged onto configs/<stage>.yaml
OVERLAYS = {"corpus": "rabc_corpus", "annotate": "rabc_annotate", "train": "rabc_train",
            "evaluate": "rabc_evaluate"}
POLICIES = ("act", "diffusion")
# the train overlay of each policy: the small ACT of every table, and a state-only Diffusion sized for a CPU
TRAIN_OVERLAYS = {"act": "rabc_train", "diffusion": "rabc_train_diffusion"}


def stage_config(stage: str, overrides: list[str], overlay: str | None = None) -> DictConfig:
    """``configs/<stage>.yaml`` with this experiment's overlay (or ``overlay``), then ``overrides`` (they win)."""
    from configs import load_config

    return load_config(stage, [f"experiment={overlay or OVERLAYS[stage]}", *overrides])


def _given(pairs: list[tuple[str, object]]) -> list[str]:
    return [f"{key}={value}" for key, value in pairs if value is not None]


def corpus_overrides(args) -> list[str]:
    """Corpus sizes given on the command line (the others: configs/experiment/rabc_corpus.yaml)."""
    return _given([("episodes", getattr(args, "episodes", None)),
                   ("episode_length", getattr(args, "episode_length", None))])


def policy_name(args) -> str:
    return getattr(args, "policy", None) or "act"


def policy_overrides(args) -> list[str]:
    """The one small state-only policy every variant trains: sizes given in ``args`` (None: the overlay's)."""
    if policy_name(args) == "diffusion":  # its sizes: configs/experiment/rabc_train_diffusion.yaml
        return ["policy=diffusion", *_given([("policy.optimizer_lr", getattr(args, "lr", None)),
                                             ("data.batch_size", getattr(args, "batch", None)),
                                             ("trainer.max_steps", getattr(args, "steps", None))]),
                *(getattr(args, "train_set", None) or [])]
    dim = getattr(args, "dim_model", None)
    derived = [] if dim is None else [  # the rule behind rabc_train.yaml's dim_feedforward and n_heads
        f"policy.dim_model={dim}", f"policy.dim_feedforward={4 * dim}", f"policy.n_heads={max(1, dim // 32)}"]
    return ["policy=act", *derived, *_given([
        ("policy.n_encoder_layers", getattr(args, "encoder_layers", None)),
        ("policy.chunk_size", getattr(args, "chunk", None)),
        ("policy.n_action_steps", getattr(args, "action_steps", None)),
        ("policy.optimizer_lr", getattr(args, "lr", None)),
        ("data.batch_size", getattr(args, "batch", None)),
        ("trainer.max_steps", getattr(args, "steps", None)),
    ]), *(getattr(args, "train_set", None) or [])]


def evaluate_overrides(args) -> list[str]:
    """Rollout sizes given on the command line (the others: configs/experiment/rabc_evaluate.yaml)."""
    return _given([("episodes", getattr(args, "rollouts", None)),
                   ("max_steps", getattr(args, "max_rollout_steps", None))])


def train_config(overrides: list[str]) -> DictConfig:
    """The train config; configs/policy/act.yaml normalises observation.environment_state (lerobot's default
    mapping has no ENV entry), which this experiment depends on (rabc_train_diffusion.yaml does the same)."""
    policy = next((o.split("=", 1)[1] for o in overrides if o.startswith("policy=")), "act")
    cfg = stage_config("train", overrides, TRAIN_OVERLAYS[policy])
    if cfg.weighting.name == "episode_quality" and not any(o.startswith("weighting.shrink=") for o in overrides):
        # every row before Decision 9 (docs/experiments.md) ran without the reward check the default has since;
        # the grid keeps them so (as the overlay keeps data.sampling=weights), the variants that check say so
        cfg.weighting.shrink = "none"
    return cfg


def annotation_window(train: DictConfig) -> tuple[int, int]:
    """(obs_steps, horizon) the shards must hold for the policy of ``train`` (policies/adapters)."""
    p = train.policy
    if p.name == "diffusion":  # its action window starts n_obs_steps - 1 before t
        return int(p.n_obs_steps), int(p.horizon) - int(p.n_obs_steps) + 1
    return int(p.n_obs_steps), int(p.chunk_size)


def experiment_setup(task: str, args, reward: str = COLUMN) -> dict:
    """What a task's runs depend on, read from the composed configs (another setup: the runs start over)."""
    if policy_name(args) != "act":
        return diffusion_setup(task, args, reward)
    corpus = stage_config("corpus", [f"task={task}", *corpus_overrides(args)])
    train = train_config(policy_overrides(args))
    ev = stage_config("evaluate", evaluate_overrides(args))
    return {"task": task, "mix": OmegaConf.to_container(corpus.mix),
            "detour_kinds": list(corpus.detour.kinds), "episodes": corpus.episodes,
            "episode_length": corpus.episode_length,
            "reward": reward_description(args, reward),
            "steps": train.trainer.max_steps,
            "dim_model": train.policy.dim_model, "encoder_layers": train.policy.n_encoder_layers,
            "chunk": train.policy.chunk_size, "action_steps": train.policy.n_action_steps,
            "lr": train.policy.optimizer_lr, "batch": train.data.batch_size,
            "normalization": "configs/policy/act.yaml normalization_mapping (ENV: MEAN_STD)",
            **({"set": list(args.train_set)} if getattr(args, "train_set", None) else {}),
            "rollouts": ev.episodes, "eval_seed": ev.seed, "max_rollout_steps": ev.max_steps}


def reward_description(args, reward: str) -> str:
    if reward == COLUMN:
        return f"column ({getattr(args, 'reward_column', 'next.reward')}: the simulator's dense reward / 10)"
    if reward.startswith(RANK):
        return (f"vlm_errors profile {reward.removeprefix(RANK)}, simulator rank (SIMULATED VLM reward errors of a "
                "second form, docs/reward_errors.md)")
    return f"vlm_errors profile {reward} (SIMULATED VLM reward errors, docs/reward_errors.md)"


def diffusion_setup(task: str, args, reward: str = COLUMN) -> dict:
    """The setup of the Diffusion block: what its runs depend on (its own results files)."""
    corpus = stage_config("corpus", [f"task={task}", *corpus_overrides(args)])
    train = train_config(policy_overrides(args))
    ev = stage_config("evaluate", evaluate_overrides(args))
    p = train.policy
    return {"task": task, "policy": "diffusion", "mix": OmegaConf.to_container(corpus.mix),
            "detour_kinds": list(corpus.detour.kinds), "episodes": corpus.episodes,
            "episode_length": corpus.episode_length, "reward": reward_description(args, reward),
            "steps": train.trainer.max_steps, "n_obs_steps": p.n_obs_steps, "horizon": p.horizon,
            "action_steps": p.n_action_steps, "down_dims": list(p.down_dims), "lr": p.optimizer_lr,
            "warmup": p.scheduler_warmup_steps, "noise_scheduler": p.noise_scheduler_type,
            "inference_steps": p.num_inference_steps or p.num_train_timesteps,
            "batch": train.data.batch_size, "normalization": OmegaConf.to_container(p.normalization_mapping),
            "rollouts": ev.episodes, "eval_seed": ev.seed, "max_rollout_steps": ev.max_steps,
            **({"set": list(args.train_set)} if getattr(args, "train_set", None) else {})}


def make_corpus(args, task: str, out: Path) -> Path:
    from data.metaworld.corpus import generate

    cfg = stage_config("corpus", [f"task={task}", *corpus_overrides(args), f"out={out / 'corpus'}"])
    return generate(cfg, progress=False)


def annotate(corpus: Path, out: Path, episodes: list[int] | None, horizon: int,
             reward: list[str] | None = None) -> Path:
    """The corpus annotated with ``reward`` (overrides; default: the dense-reward column)."""
    from pipeline.annotate import annotate as run_annotate

    if (out / "manifest.json").is_file():
        return out
    reward = list(reward or [])
    if not any(o.startswith("reward=") for o in reward):
        reward = [*reward_overrides(COLUMN, "next.reward"), *reward]
    overrides = [f"dataset.root={corpus}", *reward, f"window.horizon={horizon}", f"out={out}"]
    if episodes is not None:
        overrides.append(f"dataset.episodes=[{','.join(str(e) for e in episodes)}]")
    result = run_annotate(stage_config("annotate", overrides))
    if not result.ok:
        raise RuntimeError(f"annotation of {corpus} failed: {result.failures[0]['reason']}")
    return out


def fitted_weights(train_cfg):
    """(module, fit table, weights): the run's module with its rule fitted, and the weight that rule gives every
    training sample, exactly as training fits and weighs them (the statistics: ``module.weighting_stats``), the
    progress windows read once."""
    from policies.training import plain_weights, weighted_run

    module, _, manifest, table, _, w = weighted_run(train_cfg)
    if table is None:  # a rule without statistics (plain BC)
        table, w = plain_weights(train_cfg, module, manifest)
    return module, table, w


def sample_weights(train_cfg):
    """(fit table, weights) the run's rule gives every training sample (:func:`fitted_weights`)."""
    return fitted_weights(train_cfg)[1:]


def reviewed_labels(shards: Path, args, labels_doc: dict, path: Path) -> Path:
    """The labels file of a SIMULATED person who looks at the REVIEWED episodes the recommended rule weighs most
    (as training names them) and labels each with the corpus's own success; written once to ``path``."""
    from data.success_labels import Label, write_labels
    from policies.run_weights import heaviest_episodes

    if path.is_file():
        return path
    cfg = train_config([f"data.shards={shards}", *policy_overrides(args), *recommended_overrides(),
                        f"out={path.parent / 'review_fit'}"])
    table, w = sample_weights(cfg)
    heaviest = [e for e, _ in heaviest_episodes(table.episode, w, REVIEWED)]
    success = {int(e["episode_index"]): bool(e["success"]) for e in labels_doc["episodes"]}
    return write_labels(path, {("", e): Label(success[e], "SIMULATED person: the corpus's own success")
                               for e in heaviest})


def labels_given(name: str) -> str:
    """How many episodes a person labels in variant ``name`` ("0": label-free; "until N good" for a ``gN``)."""
    extra = variant_spec(name)[0]
    if "labels=REVIEWED" in extra:
        return str(REVIEWED)
    spec = next((o.removeprefix(PERSON).split(":")[0] for o in extra if o.startswith(PERSON)), "0")
    return f"until {spec[1:]} good" if spec.startswith("g") else spec


def person_spec(override: str, variant: str, out: Path) -> tuple[str, str, list[str] | None, Path]:
    """``labels=PERSON:K:ORDER[:own]`` of ``variant`` → (K, order, the rule ordering the heaviest — None: the
    recommended one — and the labels file under the cell's folder ``out``)."""
    spec, order, *own = override.removeprefix(PERSON).split(":")
    if own not in ([], [OWN]):
        raise ValueError(f"{override}: the third field may only be {OWN!r}")
    if not own:
        return spec, order, None, out / f"person_k{spec}_{order}.csv"
    rule = [o for o in variant_overrides(variant) if not o.startswith(LABEL_KEYS)]  # `recommended` resolved
    return spec, order, rule, out / f"person_k{spec}_{order}_{variant}.csv"


def recorded_overrides(name: str, out: Path) -> list[str]:
    """The train overrides of variant ``name`` as its runs in the cell folder ``out`` used them: the labels
    placeholders (``labels=REVIEWED``, ``labels=PERSON:…``) replaced by the labels files those runs wrote there.
    FileNotFoundError naming the file where no run of the variant has written it yet."""
    resolved = []
    for o in variant_overrides(name):
        if o == "labels=REVIEWED" or o.startswith(PERSON):
            path = out / "reviewed_labels.csv" if o == "labels=REVIEWED" else person_spec(o, name, out)[3]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no labels file of variant {name!r} in {out}; run the experiment "
                                        f"with --variants {name} on this cell first")
            o = f"labels={path}"
        resolved.append(o)
    return resolved


def person_labels(shards: Path, args, labels_doc: dict, path: Path, spec: str, order: str,
                  rule: list[str] | None = None) -> Path:
    """The labels file of a SIMULATED person who labels ``spec`` episodes (``K``: K of them; ``gN``: until N
    are good) one at a time, each the first of the acquisition ``order`` given the labels so far
    (policies.weighting.calibrated.acquisition_order; heaviness: the ``rule`` overrides' weights, by default the
    recommended rule's), good for the GOOD_QUALITIES and bad otherwise; written once to ``path``."""
    from data.manifest import load_manifest
    from data.success_labels import Label, write_labels
    from policies.training import episode_weights

    if path.is_file():
        return path
    cfg = train_config([f"data.shards={shards}", *policy_overrides(args),
                        *(recommended_overrides() if rule is None else rule), f"out={path.parent / 'review_fit'}"])
    heavy, _, _ = episode_weights(cfg)
    episodes = load_manifest(shards)["episodes"]
    good = {int(e["episode_index"]): e["quality"] in GOOD_QUALITIES for e in labels_doc["episodes"]}
    spec = str(spec)
    until = int(spec[1:]) if spec.startswith("g") else None
    labels = simulated_person(order, len(episodes) if until else int(spec), heavy, episodes, good, until)
    note = f"SIMULATED person ({order} order): good = {' or '.join(GOOD_QUALITIES)}"
    return write_labels(path, {("", e): Label(None, note, ok) for e, ok in labels.items()})


def good_subset(good: list[int], n: int, draw: int = 0) -> list[int]:
    """``n`` of the ``good`` episodes, drawn at random once per task and ``draw`` (numpy seed ``draw``), the same
    for every training seed."""
    if n > len(good):
        raise ValueError(f"good_n{n}: the corpus has only {len(good)} good episodes")
    return sorted(int(e) for e in np.random.default_rng(draw).permutation(sorted(good))[:n])


def good_subset_of(which: str, good: list[int]) -> list[int]:
    """The episodes of a variant's shards ``which``: "good" (all of them), "goodN" or "goodNdD" (good_subset)."""
    if which == "good":
        return good
    n, _, d = which.removeprefix("good").partition("d")
    return good_subset(good, int(n), int(d or 0))


def subset_episodes(which: str, labels_doc: dict) -> list[int]:
    """The episodes of a variant's shards other than "all" and "expert": "success" (every episode that succeeds,
    detours included) or one of :func:`good_subset_of`'s."""
    if which == "success":
        return sorted(int(e["episode_index"]) for e in labels_doc["episodes"] if e["success"])
    from data.quality_labels import quality_by_episode

    quality = quality_by_episode(labels_doc)
    return good_subset_of(which, sorted(e for e, q in quality.items() if q in GOOD_QUALITIES))


def simulated_person(order: str, k: int, heavy: dict[int, float], episodes: list[dict],
                     good: dict[int, bool], until_good: int | None = None) -> dict[int, bool]:
    """The labels of a SIMULATED person who labels ``k`` episodes one at a time, each the first of the acquisition
    ``order`` given the labels so far (``heavy``: the label-free rule's episode weights), with the truth ``good``;
    with ``until_good``, stopping as soon as that many are good."""
    from policies.weighting.calibrated import acquisition_order

    labels: dict[int, bool] = {}
    for _ in range(k):
        if until_good is not None and sum(labels.values()) >= until_good:
            break
        todo = acquisition_order(order, heavy, labels, episodes)
        if not todo:
            break
        labels[todo[0]] = good[todo[0]]
    return labels


def weight_report(train_cfg, labels: dict[int, str]) -> dict:
    """Weight statistics over every training sample and the share of Σw per demonstration-quality label."""
    import torch

    from policies.weighting import weight_summary

    table, w = sample_weights(train_cfg)
    s = weight_summary(torch.as_tensor(w))
    total = float(w.sum())
    names = sorted(set(labels.values()))
    ep_label = np.array([labels[int(e)] for e in table.episode])
    shares = {q: (float(w[ep_label == q].sum()) / total if total > 0 else 0.0) for q in names}
    sample_shares = {q: float((ep_label == q).mean()) for q in names}
    return {"samples": int(w.size), "mean": s["weight_mean"], "zero_frac": s["weight_zero_frac"],
            "ess_frac": s["ess"] / max(w.size, 1), "weight_share": shares, "sample_share": sample_shares}


def pooled(evals: list[dict]) -> dict:
    from policies.evaluation import wilson_interval

    k, n = sum(e["successes"] for e in evals), sum(e["episodes"] for e in evals)
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "success_rate": k / n, "ci_low": lo, "ci_high": hi}


def pct(r: dict) -> str:
    return f"{100 * r['success_rate']:.0f}% [{100 * r['ci_low']:.0f}, {100 * r['ci_high']:.0f}]"


def table(results: dict) -> str:
    """One task's table: a row per variant, then the scripted references."""
    qualities = None
    rows = []
    for name, v in results["variants"].items():
        runs = v.get("runs", [])
        if not runs:
            continue
        p = pooled([r["eval"] for r in runs])
        per_seed = "; ".join(f"s{r['seed']}: {r['eval']['successes']}/{r['eval']['episodes']}" for r in runs)
        w = v.get("weights") or {}
        qualities = qualities or list((w.get("weight_share") or {}).keys())
        share = " / ".join(f"{100 * w['weight_share'][q]:.0f}" for q in qualities) if w else ""
        train_s = np.mean([r["train_seconds"] for r in runs])
        rows.append(f"| {name} | {pct(p)} | {per_seed} | {train_s:.0f} s | {w.get('mean', float('nan')):.2f} | "
                    f"{100 * w.get('zero_frac', float('nan')):.0f}% | {100 * w.get('ess_frac', float('nan')):.0f}% | "
                    f"{share} |")
    head = ["| variant | success, pooled [95% CI] | per seed: successes | train time / run | mean w | zero w | "
            f"ESS / N | weight share % ({' / '.join(qualities or [])}) |", "|---|---|---|---|---|---|---|---|"]
    refs = [f"| {n} (scripted reference) | {pct(r)} | | | | | | |" for n, r in results.get("references", {}).items()]
    return "\n".join(head + rows + refs)


def target_check(evals: dict[str, list[dict]]) -> tuple[list[str], dict]:
    """Lines saying, for every candidate rule (label-free: not plain BC, not expert-only BC), its success relative
    to expert-only BC and whether its pooled interval lies entirely above plain BC's; and the best rule."""
    p = {name: pooled(e) for name, e in evals.items() if e}
    if "none" not in p or "expert_only" not in p:
        return ["(plain BC or expert-only BC has no finished run yet)"], {}
    ref, base = p["expert_only"], p["none"]
    lines, best = [], None
    for name, r in sorted(p.items(), key=lambda kv: -kv[1]["success_rate"]):
        if name in REFERENCE_VARIANTS:
            continue
        ratio = r["success_rate"] / ref["success_rate"] if ref["success_rate"] > 0 else float("nan")
        beats = r["ci_low"] > base["ci_high"]
        given = labels_given(name) if is_labelled(name) else ""
        labelled = (f" (episodes labelled {given})" if given.startswith("until") else
                    f" (with {given} episodes labelled)" if given else "")
        lines.append(f"- `{name}`{labelled}: {pct(r)} = {100 * ratio:.0f}% of expert-only BC ({pct(ref)}); "
                     f"{'beats' if beats else 'does not beat'} plain BC ({pct(base)}) beyond the intervals")
        if best is None and not is_labelled(name):
            best = {"variant": name, "ratio": ratio, "beats_plain_bc": beats, "meets_target": ratio >= 0.9 and beats}
    return lines, best or {}


def _rate(per_task: dict[str, dict], tasks: list[str], name: str, seeds: set[int] | None = None) -> float:
    ev = [r["eval"] for t in tasks for r in _runs_on(per_task[t], name) if seeds is None or r["seed"] in seeds]
    return pooled(ev)["success_rate"] if ev else float("nan")


def _share(per_task: dict[str, dict], tasks: list[str], name: str, seeds: set[int] | None = None) -> float:
    """(rule − plain) / (expert-only − plain) on success pooled over ``tasks`` (and ``seeds``)."""
    plain, expert = _rate(per_task, tasks, "none", seeds), _rate(per_task, tasks, "expert_only", seeds)
    gap = expert - plain
    return (_rate(per_task, tasks, name, seeds) - plain) / gap if gap > 0 else float("nan")


def gap_shares(per_task: dict[str, dict]) -> list[str]:
    """Per rule, the share of the plain → expert-only gap it closes, pooled over the tasks where it and both
    references ran, and beside it each seed's share (that seed's runs pooled over those tasks): the spread the
    pooled figure hides."""
    rows = ["| rule | tasks | success | share of the gap | per seed |", "|---|---|---|---|---|"]
    names = [n for res in per_task.values() for n in res["variants"] if n not in ("none", "expert_only")]
    for n in dict.fromkeys(names):
        tasks = [t for t, res in per_task.items() if all(_runs_on(res, k) for k in (n, "none", "expert_only"))]
        if not tasks:
            continue
        seeds = sorted({r["seed"] for t in tasks for r in _runs_on(per_task[t], n)})
        per_seed = ", ".join(f"s{s}: {100 * _share(per_task, tasks, n, {s}):.0f}%" for s in seeds)
        ev = [r["eval"] for t in tasks for r in _runs_on(per_task[t], n)]
        rows.append(f"| {n} | {', '.join(tasks)} | {pct(pooled(ev))} | {100 * _share(per_task, tasks, n):.0f}% | "
                    f"{per_seed} |")
    return rows


def draw_summary(per_task: dict[str, dict]) -> list[str]:
    """Per N, the random draws of N good episodes (``good_n{N}``: draw 0; ``good_n{N}_d{D}``): each draw's seed-0
    success pooled over the tasks where every draw ran, their mean and range, beside draw 0's range over its
    seeds — whether *which* N good episodes matters beyond the training seed (docs/experiments.md)."""
    rows = ["| good episodes | draws (seed 0, pooled over tasks) | mean | range | draw 0 per seed | draw 0's range |",
            "|---|---|---|---|---|---|"]
    for n in sorted({int(m.group(1)) for res in per_task.values() for v in res["variants"]
                     if (m := re.fullmatch(r"good_n(\d+)_d\d+", v))}):
        names = [f"good_n{n}", *sorted(v for res in per_task.values() for v in res["variants"]
                                        if v.startswith(f"good_n{n}_d"))]
        names = list(dict.fromkeys(names))
        tasks = [t for t, res in per_task.items() if all(any(r["seed"] == 0 for r in _runs_on(res, k)) for k in names)]
        if not tasks:
            continue
        draws = [_rate(per_task, tasks, k, {0}) for k in names]
        seeds = sorted({r["seed"] for t in tasks for r in _runs_on(per_task[t], names[0])})
        by_seed = [_rate(per_task, tasks, names[0], {s}) for s in seeds]
        rows.append(f"| {n} ({', '.join(tasks)}) | {', '.join(f'{100 * d:.0f}%' for d in draws)} | "
                    f"{100 * np.mean(draws):.0f}% | {100 * (max(draws) - min(draws)):.0f} points | "
                    f"{', '.join(f's{s}: {100 * r:.0f}%' for s, r in zip(seeds, by_seed, strict=True))} | "
                    f"{100 * (max(by_seed) - min(by_seed)):.0f} points |")
    return rows if len(rows) > 2 else []


def plot_success(per_task: dict[str, dict], path: Path) -> Path:
    """Success per variant (rows) and task (bars) with 95% Wilson intervals."""
    from pipeline.plots import figure

    names = []
    for res in per_task.values():
        names += [n for n, v in res["variants"].items() if v.get("runs") and n not in names]
    fig = figure(8.0, 0.45 * len(names) * max(1, len(per_task)) ** 0.5 + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(1, len(per_task))
    for k, (task, res) in enumerate(per_task.items()):
        ys, xs, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            runs = res["variants"].get(n, {}).get("runs", [])
            if runs:
                p = pooled([r["eval"] for r in runs])
                ys.append(i + k * height)
                xs.append(100 * p["success_rate"])
                lo.append(max(0.0, 100 * (p["success_rate"] - p["ci_low"])))  # never below 0 (matplotlib refuses)
                hi.append(max(0.0, 100 * (p["ci_high"] - p["success_rate"])))
        ax.barh(ys, xs, height=height, xerr=[lo, hi], label=task, capsize=2)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("success % (pooled over seeds, 95% Wilson)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def load_results(out: Path) -> dict[str, dict[str, dict]]:
    """reward → task → results of every finished run under ``out``; a simulated profile's results get the task's
    reward-free references (plain and expert-only BC, run once per task) in front of its rules."""
    by_reward: dict[str, dict[str, dict]] = {}
    for f in sorted(out.glob("*/results.json")):
        by_reward.setdefault(COLUMN, {})[f.parent.name] = json.loads(f.read_text())
    for f in sorted(out.glob("*/policy_*/results.json")):
        by_reward.setdefault(f"{COLUMN} ({f.parent.name.removeprefix('policy_')})", {})[f.parent.parent.name] = \
            json.loads(f.read_text())
    for f in sorted([*out.glob("*/reward_*/results.json"), *out.glob("*/policy_*/reward_*/results.json")]):
        policy_dir = f.parent.parent
        nested = policy_dir.name.startswith("policy_")
        task = policy_dir.parent.name if nested else policy_dir.name
        suffix = f" ({policy_dir.name.removeprefix('policy_')})" if nested else ""
        reward = f.parent.name.removeprefix("reward_") + suffix
        res = json.loads(f.read_text())
        base = by_reward.get(COLUMN + suffix, {}).get(task, {}).get("variants", {})
        refs = {n: base[n] for n in REFERENCE_VARIANTS if n in base and n not in res["variants"]}
        res["variants"] = {**refs, **res["variants"]}
        by_reward.setdefault(reward, {})[task] = res
    order = [COLUMN, *PROFILE_ORDER, *(RANK + p for p in PROFILE_ORDER)]
    return dict(sorted(by_reward.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _runs_on(res: dict, n: str) -> list[dict]:
    return res["variants"].get(n, {}).get("runs", [])


def reward_sections(reward: str, per_task: dict[str, dict], out: Path) -> list[str]:
    """The per-task tables, target checks and (over several tasks) the pooled table of one reward."""
    parts, everything = [], {}
    base = reward.split(" (")[0]  # "qwen3vl_8b_like (diffusion)": the profile, then the policy if not ACT
    suffix = "" if reward == COLUMN else (f" — reward `{reward}`" +
                                          (" (simulated VLM errors)" if base != COLUMN else ""))
    for task, res in per_task.items():
        evals = {n: [r["eval"] for r in v.get("runs", [])] for n, v in res["variants"].items()}
        lines, best = target_check(evals)
        for n, e in evals.items():
            everything.setdefault(n, []).extend(e)
        parts += [f"## {task}{suffix}", "", f"Corpus: {res.get('corpus')} ({res.get('corpus_successes')} successful "
                  "episodes); commands: " + "; ".join(f"`{c}`" for c in res.get("commands", [])), "", table(res), "",
                  "Target check:", "", *lines, "", f"Best label-free rule: {best}", ""]
    if len(per_task) > 1:
        # pooling is comparable only over the same tasks: variants missing on some task are shown, not pooled
        complete = {n: e for n, e in everything.items() if all(_runs_on(res, n) for res in per_task.values())}
        rows = ["| variant | success, pooled over tasks and seeds [95% CI] | " +
                " | ".join(per_task) + " |", "|---|---|" + "---|" * len(per_task)]
        for n in [n for n in everything if everything[n]]:
            cells = [pct(pooled([r["eval"] for r in _runs_on(res, n)])) if _runs_on(res, n) else ""
                     for res in per_task.values()]
            total = pct(pooled(everything[n])) if n in complete else "(not run on every task)"
            rows.append(f"| {n} | {total} | " + " | ".join(cells) + " |")
        lines, best = target_check(complete)
        title = "## All tasks" + suffix
        parts += [title, "", *rows, "", "Target check (pooled over tasks):", "", *lines, "",
                  f"Best label-free rule: {best}", ""]
    if reward != COLUMN:
        parts += [f"### Share of the plain → expert-only gap{suffix}", "", *gap_shares(per_task), ""]
    if reward == COLUMN and (draws := draw_summary(per_task)):  # reward-free: the other rewards repeat them
        parts += [f"### Random draws of N good episodes{suffix}", "", *draws, ""]
    image = "success.png" if reward == COLUMN else "success_" + re.sub(r"[^A-Za-z0-9]+", "_", reward).strip("_") + ".png"
    parts += [f"![success per variant{suffix}]({plot_success(per_task, out / image).name})", ""]
    return parts


def profile_summary(by_reward: dict[str, dict[str, dict]]) -> tuple[list[str], dict]:
    """Success per rule × reward, pooled over the tasks every cell ran on: a table, and the data of the plot."""
    rewards = list(by_reward)
    rules: list[str] = []
    for per_task in by_reward.values():
        for res in per_task.values():
            rules += [n for n in res["variants"] if n not in rules]
    cells: dict[str, dict[str, dict]] = {}
    for n in rules:
        for r, per_task in by_reward.items():
            evals = [e["eval"] for res in per_task.values() for e in _runs_on(res, n)]
            if evals and all(_runs_on(res, n) for res in per_task.values()):
                cells.setdefault(n, {})[r] = pooled(evals)
    rows = ["| rule | " + " | ".join(rewards) + " |", "|---|" + "---|" * len(rewards)]
    rows += [f"| {n} | " + " | ".join(pct(cells[n][r]) if r in cells.get(n, {}) else "" for r in rewards) + " |"
             for n in rules if n in cells]
    return rows, cells


def plot_profiles(cells: dict[str, dict[str, dict]], rewards: list[str], path: Path) -> Path:
    """Success vs reward (column, then the simulated profiles by the error they carry), one line per rule."""
    from pipeline.plots import figure

    fig = figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rewards))
    for n, by in cells.items():
        pts = [(i, by[r]) for i, r in enumerate(rewards) if r in by]
        if not pts:
            continue
        xs = [i for i, _ in pts]
        ys = np.array([100 * p["success_rate"] for _, p in pts])
        lo = np.array([100 * p["ci_low"] for _, p in pts])
        hi = np.array([100 * p["ci_high"] for _, p in pts])
        style = "--" if n in REFERENCE_VARIANTS else "-"
        ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], fmt=style + "o", capsize=3, label=n, lw=1.2, ms=4)
    ax.set_xticks(x, rewards, rotation=15)
    ax.set_ylim(0, 100)
    ax.set_ylabel("success % (pooled over tasks and seeds, 95% Wilson)")
    ax.set_title("success vs reward: column = perfect progress; the others are SIMULATED VLM errors", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    return path


def report(out: str | Path) -> str:
    """``OUT/report.md`` from every results file under ``OUT``: per reward, per task and pooled over tasks, the
    target check; with simulated profiles also success per rule × reward (table and plot)."""
    out = Path(out)
    by_reward = load_results(out)
    if not by_reward:
        raise FileNotFoundError(f"no {out}/TASK/results.json found; run the experiment with --out {out} first")
    parts = []
    for reward, per_task in by_reward.items():
        parts += reward_sections(reward, per_task, out)
    # one summary per policy: pooled over the tasks each ran on, which differ (the Diffusion block: push-v3)
    by_policy: dict[str, dict[str, dict]] = {}
    for reward, per_task in by_reward.items():
        policy = reward.split(" (")[1].rstrip(")") if " (" in reward else ""
        by_policy.setdefault(policy, {})[reward] = per_task
    for policy, rewards in by_policy.items():
        if len(rewards) < 2:
            continue
        rows, cells = profile_summary(rewards)
        plot = plot_profiles(cells, list(rewards), out / f"success_vs_reward{'_' + policy if policy else ''}.png")
        parts += [f"## Success per rule and reward{' — ' + policy if policy else ''}", "",
                  "Pooled over tasks and seeds [95% Wilson]; `column` is the simulator's perfect progress, the "
                  "profiles are SIMULATED VLM reward errors (docs/reward_errors.md), not a real VLM.", "", *rows, "",
                  f"![success vs reward]({plot.name})", ""]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return text


def run_task(task: str, args, variants: list[str], reward: str = COLUMN) -> dict:
    """Corpus, annotations, references and every (variant, seed) run of one task on one reward; resumable."""
    from data.quality_labels import quality_by_episode, read_quality_labels
    from policies.evaluation import evaluate
    from policies.training import train

    task_dir = Path(args.out) / task
    out = reward_dir(task_dir, reward, policy_name(args))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    setup = experiment_setup(task, args, reward)
    if results.get("setup") != setup:
        results = {"setup": setup, "variants": {}}  # another setup: start the runs over
    command = "python -m benchmarks.rabc_experiment " + " ".join(args.argv)
    commands = results.setdefault("commands", [results["command"]] if "command" in results else [])
    if command not in commands:
        commands.append(command)  # each invocation that added runs (e.g. more variants later)
    results.pop("command", None)

    def save() -> None:
        path.write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(table(results) + "\n")

    t0 = time.perf_counter()
    corpus = make_corpus(args, task, task_dir)
    labels_doc = read_quality_labels(corpus)
    labels = quality_by_episode(labels_doc)
    expert_eps = sorted(e for e, q in labels.items() if q == "expert")
    results["corpus"] = {q: sum(1 for v in labels.values() if v == q) for q in sorted(set(labels.values()))}
    results["corpus_successes"] = sum(bool(e["success"]) for e in labels_doc["episodes"])
    # the annotation's window is what the policy trains on (ACT: one observation and its action chunk)
    obs_steps, horizon = annotation_window(train_config(policy_overrides(args)))
    window = [f"window.obs_steps={obs_steps}"]
    policy_root = reward_dir(task_dir, COLUMN, policy_name(args))
    shards = {"all": annotate(corpus, out / "annotation_all", None, horizon,
                              [*reward_overrides(reward, args.reward_column), *window]),
              "expert": annotate(corpus, policy_root / "annotation_expert", expert_eps, horizon, window)}
    for which in sorted({variant_spec(n)[1] for n in variants} - {"all", "expert"}):  # success, good, goodN, goodNdD
        shards[which] = annotate(corpus, policy_root / f"annotation_{which}", subset_episodes(which, labels_doc),
                                 horizon, window)
    print(f"{task}: corpus + annotation {time.perf_counter() - t0:.0f} s; {results['corpus']}", flush=True)

    if "references" not in results:
        refs = {}
        for name in ("expert", "random"):
            cfg = stage_config("evaluate", [f"policy={name}", f"env.task={task}", *evaluate_overrides(args),
                                            f"out={out / ('eval_' + name)}"])
            r = evaluate(cfg, progress=False)
            refs[name] = {k: r[k] for k in ("successes", "episodes", "success_rate", "ci_low", "ci_high")}
        results["references"] = refs
        save()

    # seed-major: every variant gets its seed 0 before any gets a seed 1, so a cut-short run stays comparable
    for name in variants:
        extra, which = variant_overrides(name), variant_spec(name)[1]
        v = results["variants"].setdefault(name, {"overrides": extra, "shards": which, "runs": []})
        if v["overrides"] != extra:  # `recommended` now means another rule: its earlier runs no longer count
            results["variants"][name] = {"overrides": extra, "shards": which, "runs": []}
            if any(o.startswith("labels=") for o in variant_spec(name)[0]):
                (out / "reviewed_labels.csv").unlink(missing_ok=True)  # the heaviest episodes of the old rule
                for o in [o for o in variant_spec(name)[0] if o.startswith(PERSON)]:
                    person_spec(o, name, out)[3].unlink(missing_ok=True)
    first = getattr(args, "first_seed", 0) or 0
    for seed in range(first, first + args.seeds):
        for name in variants:
            extra, which = variant_overrides(name), variant_spec(name)[1]
            v = results["variants"][name]
            if seed in {r["seed"] for r in v["runs"]}:
                continue
            run_dir = out / "runs" / f"{name}_s{seed}"
            if "labels=REVIEWED" in extra:
                review = reviewed_labels(shards[which], args, labels_doc, out / "reviewed_labels.csv")
                extra = [f"labels={review}" if o == "labels=REVIEWED" else o for o in extra]
            for o in [o for o in extra if o.startswith(PERSON)]:
                k, order, rule, file = person_spec(o, name, out)
                person = person_labels(shards[which], args, labels_doc, file, k, order, rule)
                extra = [f"labels={person}" if x == o else x for x in extra]
            cfg = train_config([f"data.shards={shards[which]}", *policy_overrides(args), *extra,
                                f"seed={seed}", f"out={run_dir}"])
            if "weights" not in v:
                v["weights"] = weight_report(cfg, labels)
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            summary = train(cfg)
            ecfg = stage_config("evaluate", [f"policy={summary.export}", f"env.task={task}",
                                             *evaluate_overrides(args), f"out={run_dir / 'eval'}"])
            te = time.perf_counter()
            r = evaluate(ecfg, progress=False)
            v["runs"].append({"seed": seed, "train_seconds": round(summary.seconds, 1),
                              "eval_seconds": round(time.perf_counter() - te, 1), "final_loss": summary.final_loss,
                              "eval": {k: r[k] for k in ("successes", "episodes", "success_rate", "ci_low",
                                                         "ci_high", "mean_return", "mean_length")}})
            v["pooled"] = pooled([x["eval"] for x in v["runs"]])
            save()
            print(f"{task} [{reward}] {name} seed {seed}: {pct(r)} success, train {summary.seconds:.0f} s "
                  f"({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated MetaWorld tasks, run one after another")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per variant")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="the first training seed (held-out runs use seeds never used by the grid, e.g. 10)")
    # size options default to None: the overlays configs/experiment/rabc_*.yaml hold the defaults
    ap.add_argument("--rollouts", type=int, help="evaluation rollouts per run (setup seeds from 1000; "
                    "default: rabc_evaluate.yaml, 67: x 3 seeds = 201 per variant)")
    ap.add_argument("--steps", type=int, help="training steps per run (default: rabc_train.yaml)")
    ap.add_argument("--episodes", type=int, help="corpus episodes per task (default, mix: rabc_corpus.yaml)")
    ap.add_argument("--episode-length", type=int, help="steps per corpus episode (default: rabc_corpus.yaml)")
    ap.add_argument("--max-rollout-steps", type=int, help="steps per rollout (default: rabc_evaluate.yaml)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    ap.add_argument("--labels", metavar="K", help="a label budget: a SIMULATED person labels K of the episodes (gN: "
                    "until N are good) for every variant but the references, in --order, the heaviest under the "
                    "variant's own rule; the runs are named VARIANT+kK_ORDER")
    ap.add_argument("--order", default="heaviest", help="the acquisition order of --labels: heaviest, uncertain, "
                    "mix or spread (policies.weighting.calibrated)")
    ap.add_argument("--dim-model", type=int, help="ACT width; also sets dim_feedforward and n_heads "
                    "(default: rabc_train.yaml)")
    ap.add_argument("--encoder-layers", type=int)
    ap.add_argument("--chunk", type=int, help="action chunk, also the annotation window "
                    "(default: rabc_train.yaml)")
    ap.add_argument("--action-steps", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--set", dest="train_set", action="append", metavar="KEY=VALUE",
                    help="a further train override of every run (e.g. policy.num_inference_steps=10), repeatable; "
                    "recorded in the setup, so runs with other overrides start over")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core machine, 2 threads oversubscribe and run ~5x slower)")
    ap.add_argument("--reward", default=COLUMN,
                    help="what progress comes from: `column` (the dense-reward column, a perfect signal) or a "
                    "SIMULATED VLM-error profile (reward=vlm_errors: oracle, qwen3vl_32b_like, qwen3vl_8b_like, "
                    "weak); plain and expert-only BC read no reward and run once per task")
    ap.add_argument("--simulator", choices=SIMULATORS, default="additive",
                    help="with a profile: which simulator of the errors (additive: the first; rank: the second, of "
                    "another form; docs/reward_errors.md); its runs live under TASK/reward_rank_PROFILE")
    ap.add_argument("--reward-column", default="next.reward",
                    help="with --reward column: the per-frame column annotated as progress")
    ap.add_argument("--policy", choices=POLICIES, default="act",
                    help="act: the small ACT of every table; diffusion: a state-only Diffusion sized for a CPU "
                    "(configs/experiment/rabc_train_diffusion.yaml; its runs live under TASK/policy_diffusion/)")
    ap.add_argument("--out", default="outputs/rabc_experiment")
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    ap.add_argument("--report", metavar="OUT", help="only write OUT/report.md from the finished runs under OUT")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.report:
        print(report(args.report))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.labels:
        variants = [v if v in REFERENCE_VARIANTS else f"{v}+k{args.labels}_{args.order}" for v in variants]
    for v in variants:
        try:
            variant_spec(v)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            return 2
    reads_control = [v for v in variants if (m := COMPOSITE.match(v)) and m["base"] in CONTROL_VARIANTS
                     or v in CONTROL_VARIANTS]
    if args.reward == COLUMN and reads_control:
        print(f"error: variants {reads_control} read the static-video control, "
              "which the column annotation lacks; run them with --reward PROFILE", file=sys.stderr)
        return 2
    retired = [v for v in variants if v in FIRST_CALIBRATION]
    if retired:
        print(f"error: variant(s) {retired} ran the first calibration, which the code no longer has; their rows "
              "stay in the results; the revised calibration's are labels2_k*", file=sys.stderr)
        return 2
    from configs import ConfigError

    try:
        policy = train_config(policy_overrides(args)).policy
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if policy.name == "act" and policy.chunk_size < policy.n_action_steps:
        print(f"error: action steps {policy.n_action_steps} exceed the chunk {policy.chunk_size}; "
              "give --action-steps <= --chunk", file=sys.stderr)
        return 2
    from configs import reward_profiles

    if args.reward != COLUMN and args.reward not in reward_profiles():
        print(f"error: --reward {args.reward!r} is neither `column` nor a profile ({', '.join(reward_profiles())})",
              file=sys.stderr)
        return 2
    from data.metaworld.sim import check_task

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        for t in tasks:
            check_task(t)
    except ValueError as e:
        print(f"error: --tasks: {e}", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from configs.commands import quiet_libraries

    warnings.filterwarnings("ignore")
    logging.getLogger("lerobot").setLevel(logging.ERROR)
    quiet_libraries()  # Lightning's tips and device lines (set on its loggers, which its import resets above them)
    # the references read no reward: they run once per task, on the column annotation's folder
    refs = [v for v in variants if v in REFERENCE_VARIANTS]
    rules = [v for v in variants if v not in REFERENCE_VARIANTS or args.reward == COLUMN]
    reward = reward_key(args.reward, args.simulator)
    results = {}
    for t in tasks:
        if args.reward != COLUMN and refs:
            run_task(t, args, refs, COLUMN)
        results[t] = run_task(t, args, rules, reward)
    print(report(args.out))
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

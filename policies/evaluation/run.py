"""python -m policies.evaluate policy=EXPORT_DIR env.task=push-v3 episodes=N seed=S out=DIR: simulator rollouts.

Rolls a policy out in MetaWorld (:mod:`data.metaworld.sim`, the observations of the demo corpus and of
lerobot's env) and writes ``DIR/eval.json``: success rate with a 95% Wilson interval, mean return (sum of the
per-step reward scaled to [0, 1], as ``next.reward`` in the corpus), episode lengths, per-episode results;
plus the first ``videos`` rollouts as MP4 (or GIF) in ``DIR/videos/``.

``policy`` is an exported folder (lerobot ``save_pretrained`` of the policy and of its pre/post processors; the
policy runs through its saved preprocessor, ``select_action`` and postprocessor, as under ``lerobot-eval``), or
``expert`` / ``random``: MetaWorld's scripted expert and uniform random actions, the references a trained
policy sits between. All three go through the same rollout and counting code
(:func:`policies.evaluation.rollouts.rollout`).

Episode ``i`` uses the task setup of seed ``seed + i`` (lerobot-eval's convention); an episode ends at its first
success (as in lerobot's env) or after ``max_steps`` steps. Corpus episodes use seeds from the corpus's ``seed``
upwards (0 by default), so evaluation seeds from 1000 are setups the policy has not seen.

``record=true`` also writes every rollout to ``DIR/recording`` as a LeRobot v3 dataset, the shape lerobot's
recording tools give a real robot's rollouts (:mod:`policies.evaluation.recording`): one episode per rollout,
one row per step with the camera image the policy saw, ``observation.state``, the action taken,
``next.reward``, ``next.success`` (true from the first success on) and the instruction as task, at the
simulator's 80 fps. The policy's name (``record_name``; by default the export folder's name, or ``expert`` /
``random``) and the rollouts' provenance go to ``recording/meta/topbc_recording.json`` (read it with
:func:`~policies.evaluation.recording.recording_info`). A ``DIR/recording`` of another configuration is
refused unless ``overwrite=true``; episodes are written as they end.

``DIR`` is claimed as every command claims its output (:func:`configs.outputs.claim_output`): a folder that is
not empty and was not written by an evaluation is refused whatever ``overwrite`` says; an evaluation of another
configuration there is refused unless ``overwrite=true``, which replaces only what an evaluation writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig

from configs.outputs import claim_output, config_identity
from data.metaworld import sim as simlib
from policies.evaluation.policies import LeRobotPolicy, make_policy, provided_features
from policies.evaluation.recording import RECORDING_DIR, RolloutRecorder, recording_provenance
from policies.evaluation.rollouts import evaluate_policy
from policies.evaluation.video import write_video

CONFIG_NAME = "evaluate"
KIND = "evaluate"
OURS = ("eval.json", "videos", "config.yaml", RECORDING_DIR)  # what an evaluation writes into its folder
# keys that change nothing in the rollouts (or belong to recorded evaluation): a re-run may differ in them
NOT_IDENTITY = ("out", "overwrite", "force", "videos", "video_format", "video_fps", "device", "reward",
                "recordings", "names", "episode_policies", "labels", "success_column", "camera", "judge")


def check_trained_task(policy, task: str, instruction: str, force: bool) -> None:
    """Refuse an export trained on other tasks than ``task`` (its ``topbc.json``), unless ``force``: a policy
    run on a task it never saw fails quietly, which reads as a bad policy rather than a wrong command."""
    from policies.module import EXPORT_INFO

    info_path = Path(str(policy)) / EXPORT_INFO
    if force or not info_path.is_file():  # expert/random, or an export made elsewhere: nothing to compare
        return
    try:
        tasks = list(json.loads(info_path.read_text()).get("tasks") or [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{info_path} is not valid JSON ({exc}); re-export the checkpoint "
                         "(python -m policies.export CKPT OUT)") from None
    known = {v: k for k, v in simlib.task_descriptions().items()}
    if tasks and instruction not in tasks and task not in tasks:
        trained = ", ".join(f"{known[t]} ({t!r})" if t in known else repr(t) for t in tasks[:5])
        raise ValueError(f"policy={policy} was trained on {trained} (its {EXPORT_INFO}), not env.task={task} "
                         f"({instruction!r}); evaluate on its task, or set force=true to roll it out here anyway")


def follow_plan(cfg: DictConfig) -> None:
    """``plan=FILE`` with ``record=true``: record this policy's trials of the run plan (``python -m
    policies.plan``): as many episodes as it plans for the recorded name, trial k as episode k (seed + k, so
    the trials of one block share the task setup)."""
    from policies.evaluation.plan import PlanError, plan_policies, read_plan
    from policies.evaluation.recording import default_name

    if not cfg.get("plan"):
        return
    if not cfg.record:
        raise PlanError(f"plan={cfg.plan} is followed when recording: add record=true (and record_name=NAME as "
                        "the plan names the policy)")
    name = str(cfg.record_name) if cfg.get("record_name") else default_name(str(cfg.policy))
    planned = plan_policies(read_plan(str(cfg.plan)))
    if name not in planned:
        raise PlanError(f"the recording's name {name!r} is not a policy of plan={cfg.plan} ({list(planned)}); "
                        "set record_name= to the plan's name of this policy")
    cfg.episodes = planned[name]


def evaluate(cfg: DictConfig, progress: bool = True) -> dict:
    """Evaluate ``cfg.policy`` as configured; writes ``cfg.out``/eval.json and videos; returns the report."""
    from configs import ConfigError
    from configs.types import check_types

    check_types(cfg, CONFIG_NAME)
    if not cfg.out:
        raise ConfigError("out is not set: pass out=DIR, the folder for eval.json and the videos")
    task = simlib.check_task(cfg.env.task)
    instruction = simlib.task_descriptions()[task]
    check_trained_task(cfg.policy, task, instruction, bool(cfg.get("force")))
    follow_plan(cfg)
    t0 = time.perf_counter()
    policy = make_policy(cfg, task, instruction)
    size = cfg.env.image_size
    if size is None:
        size = (policy.image_size() if isinstance(policy, LeRobotPolicy) else None) or (96, 96)
    if len(size) != 2:
        raise ValueError(f"env.image_size={list(size)}: give [height, width] or null")
    out = Path(cfg.out)  # claimed once the inputs are known good, before any rollout
    claim_output(out, {"config": config_identity(cfg, NOT_IDENTITY)}, bool(cfg.overwrite), kind=KIND, ours=OURS)
    sim = simlib.MetaWorldSim(task, image_size=(int(size[0]), int(size[1])), camera=str(cfg.env.camera),
                              shadows=bool(cfg.env.shadows))
    recorder = None
    try:
        if isinstance(policy, LeRobotPolicy):
            policy.check_features(provided_features(sim))
        if cfg.record:  # claimed before any rollout: a refused recording leaves everything in out as it was
            recorder = RolloutRecorder.start(out / RECORDING_DIR, sim, recording_provenance(cfg, sim),
                                             overwrite=bool(cfg.overwrite))
        summary, clips = evaluate_policy(sim, policy, int(cfg.episodes), int(cfg.seed), int(cfg.max_steps),
                                         bool(cfg.stop_on_success), int(cfg.videos), progress=progress,
                                         on_step=recorder.step if recorder else None,
                                         on_episode=recorder.end_episode if recorder else None)
        if recorder is not None:
            recorder.finish()
    except BaseException:
        if recorder is not None:
            recorder.discard()
        raise
    finally:
        sim.close()
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, frames in enumerate(clips):
        ep = summary["per_episode"][i]
        name = f"episode_{i:03d}_seed{ep['seed']}_{'success' if ep['success'] else 'fail'}.{cfg.video_format}"
        videos.append(str(write_video(frames, out / "videos" / name, int(cfg.video_fps)).relative_to(out)))
    seconds = time.perf_counter() - t0
    report = {
        "policy": str(cfg.policy), "task": task, "instruction": instruction, **summary,
        "seed": int(cfg.seed), "seeds": [int(cfg.seed) + i for i in range(int(cfg.episodes))],
        "max_steps": int(cfg.max_steps), "stop_on_success": bool(cfg.stop_on_success),
        "image_size": list(sim.image_size), "camera": sim.camera, "shadows": bool(cfg.env.shadows),
        "videos": videos,
        "recording": RECORDING_DIR if recorder else None,
        "record_name": recorder.info["policy"] if recorder else None,
        "seconds": round(seconds, 2),
        "steps_per_second": round(sum(summary["lengths"]) / max(seconds, 1e-9), 1),
    }
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    # ValueError/FileNotFoundError: the simulator's and lerobot's own messages about a bad task or folder
    return run_command(_main, argv, errors=(ValueError, FileNotFoundError))


def _main(argv: list[str]) -> int:
    from configs import ConfigError, parse_cli, save_config

    cfg = parse_cli(CONFIG_NAME, argv)
    if cfg.get("recordings"):
        return _main_recordings(cfg)
    if cfg.video_format not in ("mp4", "gif"):
        raise ConfigError(f"video_format={cfg.video_format!r}: choose mp4 or gif")
    report = evaluate(cfg)
    save_config(cfg, cfg.out)
    print(f"{report['policy']} on {report['task']}: success {report['successes']}/{report['episodes']} = "
          f"{report['success_rate']:.1%} (95% CI {report['ci_low']:.1%}-{report['ci_high']:.1%}), "
          f"mean return {report['mean_return']:.2f}, mean length {report['mean_length']:.1f}")
    print(f"wrote {Path(cfg.out) / 'eval.json'}")
    if report["recording"]:
        print(f"recorded {report['episodes']} rollouts of {report['record_name']!r} as a LeRobot dataset in "
              f"{Path(cfg.out) / report['recording']}")
    return 0


def _main_recordings(cfg) -> int:
    """``recordings=[...]``: evaluate recorded rollouts (policies/evaluation/recorded.py)."""
    from configs import save_config
    from configs.types import check_types
    from policies.evaluation.recorded import evaluate_recordings

    check_types(cfg, CONFIG_NAME)
    if isinstance(cfg.recordings, str):
        raise ValueError(f"recordings={cfg.recordings!r}: give a list, e.g. recordings=[{cfg.recordings}]")
    report = evaluate_recordings(cfg)
    save_config(cfg, cfg.out)
    for name, r in report["policies"].items():
        rate = "no labelled episodes" if r["success_rate"] is None else (
            f"{r['successes']}/{r['episodes']} = {r['success_rate']:.1%} (95% CI {r['ci_low']:.1%}-{r['ci_high']:.1%})")
        extra = f", {r['unlabelled']} unlabelled" if r["unlabelled"] else ""
        print(f"{name}: success {rate}{extra}")
    for p in report["pairs"]:
        if p["p_value"] is not None:
            print(f"{p['a']} - {p['b']}: {p['difference']:+.1%} [{p['ci_low']:+.1%}, {p['ci_high']:+.1%}], "
                  f"p = {p['p_value']:.3g} ({p['test']})")
        if p.get("paired") and p["paired"]["p_value"] is not None:
            q = p["paired"]
            print(f"{p['a']} - {p['b']}, {q['pairs']} matched pairs ({q['a_only']} {p['a']} only, {q['b_only']} "
                  f"{p['b']} only): p = {q['p_value']:.3g} ({q['test']})")
        if p.get("sequential"):
            print(f"{p['a']} vs {p['b']}: {p['sequential']['verdict']} ({p['sequential']['test']}, "
                  f"alpha {p['sequential']['alpha']:g}, beta {p['sequential']['beta']:g})")
    print(f"wrote {Path(cfg.out) / 'report.md'}; label or relabel: python -m policies.review {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


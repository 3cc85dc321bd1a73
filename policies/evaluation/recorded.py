"""python -m policies.evaluate recordings=[DIR_A,DIR_B] labels=labels.csv out=OUT: recorded rollouts in,
success with intervals and comparisons out.

The input is what a robot gives: LeRobot v3 datasets of policy rollouts (recorded with lerobot's tools, e.g.
``lerobot-rollout --strategy.type=episodic --dataset.repo_id=...``, or by ``policies.evaluate record=true`` in
the simulator), a local folder or a hub id each, one dataset per policy (``names=[...]``, else the
recording's own name, else its folder name) or one dataset with an episode → policy map (``episode_policies``).

Per episode the label comes, in this order of trust, from a person (``labels``), the recording's success
column (``success_column``), or the reward model's success detection (``reward=...``, the judge;
:mod:`policies.evaluation.judging`); an episode none of them labels is unlabelled and counted apart.

Two steps, so relabelling is cheap: :func:`evaluate_recordings` reads every episode once (decodes its camera,
scores it with the reward model, writes its video, thumbnails and progress) into ``OUT/episodes.json``
(written after each episode: an interrupted run continues where it stopped); :func:`remake_report` turns that
and the labels file into ``report.md``, ``report.json`` and the figures, in seconds — what
``python -m policies.review OUT`` calls after a person labels.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from configs import ConfigError
from configs.outputs import atomic_write, claim_output
from data.success_labels import read_labels

EPISODES_FILE = "episodes.json"
DEFAULT_LABELS = "labels.csv"  # in the evaluation folder, when no labels file is given
KIND = "evaluate-recordings"
OURS = (EPISODES_FILE, "report.md", "report.json", "figures", "videos", "thumbnails", "config.yaml")
THUMBNAILS = 6  # frames in an episode's thumbnail strip
THUMB_HEIGHT = 72  # pixels


class RecordingError(ConfigError):
    """A recording, its episodes or its labels cannot be evaluated; the message says which and what to do."""


# --------------------------------------------------------------------------------------------- recordings


def _policy_names(cfg) -> list[str]:
    """One policy name per recording: ``names``, else the recording's own (``meta/topbc_recording.json``),
    else its folder (or hub id's) last part."""
    recordings = [str(r) for r in cfg.recordings]
    given = list(cfg.names) if cfg.get("names") else None
    if given is not None and len(given) != len(recordings):
        raise RecordingError(f"names={given} gives {len(given)} names for {len(recordings)} recordings "
                             f"{recordings}; give one per recording, in the same order")
    names = []
    for i, rec in enumerate(recordings):
        if given is not None:
            names.append(str(given[i]))
            continue
        info = _recording_info(rec)
        names.append(str(info.get("policy")) if info and info.get("policy") else Path(rec.rstrip("/")).name)
    seen: dict[str, str] = {}
    for rec, name in zip(recordings, names, strict=True):
        if name in seen:
            raise RecordingError(f"recordings {seen[name]} and {rec} both name policy {name!r}; their episodes "
                                 f"and labels would mix. Name each: names=[...] (one per recording), or merge "
                                 "the datasets into one first")
        seen[name] = rec
    return names


def _recording_info(rec: str) -> dict | None:
    from policies.evaluation.recording import recording_info

    root = Path(rec)
    return recording_info(root) if root.is_dir() else None


def _episode_policies(cfg) -> dict[int, str] | None:
    """``episode_policies``: a CSV (``episode_index,policy``) or JSON (``{"3": "act", ...}``) map."""
    path = cfg.get("episode_policies")
    if not path:
        return None
    if len(cfg.recordings) != 1:
        raise RecordingError(f"episode_policies={path} maps the episodes of ONE recording to policies; got "
                             f"{len(cfg.recordings)} recordings (give one dataset per policy instead)")
    path = Path(str(path))
    if not path.is_file():
        raise RecordingError(f"episode_policies={path} does not exist")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        return {int(k): str(v) for k, v in data.items()}
    import csv

    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"episode_index", "policy"} <= set(rows[0]):
        raise RecordingError(f"episode_policies={path} needs a header with episode_index,policy")
    return {int(r["episode_index"]): str(r["policy"]).strip() for r in rows}


def _open(rec: str, video_backend: str | None):
    from data.source import SourceError, open_dataset

    try:
        if Path(rec).exists():
            return open_dataset(root=rec, video_backend=video_backend)
        return open_dataset(repo_id=rec, video_backend=video_backend)
    except SourceError as exc:
        raise RecordingError(f"recording {rec}: {exc}") from exc


def _thumbnail_strip(frames: np.ndarray, path: Path) -> None:
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(THUMBNAILS, len(frames))).round().astype(int)
    h, w = frames.shape[1:3]
    tw = max(1, round(w * THUMB_HEIGHT / h))
    tiles = [Image.fromarray(frames[i]).resize((tw, THUMB_HEIGHT)) for i in idx]
    strip = Image.new("RGB", (tw * len(tiles), THUMB_HEIGHT))
    for i, t in enumerate(tiles):
        strip.paste(t, (i * tw, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)


def _identity(cfg) -> dict:
    from omegaconf import OmegaConf

    reward = OmegaConf.to_container(cfg.reward, resolve=True) if cfg.judge.enabled else None
    return {"recordings": [str(r) for r in cfg.recordings], "names": cfg.get("names"),
            "episode_policies": cfg.get("episode_policies"), "camera": cfg.get("camera"),
            "success_column": cfg.get("success_column"), "reward": reward}


def analysis_settings(cfg) -> dict:
    """The analyses beside the fixed-sample report (``pairs``, ``match_by``, ``partial_credit``,
    ``sequential``), checked; kept in ``episodes.json`` so that re-making the report (the review page) uses them."""
    from omegaconf import OmegaConf

    pairs, by, measure = cfg.get("pairs") or "unpaired", cfg.get("match_by") or "seed", cfg.get("partial_credit")
    if pairs not in ("unpaired", "matched"):
        raise RecordingError(f"pairs={pairs!r}: choose unpaired (independent trials) or matched (trial i of each "
                             "policy shares its set-up)")
    if by not in ("seed", "episode_index"):
        raise RecordingError(f"match_by={by!r}: choose seed (the recordings' per-episode seeds) or episode_index")
    if measure not in (None, "final", "max"):
        raise RecordingError(f"partial_credit={measure!r}: choose final, max or null (none)")
    seq = OmegaConf.to_container(cfg.sequential, resolve=True) if cfg.get("sequential") is not None else \
        {"enabled": False}
    if seq.get("enabled"):
        for key in ("alpha", "beta", "min_difference"):
            if not 0 < float(seq[key]) < 1:
                raise RecordingError(f"sequential.{key}={seq[key]} must lie strictly between 0 and 1")
        if int(seq["max_trials"]) < 1:
            raise RecordingError(f"sequential.max_trials={seq['max_trials']} must be at least 1 (trials per policy)")
    return {"pairs": pairs, "match_by": by, "partial_credit": measure, "sequential": seq}


def check_plan(cfg, names: list[str], sources, by_episode: dict[int, str] | None) -> dict | None:
    """``plan=FILE``: refuse recordings that did not follow the run plan (their policies, their counts, a plan
    of another seed named in a simulator recording's provenance); the plan's file and seed, or None."""
    from collections import Counter

    from policies.evaluation.plan import PlanError, check_counts, read_plan

    if not cfg.get("plan"):
        return None
    rows = read_plan(str(cfg.plan))
    seed = rows[0]["plan_seed"]
    if by_episode is not None:
        counts = dict(Counter(by_episode.values()))
    else:
        counts = {name: src.total_episodes for name, src in zip(names, sources, strict=True)}
    check_counts(rows, counts, cfg.plan)
    for rec, name in zip(cfg.recordings, names, strict=True):
        info = _recording_info(str(rec)) or {}
        followed = info.get("plan")
        if followed is not None and int(followed.get("seed", seed)) != seed:
            raise PlanError(f"recording {rec} ({name}) followed a plan of seed {followed.get('seed')}, not "
                            f"plan={cfg.plan}'s seed {seed}; evaluate it with the plan it followed")
    return {"file": str(cfg.plan), "seed": seed, "runs": len(rows)}


def _seeds(rec: str) -> list | None:
    info = _recording_info(rec) or {}
    seeds = info.get("seeds")
    return list(seeds) if isinstance(seeds, list) else None


def labels_file(out_dir: str | Path, state: dict | None = None, labels: str | Path | None = None) -> Path:
    """The labels file of an evaluation folder: ``labels`` if given (a path from the working folder), else
    ``episodes.json``'s ``labels_file`` (relative to the folder), else ``DIR/labels.csv``."""
    if labels not in (None, ""):
        return Path(labels).expanduser()
    path = Path((state or {}).get("labels_file") or DEFAULT_LABELS).expanduser()
    return path if path.is_absolute() else Path(out_dir) / path


def needs_judging(todo: list, labels_at: Path) -> bool:
    """Whether any episode of ``todo`` ((source, recording, episode, policy, success column, seed)) has neither a
    person's label in ``labels_at`` nor a success column: only then is the judge (a VLM) loaded."""
    from data.success_labels import read_labels

    labels = read_labels(labels_at)
    return any(column is None and (policy, ep.index) not in labels for _, _, ep, policy, column, _ in todo)


def evaluate_recordings(cfg, progress: bool = True) -> dict:
    """Read, score and render every episode of ``cfg.recordings`` into ``cfg.out``/episodes.json (continuing
    an interrupted run), then :func:`remake_report`; returns the report."""
    from tqdm import tqdm

    from data.source import SourceError
    from pipeline.rewards.registry import EpisodeInput, RewardError, build_reward
    from policies.evaluation.video import write_video

    if not cfg.get("out"):
        raise ConfigError("out is not set: pass out=DIR, the folder for the report, videos and episodes.json")
    out = Path(str(cfg.out))
    names = _policy_names(cfg)
    by_episode = _episode_policies(cfg)
    sources = [_open(str(r), cfg.get("video_backend")) for r in cfg.recordings]
    for rec, src in zip(cfg.recordings, sources, strict=True):
        if not src.camera_keys:
            raise RecordingError(f"recording {rec} has no camera (no video or image feature; features: "
                                 f"{sorted(src.features)}): a recorded rollout needs its camera, for the review "
                                 "page and the judge. Record with a camera")
    analysis = analysis_settings(cfg)
    plan = check_plan(cfg, names, sources, by_episode)
    recordings, todo = [], []
    for rec, name, src in zip(cfg.recordings, names, sources, strict=True):
        column = cfg.get("success_column")
        has_column = bool(column) and column in src.numeric_columns()
        recordings.append({"recording": str(rec), "root": str(src.root), "policy": name,
                           "episodes": src.total_episodes, "fps": src.fps,
                           "success_column": column if has_column else None})
        if column and not has_column and progress:
            print(f"note: recording {rec} has no column {column!r}; its episodes are labelled by a person or the "
                  "judge", file=sys.stderr)
        seeds = _seeds(str(rec))
        for ep in src.episodes():
            policy = name if by_episode is None else by_episode.get(ep.index)
            if policy is None:
                raise RecordingError(f"episode {ep.index} of {rec} is not in episode_policies="
                                     f"{cfg.episode_policies}; map every episode to its policy")
            seed = seeds[ep.index] if seeds is not None and ep.index < len(seeds) else None
            todo.append((src, str(rec), ep, policy, column if has_column else None, seed))
    labels_at = labels_file(out, None, cfg.get("labels"))
    judge = None
    unlabelled = needs_judging(todo, labels_at)
    if cfg.judge.enabled and (unlabelled or analysis["partial_credit"]):
        try:
            judge = build_reward(cfg.reward, device=str(cfg.device))
        except RewardError as exc:
            if unlabelled:
                raise RecordingError(f"the judge (reward={cfg.reward.name}): {exc}; or set judge.enabled=false"
                                     ) from exc
            # every trial is labelled: the judge would only draw the progress curves partial credit reads
            print(f"note: every episode is labelled, and the judge (reward={cfg.reward.name}) cannot be loaded "
                  f"({exc}); evaluating without progress curves, so without partial credit", file=sys.stderr)
    elif cfg.judge.enabled and progress:
        print("note: every episode is labelled (by a person or the success column): the judge is not run",
              file=sys.stderr)
    claim_output(out, _identity(cfg), bool(cfg.get("overwrite")), kind=KIND, ours=OURS)
    state_path = out / EPISODES_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    done = {(e["policy"], e["episode_index"]): e for e in state.get("episodes", [])}
    # kept relative to the evaluation folder (labels_file reads it so), so the folder can move with its labels
    state = {"labels_file": os.path.relpath(labels_at.resolve(), out.resolve()), "recordings": recordings,
             "episodes": [],
             "judge": {"reward": (judge.provenance if judge else None),
                       "threshold": cfg.judge.threshold, "enabled": judge is not None},
             "success_column": cfg.get("success_column"), "analysis": analysis, "plan": plan}
    camera = cfg.get("camera")
    bar = tqdm(todo, desc="recorded episodes", unit="ep", disable=not progress)
    for src, rec, ep, policy, column, seed in bar:
        key = (policy, ep.index)
        if key in done:
            state["episodes"].append(done[key] | {"seed": seed})
            continue
        cam = src.camera(camera)
        try:
            names_needed = list(dict.fromkeys([*([column] if column else []), *(judge.columns if judge else ())]))
            cols = src.read_columns(ep, names_needed)
            frames = src.decode_frames(ep, cam, cols["timestamp"])
        except SourceError as exc:
            raise RecordingError(f"recording {src.root}, episode {ep.index}: {exc}") from exc
        entry = {"policy": policy, "episode_index": ep.index, "dataset": rec, "length": ep.length,
                 "fps": src.fps, "task": ep.task, "camera": cam, "seed": seed}
        if column:
            hit = np.flatnonzero(cols[column][:, 0] > 0.5)
            entry["column_success"] = bool(hit.size)
            entry["time_to_success_s"] = round(float(hit[0]) / src.fps, 4) if hit.size else None
        else:
            entry["column_success"], entry["time_to_success_s"] = None, None
        entry["judge"] = {"score": None}
        entry["progress"] = []
        if judge is not None:
            try:
                scores = judge.score(EpisodeInput(fps=src.fps, instruction=ep.task, num_frames=ep.length,
                                                  episode_index=ep.index,
                                                  frames=frames if judge.needs_frames else None,
                                                  columns={c: cols[c] for c in judge.columns}))
            except RewardError as exc:
                raise RecordingError(f"episode {ep.index} of {src.root}: the judge failed: {exc}") from exc
            entry["judge"] = {"score": round(float(scores.success_score), 6)}
            entry["progress"] = [round(float(v), 4) for v in scores.frame_progress()]
        rel = f"{_safe(policy)}/episode_{ep.index:06d}"
        entry["video"] = str(write_video(list(frames), out / "videos" / f"{rel}.mp4",
                                         max(1, round(src.fps))).relative_to(out))
        _thumbnail_strip(frames, out / "thumbnails" / f"{rel}.png")
        entry["thumbnails"] = f"thumbnails/{rel}.png"
        state["episodes"].append(entry)
        atomic_write(state_path, json.dumps(state, indent=1))  # after each episode: a re-run continues here
    atomic_write(state_path, json.dumps(state, indent=1))
    return remake_report(out, progress=progress)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------------------------------------- the report


def remake_report(out_dir: str | Path, labels: str | Path | None = None, progress: bool = True) -> dict:
    """The labels, statistics, ``report.md``, ``report.json`` and figures of an evaluation folder, from its
    ``episodes.json`` and the labels file as it is now (``labels``: another file than the one recorded)."""
    import policies.evaluation.judging as judging
    from policies.evaluation.recorded_report import statistics, write_report

    out = Path(out_dir)
    path = out / EPISODES_FILE
    if not path.is_file():
        raise RecordingError(f"{out} holds no {EPISODES_FILE}; run python -m policies.evaluate recordings=[...] "
                             f"out={out} first")
    state = json.loads(path.read_text())
    labels_at = labels_file(out, state, labels)
    human = read_labels(labels_at)
    episodes = state["episodes"]
    known = {(e["policy"], int(e["episode_index"])) for e in episodes}
    warnings = []
    stray = sorted(k for k in human if k not in known)
    if stray:
        shown = ", ".join(f"{p}/{e}" for p, e in stray[:8])
        warnings.append(f"{labels_at} labels {len(stray)} episode(s) that are not in the recordings ({shown}); "
                        "they are ignored (check the policy names and episode indices)")
    h = [human[(e["policy"], int(e["episode_index"]))].success if (e["policy"], int(e["episode_index"])) in human
         else None for e in episodes]
    col = [e.get("column_success") for e in episodes]
    scores = [e["judge"].get("score") for e in episodes]
    judge = judging.make_judge(state["judge"].get("threshold"), scores, h, col) if state["judge"]["enabled"] \
        else judging.Judge(None, "none")
    for e, hv, cv, s in zip(episodes, h, col, scores, strict=True):
        call = judge.call(s)
        e["judge"] = {"score": s, "threshold": judge.threshold, "call": call}
        e["label"], e["source"] = judging.resolve(hv, cv, call)
        note = human.get((e["policy"], int(e["episode_index"])))
        e["note"] = note.note if note else ""
    unlabelled = [e for e in episodes if e["label"] is None]
    if unlabelled:
        warnings.append(f"{len(unlabelled)} episode(s) have no label from a person, the success column or the "
                        "judge; they are counted as unlabelled, not as failures (label them: python -m "
                        f"policies.review {out})")
    judged = sum(e["source"] == "judge" for e in episodes)
    if judged:
        acc = "unknown" if judge.cv_accuracy is None else f"{judge.cv_accuracy:.0%}"
        warnings.append(f"{judged} episode(s) are labelled by the judge alone (held-out accuracy {acc}); its "
                        "errors move the success rates (compare each policy's 'by a person' column), so label "
                        f"them before trusting a difference: python -m policies.review {out}")
    report = statistics(episodes, judge, h, state)
    report["warnings"] = warnings
    report["labels_file"] = str(labels_at)
    atomic_write(path, json.dumps(state, indent=1))  # the snapshot the review page starts from
    write_report(out, report, episodes)
    if progress:
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
    return report

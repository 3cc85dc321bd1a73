"""What a run weighs each sample by, as training computes it: the person's labels (``labels=``), the
calibration on them, the rule's weights over every sample, the episodes the weights lean on, and the refusal of
a run in which nothing weighs anything. :func:`policies.training.build` uses them; the corpus review page and
the experiments read the same functions."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from configs import ConfigError
from data.batches import episode_success
from policies.module import BCModule
from policies.weighting.calibrated import calibrate


def calibration(cfg: DictConfig, manifest: dict, labels: dict[int, bool], rule: dict[int, float] | None):
    """The weights calibrated on the person's labels (policies.weighting.calibrated), None without labels or
    with ``calibrate=false``; ``rule``: episode → the label-free rule's total weight (None: plain BC)."""
    if not labels or not cfg.get("calibrate", True) or cfg.get("labels_only"):
        return None
    return calibrate(manifest.get("episodes", []), labels, rule)


def left_out_episodes(cfg: DictConfig, manifest: dict, labels: dict[int, bool]) -> list[int]:
    """The episodes that weigh 0 whatever the rule: those labelled bad; with ``labels_only=true`` every episode
    not labelled good."""
    if cfg.get("labels_only"):
        good = {e for e, ok in labels.items() if ok}
        return sorted(int(e["episode_index"]) for e in manifest.get("episodes", [])
                      if int(e["episode_index"]) not in good)
    return sorted(e for e, ok in labels.items() if not ok)


def refuse_weightless(cfg: DictConfig, anything: bool, labels: dict[int, bool], episodes: int) -> None:
    """Refuse a run in which no sample weighs anything: it would learn nothing and export an untrained policy."""
    if anything:
        return
    failed = sum(not ok for ok in labels.values())
    why = (f"labels_only=true and labels={cfg.labels} marks none of the {episodes} episodes good"
           if cfg.get("labels_only") else
           f"labels={cfg.labels} marks {failed} of the {episodes} episodes failed" if labels else
           f"weighting={cfg.weighting.name} gives every one of the {episodes} episodes weight 0")
    raise ConfigError(f"every sample weighs 0 ({why}): training would learn nothing and export an untrained "
                      "policy; label some episodes successes, or choose another weighting (weighting=none is "
                      "plain BC); nothing was written")


def person_labels(cfg: DictConfig, manifest: dict) -> dict[int, bool]:
    """Episode → success of the labels file ``labels=`` (:mod:`data.success_labels`; the review page writes
    one), checked against the shards' episodes; {} without a file."""
    path = cfg.get("labels")
    if not path:
        return {}
    from data.success_labels import episode_judgements

    labels = episode_judgements(path)
    known = {int(e["episode_index"]) for e in manifest.get("episodes", [])}
    unknown = sorted(set(labels) - known)
    if unknown:
        raise ConfigError(f"labels={path} labels episodes {unknown[:10]}{' …' if len(unknown) > 10 else ''} that "
                          f"data.shards={cfg.data.shards} does not hold (it holds {len(known)} episodes, "
                          f"{min(known, default=0)}–{max(known, default=0)}); label episodes of these shards")
    return labels


def sample_weights(module: BCModule, table, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The weight the run's rule gives every sample of ``table`` (data.progress_table.ProgressTable, as fitted):
    (the rule's, and with the episodes left out at 0 — exactly what training weighs each sample by)."""
    level = torch.as_tensor(table.level, dtype=torch.float32)
    progress = torch.stack([level, level + torch.as_tensor(table.gain, dtype=torch.float32)], dim=1)
    success = episode_success(manifest)
    episode = torch.as_tensor(table.episode)
    batch = {"progress": progress, "episode_index": episode, "frame_index": torch.as_tensor(table.frame),
             "success_score": torch.tensor([float(success.get(int(e), float("nan"))) for e in table.episode])}
    rule = module.rule_weights(batch).detach()
    return rule.double().numpy(), trained_weights(module, rule, episode)


def trained_weights(module: BCModule, rule, episode) -> np.ndarray:
    """Per sample, ``rule`` (the rule's weights) as training weighs it: calibrated episodes replaced, the ones
    left out 0 (``episode``: each sample's episode index)."""
    rule, episode = torch.as_tensor(rule), torch.as_tensor(episode)
    return module.leave_out(module.calibrate(rule, episode), episode).double().numpy()


def left_out_note(labels: dict[int, bool], labels_only: bool = False) -> str:
    if labels_only:
        good = sorted(e for e, ok in labels.items() if ok)
        return (f"labels_only: training on the {len(good)} episodes labelled good alone "
                f"({', '.join(map(str, good[:10]))}{' …' if len(good) > 10 else ''}); every other episode weighs 0")
    failed = sorted(e for e, ok in labels.items() if not ok)
    return (f"labels: {len(failed)} of {len(labels)} labelled episodes are failures and weigh 0"
            + (f" ({', '.join(map(str, failed[:10]))}{' …' if len(failed) > 10 else ''})" if failed else ""))


def reward_check_notes(module: BCModule) -> list[str]:
    """What ``shrink=above_static`` (policies.weighting.advantage) found, per task: whether the reward's real
    videos score above their static-video controls often enough for the rule's weights to be kept."""
    from policies.weighting.advantage import ABOVE_STATIC

    if (module.weighting_params or {}).get("shrink") != "above_static":
        return []
    above = getattr(module.weighting_stats, "above_static", None)
    if above is None:
        return ["reward check (weighting.shrink=above_static) skipped: the annotation has no static-video control; "
                "annotate with control.static=true to check the reward against a video in which nothing moves"]
    notes = []
    for task, share in sorted(above.items()):
        if share < ABOVE_STATIC:
            notes.append(f"reward check: in task {task!r} only {100 * share:.0f}% of the episodes score above their "
                         f"static-video control (< {100 * ABOVE_STATIC:.0f}%): the reward shows no more progress than "
                         "a video in which nothing moves, so the rule weighs every episode alike there (plain BC; "
                         "labels still apply). To train on the good ones, label episodes on the corpus page "
                         "(python -m policies.review ANNOTATION_DIR) until about 15 are good and train with "
                         "labels=FILE labels_only=true (docs/weighting.md)")
        else:
            notes.append(f"reward check: in task {task!r} {100 * share:.0f}% of the episodes score above their "
                         "static-video control: the rule's weights are kept")
    return notes


def heaviest_episodes(episodes: np.ndarray, w: np.ndarray, top: int | None = None) -> list[tuple[int, float]]:
    """(episode index, its sum of ``w``) of the ``top`` episodes carrying the most weight, heaviest first (ties:
    the lower index first); every episode when ``top`` is None. ``episodes``: each sample's episode index."""
    episodes = np.asarray(episodes)
    ids = np.unique(episodes)
    per = np.array([w[episodes == e].sum() for e in ids])
    return [(int(ids[i]), float(per[i])) for i in np.argsort(-per, kind="stable")[:top]]


def weight_notes(episodes: np.ndarray, rule: np.ndarray, w: np.ndarray, labels: dict[int, bool],
                 top: int = 5, labels_only: bool = False) -> list[str]:
    """What to look at before training: the episodes the weights ``w`` lean on most and the effective sample
    size; with ``labels=``, the failures left out and how the rule's own weights ``rule`` rank the labelled
    episodes (a few labels say whether the reward can be trusted)."""
    from pipeline.report.metrics import success_detection

    episodes = np.asarray(episodes)
    ids = np.unique(episodes)
    total = float(w.sum())
    notes = []
    if total <= 0:
        notes.append("weights: every sample weighs 0, nothing would be learned; check the weighting and labels=")
    else:
        heavy = heaviest_episodes(episodes, w, top)
        ess = float(w.sum() ** 2 / (w * w).sum()) / len(w)
        lean = ", ".join(f"{e} ({100 * s / total:.0f}%)" for e, s in heavy)
        notes.append(f"weights: effective sample size {100 * ess:.0f}% of {len(w)} samples; the {len(heavy)} "
                     f"episodes with the most weight carry {100 * sum(s for _, s in heavy) / total:.0f}% of it: {lean}. "
                     "Look at those (the annotation's plots/); labels=FILE takes the ones a person marks failed out")
    if labels:
        notes.append(left_out_note(labels, labels_only))
        mean_rule = {int(e): float(rule[episodes == e].mean()) for e in ids}
        scored = [e for e in labels if e in mean_rule]
        auc = success_detection(np.array([mean_rule[e] for e in scored]),
                                np.array([labels[e] for e in scored]))["auroc"]
        if auc is not None:
            notes.append(f"labels: the rule's weights rank the {len(scored)} labelled episodes' successes above their "
                         f"failures with AUROC {auc:.2f} (0.5 = chance, 1 = every success above every failure)"
                         + (" — below 0.6: if the labelled episodes are a random sample, weighting by this reward "
                            "may do worse than weighting=none; if they are the heaviest ones, the failures among "
                            "them are what labels= takes out (docs/weighting.md)" if auc < 0.6 else ""))
    return notes

"""Every number of a reward report: VOC summaries, success detection, the per-episode table, per task.

The one home of AUROC (:func:`auroc`); VOC is :func:`pipeline.progress.voc` (the annotation computes it too)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from configs import ConfigError
from data.manifest import as_root, load_manifest
from pipeline.progress import PROGRESS_FROM_DEBIASED, PrefixScores, voc
from pipeline.report.inputs import column_per_episode, open_source, read_success_labels

# Verdict bands of the static-video control's VOC (median over episodes). The TOPReward authors' static-frame
# sweep (docs: REWARD_ERRORS.md) read Qwen3-VL-8B's curves as mostly elapsed time at static VOC 0.94-0.99 and
# found the bias gone in 32B at <= 0.05; 0.8 sits clear below the first group, and 8B's 0.49 on bimanual YAM
# lands in the "partly" band. Below 0.3 a climb is within what noise gives over a few dozen prefixes (the
# one-sided 5% critical Spearman for 20 points is about 0.38).
STATIC_VOC_ELAPSED = 0.8
STATIC_VOC_PARTLY = 0.3


def finite_values(values) -> np.ndarray:
    """The finite numbers of ``values`` (None, NaN and inf dropped) as float64."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def voc_summary(vocs: list[float | None]) -> dict:
    """Mean, median and distribution of the defined VOCs; the undefined ones counted apart."""
    defined = finite_values(vocs)
    n_undefined = len([v for v in vocs if v is None or not np.isfinite(v)])
    return {
        "mean": float(defined.mean()) if defined.size else None,
        "median": float(np.median(defined)) if defined.size else None,
        "std": float(defined.std()) if defined.size else None,
        "min": float(defined.min()) if defined.size else None,
        "max": float(defined.max()) if defined.size else None,
        "defined": int(defined.size),
        "undefined": int(n_undefined),
    }


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels``: the Mann–Whitney probability that a positive
    scores above a negative, ties counting one half (scipy's U statistic over n₊·n₋). Non-finite scores are
    dropped; None unless both classes remain."""
    from scipy.stats import mannwhitneyu

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    keep = np.isfinite(s)
    pos, neg = s[keep & y], s[keep & ~y]
    if not len(pos) or not len(neg):
        return None
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def success_detection(scores: np.ndarray, labels: np.ndarray) -> dict:
    """:func:`auroc`, ROC curve and the balanced-accuracy-optimal threshold of ``scores`` for binary ``labels``.

    Undefined (``auroc`` None) unless both classes are present.
    """
    import torch
    from torchmetrics.functional.classification import binary_roc

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    out = {"n": int(len(labels)), "positives": int(labels.sum()), "negatives": int((1 - labels).sum())}
    if out["positives"] == 0 or out["negatives"] == 0:
        return {**out, "auroc": None, "reason": "needs both successful and failed episodes"}
    # torchmetrics squashes scores outside [0, 1] with a sigmoid; pass ranks in [0, 1] instead (a monotone
    # map: the ROC points are unchanged, and log-probs far below 0 don't saturate).
    uniq = np.unique(scores)
    ranks = np.searchsorted(uniq, scores) / max(len(uniq) - 1, 1)
    fpr, tpr, _ = binary_roc(torch.from_numpy(ranks), torch.from_numpy(labels))
    best = max(((float(np.mean(scores[labels == 1] >= c)) + float(np.mean(scores[labels == 0] < c))) / 2, c)
               for c in uniq)
    return {**out, "auroc": auroc(scores, labels), "fpr": fpr.tolist(), "tpr": tpr.tolist(),
            "threshold": float(best[1]), "balanced_accuracy": float(best[0])}


def episode_table(manifest: dict, ground_truth: dict[int, np.ndarray] | None) -> list[dict]:
    """One row per annotated episode: VOC (vs time and vs ground truth), success score, final progress."""
    rows = []
    for e in manifest["episodes"]:
        scores = PrefixScores.from_manifest_episode(e)
        progress = scores.frame_progress()
        gt = None if ground_truth is None else ground_truth.get(e["episode_index"])
        rows.append({
            "episode_index": e["episode_index"], "task": e.get("task"), "length": e["length"],
            "prefixes": len(e["raw_scores"]), "missing_scores": scores.missing,
            "voc": voc(progress), "voc_ground_truth": voc(progress, gt) if gt is not None else e.get("voc_ground_truth"),
            "success_score": scores.success_score, "final_progress": float(progress[-1]),
        })
    return rows


def control_episode(e: dict) -> dict:
    """The static-video control's figures of one manifest episode (which has ``control_raw_scores``), on the
    prefixes where both the real and the static video have a score:

    - ``static_voc``: Spearman of the control's scores vs prefix index (NaN when flat or < 2 prefixes);
      ``real_voc`` the same of the real video's raw scores (the pair the verdict compares);
    - ``static_rising``: the fraction of prefix-to-prefix steps on which the control rises (a flat control,
      the ideal, scores 0; counting non-decreasing steps would score it 1);
    - ``gap_final``: real minus static at the last prefix; ``gap_mean``: real minus static over all prefixes;
    - ``static_flat``: the control gives every prefix the same score.
    """
    real = np.asarray(e["raw_scores"], dtype=np.float64)
    static = np.asarray(e["control_raw_scores"], dtype=np.float64)
    both = np.isfinite(real) & np.isfinite(static)
    real, static = real[both], static[both]
    steps = np.diff(static)
    return {
        "episode_index": e["episode_index"], "task": e.get("task"), "prefixes": int(both.sum()),
        "real_voc": voc(real), "static_voc": voc(static),
        "static_rising": float(np.mean(steps > 0)) if steps.size else float("nan"),
        "static_flat": bool(static.size >= 2 and np.ptp(static) == 0),
        "gap_final": float(real[-1] - static[-1]) if real.size else float("nan"),
        "gap_mean": float(np.mean(real - static)) if real.size else float("nan"),
    }


def _median(values) -> float | None:
    v = finite_values(values)
    return float(np.median(v)) if v.size else None


def control_summary(manifest: dict) -> dict | None:
    """The static-video control across episodes, with the verdict; None when the manifest has no control."""
    eps = [e for e in manifest["episodes"] if e.get("control_raw_scores") is not None]
    if not eps:
        return None
    rows = [control_episode(e) for e in eps]
    # for the verdict a flat control counts as not climbing (VOC 0) rather than undefined: it is the ideal
    judged = [0.0 if r["static_flat"] else r["static_voc"] for r in rows]
    static_level, real_level = _median(judged), _median([r["real_voc"] for r in rows])
    control = manifest.get("control", {})
    debiased = control.get("progress_from") == PROGRESS_FROM_DEBIASED
    remedy = ("this annotation's progress is debiased" if debiased
              else "debiased progress: control.debias=true")
    if static_level is None:
        level = "undefined"
        verdict = "the static-video control has too few prefixes to judge (< 2 per episode)"
    else:
        pair = f"static VOC {static_level:.2f} vs real {fmt(real_level, 2)}"
        if static_level >= STATIC_VOC_ELAPSED:
            level = "elapsed_time"
            verdict = (f"progress here is mostly elapsed time: the static video, in which nothing moves, "
                       f"climbs as steadily as the real one ({pair}; {remedy})")
        elif static_level >= STATIC_VOC_PARTLY:
            level = "partly_elapsed_time"
            verdict = (f"progress here is partly elapsed time: the static video climbs too, less steadily "
                       f"({pair}; {remedy})")
        else:
            level = "not_elapsed_time"
            verdict = f"the static video does not climb ({pair}): progress here is not elapsed time"
    rising = finite_values([r["static_rising"] for r in rows])
    return {
        "episodes": len(rows), "progress_from": control.get("progress_from"),
        "static_voc": voc_summary([r["static_voc"] for r in rows]),
        "real_voc": voc_summary([r["real_voc"] for r in rows]),
        "static_flat": int(sum(r["static_flat"] for r in rows)),
        "static_rising_mean": float(rising.mean()) if rising.size else None,
        "gap_final": voc_summary([r["gap_final"] for r in rows]),
        "gap_mean": voc_summary([r["gap_mean"] for r in rows]),
        "verdict_static_voc": static_level, "verdict_real_voc": real_level,
        "thresholds": {"elapsed_time": STATIC_VOC_ELAPSED, "partly": STATIC_VOC_PARTLY},
        "verdict_level": level, "verdict": verdict, "per_episode": rows,
    }


def worst_first(rows: list[dict], key: str) -> list[dict]:
    """Rows by ``key`` ascending, the rows without a value (undefined VOC) first: they need a look most."""
    return sorted(rows, key=lambda r: (r[key] is not None, r[key] if r[key] is not None else 0))


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def analyse(ann_dir: str | Path, labels="auto", ground_truth="auto") -> dict:
    """Every number of the report for one annotation output (``_``-prefixed keys are for the plots only).

    ``ann_dir``: a local folder or a URL / ``pipe:`` template (:mod:`data.manifest`); only its manifest is
    read."""
    ann = as_root(ann_dir)
    manifest = load_manifest(ann)
    if not manifest.get("episodes"):
        raise ConfigError(f"{ann} has no annotated episodes to report on (failures: {len(manifest.get('failures', []))})")
    source = open_source(manifest)
    gt_name = manifest.get("ground_truth") if ground_truth == "auto" else (None if ground_truth in (None, "none") else ground_truth)
    gt = None
    if gt_name and source is not None:
        if gt_name not in source.numeric_columns():
            raise ConfigError(f"ground_truth={gt_name!r} is not a column of the source dataset; available: "
                              f"{source.numeric_columns()}")
        gt = column_per_episode(source, [e["episode_index"] for e in manifest["episodes"]], gt_name)
    rows = episode_table(manifest, gt)
    label_map, label_source = read_success_labels(labels, manifest, source)
    detection = None
    if label_map:
        for r in rows:
            r["success_label"] = label_map.get(r["episode_index"])
        have = [r for r in rows if r.get("success_label") is not None]
        detection = success_detection(np.array([r["success_score"] for r in have]),
                                      np.array([r["success_label"] for r in have]))
        detection["labels_from"] = label_source
    tasks = {}
    for task in sorted({r["task"] for r in rows}, key=str):
        sub = [r for r in rows if r["task"] == task]
        t = {"episodes": len(sub), "voc": voc_summary([r["voc"] for r in sub]),
             "voc_ground_truth": voc_summary([r["voc_ground_truth"] for r in sub]) if gt_name else None}
        if label_map:
            lab = [r for r in sub if r.get("success_label") is not None]
            t["auroc"] = success_detection(np.array([r["success_score"] for r in lab]),
                                           np.array([r["success_label"] for r in lab])).get("auroc")
        tasks[str(task)] = t
    v, vg = voc_summary([r["voc"] for r in rows]), voc_summary([r["voc_ground_truth"] for r in rows])
    control = control_summary(manifest)
    extra = {"control": control} if control is not None else {}  # a report without a control is unchanged
    return _nan_to_none({
        "annotation": str(ann), "reward": manifest.get("reward", {}), "dataset": manifest.get("source", {}).get("repo_id"),
        "episodes": len(rows), "failed_episodes": len(manifest.get("failures", [])),
        "ground_truth": gt_name,
        "voc_mean": v["mean"], "voc_median": v["median"], "voc_undefined": v["undefined"], "voc": v,
        "voc_ground_truth_mean": vg["mean"] if gt_name else None, "voc_ground_truth": vg if gt_name else None,
        "auroc": detection["auroc"] if detection else None, "success_detection": detection,
        "tasks": tasks, "per_episode": rows, **extra,
        "_ground_truth_values": {k: v.tolist() for k, v in (gt or {}).items()},
    })


def fmt(x, digits: int = 3) -> str:
    """A number for a table or a title; an em dash for a missing or non-finite one."""
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"

"""How well candidate episode scores rank a corpus's episodes under each simulated reward profile.

    python -m experiments.episode_scores [--corpus DIR] [--profiles a,b] [--out DIR]

A design check, not training: the corpus is annotated with ``reward=vlm_errors`` for each profile, with its
static-video control (``control.static=true``), and each candidate score (the success score as is, and minus
the static control's) is compared with the corpus's labels — whether the episode succeeded, whether it is an
expert demonstration — by AUROC. The labels are read for this check only. Also printed: the reliability
``weighting.shrink=static`` would use (policies.weighting.advantage.static_reliability).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from configs import load_config, reward_profiles
    from data.quality_labels import quality_by_episode, read_quality_labels
    from pipeline.annotate import annotate
    from pipeline.progress import success_score
    from pipeline.report.metrics import auroc, fmt
    from policies.weighting.advantage import static_reliability

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="outputs/calibration/corpus/push-v3-60x150",
                    help="a corpus written by python -m data.demo (python -m experiments.calibration makes this one)")
    ap.add_argument("--profiles", default=",".join(reward_profiles()))
    ap.add_argument("--out", default="outputs/episode_scores")
    args = ap.parse_args(argv)
    labels = read_quality_labels(args.corpus)
    succeeded = {int(e["episode_index"]): bool(e["success"]) for e in labels["episodes"]}
    quality = quality_by_episode(labels)
    print("| profile | success AUROC: real | minus static | expert AUROC: real | minus static | static reliability r |")
    print("|---|---:|---:|---:|---:|---:|")
    for profile in [p.strip() for p in args.profiles.split(",") if p.strip()]:
        out = Path(args.out) / profile
        if not (out / "manifest.json").is_file():
            annotate(load_config("annotate", [
                f"dataset.root={args.corpus}", "reward=vlm_errors", f"reward.profile={profile}", "control.static=true",
                "window.horizon=10", "window.obs_steps=1", "dataset.cameras=[]", "plots=false", "progress_bar=false",
                f"out={out}"]))
        episodes = json.loads((out / "manifest.json").read_text())["episodes"]
        real = np.array([e["success_score"] for e in episodes])
        static = np.array([success_score(e["control_raw_scores"]) for e in episodes])
        ok = [succeeded[e["episode_index"]] for e in episodes]
        expert = [quality[e["episode_index"]] == "expert" for e in episodes]
        print(f"| {profile} | {fmt(auroc(real, ok))} | {fmt(auroc(real - static, ok))} | {fmt(auroc(real, expert))} | "
              f"{fmt(auroc(real - static, expert))} | {static_reliability(real, static):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

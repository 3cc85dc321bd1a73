"""The label-free check of the reward, ``weighting.shrink=above_static``, on the experiment's corpora: training-free.

    python -m experiments.reward_check --tasks push-back-v3 --out outputs/rabc_heldout

Per task and cell (simulator × profile; SIMULATED VLM errors, docs/reward_errors.md), the corpus annotated as the
weighting experiment annotates it (``experiments.rabc``: the same folders, reused where they exist), then:
the share of episodes whose real video's success score is above its static-video control's, whether the check
fires (uniform weights there), and whether the gated weights equal today's default's where it does not fire
(the largest difference per sample). Beside them, for analysis only (nothing trains on them): the share of the
default rule's weight on the good episodes (expert, noisy) against their share of the samples. One Markdown
table on stdout; the same as JSON in ``OUT/reward_check.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

CELLS = ("rank_qwen3vl_8b_like", "rank_qwen3vl_32b_like", "qwen3vl_8b_like", "qwen3vl_32b_like", "rank_weak",
         "weak", "oracle")


def check_cell(task: str, reward: str, out: Path) -> dict:
    from data.quality_labels import quality_by_episode, read_quality_labels
    from experiments.rabc import (
        GOOD_QUALITIES,
        VARIANTS,
        annotate,
        annotation_window,
        fitted_weights,
        make_corpus,
        policy_overrides,
        reward_dir,
        reward_overrides,
        sample_weights,
        train_config,
    )
    from policies.weighting.advantage import ABOVE_STATIC

    args = SimpleNamespace()
    task_dir = out / task
    corpus = make_corpus(args, task, task_dir)
    quality = quality_by_episode(read_quality_labels(corpus))
    obs_steps, horizon = annotation_window(train_config(policy_overrides(args)))
    shards = annotate(corpus, reward_dir(task_dir, reward) / "annotation_all", None, horizon,
                      [*reward_overrides(reward, "next.reward"), f"window.obs_steps={obs_steps}"])
    base = [f"data.shards={shards}", *policy_overrides(args), f"out={out / 'reward_check_fit'}"]
    table, w = sample_weights(train_config([*base, *VARIANTS["episode_quality_resample"][0]]))
    module, _, gated = fitted_weights(train_config([*base, *VARIANTS["episode_quality_gate"][0]]))
    above = module.weighting_stats.above_static
    if not above:
        raise SystemExit(f"{shards} has no static-video control to check (annotate with control.static=true)")
    (share,) = above.values()  # one task per corpus
    fires = share < ABOVE_STATIC
    good = np.array([quality[int(e)] in GOOD_QUALITIES for e in table.episode])
    return {"task": task, "reward": reward, "above_static": share, "fires": bool(fires),
            "gated_uniform": bool(np.ptp(gated) == 0),
            "max_diff_to_default": float(np.max(np.abs(gated - w))),
            "good_weight_share": float(w[good].sum() / w.sum()), "good_sample_share": float(good.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="push-back-v3")
    ap.add_argument("--cells", default=",".join(CELLS), help="rewards as experiments.rabc names them")
    ap.add_argument("--out", type=Path, default=Path("outputs/rabc_heldout"))
    args = ap.parse_args(argv)
    rows = [check_cell(t, r, args.out) for t in args.tasks.split(",") for r in args.cells.split(",")]
    print("SIMULATED VLM errors; the good share reads the corpus's quality labels (analysis only).\n")
    print("| task | reward | share above static | check fires | where not: largest difference to today's weights "
          "| default's weight on good / their samples |")
    print("|---|---|---:|---|---:|---:|")
    for r in rows:
        diff = "— (uniform)" if r["fires"] else f"{r['max_diff_to_default']:.1e}"
        print(f"| {r['task']} | {r['reward']} | {r['above_static']:.2f} | {'yes' if r['fires'] else 'no'} | {diff} | "
              f"{r['good_weight_share']:.2f} / {r['good_sample_share']:.2f} |")
    (args.out / "reward_check.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

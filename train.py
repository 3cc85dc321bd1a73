"""python train.py data.shards=OUT_DIR policy=act|diffusion weighting=NAME out=RUN_DIR [key=value ...]

Reward-aligned behaviour cloning of a lerobot ACT or Diffusion policy on annotated WebDataset shards. Weighting
names: none, top_awr, rabc, awr, filter, progress_awr, episode_quality, quality_advantage (docs/weighting.md).
``--help`` prints the composed defaults (configs/train.yaml and its groups). See policies/training.py.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from configs import ConfigError, parse_cli
    from data.manifest import ManifestError
    from data.schema import WindowError
    from data.shards import ShardError
    from policies.adapters.base import PolicyConfigError
    from policies.training import TrainingDiverged, train
    from policies.weighting import WeightingError

    try:
        cfg = parse_cli("train", list(sys.argv[1:] if argv is None else argv))
        summary = train(cfg)
    except (ConfigError, ManifestError, ShardError, WindowError, PolicyConfigError, WeightingError,
            TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(summary.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

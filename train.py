"""python train.py data.shards=OUT_DIR policy=act|diffusion weighting=NAME out=RUN_DIR [key=value ...]

Reward-aligned behaviour cloning of a lerobot ACT or Diffusion policy on annotated WebDataset shards. Weighting
names: none, top_awr, rabc, awr, filter, episode_quality (docs/weighting.md).
``--help`` prints the composed defaults (configs/train.yaml and its groups). See policies/training.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """The command, through the shared runner (configs.commands): one line on stderr and exit 2 for a mistake
    the message says how to fix (any ``configs.UserError``; ``--debug`` adds the traceback) or a full disk;
    exit 130 after Ctrl-C with the resume line."""
    from configs.commands import DEBUG_FLAG, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(_main, argv, interrupted=interrupted([a for a in argv if a != DEBUG_FLAG]))


def _main(argv: list[str]) -> int:
    from configs import parse_cli
    from policies.training import train

    summary = train(parse_cli("train", argv))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(summary.text())
    return 0


def interrupted(argv: list[str]) -> str:
    """What to run after Ctrl-C: the same command, resuming from the run's last checkpoint (written at every
    epoch end, so the lost work is at most one epoch of ``data.steps_per_epoch`` steps)."""
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("out=")), "RUN_DIR")
    last = Path(out) / "checkpoints" / "last.ckpt"
    again = " ".join([*(a for a in argv if not a.startswith("resume=")), f"resume={last}"])
    return (f"interrupted; to continue from the last checkpoint: python train.py {again} "
            f"(if {last} does not exist yet, re-run the command as it was)")


if __name__ == "__main__":
    raise SystemExit(main())

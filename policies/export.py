"""python -m policies.export CKPT OUT: a training checkpoint → one folder lerobot loads with ``--policy.path=OUT``.

The folder holds lerobot's ``save_pretrained`` of the policy (``config.json``, ``model.safetensors``) and of its
pre/post processors (normalisation with the statistics of the shards' manifest). ``pretrained_backbone_weights``
is whatever the run used (null by default), so loading it downloads nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    from policies.module import BCModule

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist (runs keep them in RUN_DIR/checkpoints/)")
    module = BCModule.load_from_checkpoint(ckpt, map_location="cpu", device="cpu")
    return module.export(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip().splitlines()[0])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        out = export_checkpoint(argv[0], argv[1])
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {argv[0]} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

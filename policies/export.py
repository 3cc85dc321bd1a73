"""python -m policies.export CKPT OUT: a training checkpoint → one folder lerobot loads with ``--policy.path=OUT``.

The folder holds lerobot's ``save_pretrained`` of the policy (``config.json``, ``model.safetensors``) and of its
pre/post processors (normalisation with the statistics of the shards' manifest). ``pretrained_backbone_weights``
is whatever the run used (null by default), so loading it downloads nothing.
"""

from __future__ import annotations

from pathlib import Path


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Load ``ckpt`` (a damaged or missing file raises CheckpointError naming it), then write ``out``: nothing
    is created before the checkpoint has loaded."""
    from policies.module import BCModule
    from policies.run_folder import read_checkpoint

    read_checkpoint(ckpt, key="checkpoint")
    module = BCModule.load_from_checkpoint(Path(ckpt), map_location="cpu", device="cpu")
    return module.export(out)


def main(argv: list[str] | None = None) -> int:
    from configs.commands import run_command

    return run_command(_main, argv,
                       interrupted="interrupted; re-run the same command (an export is rewritten whole)")


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip().splitlines()[0])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    out = export_checkpoint(argv[0], argv[1])
    print(f"exported {argv[0]} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python clip_demo.py``: score a generated clip with TOPReward (one pass), print its progress curve.

With no weights available offline, the model is a tiny random Qwen3-VL: the plumbing is real (loading,
frame schedule, one-pass scoring, progress), the numbers are not meaningful. Pass ``model=Qwen/Qwen3-VL-8B-Instruct``
where the weights can be had.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from configs import parse_cli, save_config

SPARK = " ▁▂▃▄▅▆▇█"


def moving_object_clip(num_frames: int, size: int, seed: int) -> np.ndarray:
    """A square that travels from the left edge to a goal marker on the right (a stand-in for a demo video)."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, size, size, 3), 40, np.uint8) + rng.integers(0, 20, (num_frames, size, size, 3),
                                                                               dtype=np.uint8)
    goal = size - 10
    frames[:, size // 2 - 4: size // 2 + 4, goal: goal + 8] = (0, 200, 0)
    for t in range(num_frames):
        x = int((goal - 8) * t / max(num_frames - 1, 1))
        frames[t, size // 2 - 4: size // 2 + 4, x: x + 8] = (220, 40, 40)
    return frames


def sparkline(values: np.ndarray) -> str:
    v = np.asarray(values, dtype=float)
    return "".join(SPARK[int(round(x * (len(SPARK) - 1)))] for x in v)


def plot_curve(result, fps: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(result.num_frames) / fps
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(t, result.frame_progress(), label="progress (per frame)")
    ax.plot((result.prefix_ends - 1) / fps, result.progress, "o", ms=3, label="prefix scores (min-max)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("progress")
    ax2 = ax.twinx()
    ax2.plot((result.prefix_ends - 1) / fps, result.logp_true, color="gray", lw=0.8, alpha=0.6)
    ax2.set_ylabel('log p(" True")', color="gray")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> int:
    cfg = parse_cli("clip_demo", argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    from pipeline.rewards.topreward import TOPRewardScorer

    model = cfg.model
    if model is None:
        from tests.fixtures.tiny_vlm import build_tiny_qwen3vl

        model_dir = out / "tiny_qwen3vl"
        if not (model_dir / "config.json").exists():
            print(f"building the tiny random Qwen3-VL in {model_dir} (no VLM weights can be downloaded here)")
            build_tiny_qwen3vl(model_dir, seed=cfg.seed)
        model = str(model_dir)
    sc = cfg.scorer
    scorer = TOPRewardScorer.from_pretrained(model, device=sc.device, dtype=sc.dtype, sample_fps=sc.sample_fps,
                                             prefixes=sc.prefixes)
    frames = moving_object_clip(cfg.frames, cfg.image_size, cfg.seed)
    result = scorer.score(frames, cfg.fps, cfg.task)
    print(f"\nTOPReward on a generated {cfg.frames}-frame clip at {cfg.fps} fps, task {cfg.task!r}")
    print(f"model {model}; {len(result.raw)} prefixes in one pass ({result.tokens} tokens), "
          f"frames at {result.resolution[0]}×{result.resolution[1]}\n")
    print(f"{'prefix end':>10} {'time s':>7} {'log p(True)':>12} {'log p(False)':>13} {'progress':>9}")
    for e, lt, lf, p in zip(result.prefix_ends, result.logp_true, result.logp_false, result.progress, strict=True):
        print(f"{e:>10d} {(e - 1) / cfg.fps:>7.2f} {lt:>12.4f} {lf:>13.4f} {p:>9.3f}")
    print(f"\nprogress per frame: {sparkline(result.frame_progress())}")
    print(f"success score (mean log p of the last 3 prefixes): {result.success_score:.4f}")
    plot = out / "topreward_curve.png"
    plot_curve(result, cfg.fps, plot)
    print(f"plot: {plot}\nconfig: {out / 'config.yaml'}")
    print("\nThe random model's curve carries no meaning; with real weights: python clip_demo.py model=Qwen/Qwen3-VL-8B-Instruct")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

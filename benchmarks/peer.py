"""Side by side with lerobot's TOPReward port (``lerobot.rewards.topreward``), in one process.

    python -m benchmarks.peer --json

Builds one random-weight Qwen3-VL offline (the ``benchmarks.scoring`` sizes, saved to a temporary folder that
both implementations load from) and one synthetic LeRobot v3 dataset per episode length
(``tests.fixtures.datasets.make_synthetic_dataset``: ``--episodes`` episodes of each ``--lengths`` frames,
recorded at ``--fps`` = 2, one ``--size``² camera). At 2 fps both implementations see exactly the same frames:
ours samples at ``sample_fps=2`` (every frame) and lerobot's port feeds every raw frame, labelled 0.5 s apart
(its ``fps=2`` default), which is then also true. 60 and 240 frames are 30 s and 120 s episodes.

Per episode, timed, model loading excluded from both:

- ours: one decode call for the episode (``data.source.SourceDataset.decode_frames``) and
  ``TOPRewardScorer.score`` with every group end a prefix (dense: one prefix per second at 2 fps), and
  again with ``prefixes=K`` (lerobot's count, for the ratio at equal prefixes);
- lerobot: what ``compute_topreward_progress`` runs per episode: the task from ``dataset[ep_start]`` and
  ``compute_instruction_rewards_for_prefixes(model, encoder, dataset, ..., num_samples=K)`` (K = 15, the
  upstream default its docs recommend), with its ``TOPRewardModel`` and ``TOPRewardEncoderProcessorStep``
  built as ``compute_topreward_progress`` builds them. One adaptation: its prefix lengths always start at one
  frame (``linspace(1, T, K)``), and transformers' Qwen3-VL video processor refuses a one-frame video
  (``t:1 must be larger than temporal_factor:2``); the encoder is wrapped so a one-frame prefix is shown as
  that frame twice, which is how the processor pads every other odd-length prefix. Nothing else is changed.

Agreement: on the first episode of the shortest length, both score the same uint8 frames (decoded the way
lerobot's function decodes them, ``dataset[i]``, then converted as its encoder converts float frames) at the
same resolution, with the same instruction; lerobot's encoder + ``compute_reward`` scores the prefixes that end
where ours do (every even frame count), and the largest |Δ log p(" True")| is reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import print_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IMAGE_KEY = "observation.images.top"
# |Δ log p(" True")| allowed between the two implementations on the same frames: float32 with a different
# order of operations (a cached one-pass vs one full forward per prefix); measured differences are ~1e-6
AGREEMENT_TOL = 1e-4
# lerobot's default decoder (torchcodec) does not load on these machines (no system FFmpeg) and lerobot falls
# back to PyAV after a long traceback; both implementations decode with PyAV
BACKEND = "pyav"


class PadOneFrame:
    """lerobot's encoder step, except that a one-frame prefix is shown as that frame twice.

    transformers' Qwen3-VL video processor refuses a one-frame video; for every other odd frame count it pads
    the last temporal group with the last frame, which is what this does for one frame.
    """

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def __call__(self, transition):
        from lerobot.lerobot_types import TransitionKey

        obs = transition[TransitionKey.OBSERVATION]
        video = obs[self.encoder.image_key]
        if video.ndim == 5 and video.shape[1] == 1:
            transition = dict(transition)
            transition[TransitionKey.OBSERVATION] = {**obs, self.encoder.image_key: video.repeat(1, 2, 1, 1, 1)}
        return self.encoder(transition)


def lerobot_port(model_dir: Path, device: str = "cpu"):
    """lerobot's ``(TOPRewardModel, encoder)`` for a local model folder, built as ``compute_topreward_progress``
    builds them (its default config: dtype auto, attention implementation left to transformers)."""
    from lerobot.rewards.topreward import TOPRewardConfig, TOPRewardModel
    from lerobot.rewards.topreward.processor_topreward import TOPRewardEncoderProcessorStep

    config = TOPRewardConfig(vlm_name=str(model_dir), device=device, image_key=IMAGE_KEY)
    model = TOPRewardModel(config).to(device).eval()
    encoder = TOPRewardEncoderProcessorStep(
        vlm_name=config.vlm_name, image_key=config.image_key, task_key=config.task_key,
        default_task=config.default_task, max_frames=None, fps=config.fps, prompt_prefix=config.prompt_prefix,
        prompt_suffix_template=config.prompt_suffix_template, add_chat_template=config.add_chat_template,
        max_length=config.max_input_length,
    )
    return model, encoder


def lerobot_frames(dataset, ep_start: int, num_frames: int):
    """An episode's frames as lerobot's function decodes them (one ``dataset[i]`` per frame), converted to
    uint8 the way its encoder converts float frames (× 255, clamp, truncate): (T, C, H, W) uint8."""
    import torch

    video = torch.stack([dataset[ep_start + i][IMAGE_KEY] for i in range(num_frames)])
    return (video * 255.0).clamp(0, 255).to(torch.uint8)


def lerobot_prefix_scores(model, encoder, video, task: str, lengths) -> np.ndarray:
    """log p(" True") of lerobot's port for the prefixes ``video[:L]`` (its encoder + ``compute_reward``, as
    ``compute_instruction_rewards_for_prefixes`` calls them, without its min-max normalisation)."""
    import torch
    from lerobot.lerobot_types import TransitionKey

    out = []
    for length in lengths:
        transition = {TransitionKey.OBSERVATION: {IMAGE_KEY: video[: int(length)][None]},
                      TransitionKey.COMPLEMENTARY_DATA: {"task": task}}
        batch = encoder(transition)[TransitionKey.OBSERVATION]
        with torch.no_grad():
            out.append(float(model.compute_reward(batch).item()))
    return np.asarray(out)


def agreement(scorer, model, encoder, dataset, episode: int = 0, *, max_frames: int | None = None,
              control: str | None = None) -> dict:
    """Both implementations on the same frames, instruction and resolution; ``max_abs_diff`` of log p(" True").

    ``control`` (a negative control, for tests): ``"instruction"`` gives lerobot another instruction,
    ``"reversed"`` the frames in reverse order; the difference must then exceed the tolerance.
    """
    ep = dataset.meta.episodes[episode]
    start, length = int(ep["dataset_from_index"]), int(ep["length"])
    if max_frames:
        length = min(length, int(max_frames))
    task = dataset[start]["task"]
    video = lerobot_frames(dataset, start, length)  # (T, C, H, W) uint8
    frames = video.permute(0, 2, 3, 1).contiguous().numpy()
    fps = float(dataset.meta.fps)
    ours = scorer.score(frames, fps, task)
    lerobot_task, lerobot_video = task, video
    if control == "instruction":
        lerobot_task = "open the drawer and wipe the table"
    elif control == "reversed":
        lerobot_video = video.flip(0)
    elif control is not None:
        raise ValueError(f"control={control!r}: use 'instruction', 'reversed' or None")
    theirs = lerobot_prefix_scores(model, encoder, lerobot_video, lerobot_task, ours.prefix_ends)
    # the resolution lerobot's processor chose for the whole clip (its resize depends on the clip length)
    from lerobot.lerobot_types import TransitionKey

    enc = encoder({TransitionKey.OBSERVATION: {IMAGE_KEY: video[None]}, TransitionKey.COMPLEMENTARY_DATA: {
        "task": task}})[TransitionKey.OBSERVATION]
    grid = enc["observation.topreward.video_grid_thw"][0].tolist()
    patch = int(scorer.processor.video_processor.patch_size)
    diff = np.abs(ours.logp_true - theirs)
    return {
        "frames": length,
        "prefixes": len(ours.raw),
        "resolution_ours": list(ours.resolution),
        "resolution_lerobot": [grid[1] * patch, grid[2] * patch],
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logp_true_range": float(np.ptp(theirs)),
        "ours": ours.logp_true.tolist(),
        "lerobot": theirs.tolist(),
    }


def _ours_episode(scorer, src, ep) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    frames = src.decode_frames(ep, IMAGE_KEY)
    t1 = time.perf_counter()
    res = scorer.score(frames, src.fps, ep.task)
    return t1 - t0, time.perf_counter() - t1, len(res.raw)


def _lerobot_episode(model, encoder, dataset, episode: int, num_samples: int | None) -> tuple[float, int]:
    """What ``compute_topreward_progress`` runs for one episode, timed; and the prefixes it scored."""
    from lerobot.rewards.topreward.compute_rabc_weights import compute_instruction_rewards_for_prefixes

    row = dataset.meta.episodes[episode]
    start, n = int(row["dataset_from_index"]), int(row["dataset_to_index"]) - int(row["dataset_from_index"])
    t0 = time.perf_counter()
    task = dataset[start].get("task") or "perform the task"  # as compute_topreward_progress reads it
    compute_instruction_rewards_for_prefixes(model=model, encoder=PadOneFrame(encoder), dataset=dataset,
                                             ep_start=start, num_frames=n, task=task, image_key=IMAGE_KEY,
                                             num_samples=num_samples, device="cpu")
    seconds = time.perf_counter() - t0
    if num_samples is None or num_samples >= n:
        return seconds, n
    return seconds, len(np.unique(np.linspace(1, n, num_samples).round().astype(np.int64)))


def run_length(root: Path, scorer, scorer_k, model, encoder, num_samples: int, dense_episodes: int) -> dict:
    """Throughput of both implementations on the episodes of the dataset at ``root``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from data.source import open_dataset

    src = open_dataset(root)
    episodes = src.episodes()
    frames = sum(ep.length for ep in episodes)
    decode_s = score_s = k_score_s = 0.0
    prefixes_ours = prefixes_k = 0
    for ep in episodes:
        dec, sc, prefixes_ours = _ours_episode(scorer, src, ep)
        _, sc_k, prefixes_k = _ours_episode(scorer_k, src, ep)
        decode_s, score_s, k_score_s = decode_s + dec, score_s + sc, k_score_s + sc_k
    ours_s, ours_k_s = decode_s + score_s, decode_s + k_score_s
    plan = scorer.last_plan

    dataset = LeRobotDataset(src.repo_id, root=root, video_backend=BACKEND)
    lerobot_s = lerobot_decode_s = 0.0
    for e in range(dataset.num_episodes):
        seconds, prefixes_lerobot = _lerobot_episode(model, encoder, dataset, e, num_samples)
        lerobot_s += seconds
        row = dataset.meta.episodes[e]
        t0 = time.perf_counter()  # its first step, timed on its own: one dataset[i] per frame
        lerobot_frames(dataset, int(row["dataset_from_index"]), int(row["length"]))
        lerobot_decode_s += time.perf_counter() - t0
    out = {
        "episode_frames": episodes[0].length,
        "episode_seconds": episodes[0].length / src.fps,
        "episodes": len(episodes),
        "prefixes_ours": prefixes_ours,
        "prefixes_lerobot": prefixes_lerobot,
        "ours_tail_batch_size": plan.tail_batch_size,
        "ours_video_tokens": plan.shared_tokens,
        "ours_tail_tokens": plan.tail_tokens,
        "ours_s": round(ours_s, 3),
        "ours_decode_s": round(decode_s, 3),
        "lerobot_s": round(lerobot_s, 3),
        "lerobot_decode_s": round(lerobot_decode_s, 3),
        "ours_episodes_per_s": round(len(episodes) / ours_s, 4),
        "lerobot_episodes_per_s": round(len(episodes) / lerobot_s, 4),
        "ours_frames_per_s": round(frames / ours_s, 2),
        "lerobot_frames_per_s": round(frames / lerobot_s, 2),
        "ratio": round(lerobot_s / ours_s, 2),
        "prefixes_ours_equal_k": prefixes_k,
        "ours_equal_k_s": round(ours_k_s, 3),
        "ratio_equal_k": round(lerobot_s / ours_k_s, 2),
    }
    if dense_episodes:
        # lerobot at our density: num_samples = our prefix count gives its prefixes every 2 frames, ours' ends
        n = min(dense_episodes, dataset.num_episodes)
        dense_s, dense_prefixes = 0.0, 0
        for e in range(n):
            seconds, dense_prefixes = _lerobot_episode(model, encoder, dataset, e, prefixes_ours)
            dense_s += seconds
        per_ep_ours = ours_s / len(episodes)
        out.update({"lerobot_dense_episodes": n, "prefixes_lerobot_dense": dense_prefixes,
                    "lerobot_dense_s_per_episode": round(dense_s / n, 3),
                    "lerobot_dense_frames_per_s": round(n * episodes[0].length / dense_s, 2),
                    "ratio_equal_density": round(dense_s / n / per_ep_ours, 2)})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[60, 240], help="frames per episode, one dataset each")
    ap.add_argument("--fps", type=int, default=2, help="recording rate of the synthetic datasets")
    ap.add_argument("--episodes", type=int, default=2, help="episodes per length")
    ap.add_argument("--size", type=int, default=64, help="camera side in pixels (both see it unresized)")
    ap.add_argument("--num-samples", type=int, default=15, help="lerobot's --num-samples (prefixes per episode)")
    ap.add_argument("--dense-episodes", type=int, default=1,
                    help="episodes per length also scored by lerobot at our prefix density (0: skip)")
    ap.add_argument("--model", choices=("bench", "tiny"), default="bench",
                    help="bench: benchmarks.scoring's 24.8M-parameter model; tiny: the tests' 0.3M one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import lerobot

    from benchmarks.scoring import BENCH_MODEL
    from pipeline.rewards.topreward import TOPRewardScorer
    from tests.fixtures.datasets import make_synthetic_dataset
    from tests.fixtures.tiny_vlm import build_tiny_qwen3vl, num_parameters

    sizes = dict(BENCH_MODEL) if args.model == "bench" else {"max_positions": 32768}
    report: dict = {"video_backend": BACKEND, "fps": args.fps, "image_size": [args.size, args.size], "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_qwen3vl(tmp / "vlm", seed=0, logit_scale=4.0, **sizes)
        report["params"] = num_parameters(model_dir)
        roots = {}
        for n in args.lengths:
            roots[n] = make_synthetic_dataset(tmp / f"ds_{n}", episodes=args.episodes, length=n, fps=args.fps,
                                              image_size=(args.size, args.size), cameras=("top",), seed=0,
                                              repo_id=f"local/peer_{n}")
        opts = dict(sample_fps=2.0, resolution=args.size)
        scorer = TOPRewardScorer.from_pretrained(model_dir, **opts)
        scorer_k = TOPRewardScorer.from_pretrained(model_dir, prefixes=args.num_samples, **opts)
        model, encoder = lerobot_port(model_dir)
        # warm-up (first-call costs) of both, outside the timing
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        first = LeRobotDataset(f"local/peer_{args.lengths[0]}", root=roots[args.lengths[0]], video_backend=BACKEND)
        video = lerobot_frames(first, 0, 8)
        scorer.score(video.permute(0, 2, 3, 1).numpy(), float(args.fps), "warm up")
        lerobot_prefix_scores(model, encoder, video, "warm up", [4])
        report["agreement"] = agreement(scorer, model, encoder, first, 0)
        report["agreement"].pop("ours")
        report["agreement"].pop("lerobot")
        per_length = [run_length(roots[n], scorer, scorer_k, model, encoder, args.num_samples, args.dense_episodes)
                      for n in args.lengths]
    frames = sum(r["episode_frames"] * r["episodes"] for r in per_length)
    ours_s = sum(r["ours_s"] for r in per_length)
    lerobot_s = sum(r["lerobot_s"] for r in per_length)
    report.update({
        "ours_frames_per_s": round(frames / ours_s, 2),
        "lerobot_frames_per_s": round(frames / lerobot_s, 2),
        "ratio": round(lerobot_s / ours_s, 2),
        "episode_seconds": [r["episode_seconds"] for r in per_length],
        "prefixes_ours": [r["prefixes_ours"] for r in per_length],
        "prefixes_lerobot": [r["prefixes_lerobot"] for r in per_length],
        "ratio_per_length": [r["ratio"] for r in per_length],
        "ratio_equal_k_per_length": [r["ratio_equal_k"] for r in per_length],
        "ratio_equal_density_per_length": [r.get("ratio_equal_density") for r in per_length],
        "max_abs_diff": report["agreement"]["max_abs_diff"],
        "per_length": per_length,
        "lerobot_version": lerobot.__version__,
    })
    return print_report(report, args.json)


if __name__ == "__main__":
    main()

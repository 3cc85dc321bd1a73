"""The second simulator of VLM reward errors (``reward=vlm_errors reward.simulator=rank``): a simulated stand-in,
not a VLM, whose errors have a different form from :mod:`pipeline.rewards.vlm_errors` (``simulator=additive``).

A weighting rule is only called robust when it holds under both. Where the additive simulator adds a
per-episode offset and correlated AR(1) noise to a logit, and credits any motion of the object as progress,
this one has no additive noise at all: its errors are in how close a failure *looks* to a success, in a random
monotone distortion of the progress scale per episode, in a multiplicative confidence per episode, in a
noisy verdict per video on whether the task gets done, in a bias per task, and in the *order* of the prefixes. Same output (one ``log p(" True")``-like score per prefix, on
TOPReward's schedule with the profile's assumed duration, :func:`pipeline.rewards.vlm_errors.schedule`), same
ground truth and the same published calibration targets (``configs/reward/vlm_errors_profiles/``). Prefix k
scores ``log sigmoid(z_k)`` with

    looks_k = p_k + lure * reach_k * (1 - p_k)             (a failure drawn towards "done" by how close it came)
    read_k  = (1 - verdict_weight) * looks_k + verdict_weight * done * k_share
    v_k     = base + task_t + ramp(n_k) + gap * c_e * g_e(read_k)
    ramp(n) = ramp_slope * min(log2 n, log2 K) + ramp_tail_slope * max(0, log2 n - log2 K),  K = ramp_knee_images
    z       = v with its prefixes' order perturbed (rank noise)

- ``p_k``: the ground-truth progress at the prefix's last frame (the column, ``progress_range``, as the
  additive simulator reads it); ``reach_k``: its running maximum up to that frame, how close the episode
  came. ``lure``: the share of the remaining distance to "done" a video is drawn by, in proportion to its
  reach: a failure that nearly made it ends near the success level, one that never got going stays low; a
  success (``p = 1``) is unaffected, and its wavering after completion is smoothed (it has been seen done).
- ``done``: the model's verdict on the video, drawn once per video: "done" with chance ``verdict_noise + (1 -
  2 verdict_noise) * looks`` at the video's end (a coin toss at 0.5; how success-like the video looks decides
  the rest). A video judged done reads as getting done as it goes on (``k_share``: the prefix's end as a share
  of the episode), one judged not done reads as its content only, scaled down; ``verdict_weight`` is the share
  of the reading the verdict sets (1: the content enters only through the verdict).
- ``g_e``: a monotone distortion of the progress scale with random knots, one per episode: piecewise linear
  through ``warp_knots`` interior knots at even spacing, heights from a Dirichlet(``warp_concentration``)
  split of [0, 1] (0 and 1 fixed). It keeps every episode's order but bends its curve, so the same true
  progress reads differently between episodes (what a weighting rule sees as progress deltas).
- ``c_e = exp(gap_spread * N(0, 1))``: how sure the model is that what it sees is done, one draw per episode
  (a multiplicative error: a success is scored at a level that varies by episode, a video that shows nothing
  done does not move).
- ``task_t ~ N(0, task_bias_std)``: the task wording, one draw per task string (every episode of a task shares
  it; the published real-video level differs by up to 4 nats between splits).
- ``ramp``: the length bias, a function of the **image count** ``n_k`` of the prefix, steep (``ramp_slope``
  per doubling) while the model sees up to ``ramp_knee_images`` images (the static-frame sweep: about 8),
  shallow beyond (``ramp_tail_slope``). It is there when nothing moves, so a static video climbs.
- **rank noise**: the profile's noiseless values are kept, but which prefix gets which is perturbed: every
  prefix's rank gets N(0, ``rank_noise``) prefixes added and the sorted values are dealt out in the new order.
  The scores an episode gets are the right ones; their order is not. A static video without a ramp shows one
  value and stays flat.

Everything is computed on every temporal group and then thinned to the chosen prefixes, so a prefix's score
does not depend on ``prefixes``. Randomness: the confidence and the distortion per ``(seed, episode_index)``
(shared by an episode's real video and its static control: same scene), the verdict and the rank noise per
``(seed, episode_index, video)`` (the static control is another video, judged on its own), the task bias per
``(seed, task string)``. The rank simulator reads no displacement column.
Profiles are ``configs/reward/vlm_errors_rank_profiles/<profile>.yaml`` (parameters only; the targets are the
additive simulator's profile files'); ``python -m experiments.calibration --simulator rank`` measures them.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.stats import rankdata

from pipeline.progress import PrefixScores
from pipeline.rewards.vlm_errors import (
    REAL_STREAM,
    STATIC_STREAM,
    TEMPORAL_PATCH,
    SimulationError,
    SimulatorProfile,
    VLMErrorSimulator,
    log_sigmoid,
    schedule,
)

SIMULATOR = "rank"
# the first entries of every seed: this simulator's draws share nothing with the additive one's
TAG = 0x52414E4B
EPISODE_DRAWS, VIDEO_DRAWS, TASK_DRAWS = 1, 2, 3


@dataclass(frozen=True)
class RankProfile(SimulatorProfile):
    """Every parameter of the rank simulator (one ``vlm_errors_rank_profiles/*.yaml``'s ``parameters``)."""

    assumed_duration_s: float | None  # real duration the episode is mapped onto; None: the dataset's fps
    base: float  # logit of "True" for a prefix showing no progress, before the ramp and the task bias
    gap: float  # logit between "done" and "not started" at confidence 1
    lure: float = 0.0  # share of the remaining distance to "done" a video is drawn by, times its reach
    gap_spread: float = 0.0  # std of log c_e, the per-episode confidence multiplying the gap
    verdict_noise: float = 0.0  # chance a video's verdict ("done" or not) is a coin toss's, in [0, 0.5]
    verdict_weight: float = 0.0  # share of the perceived progress the verdict sets (0: no verdict)
    warp_knots: float = 0.0  # interior knots of the per-episode monotone distortion
    warp_concentration: float | None = None  # Dirichlet concentration of its heights; None: no distortion
    task_bias_std: float = 0.0  # std of the per-task logit bias
    ramp_slope: float = 0.0  # logit per doubling of the image count, up to ramp_knee_images
    ramp_knee_images: float = 8.0  # images up to which the length bias is steep
    ramp_tail_slope: float = 0.0  # logit per doubling of the image count beyond the knee
    rank_noise: float = 0.0  # std of the perturbation of a prefix's rank, in prefixes

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and not math.isfinite(v):
                raise SimulationError(f"{f.name}={v}: give a finite number")
        d = self.assumed_duration_s
        if d is not None and not d > 0:
            raise SimulationError(f"assumed_duration_s={d}: give a positive duration in seconds (or null)")
        if not self.gap > 0:
            raise SimulationError(f"gap={self.gap} must be > 0 (\"done\" scores above \"not started\")")
        if not 0 <= self.lure <= 1:
            raise SimulationError(f"lure={self.lure} must lie in [0, 1] (a share of the remaining progress)")
        if not 0 <= self.verdict_noise <= 0.5:
            raise SimulationError(f"verdict_noise={self.verdict_noise} must lie in [0, 0.5] (0.5: a coin toss)")
        if not 0 <= self.verdict_weight <= 1:
            raise SimulationError(f"verdict_weight={self.verdict_weight} must lie in [0, 1] (a share)")
        if not (self.warp_knots >= 0 and float(self.warp_knots).is_integer()):
            raise SimulationError(f"warp_knots={self.warp_knots} must be a whole number >= 0")
        if self.warp_concentration is not None and not self.warp_concentration > 0:
            raise SimulationError(f"warp_concentration={self.warp_concentration} must be > 0 (or null: no "
                                  f"distortion)")
        if not self.ramp_knee_images >= 1:
            raise SimulationError(f"ramp_knee_images={self.ramp_knee_images} must be >= 1 (an image count)")
        for name in ("gap_spread", "task_bias_std", "ramp_slope", "ramp_tail_slope", "rank_noise"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name}={getattr(self, name)} must be >= 0")


def length_ramp(images: np.ndarray, slope: float, knee_images: float, tail_slope: float) -> np.ndarray:
    """The length bias at each image count: ``slope`` per doubling up to ``knee_images``, ``tail_slope`` beyond."""
    doublings = np.log2(np.asarray(images, dtype=np.float64))
    knee = np.log2(knee_images)
    return slope * np.minimum(doublings, knee) + tail_slope * np.maximum(doublings - knee, 0.0)


def monotone_warp(u: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """``u`` in [0, 1] through the piecewise-linear map with evenly spaced knots at ``heights`` (0 ... 1)."""
    return np.interp(u, np.linspace(0.0, 1.0, len(heights)), heights)


def perturb_order(values: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``values`` dealt out again in the order of their ranks plus ``noise`` (in ranks): the same values, a
    perturbed order (tied values are interchangeable, so a flat sequence stays flat)."""
    new_rank = np.argsort(np.argsort(rankdata(values) + noise, kind="stable"), kind="stable")
    return np.sort(values)[new_rank]


def task_key(instruction: str | None) -> int:
    """A stable number per task string (the same across processes and runs, unlike ``hash``)."""
    return zlib.crc32((instruction or "").encode("utf-8"))


class RankErrorSimulator(VLMErrorSimulator):
    """The simulator behind ``reward=vlm_errors reward.simulator=rank`` (see the module docstring); it reads
    episodes exactly as :class:`pipeline.rewards.vlm_errors.VLMErrorSimulator` does."""

    profile_class = RankProfile

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.displacement_column = None  # no credit for motion here: a failure's lure is its reach

    @property
    def provenance(self) -> dict:
        return {"type": "vlm_errors", "simulated": True, "simulator": SIMULATOR,
                "model": f"simulated VLM reward errors, rank simulator, profile {self.profile_name} "
                         f"(a stand-in, not a VLM)",
                "model_class": "RankErrorSimulator", "revision": None, "prompt": None, "resolution": None,
                "profile": self.profile_name, "parameters": asdict(self.profile), "column": self.column,
                "progress_range": list(self.progress_range), "sample_fps": self.sample_fps, "prefixes": self.prefixes,
                "seed": self.seed, "temporal_patch": TEMPORAL_PATCH}

    def episode_draws(self, episode) -> tuple[float, np.ndarray]:
        """(confidence c_e, knot heights of g_e) of one episode: shared by its real video and its static
        control (same scene). The heights at 0 and 1 stay; the interior ones split [0, 1] in Dirichlet parts."""
        p = self.profile
        rng = np.random.default_rng([TAG, EPISODE_DRAWS, self.seed, episode.episode_index])
        confidence = float(np.exp(p.gap_spread * rng.standard_normal()))
        if p.warp_concentration is None or p.warp_knots == 0:
            return confidence, np.array([0.0, 1.0])
        parts = rng.dirichlet(np.full(int(p.warp_knots) + 1, p.warp_concentration))
        return confidence, np.concatenate([[0.0], np.cumsum(parts)[:-1], [1.0]])

    def task_bias(self, episode) -> float:
        rng = np.random.default_rng([TAG, TASK_DRAWS, self.seed, task_key(episode.instruction)])
        return float(self.profile.task_bias_std * rng.standard_normal())

    def simulate(self, episode, static: bool = False) -> PrefixScores:
        """Scores of ``episode``, or of its static-video control (``static``: the first frame and first column
        row held; its rank noise is drawn apart, since it is another video)."""
        if static:
            episode = episode.static()
        stream = STATIC_STREAM if static else REAL_STREAM
        p = self.profile
        T = int(episode.num_frames)
        ends, images, chosen = schedule(T, float(episode.fps), self.sample_fps, p.assumed_duration_s,
                                        self.prefixes)
        all_ends, all_images, _ = schedule(T, float(episode.fps), self.sample_fps, p.assumed_duration_s, "all")
        truth = self.ground_truth(episode)
        last = all_ends - 1
        confidence, heights = self.episode_draws(episode)
        progress, reach = truth[last], np.maximum.accumulate(truth)[last]
        looks = progress + p.lure * reach * (1.0 - progress)
        video_rng = np.random.default_rng([TAG, VIDEO_DRAWS, self.seed, episode.episode_index, stream])
        done = video_rng.random() < p.verdict_noise + (1.0 - 2.0 * p.verdict_noise) * looks[-1]
        looks = (1.0 - p.verdict_weight) * looks + p.verdict_weight * done * all_ends / T
        v = (p.base + self.task_bias(episode)
             + length_ramp(all_images, p.ramp_slope, p.ramp_knee_images, p.ramp_tail_slope)
             + p.gap * confidence * monotone_warp(looks, heights))
        if p.rank_noise > 0:
            v = perturb_order(v, p.rank_noise * video_rng.standard_normal(len(v)))
        return PrefixScores(prefix_ends=ends, raw=log_sigmoid(v[chosen]), num_frames=T,
                            extras={"images": images, "ground_truth_progress": progress[chosen]})

"""A calibrated simulator of VLM reward errors (``reward=vlm_errors``): a simulated stand-in, not a VLM.

For simulated corpora that carry ground-truth progress, it emits what a TOPReward-style scorer would: one raw
score per prefix, ``log p(" True")``-like (nats, <= 0), on TOPReward's prefix schedule
(:mod:`pipeline.rewards.schedule`: frames at ``sample_fps``, Qwen-VL temporal groups of 2, ``prefixes``). The
score of prefix k is ``log sigmoid(z_k)`` (the log-probability of " True" from a True/False logit ``z_k``), with

    z_k = base + ramp(n_k) + gap * seen_k + evidence * log2(n_k) * (seen_k - evidence_center) + offset_e + noise_k
    ramp(n)  = ramp_amplitude * (1 - exp(-3 n / ramp_saturation_images)) + ramp_drift * log2(n)
    seen_k   = p_k + credit * c_k * (1 - p_k)           (the progress the model believes it sees)
    c_k      = 1 - exp(-d_k / credit_scale_m)             (how far the object has been moved)

- ``n_k``, the **image count** of prefix k: the sampled frames it shows. The length bias of Qwen3-VL-8B rises
  with it (steepest up to about 8 images, ``ramp_saturation_images``; ``ramp_drift`` keeps it rising slowly
  beyond, which a static VOC of 0.99 over episodes of 20+ prefixes requires) and is there even when nothing
  moves, so a static video climbs (docs/reward_errors.md: the TOPReward authors' static-frame sweep).
- ``p_k``, the **ground-truth progress** at the prefix's last frame: the per-frame column ``column`` (default
  ``next.reward``) mapped linearly from ``progress_range`` [lo, hi] onto [0, 1] and clipped. The range is fixed
  per task, not per episode: a per-episode min-max would make every failure end "done". The MetaWorld corpus
  stores the dense reward / 10, already in [0, 1] with 1 at success, so the default range is [0, 1].
  ``gap`` is the logit gap between "done" and "not started" (real −0.10 vs static −9.24 on ai2_lerobot, 8B).
- **Evidence** (``evidence``): the longer a model watches, the surer it gets of what it sees — more images of
  a finished task raise the score, more images of nothing happening lower it. This is how Qwen3-VL-32B can
  give a static video a *falling* curve (static VOC −0.57 / −0.75 / −0.49 on three splits) while real videos
  keep VOC about 0.9; zero for the other profiles.
- ``offset_e`` ~ N(0, ``episode_offset_std``): task wording and scene, one draw per episode, shared by the
  episode's real and static videos (the published real-video level differs by up to 4 nats between splits).
- ``noise_k``: AR(1) over the prefixes (``noise_rho``, stationary std ``noise_std``): neighbouring prefixes
  share most of what the model sees, so their errors are correlated. Drawn over every temporal group and then
  thinned to the chosen prefixes, so a prefix's score does not depend on ``prefixes``.
- **Wrong credit** ``c_k``: any motion of the object "looks like progress", the wrong way included (a puck
  pushed away from the goal). ``d_k`` is the object's displacement from its first position, read from
  ``displacement_column`` dims ``displacement_dims`` (MetaWorld's ``observation.environment_state`` 4:7, the
  object's xyz); an episode without that column gets no wrong credit. ``credit`` is the share of the remaining
  progress a fully moved object is credited with.

**Duration.** MetaWorld's 150 steps at 80 fps are 1.9 s of video, where a real demonstration of such a task
lasts 10–30 s. A profile states the real duration it assumes (``assumed_duration_s``): the episode's frames
are treated as spanning that many seconds, so the schedule (and the image count the ramp sees) is what a real
2 fps scorer would produce on the real demonstration: 20 s at 2 fps = 40 images, 20 prefixes, instead of 4
images and 2 prefixes. Prefixes still end on the episode's own frames. ``assumed_duration_s: null`` keeps the
dataset's own fps (a real-time corpus).

Randomness is seeded per ``(seed, episode_index)`` (offset), plus the video shown (real or static noise), so
annotation is deterministic and resumable. Profiles (``oracle``, ``qwen3vl_32b_like``, ``qwen3vl_8b_like``,
``weak``) and their calibration targets live in ``configs/reward/vlm_errors_profiles/`` (loaded by
:func:`configs.reward_profile`); ``python -m experiments.calibration`` measures them (docs/reward_errors.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from configs import UserError
from pipeline.progress import PrefixScores
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups

TEMPORAL_PATCH = 2  # Qwen3-VL merges frames in pairs; TOPReward's prefixes end on those group boundaries
# noise streams: the real video and its static control are two different videos, so their noise differs
REAL_STREAM, STATIC_STREAM = 1, 2


class SimulationError(UserError, ValueError):
    """A profile or an episode the simulator cannot use; the message says why and what to set."""


class SimulatorProfile:
    """What every simulator's profile shares: built from one profile YAML's ``parameters`` mapping, every value a
    float (or null), unknown or missing names refused with the valid ones."""

    @classmethod
    def from_dict(cls, params: dict, profile: str = "?"):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise SimulationError(f"profile {profile!r} sets unknown parameters {unknown}; valid: {sorted(known)}")
        try:
            return cls(**{k: (None if v is None else float(v)) for k, v in params.items()})
        except TypeError as exc:
            raise SimulationError(f"profile {profile!r} lacks a parameter: {exc}") from exc


@dataclass(frozen=True)
class ErrorProfile(SimulatorProfile):
    """Every parameter of a simulated reward model (one profile YAML's ``parameters``)."""

    assumed_duration_s: float | None  # real duration the episode is mapped onto; None: the dataset's fps
    base: float  # logit of "True" for a 1-image prefix showing no progress (before ramp, offset, noise)
    gap: float  # logit gap between progress 1 ("done") and 0 ("not started")
    ramp_amplitude: float = 0.0  # logit the image-count ramp adds once saturated
    ramp_saturation_images: float = 8.0  # images by which the ramp reaches 95% of its amplitude
    ramp_drift: float = 0.0  # logit per doubling of the image count (slow length bias beyond saturation)
    evidence: float = 0.0  # logit per doubling of the image count, times (seen - evidence_center)
    evidence_center: float = 0.5  # the progress below which more images make the model surer of "False"
    episode_offset_std: float = 0.0  # std of the per-episode logit offset (task wording, scene)
    noise_std: float = 0.0  # stationary std of the per-prefix AR(1) noise (logit)
    noise_rho: float = 0.0  # AR(1) correlation between neighbouring prefixes
    credit: float = 0.0  # share of the remaining progress credited for a fully moved object
    credit_scale_m: float = 0.05  # displacement (column units, metres in MetaWorld) at which credit is 63%

    def __post_init__(self) -> None:
        d = self.assumed_duration_s
        if d is not None and not d > 0:
            raise SimulationError(f"assumed_duration_s={d}: give a positive duration in seconds (or null)")
        for name in ("ramp_saturation_images", "credit_scale_m"):
            if not getattr(self, name) > 0:
                raise SimulationError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("episode_offset_std", "noise_std"):
            if getattr(self, name) < 0:
                raise SimulationError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.noise_rho < 1:
            raise SimulationError(f"noise_rho={self.noise_rho} must lie in [0, 1)")
        if not 0 <= self.credit <= 1:
            raise SimulationError(f"credit={self.credit} must lie in [0, 1] (a share of the remaining progress)")


def schedule(num_frames: int, fps: float, sample_fps: float, assumed_duration_s: float | None,
             prefixes: int | str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefix ends, image count per prefix, indices of the chosen groups) of TOPReward's schedule, with the
    episode's ``num_frames`` spread over ``assumed_duration_s`` seconds (None: the recording fps)."""
    native = fps if assumed_duration_s is None else num_frames / float(assumed_duration_s)
    sampled = sample_indices(num_frames, native, sample_fps)
    ends_sampled = group_ends(len(sampled), TEMPORAL_PATCH)
    chosen = select_groups(len(ends_sampled), prefixes)
    return prefix_ends(sampled, ends_sampled[chosen]), ends_sampled[chosen].astype(np.float64), chosen


def ar1(rng: np.random.Generator, n: int, std: float, rho: float) -> np.ndarray:
    """Stationary AR(1) noise of length ``n`` (marginal std ``std``)."""
    eta = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = eta[0]
    for k in range(1, n):
        out[k] = rho * out[k - 1] + np.sqrt(1 - rho**2) * eta[k]
    return std * out


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-z))) without overflow."""
    return -np.logaddexp(0.0, -z)


class VLMErrorSimulator:
    """The simulator behind ``reward=vlm_errors`` (see the module docstring); the registry's
    ``VLMErrorsReward`` puts it behind the reward-model interface. Episodes are
    :class:`pipeline.rewards.registry.EpisodeInput`. The ground truth, the object's displacement and the
    prefix schedule are read here for every simulator (:mod:`pipeline.rewards.vlm_errors_rank` is the other);
    a simulator is the profile it reads (``profile_class``) and its :meth:`simulate`."""

    profile_class = ErrorProfile

    def __init__(self, profile_name: str, parameters: dict, column: str = "next.reward",
                 progress_range=(0.0, 1.0), displacement_column: str | None = "observation.environment_state",
                 displacement_dims=(4, 7), sample_fps: float = 2.0, prefixes: int | str = "all",
                 seed: int = 0) -> None:
        if not column:
            raise SimulationError("reward=vlm_errors needs reward.column=NAME: the per-frame ground-truth progress "
                              "(e.g. next.reward)")
        lo, hi = (float(x) for x in progress_range)
        if not hi > lo:
            raise SimulationError(f"progress_range=[{lo}, {hi}]: give [lo, hi] with hi > lo (the column's values at "
                              f"'not started' and 'done')")
        if not float(sample_fps) > 0:
            raise SimulationError(f"sample_fps={sample_fps} must be > 0 (e.g. 2 frames per second)")
        if prefixes != "all" and (not str(prefixes).isdigit() or int(prefixes) < 1):
            raise SimulationError(f"prefixes={prefixes!r}: use 'all' or a positive integer (e.g. 15)")
        dims = tuple(int(x) for x in displacement_dims)
        if len(dims) != 2 or not 0 <= dims[0] < dims[1]:
            raise SimulationError(f"displacement_dims={list(displacement_dims)}: give [start, stop) of the object's "
                              f"position in {displacement_column} (e.g. [4, 7])")
        self.profile_name = str(profile_name)
        self.profile = self.profile_class.from_dict(dict(parameters), self.profile_name)
        self.column = str(column)
        self.progress_range = (lo, hi)
        self.displacement_column = displacement_column or None
        self.displacement_dims = dims
        self.sample_fps = float(sample_fps)
        self.prefixes = prefixes if prefixes == "all" else int(prefixes)
        self.seed = int(seed)

    @property
    def provenance(self) -> dict:
        p = self.profile
        return {"type": "vlm_errors", "simulated": True,
                "model": f"simulated VLM reward errors, profile {self.profile_name} (a stand-in, not a VLM)",
                "model_class": "VLMErrorSimulator", "revision": None, "prompt": None, "resolution": None,
                "profile": self.profile_name, "parameters": asdict(p), "column": self.column,
                "progress_range": list(self.progress_range), "displacement_column": self.displacement_column,
                "displacement_dims": list(self.displacement_dims), "sample_fps": self.sample_fps,
                "prefixes": self.prefixes, "seed": self.seed, "temporal_patch": TEMPORAL_PATCH}

    def ground_truth(self, episode) -> np.ndarray:
        """Per-frame progress in [0, 1]: the column mapped from ``progress_range`` and clipped."""
        if self.column not in episode.columns:
            raise SimulationError(f"episode {episode.episode_index} has no column {self.column!r}; columns: "
                              f"{sorted(episode.columns)} (set reward.column)")
        v = np.asarray(episode.columns[self.column], dtype=np.float64)
        v = v.reshape(len(v), -1)[:, 0]
        if not np.all(np.isfinite(v)):
            raise SimulationError(f"column {self.column!r} has NaN/inf at frames {np.flatnonzero(~np.isfinite(v))[:5]}")
        lo, hi = self.progress_range
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0)

    def displacement(self, episode) -> np.ndarray:
        """Per-frame distance of the object from its first position (zeros without the column)."""
        col = self.displacement_column
        if col is None or col not in episode.columns:
            return np.zeros(episode.num_frames)
        a = np.asarray(episode.columns[col], dtype=np.float64).reshape(episode.num_frames, -1)
        start, stop = self.displacement_dims
        if stop > a.shape[1]:
            raise SimulationError(f"displacement_dims=[{start}, {stop}) exceed the {a.shape[1]} values of {col!r}")
        pos = a[:, start:stop]
        return np.linalg.norm(pos - pos[:1], axis=1)

    def simulate(self, episode, static: bool = False) -> PrefixScores:
        """Scores of ``episode``, or of its static-video control (``static``: the first frame and first column
        row held; its noise is drawn apart, since it is another video)."""
        if static:
            episode = episode.static()
        stream = STATIC_STREAM if static else REAL_STREAM
        p = self.profile
        T = int(episode.num_frames)
        ends, images, chosen = schedule(T, float(episode.fps), self.sample_fps, p.assumed_duration_s,
                                        self.prefixes)
        _, all_images, _ = schedule(T, float(episode.fps), self.sample_fps, p.assumed_duration_s, "all")
        last = ends - 1
        progress = self.ground_truth(episode)[last]
        moved = 1.0 - np.exp(-self.displacement(episode)[last] / p.credit_scale_m)
        seen = progress + p.credit * moved * (1.0 - progress)
        ramp = (p.ramp_amplitude * (1.0 - np.exp(-3.0 * images / p.ramp_saturation_images))
                + p.ramp_drift * np.log2(images))
        offset = p.episode_offset_std * np.random.default_rng([self.seed, episode.episode_index]).standard_normal()
        noise_rng = np.random.default_rng([self.seed, episode.episode_index, stream])
        noise = ar1(noise_rng, len(all_images), p.noise_std, p.noise_rho)[chosen]
        evidence = p.evidence * np.log2(images) * (seen - p.evidence_center)
        z = p.base + ramp + p.gap * seen + evidence + offset + noise
        return PrefixScores(prefix_ends=ends, raw=log_sigmoid(z), num_frames=T,
                            extras={"images": images, "ground_truth_progress": progress})

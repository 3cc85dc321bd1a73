"""GVL (Generative Value Learning, Ma et al. 2024): the baseline the TOPReward paper compares against.

The VLM sees the episode's first frame as the 0 % reference, then the sampled frames in a seeded random
order, and writes a task-completion percentage for each ("Frame i: …, Task Completion Percentage: x%").
The text is parsed robustly: a missing, malformed or out-of-range number leaves that frame NaN and is
counted, never invented. Values are un-shuffled back to time order and turned into per-frame progress the
same way as every other reward model (min-max over the frames that have a value, interpolated in between).

The prompt texts are a parameter: ``reward=gvl`` passes those of configs/reward/gvl.yaml (``prompt``), the one
place they are defined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from configs import UserError
from pipeline.progress import PrefixScores
from pipeline.rewards.schedule import sample_indices
from pipeline.rewards.vlm import check_frames, frame_resolution, is_random_test_model, load_vlm, resize_frames

PROMPT_KEYS = ("intro", "reference", "frame")  # the texts configs/reward/gvl.yaml's `prompt` gives


_FRAME = re.compile(r"frame\s*(\d+)\s*:", re.IGNORECASE)
_PERCENT = re.compile(r"task\s+completion\s+percentages?\s*[:=]?\s*(-?\d+(?:\.\d+)?)\s*%?", re.IGNORECASE)


class GVLError(UserError, ValueError):
    """Bad input to the GVL scorer."""


def check_prompt(prompt: Mapping[str, str]) -> dict[str, str]:
    """The prompt texts as a plain dict; GVLError naming the missing or unknown keys."""
    texts = {str(k): str(v) for k, v in dict(prompt).items()}
    missing, unknown = [k for k in PROMPT_KEYS if k not in texts], sorted(set(texts) - set(PROMPT_KEYS))
    if missing or unknown:
        raise GVLError(f"GVL prompt keys {sorted(texts)}: missing {missing}, unknown {unknown}; give exactly "
                       f"{list(PROMPT_KEYS)} ({{task}} is the instruction, {{i}} the frame number)")
    return texts


@dataclass
class ParsedCompletions:
    """Per-frame percentages in the order shown (NaN where none could be read) and what went wrong."""

    values: np.ndarray  # (n,) float, percent in [0, 100] or NaN
    missing: int = 0  # frames the text gave no number for
    malformed: int = 0  # a "Frame i:" entry without a readable percentage
    out_of_range: int = 0  # a number outside [0, 100]
    duplicates: int = 0  # a frame number given again (the first is kept)
    unknown_frames: int = 0  # a frame number outside 1..n

    @property
    def nan_count(self) -> int:
        return int(np.isnan(self.values).sum())


def parse_completions(text: str, n: int) -> ParsedCompletions:
    """Read "Frame i: … Task Completion Percentage: x%" entries for frames 1..n from generated text."""
    values = np.full(n, np.nan)
    seen: set[int] = set()
    out = ParsedCompletions(values)
    heads = list(_FRAME.finditer(text))
    for h, nxt in zip(heads, [*heads[1:], None][: len(heads)], strict=True):
        i = int(h.group(1))
        segment = text[h.end(): nxt.start() if nxt else len(text)]
        if not 1 <= i <= n:
            out.unknown_frames += 1
            continue
        if i in seen:
            out.duplicates += 1
            continue
        seen.add(i)
        m = _PERCENT.search(segment)
        if m is None:
            out.malformed += 1
            continue
        v = float(m.group(1))
        if not 0.0 <= v <= 100.0:
            out.out_of_range += 1
            continue
        values[i - 1] = v
    out.missing = n - len(seen)
    return out


@dataclass
class GVLResult(PrefixScores):
    """GVL values per sampled frame (``raw`` = percent / 100, NaN where the model gave no usable number)."""

    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # shown position → sampled frame
    text: str = ""
    parse: ParsedCompletions | None = None

    def __post_init__(self) -> None:
        if np.isnan(np.asarray(self.raw, dtype=np.float64)).all():
            p = self.parse
            raise GVLError(
                f"the model gave no usable completion percentage for any of {len(self.raw)} frames "
                f"(missing {p.missing if p else '?'}, malformed {p.malformed if p else '?'}, out of range "
                f"{p.out_of_range if p else '?'}); generated text begins {self.text[:200]!r}"
            )
        super().__post_init__()


class GVLScorer:
    """Asks a VLM for per-frame completion percentages of shuffled frames (greedy decoding)."""

    def __init__(self, model, processor, *, device="cpu", model_id: str = "", revision: str | None = None,
                 sample_fps: float = 2.0, max_frames: int = 30, resolution=None, max_frame_pixels: int = 256 * 256,
                 seed: int = 0, max_new_tokens_per_frame: int = 40,
                 prompt: Mapping[str, str] | None = None) -> None:
        if not sample_fps > 0:
            raise GVLError(f"sample_fps={sample_fps} must be > 0")
        if max_frames < 1:
            raise GVLError(f"max_frames={max_frames} must be >= 1")
        self.model, self.processor = model.eval(), processor
        self.device = torch.device(device)
        self.model_id, self.revision = model_id, revision
        self.sample_fps, self.max_frames, self.seed = float(sample_fps), int(max_frames), int(seed)
        self.resolution, self.max_frame_pixels = resolution, int(max_frame_pixels)
        self.max_new_tokens_per_frame = int(max_new_tokens_per_frame)
        self.prompt = None if prompt is None else check_prompt(prompt)
        ip = processor.image_processor
        self.factor = int(ip.patch_size) * int(ip.merge_size)

    @classmethod
    def from_pretrained(cls, model_id_or_path: str | Path, device: str = "cpu", dtype: str = "float32",
                        attn_implementation: str | None = "sdpa", revision: str | None = None, **options):
        model, processor = load_vlm(model_id_or_path, device=device, dtype=dtype,
                                    attn_implementation=attn_implementation, revision=revision)
        return cls(model, processor, device=device, model_id=str(model_id_or_path), revision=revision, **options)

    @property
    def provenance(self) -> dict:
        return {
            "type": "gvl", "model": self.model_id, "revision": self.revision,
            "model_class": type(self.model).__name__, "random_test_model": is_random_test_model(self.model),
            "prompt": self.prompt, "sample_fps": self.sample_fps,
            "max_frames": self.max_frames, "resolution": self.resolution, "max_frame_pixels": self.max_frame_pixels,
            "seed": self.seed, "decoding": "greedy",
        }

    def frame_indices(self, num_frames: int, fps: float) -> np.ndarray:
        """Raw frames shown: the prefix-stable schedule, thinned evenly to at most ``max_frames``."""
        idx = sample_indices(num_frames, fps, self.sample_fps)
        if len(idx) > self.max_frames:
            idx = idx[np.unique(np.floor(np.linspace(0, len(idx) - 1, self.max_frames) + 0.5).astype(int))]
        return idx

    def shuffle(self, n: int, episode_key: int = 0) -> np.ndarray:
        """Seeded order in which the n sampled frames are shown (position → sampled frame)."""
        return np.random.default_rng([self.seed, int(episode_key)]).permutation(n)

    def messages(self, task: str, n: int) -> list[dict]:
        p = self.prompt
        if p is None:  # a scorer built only to shuffle or sample frames needs no prompt; one that asks does
            raise GVLError("this GVLScorer has no prompt; pass prompt={intro, reference, frame} (the texts "
                           "of configs/reward/gvl.yaml `prompt`, which reward=gvl passes)")
        content = [{"type": "text", "text": p["intro"].format(task=task)}, {"type": "image"},
                   {"type": "text", "text": p["reference"].format(task=task)}]
        for i in range(1, n + 1):
            content += [{"type": "text", "text": p["frame"].format(i=i)}, {"type": "image"}]
        return [{"role": "user", "content": content}]

    def generate(self, text: str, images: list[np.ndarray], max_new_tokens: int) -> str:
        inputs = self.processor(text=[text], images=images, do_resize=False, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.processor.tokenizer.pad_token_id)
        return self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def score(self, frames: np.ndarray, fps: float, instruction: str, episode_key: int = 0) -> GVLResult:
        check_frames(frames, fps, instruction, error=GVLError)
        T = frames.shape[0]
        idx = self.frame_indices(T, fps)
        size = frame_resolution(frames.shape[1], frames.shape[2], self.factor, self.resolution,
                                self.max_frame_pixels)
        shown = resize_frames(frames[np.concatenate([[0], idx])], size)
        order = self.shuffle(len(idx), episode_key)
        text = self.processor.apply_chat_template(self.messages(instruction.strip(), len(idx)), tokenize=False,
                                                  add_generation_prompt=True)
        images = [shown[0]] + [shown[1 + j] for j in order]
        generated = self.generate(text, images, self.max_new_tokens_per_frame * len(idx))
        parsed = parse_completions(generated, len(idx))
        values = np.full(len(idx), np.nan)
        values[order] = parsed.values  # shown position j holds sampled frame order[j]
        return GVLResult(prefix_ends=idx + 1, raw=values / 100.0, num_frames=T,
                         extras={"nan": np.isnan(values).astype(np.float64)}, order=order, text=generated,
                         parse=parsed)

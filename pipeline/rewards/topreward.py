"""TOPReward: log p(" True" | video prefix, prompt) of a Qwen3-VL model, for every prefix in one pass.

Method (see docs/topreward.md): the prompt follows the video without a closed chat turn, the scored token is
``" True"`` (``" False"`` is recorded at the same position), frames follow a prefix-stable schedule at
``sample_fps`` with real timestamps, and every frame of an episode is shown at one fixed resolution.

One pass over all prefixes: the vision encoder attends only within a temporal group and the language model is
causal, so every prefix shares the video tokens of its groups. We run the shared part
``[text before video | group_1 … group_G]`` once (causal, KV cached), then all tails
``tail_1 … tail_K`` (the text after the video, without " True") together in one call: tail k attends to the
cached tokens up to the end of its prefix's last group and causally to itself, with M-RoPE positions that
continue from that group's last position. Logits are taken at the last token of each tail only and
log-softmaxed in float32. ``mode="naive"`` runs one ordinary forward per prefix, the reference the one-pass
result is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.progress import PrefixScores
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups
from pipeline.rewards.vlm import check_frames, frame_resolution, is_random_test_model, load_vlm, resize_frames

PROMPT_PREFIX = "The above video shows a robot manipulation trajectory that completes the following task: "
PROMPT_SUFFIX = " Decide whether the above statement is True or not. The answer is:"
ANSWER = " True"
NEGATIVE = " False"
MODES = ("one_pass", "naive")


class ScoringError(ValueError):
    """Bad input to the scorer; the message names the value and what to do."""


@dataclass
class TOPRewardResult(PrefixScores):
    """Per-prefix TOPReward scores of one episode (``raw`` is ``logp_true``)."""

    sampled_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # seconds, one per temporal group
    resolution: tuple[int, int] = (0, 0)
    tokens: int = 0  # tokens run through the language model

    @property
    def logp_true(self) -> np.ndarray:
        return self.raw

    @property
    def logp_false(self) -> np.ndarray:
        return self.extras["logp_false"]


@dataclass(frozen=True)
class ScorerOptions:
    sample_fps: float = 2.0
    resolution: int | tuple[int, int] | None = None  # long side, or (h, w); None: native, capped by max_frame_pixels
    max_frame_pixels: int = 256 * 256
    prefixes: int | str = "all"  # "all" group ends, or K evenly spaced prefixes
    add_chat_template: bool = False
    tail_batch_size: int = 0  # tails per language-model call; 0: all in one call
    prompt_prefix: str = PROMPT_PREFIX
    prompt_suffix: str = PROMPT_SUFFIX

    def __post_init__(self) -> None:
        if not self.sample_fps > 0:
            raise ScoringError(f"sample_fps={self.sample_fps} must be > 0 (e.g. 2 frames per second)")
        if self.prefixes != "all" and (not str(self.prefixes).isdigit() or int(self.prefixes) < 1):
            raise ScoringError(f"prefixes={self.prefixes!r}: use 'all' or a positive integer (e.g. 15)")
        if self.tail_batch_size < 0:
            raise ScoringError(f"tail_batch_size={self.tail_batch_size} must be >= 0 (0 = all tails at once)")
        if self.max_frame_pixels < 1:
            raise ScoringError(f"max_frame_pixels={self.max_frame_pixels} must be positive")


@dataclass
class _Layout:
    """Token layout of the full-video sequence ``[pre | groups | tail]`` and its model inputs."""

    input_ids: torch.Tensor  # (1, S + Lt) the full-video naive sequence
    mm_token_type_ids: torch.Tensor
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    group_end_tokens: np.ndarray  # (G,) exclusive token index where each group's block ends
    shared_len: int  # S: tokens before the tail


class TOPRewardScorer:
    """Scores every prefix of an episode's video with TOPReward."""

    def __init__(self, model, processor, *, device: str | torch.device = "cpu", model_id: str = "",
                 revision: str | None = None, **options) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = torch.device(device)
        self.model_id = model_id
        self.revision = revision
        self.options = ScorerOptions(**options)
        vp = processor.video_processor
        self.temporal_patch = int(vp.temporal_patch_size)
        self.factor = int(vp.patch_size) * int(vp.merge_size)
        self.video_token_id = int(model.config.video_token_id)
        self.vision_end_id = int(model.config.vision_end_token_id)
        self.max_positions = int(model.config.text_config.max_position_embeddings)
        answer = ANSWER.strip() if self.options.add_chat_template else ANSWER
        negative = NEGATIVE.strip() if self.options.add_chat_template else NEGATIVE
        self.answer_id = self._single_token(answer)
        self.negative_id = self._single_token(negative)

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model_id_or_path: str | Path, device: str = "cpu", dtype: str = "float32",
                        attn_implementation: str | None = "sdpa", revision: str | None = None,
                        **options) -> TOPRewardScorer:
        """Load a Qwen3-VL (dense or MoE) checkpoint and its processor: a hub id or a local folder."""
        try:
            model, processor = load_vlm(model_id_or_path, device=device, dtype=dtype,
                                        attn_implementation=attn_implementation, revision=revision)
        except ValueError as exc:
            raise ScoringError(str(exc)) from exc
        return cls(model, processor, device=device, model_id=str(model_id_or_path), revision=revision, **options)

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ScoringError(
                f"{text!r} is {len(ids)} tokens {ids} for this tokenizer, not one: TOPReward scores a single "
                f"answer token. Use a Qwen-VL tokenizer (where {text!r} is one token)."
            )
        return int(ids[0])

    @property
    def provenance(self) -> dict:
        o = self.options
        return {
            "type": "topreward",
            "model": self.model_id,
            "revision": self.revision,
            "model_class": type(self.model).__name__,
            "random_test_model": is_random_test_model(self.model),
            "prompt": o.prompt_prefix + "{instruction}" + o.prompt_suffix + ANSWER,
            "add_chat_template": o.add_chat_template,
            "sample_fps": o.sample_fps,
            "resolution": o.resolution,
            "max_frame_pixels": o.max_frame_pixels,
            "prefixes": o.prefixes,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
        }

    # ----------------------------------------------------------------------------------------------- inputs
    def _text(self, instruction: str) -> str:
        o = self.options
        if o.add_chat_template:
            messages = [{"role": "user", "content": [
                {"type": "video"}, {"type": "text", "text": o.prompt_prefix + instruction + o.prompt_suffix}]}]
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": o.prompt_prefix}]}]
        rendered = self.processor.apply_chat_template(messages, tokenize=False)
        eos = self.tokenizer.eos_token
        cut = rendered.find(eos)
        if cut < 0:
            raise ScoringError(f"the chat template output has no end-of-turn token {eos!r}: {rendered[:200]!r}")
        return rendered[:cut] + instruction + o.prompt_suffix

    def resolution_for(self, height: int, width: int) -> tuple[int, int]:
        """The fixed (h, w) every frame of an episode is shown at (depends on the frame size only)."""
        o = self.options
        return frame_resolution(height, width, self.factor, o.resolution, o.max_frame_pixels)

    def _prepare_frames(self, frames: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return resize_frames(frames[idx], self.resolution_for(frames.shape[1], frames.shape[2]))

    def _process(self, text: str, clip: np.ndarray, indices: np.ndarray, fps: float, total: int) -> dict:
        return self.processor(
            text=[text],
            videos=[clip],
            video_metadata=[{"fps": float(fps), "frames_indices": [int(i) for i in indices],
                             "total_num_frames": int(total)}],
            do_sample_frames=False,
            do_resize=False,
            return_tensors="pt",
        )

    def _layout(self, inputs: dict) -> _Layout:
        ids = inputs["input_ids"][0]
        is_video = (ids == self.video_token_id).numpy()
        # each group's block ends with the <|vision_end|> right after its run of video tokens
        run_ends = np.flatnonzero(is_video[:-1] & ~is_video[1:]) + 1
        if not np.all(ids[run_ends].numpy() == self.vision_end_id):
            raise ScoringError("unexpected video token layout: a group's video tokens are not closed by <|vision_end|>")
        ends = run_ends + 1
        return _Layout(
            input_ids=inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"],
            group_end_tokens=ends,
            shared_len=int(ends[-1]),
        )

    def _check(self, frames: np.ndarray, fps: float, instruction: str) -> None:
        check_frames(frames, fps, instruction, error=ScoringError)

    # ----------------------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def score(self, frames: np.ndarray, fps: float, instruction: str, mode: str = "one_pass") -> TOPRewardResult:
        """Score every prefix of one episode (``frames``: uint8 T×H×W×3 at native ``fps``)."""
        self._check(frames, fps, instruction)
        if mode not in MODES:
            raise ScoringError(f"mode={mode!r} is not one of {MODES}")
        T = frames.shape[0]
        sampled = sample_indices(T, fps, self.options.sample_fps)
        ends_sampled = group_ends(len(sampled), self.temporal_patch)
        chosen = select_groups(len(ends_sampled), self.options.prefixes)
        clip = self._prepare_frames(frames, sampled)
        text = self._text(instruction.strip())
        inputs = self._process(text, clip, sampled, fps, T)
        layout = self._layout(inputs)
        tail_len = inputs["input_ids"].shape[1] - layout.shared_len
        if layout.shared_len + tail_len > self.max_positions:
            raise ScoringError(
                f"the episode needs {layout.shared_len + tail_len} positions ({len(sampled)} frames at "
                f"{clip.shape[1]}×{clip.shape[2]}) but the model's context is {self.max_positions}: lower "
                f"sample_fps (now {self.options.sample_fps}) or the resolution (now {self.options.resolution})"
            )
        if mode == "one_pass":
            lt, lf, tokens = self._one_pass(layout, chosen)
        else:
            lt, lf, tokens = self._naive(text, clip, sampled, ends_sampled[chosen], fps, T)
        if not (np.isfinite(lt).all() and np.isfinite(lf).all()):
            raise ScoringError(f"the model produced non-finite log-probs for prefixes "
                               f"{np.flatnonzero(~np.isfinite(lt))[:5].tolist()} (dtype {self.provenance['dtype']}); "
                               f"score in float32 or check the checkpoint")
        group_ts = self.processor._calculate_timestamps(sampled, fps, self.temporal_patch)
        return TOPRewardResult(
            prefix_ends=prefix_ends(sampled, ends_sampled[chosen]),
            raw=lt,
            num_frames=T,
            extras={"logp_false": lf},
            sampled_indices=sampled,
            timestamps=np.asarray(group_ts, dtype=np.float64),
            resolution=(int(clip.shape[1]), int(clip.shape[2])),
            tokens=tokens,
        )

    def _logps(self, hidden: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits = self.model.lm_head(hidden).float()
        logp = torch.log_softmax(logits, dim=-1)
        return (logp[..., self.answer_id].double().cpu().numpy(), logp[..., self.negative_id].double().cpu().numpy())

    @torch.no_grad()
    def _naive(self, text, clip, sampled, ends_sampled, fps, T) -> tuple[np.ndarray, np.ndarray, int]:
        lt, lf, tokens = [], [], 0
        for end in ends_sampled:
            inputs = self._process(text, clip[:end], sampled[:end], fps, T).to(self.device)
            out = self.model.model(**inputs, use_cache=False)
            t, f = self._logps(out.last_hidden_state[0, -1])
            lt.append(t)
            lf.append(f)
            tokens += inputs["input_ids"].shape[1]
        return np.array(lt), np.array(lf), tokens

    @torch.no_grad()
    def _one_pass(self, layout: _Layout, chosen: np.ndarray, *, _leak_video: bool = False,
                  _positions_after_video: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        from transformers import DynamicCache

        inner = self.model.model
        dev = self.device
        S = layout.shared_len
        ids = layout.input_ids.to(dev)
        shared_ids, tail_ids = ids[:, :S], ids[0, S:]
        Lt = tail_ids.shape[0]
        position_ids, _ = inner.get_rope_index(
            shared_ids, mm_token_type_ids=layout.mm_token_type_ids[:, :S].to(dev),
            video_grid_thw=layout.video_grid_thw.to(dev),
        )
        cache = DynamicCache(config=self.model.config.get_text_config())
        inner(
            input_ids=shared_ids,
            pixel_values_videos=layout.pixel_values_videos.to(dev),
            video_grid_thw=layout.video_grid_thw.to(dev),
            mm_token_type_ids=layout.mm_token_type_ids[:, :S].to(dev),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        ends = layout.group_end_tokens[chosen]  # exclusive end of each prefix's last group, in tokens
        if _leak_video:
            ends = np.full_like(ends, S)
        pos_max = position_ids[:, 0, :].max(dim=0).values  # (S,) max over the 3 M-RoPE channels
        starts = (pos_max.cummax(0).values[ends - 1] + 1) if not _positions_after_video else \
            torch.full((len(ends),), int(pos_max.max()) + 1, device=dev)
        dtype = next(self.model.parameters()).dtype
        neg = torch.finfo(dtype).min
        batch = self.options.tail_batch_size or len(ends)
        lt, lf = [], []
        for b0 in range(0, len(ends), batch):
            b_ends, b_starts = ends[b0:b0 + batch], starts[b0:b0 + batch]
            nb = len(b_ends)
            q = nb * Lt
            mask = torch.full((q, S + q), neg, dtype=dtype, device=dev)
            causal = torch.triu(torch.full((Lt, Lt), neg, dtype=dtype, device=dev), diagonal=1)
            for j, e in enumerate(b_ends):
                rows = slice(j * Lt, (j + 1) * Lt)
                mask[rows, :int(e)] = 0
                mask[rows, S + j * Lt:S + (j + 1) * Lt] = causal
            pos = (b_starts[:, None] + torch.arange(Lt, device=dev)[None, :]).reshape(1, -1)
            out = inner(
                input_ids=tail_ids.repeat(nb)[None],
                position_ids=pos[None].expand(3, 1, -1),
                attention_mask=mask[None, None],
                past_key_values=cache,
                use_cache=True,
            )
            last = out.last_hidden_state[0, Lt - 1::Lt]
            t, f = self._logps(last)
            lt.append(t)
            lf.append(f)
            cache.crop(-q)  # drop this batch's tails, keep the shared video tokens
        return np.concatenate(lt), np.concatenate(lf), S + len(ends) * Lt

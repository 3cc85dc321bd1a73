"""TOPReward: log p(" True" | video prefix, prompt) of a Qwen3-VL model, for every prefix in one pass.

Method (see docs/topreward.md): the prompt follows the video without a closed chat turn, the scored token is
``" True"`` (``" False"`` is recorded at the same position), frames follow a prefix-stable schedule at
``sample_fps`` with real timestamps, and every frame of an episode is shown at one fixed resolution.

One pass over all prefixes: the vision encoder attends only within a temporal group and the language model is
causal, so every prefix shares the video tokens of its groups. We run the shared part
``[text before video | group_1 … group_G]`` once (causal, KV cached), then all tails
``tail_1 … tail_K`` (the text after the video, without " True") in batches of ``tail_batch_size`` tails per
call: tail k attends to the cached tokens up to the end of its prefix's last group and causally to itself,
with M-RoPE positions that continue from that group's last position. Logits are taken at the last token of
each tail only and log-softmaxed in float32. Left unset, ``tail_batch_size`` is chosen per episode from a
memory budget by a fitted memory model (:class:`MemoryModel`, :meth:`TOPRewardScorer.plan_tails`).
``mode="naive"`` runs one ordinary forward per prefix, the reference the one-pass result is checked against.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from configs import UserError
from pipeline.progress import PrefixScores
from pipeline.rewards.schedule import group_ends, prefix_ends, sample_indices, select_groups
from pipeline.rewards.vlm import check_frames, frame_resolution, is_random_test_model, load_vlm, resize_frames

PROMPT_PREFIX = "The above video shows a robot manipulation trajectory that completes the following task: "
PROMPT_SUFFIX = " Decide whether the above statement is True or not. The answer is:"
ANSWER = " True"
NEGATIVE = " False"
MODES = ("one_pass", "naive")



def cache_keyword(module) -> str:
    """The keyword the model's forward takes its KV cache by: ``cache`` in transformers releases that renamed it
    (``past_key_values`` is deprecated there, to be removed in 5.40), ``past_key_values`` in earlier ones."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"

class ScoringError(UserError, ValueError):
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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ScorerOptions:
    sample_fps: float = 2.0
    resolution: int | tuple[int, int] | None = None  # long side, or (h, w); None: native, capped by max_frame_pixels
    max_frame_pixels: int = 256 * 256
    prefixes: int | str | None = None  # "all" group ends, or K evenly spaced prefixes; None: automatic ("all")
    add_chat_template: bool = False
    tail_batch_size: int | None = None  # tails per language-model call; 0: all in one call; None: automatic
    memory_budget_gb: float | None = None  # for the automatic tail_batch_size; None: from the device (below)
    prompt_prefix: str = PROMPT_PREFIX
    prompt_suffix: str = PROMPT_SUFFIX

    def __post_init__(self) -> None:
        if not self.sample_fps > 0:
            raise ScoringError(f"sample_fps={self.sample_fps} must be > 0 (e.g. 2 frames per second)")
        if self.prefixes not in (None, "all") and (isinstance(self.prefixes, bool) or not str(self.prefixes).isdigit()
                                                    or int(self.prefixes) < 1):
            raise ScoringError(f"prefixes={self.prefixes!r}: use 'all', a positive integer (e.g. 15), or null "
                               f"(automatic: all)")
        if self.tail_batch_size is not None and (not _is_int(self.tail_batch_size) or self.tail_batch_size < 0):
            raise ScoringError(f"tail_batch_size={self.tail_batch_size!r} must be an integer >= 0 (0 = all tails "
                               f"at once) or null (chosen from memory_budget_gb)")
        if self.memory_budget_gb is not None and (isinstance(self.memory_budget_gb, bool)
                                                  or not isinstance(self.memory_budget_gb, (int, float))
                                                  or not np.isfinite(self.memory_budget_gb)
                                                  or self.memory_budget_gb <= 0):
            raise ScoringError(f"memory_budget_gb={self.memory_budget_gb!r} must be a number of GB > 0 (e.g. 8) or "
                               f"null (CUDA: 90% of the free device memory; CPU: half the available RAM)")
        if self.max_frame_pixels < 1:
            raise ScoringError(f"max_frame_pixels={self.max_frame_pixels} must be positive")


@dataclass(frozen=True)
class MemoryModel:
    """Predicted peak memory of one-pass scoring above the loaded weights (bytes), from the model's sizes.

        peak(S, q) = base + S·(c_shared·(H + I)·b + 2·kv) + c_mask·q·(S + q)·b + q·(c_tail·(H + I)·b + kv)

    for ``S`` shared tokens (text before the video + all groups) and a tail call of ``q`` tokens (tails per
    call × tail length). ``H``/``I``: the language model's hidden/intermediate sizes, ``b``: bytes per element
    of the model's dtype, ``kv``: key/value cache bytes per token over all layers (the shared cache, and the
    batch's cache: the cut shared part, at most ``S``, concatenated with the batch's own ``q`` tokens). The tail call's 4-D additive mask has ``q × (S + q)``
    elements (at most: the batch sees the cache up to its longest prefix only).

    Constants fitted to peak-RSS measurements on CPU, tiny random Qwen3-VL, float32, SDPA
    (``python -m benchmarks.memory``; docs/benchmarks.md, "Scoring memory vs prefixes K"): the mask is the
    only buffer of its size alive at the peak (``c_mask`` = 1: PyTorch's CPU attention does not expand it per
    head); ``c_shared`` = 18 and ``base`` = 24 MiB bound every measured shared-pass peak (S = 795 … 6,551),
    where the processor's pixel buffers and the vision encoder, not the language model's width, dominate, so
    for a large model the shared term errs on the high side; with ``c_tail`` = 4 every measured peak (K = 1 …
    256, all tails in one call, 16 per call, automatic) lies 0.5–34 % below the prediction. Not measured on
    CUDA (no GPU here): PyTorch's memory-efficient SDPA kernel takes an additive mask without expanding it per
    head, but where SDPA falls back to its math kernel the scores (heads × q × (S + q) floats) are
    materialised, which this model does not count: set ``memory_budget_gb`` lower or ``tail_batch_size`` there.
    """

    hidden: int
    intermediate: int
    kv_bytes_per_token: int
    dtype_bytes: int
    base: int = 24 * 2**20
    c_shared: float = 18.0
    c_mask: float = 1.0
    c_tail: float = 4.0

    @classmethod
    def of(cls, model) -> MemoryModel:
        text = model.config.get_text_config()
        heads = int(text.num_attention_heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        dtype_bytes = next(model.parameters()).element_size()
        inter = int(getattr(text, "intermediate_size", 0) or 0)
        if getattr(text, "num_experts_per_tok", None) and getattr(text, "moe_intermediate_size", None):
            inter = max(inter, int(text.num_experts_per_tok) * int(text.moe_intermediate_size))
        return cls(hidden=int(text.hidden_size), intermediate=inter, dtype_bytes=dtype_bytes,
                   kv_bytes_per_token=2 * int(text.num_hidden_layers) * kv_heads * head_dim * dtype_bytes)

    def peak_bytes(self, shared_tokens: int, tail_tokens: int) -> int:
        """Predicted peak for ``shared_tokens`` (S) and a tail call of ``tail_tokens`` (q) tokens."""
        S, q, b, kv = int(shared_tokens), int(tail_tokens), self.dtype_bytes, self.kv_bytes_per_token
        width = (self.hidden + self.intermediate) * b
        return int(self.base + S * (self.c_shared * width + 2 * kv) + self.c_mask * q * (S + q) * b
                   + q * (self.c_tail * width + kv))


def speed_cap(shared_tokens: int, tail_len: int) -> int:
    """The most tails per call worth running together: a call's tails also attend (masked) to each other and
    to the cache past their own prefix, so past ``q ≈ S/4`` tokens a bigger batch only adds wasted work
    (measured: docs/benchmarks.md); below it the per-call costs dominate."""
    return max(1, -(-int(shared_tokens) // (4 * int(tail_len))))


def choose_tail_batch(memory: MemoryModel, shared_tokens: int, tail_len: int, prefixes: int,
                      budget_bytes: int) -> tuple[int, int]:
    """The largest number of tails per call (1 … ``prefixes``) whose predicted peak fits ``budget_bytes``,
    and that prediction. When even one tail per call does not fit, 1 (the least memory there is)."""
    lo, hi = 1, max(1, int(prefixes))
    if memory.peak_bytes(shared_tokens, hi * tail_len) <= budget_bytes:
        lo = hi
    while lo < hi:  # the peak grows with the batch: bisect for the largest batch that fits
        mid = (lo + hi + 1) // 2
        if memory.peak_bytes(shared_tokens, mid * tail_len) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo, memory.peak_bytes(shared_tokens, lo * tail_len)


def memory_budget_bytes(device: torch.device, memory_budget_gb: float | None) -> tuple[int, str]:
    """The scoring memory budget in bytes and where it came from: ``memory_budget_gb`` when given; on CUDA
    90% of the device's free memory (weights already loaded); elsewhere half the available RAM."""
    if memory_budget_gb is not None:
        return int(float(memory_budget_gb) * 2**30), "memory_budget_gb"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.9 * free), "90% of the free CUDA memory"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2, "half the available RAM"
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available) // 2, "half the available RAM"


@dataclass(frozen=True)
class TailPlan:
    """How one episode's tails are run (``TOPRewardScorer.last_plan``)."""

    prefixes: int  # K scored
    tail_batch_size: int  # tails per language-model call
    shared_tokens: int  # S
    tail_tokens: int  # Lt, tokens per tail
    predicted_bytes: int  # the memory model's peak for this plan
    budget_bytes: int | None  # None when tail_batch_size was given
    budget_source: str = ""
    automatic: bool = False

    def line(self) -> str:
        gb = 2**30
        if not self.automatic:
            return (f"TOPReward: {self.prefixes} prefixes, tail_batch_size={self.tail_batch_size} (given); memory "
                    f"model {self.predicted_bytes / gb:.2f} GB")
        over = self.predicted_bytes > (self.budget_bytes or 0)
        return (f"TOPReward: {self.prefixes} prefixes, tail_batch_size={self.tail_batch_size} chosen for a "
                f"{self.budget_bytes / gb:.2f} GB budget ({self.budget_source}): memory model "
                f"{self.predicted_bytes / gb:.2f} GB for {self.shared_tokens} video tokens"
                + (" — OVER the budget even one tail at a time: lower sample_fps or the resolution" if over else
                   "; later episodes choose again (set reward.tail_batch_size to fix it)"))


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
        self.memory = MemoryModel.of(model)
        self.last_plan: TailPlan | None = None  # how the last one-pass episode's tails were run
        self._announced = False

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
            "prefixes": "all" if o.prefixes is None else o.prefixes,
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
        chosen = select_groups(len(ends_sampled), "all" if self.options.prefixes is None else self.options.prefixes)
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

    def plan_tails(self, shared_tokens: int, tail_len: int, prefixes: int) -> TailPlan:
        """Tails per language-model call for an episode: ``tail_batch_size`` when given (0: all), else the
        largest batch whose predicted peak memory (:class:`MemoryModel`) fits the budget
        (``memory_budget_gb``, or the device's: :func:`memory_budget_bytes`), at most :func:`speed_cap`."""
        o, S, Lt, K = self.options, int(shared_tokens), int(tail_len), int(prefixes)
        if o.tail_batch_size is not None:
            b = min(o.tail_batch_size or K, K)
            return TailPlan(K, b, S, Lt, self.memory.peak_bytes(S, b * Lt), None)
        budget, source = memory_budget_bytes(self.device, o.memory_budget_gb)
        b, _ = choose_tail_batch(self.memory, S, Lt, K, budget)
        b = min(b, speed_cap(S, Lt))
        return TailPlan(K, b, S, Lt, self.memory.peak_bytes(S, b * Lt), budget, source, automatic=True)

    def _announce(self, plan: TailPlan) -> None:
        """One line on stderr: the first automatic choice of this scorer, and any plan over its budget."""
        over = plan.automatic and plan.predicted_bytes > plan.budget_bytes
        if plan.automatic and (over or not self._announced):
            print(plan.line(), file=sys.stderr)
            self._announced = True

    @torch.no_grad()
    def _one_pass(self, layout: _Layout, chosen: np.ndarray, *, batch: int | None = None, _leak_video: bool = False,
                  _positions_after_video: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        from transformers import DynamicCache

        inner = self.model.model
        dev = self.device
        S = layout.shared_len
        ids = layout.input_ids.to(dev)
        shared_ids, tail_ids = ids[:, :S], ids[0, S:]
        Lt = tail_ids.shape[0]
        if batch is None:
            plan = self.plan_tails(S, Lt, len(chosen))
            self.last_plan = plan
            self._announce(plan)
            batch = plan.tail_batch_size
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
            **{cache_keyword(inner): cache},
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
        batch = min(int(batch) or len(ends), len(ends))
        shared_kv = [(layer.keys, layer.values) for layer in cache.layers]
        causal = torch.triu(torch.full((Lt, Lt), neg, dtype=dtype, device=dev), diagonal=1)
        lt, lf = [], []
        for b0 in range(0, len(ends), batch):
            b_ends, b_starts = ends[b0:b0 + batch], starts[b0:b0 + batch]
            nb = len(b_ends)
            q = nb * Lt
            # the batch attends to the cached tokens up to its longest prefix only: the cache is cut there
            # (views of the shared keys/values, no copy); tokens past a tail's own prefix are masked anyway
            E = int(b_ends.max())
            for layer, (k, v) in zip(cache.layers, shared_kv, strict=True):
                layer.keys, layer.values = k[..., :E, :], v[..., :E, :]
            mask = torch.full((q, E + q), neg, dtype=dtype, device=dev)
            for j, e in enumerate(b_ends):
                rows = slice(j * Lt, (j + 1) * Lt)
                mask[rows, :int(e)] = 0
                mask[rows, E + j * Lt:E + (j + 1) * Lt] = causal
            pos = (b_starts[:, None] + torch.arange(Lt, device=dev)[None, :]).reshape(1, -1)
            out = inner(
                input_ids=tail_ids.repeat(nb)[None],
                position_ids=pos[None].expand(3, 1, -1),
                attention_mask=mask[None, None],
                **{cache_keyword(inner): cache},
                use_cache=True,
            )
            last = out.last_hidden_state[0, Lt - 1::Lt]
            t, f = self._logps(last)
            lt.append(t)
            lf.append(f)
            del out, mask
        return np.concatenate(lt), np.concatenate(lf), S + len(ends) * Lt

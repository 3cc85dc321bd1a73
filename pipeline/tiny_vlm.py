"""A tiny random Qwen3-VL (dense or MoE) built offline: the one test/benchmark model.

It is saved to a folder with ``save_pretrained`` and loaded back through the same ``from_pretrained`` path a
real checkpoint takes, so tests exercise the real loading code without the hub. The tokenizer is a byte-level
BPE trained on a few sentences containing the prompt words (so ``" True"`` and ``" False"`` are single
tokens); the processor, video processor and chat template come from constructor arguments and behave like
Qwen3-VL's (a video item renders as ``<|vision_start|><|video_pad|><|vision_end|>``, no default system turn).

A plain random init gives log-probs near ln(1/V) that hardly vary between prefixes; ``logit_scale`` scales the
embeddings and the LM head so that prefix scores really differ and equality tests mean something.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen3-VL's template reduced to what scoring uses: user/assistant turns, text/image/video items.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CORPUS = [
    "The above video shows a robot manipulation trajectory that completes the following task: ",
    "Decide whether the above statement is True or not. The answer is: True",
    "Decide whether the above statement is True or not. The answer is: False",
    "pick up the red cube and place it in the bowl. push the puck to the goal. open the drawer.",
    "stack the blocks, fold the towel, wipe the table, close the door, move the arm to the left.",
    "0.0 0.5 1.0 1.5 2.0 2.5 3.0 3.5 4.0 4.5 5.0 6.0 7.0 8.0 9.0 10.0 seconds",
    "task completion percentage: 0% 10% 20% 25% 50% 75% 100% frame",
    "True\nFalse\nTrue\nFalse\nassistant user",
]


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def build_processor(patch_size: int = 8, vocab_size: int = 512):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = build_tokenizer(vocab_size)
    video = Qwen3VLVideoProcessor(
        patch_size=patch_size,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 4 * patch_size * patch_size, "longest_edge": 1 << 24},
        do_sample_frames=False,
        cap_pixels_per_frame=False,
    )
    image = Qwen2VLImageProcessor(
        patch_size=patch_size,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 4 * patch_size * patch_size, "longest_edge": 1 << 22},
    )
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=CHAT_TEMPLATE)


def build_config(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 vision_hidden: int = 32, vision_depth: int = 2, patch_size: int = 8, moe: bool = False,
                 intermediate: int | None = None, max_positions: int = 4096):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden // heads
    # mrope_section (t, h, w) must sum to head_dim / 2.
    half = head_dim // 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section,
                         "mrope_interleaved": True},
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=vision_depth,
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_heads=2,
        patch_size=patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=hidden,
        num_position_embeddings=16 * 16,
        deepstack_visual_indexes=[0],
    )
    common = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if moe:
        from transformers import Qwen3VLMoeConfig

        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden, decoder_sparse_step=1)
        return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **common)
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(text_config=text, vision_config=vision, **common)


def build_tiny_qwen3vl(out_dir: str | Path, *, seed: int = 0, moe: bool = False, logit_scale: float = 8.0,
                       **sizes) -> Path:
    """Build a random Qwen3-VL (+ processor) and ``save_pretrained`` it to ``out_dir``; returns the folder.

    ``sizes`` go to :func:`build_config` (hidden, layers, heads, kv_heads, vision_hidden, vision_depth,
    patch_size, intermediate, max_positions); the defaults give a model of ~0.3M parameters.
    """
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patch_size = sizes.get("patch_size", 8)
    processor = build_processor(patch_size=patch_size)
    config = build_config(processor.tokenizer, moe=moe, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(logit_scale)
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def num_parameters(model_dir: str | Path) -> int:
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def moving_square_clip(num_frames: int, height: int, width: int | None = None, seed: int = 0):
    """uint8 frames (T×H×W×3) of a bright square sliding left to right over noise: a clip whose prefixes
    really differ, for tests and benchmarks of the video scorers."""
    import numpy as np

    width = height if width is None else width
    side = max(4, min(height, width) // 6)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (num_frames, height, width, 3)).astype(np.uint8)
    for t in range(num_frames):
        x = int((width - side) * t / max(num_frames - 1, 1))
        frames[t, height // 3: height // 3 + side, x: x + side] = 255
    return frames

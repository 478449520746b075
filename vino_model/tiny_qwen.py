"""A tiny random Qwen3-VL folder for tests and smoke runs: same classes and layout as
Qwen3-VL-4B-Instruct (config, safetensors, tokenizer, image/video processors, chat template),
small enough to build in well under a second.
"""

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Qwen2TokenizerFast,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

# In Qwen's own vocabulary order, appended after the byte-level BPE entries.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Renders what Qwen3-VL-Instruct's template renders for plain (tool-free) chats: string or
# typed-list content, images and videos as a vision_start/pad/vision_end triple, text verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_CORPUS = [
    "A red fox runs across a snowy field at dawn, its breath visible in the cold air.",
    "A woman in a yellow raincoat walks her dog along a wet city street at night.",
    "The camera slowly pans over a mountain lake surrounded by pine trees.",
    "A close-up of a cup of coffee on a wooden table, steam rising in soft morning light.",
    "Two children fly a blue kite on a windy beach under a cloudy sky.",
    "A cat wearing a small straw hat sits on a windowsill and looks outside.",
    "A chef chops green vegetables in a bright kitchen; the knife moves quickly.",
    "An old red car drives down a desert road, dust trailing behind it.",
    "The person from Image 1 wears the hat in Image 2 and waves at the camera.",
    "Replace the background of Video 1 with a sunny beach and keep the motion.",
    "Animate Image 1: the flowers sway gently in the breeze while clouds drift by.",
    "Make the sky purple and add falling snow; keep everything else the same.",
]


def _train_tokenizer(corpus: list[str]) -> Qwen2TokenizerFast:
    """Byte-level BPE with Qwen's pre-tokenizer, then Qwen's special tokens on top."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    trained = json.loads(bpe.to_str())["model"]

    vocab = dict(trained["vocab"])
    vocab.update({token: len(vocab) + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)})
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=[tuple(merge) for merge in trained["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# The language model's size; `make_tiny_qwen3vl(text=...)` overrides any of these.
TEXT_SIZE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16}


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen3-VL's split of the rotary half-dimension over (t, h, w): about 3:2.5:2.5, summing to head_dim / 2."""
    half = head_dim // 2
    spatial = (half - half * 3 // 8) // 2
    return [half - 2 * spatial, spatial, spatial]


def _tiny_config(tokenizer: Qwen2TokenizerFast, text: dict | None = None) -> Qwen3VLConfig:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    size = {**TEXT_SIZE, **(text or {})}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            **size,
            "max_position_embeddings": 8192,
            # mrope_section sums to head_dim / 2, interleaved as in Qwen3-VL
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": _mrope_section(size["head_dim"]),
                "mrope_interleaved": True,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": size["hidden_size"],
            "num_position_embeddings": 64,  # a perfect square: an 8x8 learned grid
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,  # a tied random model only repeats its last token
    )


def make_tiny_qwen3vl(folder, seed: int = 0, corpus: list[str] | None = None, text: dict | None = None) -> Path:
    """Write a complete tiny random Qwen3-VL folder that `from_pretrained` loads; returns its path.

    corpus: the texts its byte-level BPE tokenizer is trained on; text: language-model sizes over TEXT_SIZE."""
    folder = Path(folder)
    tokenizer = _train_tokenizer(DEFAULT_CORPUS if corpus is None else corpus)
    # Qwen3-VL's patching (16-pixel patches, 2 frames, 2x2 merge: tokens of 32x32 pixels); small
    # pixel budgets keep test images at 4..64 tokens.
    patching = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 4 * 1024, "longest_edge": 64 * 1024}, **patching)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 4 * 1024, "longest_edge": 256 * 1024}, **patching)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )

    config = _tiny_config(tokenizer, text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )

    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder

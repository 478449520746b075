"""The VLM side of VINO: a frozen Qwen3-VL reads the interleaved prompt (labelled images, a video,
text) followed by learnable query embeddings ("metaquery"); two MLP connectors turn its
hidden_states[-2] into the MMDiT text tokens and the boundary tokens of every visual input.
"""

import copy
import functools
import hashlib
import inspect
import json
import re
import time
import types
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import AutoProcessor, GenerationConfig, ProcessorMixin, Qwen3VLForConditionalGeneration
from transformers.video_utils import VideoMetadata

from .errors import VinoInputError
from .offload import copy_ahead

SYSTEM_PROMPT = "You are a helpful assistant aimed at generating an output video caption."
REWRITE_SYSTEM_PROMPT = (
    "You write captions for an image and video generator. Rewrite the user's request into one "
    "detailed caption of the output to generate: subjects, appearance, actions, setting, lighting "
    "and camera. Refer to the inputs by their labels (Image 1, Video 1). Reply with the caption only."
)

# How the VLM reads a reference video: frames sampled at 2 fps, each frame scaled to between
# 256 and 16384 tokens of (patch x merge)^2 = 32x32 pixels (small videos are upscaled).
VIDEO_FPS = 2.0
VIDEO_MIN_TOKENS_PER_FRAME = 256
VIDEO_MAX_TOKENS_PER_FRAME = 16384

_LABEL = re.compile(r"\b(Image|Video)\s+(\d+)\b")


def build_prompt(text: str, num_images: int, has_video: bool, system: str = SYSTEM_PROMPT) -> list[dict]:
    """Chat messages: the system turn, then a user turn listing the labelled inputs before the text."""
    content = []
    for index in range(1, num_images + 1):
        content += [{"type": "text", "text": f"Image {index}: "}, {"type": "image"}]
    if has_video:
        content += [{"type": "text", "text": "Video 1: "}, {"type": "video"}]
    content.append({"type": "text", "text": text})
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def render_prompt(processor, text: str, num_images: int, has_video: bool, system: str = SYSTEM_PROMPT) -> str:
    """The chat-templated prompt string, ending with the assistant opener."""
    messages = build_prompt(text, num_images, has_video, system)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_labels(text: str, num_images: int, has_video: bool) -> None:
    """Every "Image N" / "Video N" the prompt mentions must name a connected input."""
    for kind, number in _LABEL.findall(text):
        number = int(number)
        if kind == "Image" and not 1 <= number <= num_images:
            connected = {0: "no images are", 1: "1 image is"}.get(num_images, f"{num_images} images are")
            raise VinoInputError(f"prompt mentions Image {number} but {connected} connected")
        if kind == "Video" and number != 1:
            raise VinoInputError(f"prompt mentions Video {number} but VINO takes at most one video (Video 1)")
        if kind == "Video" and not has_video:
            raise VinoInputError("prompt mentions Video 1 but no video is connected")


def boundary_positions(
    input_ids: torch.Tensor, vision_start_id: int, vision_end_id: int, num_images: int, has_video: bool
) -> torch.Tensor:
    """Sequence positions of the (start, end) markers of each visual input, images first: [n_visual, 2].

    An image is one start ... end pair. The processor expands a video into per-2-frame groups, each
    with its own inner markers, inside the template's outer pair; the video keeps that outer pair:
    its first start marker and the last end marker of the sequence.
    """
    starts = (input_ids == vision_start_id).nonzero().flatten()
    ends = (input_ids == vision_end_id).nonzero().flatten()
    pairs = [(starts[i], ends[i]) for i in range(num_images)]
    if has_video:
        pairs.append((starts[num_images], ends[-1]))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def right_pad(rows, value) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (sequences or tensors [L_i, ...]) stacked into [B, L_max, ...] with `value` after each row,
    and the mask [B, L_max] (1 on real entries). Padding after a row leaves a causal model's reading of it
    unchanged."""
    rows = [torch.as_tensor(row) for row in rows]
    out = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)
    return out, (torch.arange(out.shape[1]) < torch.tensor([row.shape[0] for row in rows])[:, None]).long()


def kv_cache(output):
    """A transformers model output's key/value cache: `cache` in transformers 5.2x, `past_key_values` before."""
    return output["cache"] if "cache" in output else output.past_key_values


@functools.cache
def cache_argument(language_model: type) -> str:
    """The forward argument of a transformers model class that takes a key/value cache: `cache` in transformers
    5.2x (`past_key_values`, its old name, goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"


class Connector(nn.Module):
    """RMSNorm -> Linear(in, 4z) -> GELU(tanh) -> Linear(4z, z): VLM hidden states to MMDiT width z."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm_qwen = nn.RMSNorm(in_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, 4 * out_dim), nn.GELU(approximate="tanh"), nn.Linear(4 * out_dim, out_dim)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm_qwen(hidden_states))


class MMEncoder(nn.Module):
    """The trainable VLM-side weights of vino.ckpt (`mm_encoder.*`): metaquery and two connectors."""

    def __init__(self, vlm_hidden: int = 2560, num_queries: int = 256, text_dim: int = 4096, boundary_dim: int = 3072):
        super().__init__()
        self.metaquery = nn.Parameter(torch.randn(num_queries, vlm_hidden) / vlm_hidden**0.5)
        self.connector = Connector(vlm_hidden, text_dim)
        self.connector_vae_branch = Connector(vlm_hidden, boundary_dim)


@dataclass
class EncodedContext:
    text_states: torch.Tensor  # [L, text_dim]: the whole sequence (system, text, visual tokens, queries)
    boundary_tokens: torch.Tensor  # [n_visual, 2, boundary_dim]: (start, end) per input, images then video
    num_images: int
    has_video: bool
    input_ids: torch.Tensor | None = None  # [L_prompt]: the prompt's token ids (the queries follow them)


def fingerprint(value, digest) -> bool:
    """Feed `value` (arrays, tensors, PIL images, numbers, strings, and containers and dataclasses of them) into a
    hashlib digest; False if it holds anything else (whose repr may not tell its content)."""
    if isinstance(value, Image.Image):
        digest.update(f"image {value.mode}".encode())
        value = np.asarray(value)
    if isinstance(value, torch.Tensor):
        digest.update(f"tensor {value.dtype} {tuple(value.shape)}".encode())
        value = value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy()
    if isinstance(value, np.ndarray):
        digest.update(f"array {value.dtype} {value.shape}".encode())
        digest.update(np.ascontiguousarray(value).data)
        return True
    if isinstance(value, dict):
        digest.update(f"dict {len(value)}".encode())
        return all(fingerprint(key, digest) and fingerprint(value[key], digest) for key in sorted(value, key=repr))
    if isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)}".encode())
        return all(fingerprint(item, digest) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        named = {f.name: getattr(value, f.name) for f in fields(value)}
        return fingerprint({"dataclass": type(value).__name__, **named}, digest)
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        digest.update(f"{type(value).__name__} {value!r}".encode())
        return True
    return False


MEDIA_PROCESSORS = ("image_processor", "video_processor")


def process_context(processor, text: str, images=(), video=None, video_fps: float | None = None, system=SYSTEM_PROMPT):
    """The processor's output for a (text, images, video, video_fps) context, on the CPU: token ids (visual
    placeholders expanded), pixels and grids. Needs only the processor, not the VLM."""
    images = list(images)
    if video is not None and not all(isinstance(frame, Image.Image) for frame in video):
        raise VinoInputError("video must be one list of PIL frames; VINO takes at most one video")
    if video is not None and len(video) < 2:
        raise VinoInputError(f"video has {len(video)} frame(s); expected at least 2 (connect a still as an image)")
    if video is not None and video_fps is None:
        raise VinoInputError("video_fps is missing; pass the frame rate of the connected video")
    if not all(isinstance(image, Image.Image) for image in images):
        raise VinoInputError("images must be a list of PIL images")
    check_text(processor, text, len(images), video is not None)

    prompt = render_prompt(processor, text, len(images), video is not None, system)
    kwargs = {"text": [prompt], "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if video is not None:
        kwargs["videos"], kwargs["videos_kwargs"] = video_for_vlm(processor, video, video_fps)
        processor = keep_video_wrapper(processor)
    return processor(**kwargs)


def rope_positions(model, inputs) -> torch.Tensor:
    """A processor output's mRoPE positions [L, 3], from the token ids and the media grids (`model`: a Qwen3-VL
    model, of which only the config is read: one on the meta device does)."""
    return model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                image_grid_thw=inputs.get("image_grid_thw"),
                                video_grid_thw=inputs.get("video_grid_thw"))[0][:, 0].T


def keep_video_wrapper(processor):
    """The processor, keeping the chat template's outer <|vision_start|> ... <|vision_end|> around a video's
    timestamped groups, which VINO reads as the video's boundary tokens (its weights were trained with it).
    transformers 5.25's Qwen3-VL processor collapses that pair in its own `get_text_with_replacements`; the base
    class's, which it had until then, keeps it. From 5.25 a shallow copy with the base class's replacement (the
    caller's processor stays as it was); before, the processor itself."""
    if "get_text_with_replacements" not in type(processor).__dict__:
        return processor
    kept = copy.copy(processor)
    kept.get_text_with_replacements = types.MethodType(ProcessorMixin.get_text_with_replacements, kept)
    return kept


def check_text(processor, text: str, num_images: int, has_video: bool) -> None:
    specials = [token for token in processor.tokenizer.all_special_tokens if token in text]
    if specials:
        raise VinoInputError(f"prompt contains the control token(s) {specials}; remove them from the text")
    check_labels(text, num_images, has_video)


def video_for_vlm(processor, video: list[Image.Image], video_fps: float):
    """Frames sampled at VIDEO_FPS with their source indices, and the per-frame size bounds."""
    video_processor = processor.video_processor
    metadata = VideoMetadata(total_num_frames=len(video), fps=float(video_fps))
    metadata.frames_indices = [int(i) for i in video_processor.sample_frames(metadata, fps=VIDEO_FPS)]
    frames = np.stack([np.asarray(video[i].convert("RGB")) for i in metadata.frames_indices])  # [T, H, W, 3]
    # The processor bounds the pixels of all sampled frames together; scale the bounds by the count.
    token_pixels = (video_processor.patch_size * video_processor.merge_size) ** 2
    num_frames = len(frames)
    videos_kwargs = {
        "video_metadata": [metadata],
        "do_sample_frames": False,
        "cap_pixels_per_frame": False,
        "size": {
            "shortest_edge": VIDEO_MIN_TOKENS_PER_FRAME * token_pixels * num_frames,
            "longest_edge": VIDEO_MAX_TOKENS_PER_FRAME * token_pixels * num_frames,
        },
    }
    return [frames], videos_kwargs


class MemoisedMedia:
    """Stands in for the processor's image or video processor while the encoder memoises (training): equal media
    with equal settings are processed once, and their pixels kept once, in the vision tower's dtype (the tower casts
    them to it on reading). A sample's prompt variants (long, short or no caption) share its references' pixels."""

    PIXELS = ("pixel_values", "pixel_values_videos")

    def __init__(self, inner, dtype: torch.dtype):
        self.inner, self.dtype, self.outputs = inner, dtype, {}

    def __getattr__(self, name):  # what is not its own is the processor's
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        digest = hashlib.blake2b(digest_size=20)
        if not fingerprint((args, kwargs), digest):
            return self.inner(*args, **kwargs)  # inputs it cannot tell apart by content: not memoised
        key = digest.digest()
        if key not in self.outputs:
            output = self.inner(*args, **kwargs)
            for name in self.PIXELS:
                if isinstance(output.get(name), torch.Tensor):
                    output[name] = output[name].to(self.dtype)
            self.outputs[key] = output
        return copy.copy(self.outputs[key])  # the processor pops keys off what it is given


def tower_readings(tower, pixels: list[torch.Tensor], grids: list[torch.Tensor], device) -> list[tuple]:
    """The vision tower's reading of pixel tensors (each with its grids [n, 3]) in one pass: per tensor (merged
    [tokens, hidden], [DeepStack features [tokens, hidden], ...]) on `device`."""
    out = tower(torch.cat(pixels).to(device, tower.dtype), grid_thw=torch.cat(grids).to(device), return_dict=True)
    sizes = [int(grid.prod(-1).sum()) // tower.spatial_merge_size**2 for grid in grids]
    deep = [feature.split(sizes) for feature in out.deepstack_features]
    return [(merged, [layer[k] for layer in deep]) for k, merged in enumerate(out.pooler_output.split(sizes))]


def memoising(processor, dtype: torch.dtype):
    """A copy of `processor` whose image and video processors are `MemoisedMedia` (the original, which other
    encoders may share, keeps its own)."""
    processor = copy.copy(processor)
    for name in MEDIA_PROCESSORS:
        setattr(processor, name, MemoisedMedia(getattr(processor, name), dtype))
    return processor


def unmemoising(processor):
    """`processor` with its own image and video processors again: a copy, if `memoising` made it."""
    if not isinstance(processor.video_processor, MemoisedMedia):
        return processor
    processor = copy.copy(processor)
    for name in MEDIA_PROCESSORS:
        setattr(processor, name, getattr(processor, name).inner)
    return processor


@dataclass
class EncodedBatch:
    text_states: torch.Tensor  # [B, L, text_dim]: each sample's prompt, padding up to the longest, its queries
    mask: torch.Tensor  # [B, L] bool: False on the padding
    boundary_tokens: list[torch.Tensor]  # per sample [n_visual, 2, boundary_dim]
    input_ids: list[torch.Tensor]  # per sample [L_prompt] (CPU)


class InterleavedEncoder(nn.Module):
    """Frozen Qwen3-VL + MMEncoder: prompt and media in, MMDiT text tokens and boundary tokens out."""

    def __init__(self, vlm: Qwen3VLForConditionalGeneration, processor, mm_encoder: MMEncoder):
        super().__init__()
        vlm_hidden = vlm.config.text_config.hidden_size
        if mm_encoder.metaquery.shape[1] != vlm_hidden:
            raise VinoInputError(
                f"mm_encoder has metaquery width {mm_encoder.metaquery.shape[1]} but the VLM's hidden size "
                f"is {vlm_hidden}; build MMEncoder(vlm_hidden={vlm_hidden}) for this VLM"
            )
        self.vlm = vlm.eval().requires_grad_(False)
        self.processor = processor
        self.mm_encoder = mm_encoder
        self._memo = None
        self.read_media = {}  # id of a memoised pixel tensor -> (the tensor, emptied once read; the tower's reading)
        self.prepared_count = {"misses": 0, "seconds": 0.0}  # prepared_batch's: contexts the memo lacked, time spent

    @property
    def memo(self) -> dict | None:
        """None, or a dict that turns on memoised processor outputs for keyed contexts (training); equal media are
        then processed once (`MemoisedMedia`) and read by the vision tower once. Setting a dict starts afresh."""
        return self._memo

    @memo.setter
    def memo(self, memo: dict | None) -> None:
        self._memo = memo
        self.read_media = {}
        self.processor = unmemoising(self.processor)  # back to the processor's own
        if memo is not None:
            self.processor = memoising(self.processor, self.vlm.model.visual.dtype)

    def unmemoised(self) -> "InterleavedEncoder":
        """This encoder, its modules shared, reading as if no memo were set and leaving the memo as it is: for a
        generation in the middle of training (its samples)."""
        if self.memo is None:
            return self
        view = copy.copy(self)
        view._memo, view.read_media, view.prepared_count = None, {}, {"misses": 0, "seconds": 0.0}
        view.processor = unmemoising(self.processor)
        return view

    @classmethod
    def from_folder(cls, qwen_folder, mm_encoder: MMEncoder, device="cpu", dtype=torch.float32):
        """Load a Qwen3-VL folder (e.g. Qwen3-VL-4B-Instruct); the VLM gets `dtype`, mm_encoder keeps its own."""
        folder = Path(qwen_folder)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise VinoInputError(
                f"qwen_folder {folder} has no config.json; expected a Qwen3-VL folder such as "
                "Qwen3-VL-4B-Instruct (config.json, safetensors weights, tokenizer and processor files)"
            )
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type != "qwen3_vl":
            raise VinoInputError(
                f"qwen_folder {folder} holds a {model_type!r} model; expected a Qwen3-VL folder "
                "(model_type 'qwen3_vl') such as Qwen3-VL-4B-Instruct"
            )
        vlm = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device)
        processor = AutoProcessor.from_pretrained(folder)
        return cls(vlm, processor, mm_encoder.to(device))

    def train(self, mode: bool = True):
        super().train(mode)
        self.vlm.eval()  # frozen: only mm_encoder ever trains
        return self

    def prepare_inputs(self, text: str, images=(), video=None, video_fps: float | None = None, system=SYSTEM_PROMPT):
        """Check the inputs and run the processor: token ids (visual placeholders expanded), pixels, grids (on the
        VLM's device). Not while `memo` is set: the memoised pixels are let go once the vision tower has read them."""
        if self.memo is not None:
            raise RuntimeError("encode and rewrite read pixels, which a memo lets go once read: set `memo` to None "
                               "first, or read with encode_batch")
        return self.process(text, images, video, video_fps, system).to(self.vlm.device)

    def process(self, text: str, images=(), video=None, video_fps: float | None = None, system=SYSTEM_PROMPT):
        """`prepare_inputs` on the CPU."""
        return process_context(self.processor, text, images, video, video_fps, system)

    def prepared_texts(self, texts: list[str]) -> list[tuple[dict, torch.Tensor]]:
        """`prepared` of text-only contexts, tokenized in one call (a sixth of the time of one by one): with no
        visual input, the mRoPE positions are 0, 1, 2, ... on all three axes."""
        for text in texts:
            check_text(self.processor, text, 0, False)
        if not texts:
            return []
        rows = self.processor.tokenizer([render_prompt(self.processor, text, 0, False) for text in texts])["input_ids"]
        prepared = []
        for row in rows:
            ids = torch.tensor([row])  # [1, L]
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                      "mm_token_type_ids": torch.zeros_like(ids)}  # 0: a text token
            prepared.append((inputs, torch.arange(len(row))[:, None].expand(-1, 3)))  # positions [L, 3]
        return prepared

    def prepared_batch(self, contexts: list, keys: list) -> list[tuple]:
        """`prepared` of each context; the text-only ones that are not memoised yet are tokenized together."""
        started = time.perf_counter()
        memo = self.memo if self.memo is not None else {}  # off: a throwaway
        missed = [key is None or key not in memo for key in keys]
        fresh = [i for i, context in enumerate(contexts) if not context[1] and context[2] is None and missed[i]]
        done = dict(zip(fresh, self.prepared_texts([contexts[i][0] for i in fresh]) if fresh else []))
        memo.update({keys[i]: done[i] for i in fresh if keys[i] is not None})
        prepared = [done[i] if i in done else self.prepared(context, key)
                    for i, (context, key) in enumerate(zip(contexts, keys))]
        self.prepared_count["misses"] += sum(missed)
        self.prepared_count["seconds"] += time.perf_counter() - started
        return prepared

    def prepared(self, context, key=None):
        """`process` of a (text, images, video, video_fps) context and its prompt's RoPE positions [L, 3], both on
        the CPU; memoised by key while `self.memo` is a dict."""
        memo = self.memo if key is not None else None
        if memo is not None and key in memo:
            return memo[key]
        inputs = self.process(*context)
        positions = rope_positions(self.vlm.model, inputs)
        if memo is not None:
            memo[key] = inputs, positions
        return inputs, positions

    def hidden_states(self, inputs) -> torch.Tensor:
        """hidden_states[-2] of the VLM over the prompt followed by the metaquery: [L_prompt + Q, vlm_hidden].

        The prompt runs once without grad (the VLM is frozen) and leaves its key/value cache; the
        queries then attend to it causally, with grad for the metaquery. Queries take the positions
        last_prompt_position + arange(Q) on all three mRoPE axes, and get no DeepStack features.
        """
        model = self.vlm.model
        position_ids, _ = model.get_rope_index(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
        )  # [3, 1, L_prompt]
        with torch.no_grad():
            prompt = model(
                input_ids=inputs["input_ids"],
                pixel_values=inputs.get("pixel_values"),
                pixel_values_videos=inputs.get("pixel_values_videos"),
                image_grid_thw=inputs.get("image_grid_thw"),
                video_grid_thw=inputs.get("video_grid_thw"),
                mm_token_type_ids=inputs["mm_token_type_ids"],
                position_ids=position_ids,
                use_cache=True,
                output_hidden_states=True,
            )

        metaquery = self.mm_encoder.metaquery
        query_positions = position_ids[:, :, -1:] + torch.arange(metaquery.shape[0], device=position_ids.device)
        queries = model.language_model(
            inputs_embeds=metaquery.to(self.vlm.device, self.vlm.dtype)[None],
            position_ids=query_positions,  # [3, 1, Q]
            **{cache_argument(type(model.language_model)): kv_cache(prompt)},
            use_cache=True,
            output_hidden_states=True,
        )
        return torch.cat([prompt.hidden_states[-2][0], queries.hidden_states[-2][0]])

    def encode(self, text: str, images=(), video=None, video_fps: float | None = None) -> EncodedContext:
        """Read the interleaved context; images are letterboxed PIL images, video a list of PIL frames."""
        images = list(images)
        num_images, has_video = len(images), video is not None
        inputs = self.prepare_inputs(text, images, video, video_fps)
        return self._encoded(self.hidden_states(inputs), inputs["input_ids"][0], num_images, has_video)

    def _encoded(self, hidden: torch.Tensor, input_ids: torch.Tensor, num_images: int,
                 has_video: bool) -> EncodedContext:
        """The connectors over one context's VLM hidden states (prompt, then queries): text and boundary tokens."""
        hidden = hidden.to(self.mm_encoder.metaquery.dtype)
        config = self.vlm.config
        positions = boundary_positions(
            input_ids, config.vision_start_token_id, config.vision_end_token_id, num_images, has_video
        )
        return EncodedContext(
            text_states=self.mm_encoder.connector(hidden),
            boundary_tokens=self.mm_encoder.connector_vae_branch(hidden[positions.to(hidden.device)]),
            num_images=num_images,
            has_video=has_video,
            input_ids=input_ids,
        )

    def encode_many(self, contexts, keys=None) -> list[EncodedContext]:
        """`encode` for several (text, images, video, video_fps) contexts in one padded pass of the VLM; each
        result matches `encode` alone. keys: as for `encode_batch`."""
        contexts = list(contexts)
        if len(contexts) == 1 and keys is None:
            return [self.encode(*contexts[0])]
        batch = self.encode_batch(contexts, keys)
        return [
            EncodedContext(text_states=row[valid], boundary_tokens=bounds, num_images=len(context[1]),
                           has_video=context[2] is not None, input_ids=ids)
            for row, valid, bounds, ids, context in zip(batch.text_states, batch.mask, batch.boundary_tokens,
                                                        batch.input_ids, contexts)
        ]

    def encode_batch(self, contexts, keys=None) -> "EncodedBatch":
        """Several (text, images, video, video_fps) contexts in one padded pass of the VLM (padding after each
        prompt, masked), for training batches: the MMDiT's text tokens stay padded (each prompt, its padding,
        then the queries).

        keys: optional hashable names of the contexts; while `self.memo` is a dict, the processor's output
        for a named context is kept there (on the CPU) and reused, so training pays for it once."""
        contexts = list(contexts)
        prepared = self.prepared_batch(contexts, keys or [None] * len(contexts))
        inputs = [x for x, _ in prepared]
        model, device = self.vlm.model, self.vlm.device
        lengths = [x["input_ids"].shape[1] for x in inputs]
        count = len(inputs)
        ids, mask = right_pad([x["input_ids"][0] for x in inputs], self.processor.tokenizer.pad_token_id)
        positions, _ = right_pad([p for _, p in prepared], 0)  # [B, L, 3]
        positions = positions.permute(2, 0, 1)
        last = copy_ahead(positions[:, torch.arange(count), torch.tensor(lengths) - 1], device)  # [3, B]
        mask, positions = copy_ahead(mask, device), copy_ahead(positions.contiguous(), device)
        with torch.no_grad():  # memoised media: the vision tower has read each once
            read = self.read_prompts if self.memo is not None else self.read_prompts_with_pixels
            prompt = read(ids, mask, positions, inputs)
        metaquery = self.mm_encoder.metaquery.to(device, self.vlm.dtype)
        mask = torch.cat([mask, mask.new_ones(count, metaquery.shape[0])], dim=1)  # prompts, then the queries
        queries = model.language_model(
            inputs_embeds=metaquery[None].expand(count, -1, -1),
            position_ids=last[:, :, None] + torch.arange(metaquery.shape[0], device=device),
            attention_mask=mask, **{cache_argument(type(model.language_model)): kv_cache(prompt)}, use_cache=True,
            output_hidden_states=True)
        # The connectors read each token alone: they run once over the padded batch.
        hidden = torch.cat([prompt.hidden_states[-2], queries.hidden_states[-2]], dim=1)
        hidden = hidden.to(self.mm_encoder.metaquery.dtype)  # [B, L_max + queries, vlm_hidden]
        config = self.vlm.config
        markers = [boundary_positions(ids[b, :length], config.vision_start_token_id, config.vision_end_token_id,
                                      len(context[1]), context[2] is not None)
                   for b, (context, length) in enumerate(zip(contexts, lengths))]  # [n_visual, 2] each, CPU
        sample = torch.cat([torch.full((m.numel(),), b) for b, m in enumerate(markers)])
        position = torch.cat([m.flatten() for m in markers])
        bounds = self.mm_encoder.connector_vae_branch(
            hidden[copy_ahead(sample, device), copy_ahead(position, device)])
        return EncodedBatch(
            text_states=self.mm_encoder.connector(hidden),
            mask=mask.bool(),
            boundary_tokens=[b.unflatten(0, (-1, 2)) for b in bounds.split([m.numel() for m in markers])],
            input_ids=[ids[b, :length] for b, length in enumerate(lengths)],
        )

    def media_features(self, pixels: list[torch.Tensor], grids: list[torch.Tensor]) -> list[tuple]:
        """The vision tower's reading of memoised pixel tensors (each a context's images, or its video, with their
        grids [n, 3]): per tensor (merged [tokens, hidden], [DeepStack features [tokens, hidden], ...]) on the VLM's
        device. The tower reads the ones it has not read yet in one pass; it is frozen, so a reading keeps, and the
        pixels it has read are let go: each tensor is emptied in place (a video's 6.3 MB against 262 KB of
        features), so the memo and `MemoisedMedia` hold no copy of them either."""
        fresh = list({id(p): i for i, p in enumerate(pixels) if id(p) not in self.read_media}.values())
        if any(pixels[i].numel() == 0 for i in fresh):
            raise RuntimeError("memoised pixels that the vision tower read under an earlier memo were let go; "
                               "set `memo` to a new dict (a memo's contexts are read under it alone)")
        if fresh:
            readings = tower_readings(self.vlm.model.visual, [pixels[i] for i in fresh], [grids[i] for i in fresh],
                                      self.vlm.device)
            for i, reading in zip(fresh, readings):
                self.keep_reading(pixels[i], reading)
        for p in pixels:  # a reading kept before the VLM moved (a run's prefill) moves once, on its first use
            kept, (merged, deep) = self.read_media[id(p)]
            if merged.device != self.vlm.device:
                self.read_media[id(p)] = kept, (merged.to(self.vlm.device), [d.to(self.vlm.device) for d in deep])
        return [self.read_media[id(p)][1] for p in pixels]

    def keep_reading(self, pixels: torch.Tensor, reading: tuple) -> None:
        """Keep the tower's reading of memoised `pixels` (made here or by another process) and let the pixels go."""
        self.read_media[id(pixels)] = pixels, reading  # holds the id
        pixels.set_()

    def read_prompts_with_pixels(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, inputs: list):
        """The VLM's own forward over padded prompts [B, L] (mask and positions on the VLM's device) and the pixels
        of their media (`inputs`: each prompt's processor output)."""
        device = self.vlm.device

        def cat(key):
            parts = [x[key] for x in inputs if x.get(key) is not None]
            return torch.cat(parts).to(device) if parts else None

        types, _ = right_pad([x["mm_token_type_ids"][0] for x in inputs], 0)
        return self.vlm.model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
                              mm_token_type_ids=types.to(device), pixel_values=cat("pixel_values"),
                              image_grid_thw=cat("image_grid_thw"), pixel_values_videos=cat("pixel_values_videos"),
                              video_grid_thw=cat("video_grid_thw"), use_cache=True, output_hidden_states=True)

    def read_prompts(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, inputs: list):
        """The VLM's language model over padded prompts [B, L] (positions on the VLM's device) whose media
        are memoised: their placeholder tokens take the vision tower's reading (`media_features`), each visual
        token its own row in prompt order, as the VLM's own forward places them; the DeepStack features go in at
        the same tokens.

        It reads without the padding mask: the padding comes after each prompt, which a causal model's prompt
        tokens never see, and the queries' pass and the MMDiT mask it. The library's test of a padding mask for
        its causal shortcut reads the mask's values, which waits for the GPU; the states at the padding differ
        from a masked reading's, and nothing reads them."""
        model, device, config = self.vlm.model, self.vlm.device, self.vlm.config
        embeds = model.get_input_embeddings()(copy_ahead(ids, device))
        placed = {}  # token id -> the features of every placeholder of that kind, in reading order
        for token, pixels, grid in ((config.image_token_id, "pixel_values", "image_grid_thw"),
                                    (config.video_token_id, "pixel_values_videos", "video_grid_thw")):
            held = [x for x in inputs if x.get(pixels) is not None]
            if held:
                placed[token] = self.media_features([x[pixels] for x in held], [x[grid] for x in held])
        deepstack = {}  # the visual tokens and their DeepStack features, when there are any
        if placed:
            visual = torch.isin(ids, torch.tensor(list(placed)))  # [B, L], CPU
            kinds = ids[visual]  # each visual token's kind, in reading order
            layers = len(next(iter(placed.values()))[0][1])
            # indices, not a boolean mask: indexing by a mask on the GPU waits for it to count the mask
            where = {token: copy_ahead((kinds == token).nonzero().flatten(), device) for token in placed}

            def joint(layer: int | None) -> torch.Tensor:  # None: the merged features
                rows = embeds.new_empty(len(kinds), embeds.shape[-1])
                for token, features in placed.items():
                    rows[where[token]] = torch.cat(
                        [merged if layer is None else deep[layer] for merged, deep in features]).to(rows.dtype)
                return rows

            visual = copy_ahead(visual, device)
            embeds = embeds.masked_scatter(visual[..., None], joint(None))
            deepstack = {"visual_pos_masks": visual, "deepstack_visual_embeds": [joint(k) for k in range(layers)]}
        return model.language_model(inputs_embeds=embeds, position_ids=positions, **deepstack, use_cache=True,
                                    output_hidden_states=True)

    @torch.no_grad()
    def rewrite(
        self, text: str, images=(), video=None, video_fps: float | None = None, max_new_tokens: int = 256
    ) -> str:
        """Understand, then generate: the VLM turns a short request (with its inputs) into a detailed caption."""
        inputs = self.prepare_inputs(text, images, video, video_fps, system=REWRITE_SYSTEM_PROMPT)
        generation = self.vlm.generation_config
        greedy = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=generation.eos_token_id,
            pad_token_id=generation.pad_token_id,
        )
        prompt_length = inputs["input_ids"].shape[1]
        output = self.vlm.generate(**inputs, generation_config=greedy)
        return self.processor.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True).strip()

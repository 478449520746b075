"""Qwen3-VL Interleaved Encode and the release's "understand, then generate" prompt rewrite."""

import logging
from dataclasses import dataclass

from ..vino_model.pipeline import Contexts, Media
from ..vino_model.sampler import Branch
from ..vino_model.tasks import EDIT_FRAMES, TASKS, Task, get_task

from .loader import VinoModel
from .media import gather_images, gather_video, reference_inputs

log = logging.getLogger("vino")

GUIDED = 2.0  # a CFG above 1 makes encode_context read every guidance branch; the sampler's CFG picks among them
TASK_HELP = "; ".join(f"{task.name}: {task.description}" for task in TASKS.values())


@dataclass
class VinoContext:
    """What VINO_CONTEXT carries: the VLM context of each guidance branch and the media it read.

    `branches` (the MMDiT inputs of each branch: text tokens, and each reference latent between its boundary
    tokens) is set at once when there are no references, else by Reference Latent Wrap.
    """

    model: VinoModel
    task: Task
    media: Media
    contexts: Contexts
    branches: dict[str, Branch] | None = None
    have_base: bool = False  # ti2i's last image is the edited one: the sampler's "ti2i_ref" image CFG


class InterleavedEncode:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Qwen3-VL reads the interleaved context: the labelled inputs (Image 1, Image 2, ..., then Video 1) and "
        "your prompt, followed by VINO's learnable queries; the connectors turn it into the MMDiT's text tokens "
        "and the boundary tokens of every input. Refer to inputs by their labels (\"the hat in Image 2\"). The "
        "negative prompt is read too, for classifier-free guidance. Reference images are letterboxed as the "
        "release does; pass the context through Reference Latent Wrap when there are references."
    )
    RETURN_TYPES = ("VINO_CONTEXT",)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = ("The encoded context, for Reference Latent Wrap (with references) or VINO Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vino": ("VINO_MODEL", {"tooltip": "From Load VINO."}),
                "task": (list(TASKS), {"default": "t2v", "tooltip": f"The release's task kinds. {TASK_HELP}."}),
                "prompt": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "What to generate or how to edit; name inputs by their labels: Image 1, Video 1.",
                }),
                "use_default_negative": ("BOOLEAN", {
                    "default": True, "label_on": "model default", "label_off": "negative_prompt below",
                    "tooltip": "Use the model's negative prompt for the task's output: the release's (the video "
                               "one adds flicker terms), or the embedded default's own (its defaults.json: none, "
                               "as it was trained and scored); or the text below (an empty text is allowed).",
                }),
                "negative_prompt": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "The negative prompt when use_default_negative is off.",
                }),
                "have_base": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "ti2i with several images: the last image is the one edited (the base), the "
                               "others guide the edit (the release's ref_image_have_base).",
                }),
                "max_video_frames": ("INT", {
                    "default": EDIT_FRAMES, "min": 1, "max": 1025, "step": 4,
                    "tooltip": "Frames taken from the start of the video, rounded down to 4k+1. Video edits "
                               "output as many frames as the video gives.",
                }),
            },
            "optional": reference_inputs(),
        }

    def encode(self, vino, task, prompt, use_default_negative, negative_prompt, have_base, max_video_frames,
               **references):
        task = get_task(task)
        images = gather_images(references)
        video, fps = gather_video(references)
        pipeline = vino.load_part(vino.encoder)
        media = pipeline.prepare_media(images, video, fps, max_video_frames)
        negative = None if use_default_negative else negative_prompt
        contexts = pipeline.encode_context(task, prompt, media, negative, have_base, image_cfg=GUIDED, text_cfg=GUIDED)
        context = VinoContext(vino, task, media, contexts, have_base=have_base)
        if not media.images and media.video is None:
            context.branches = pipeline.branches(contexts, [], 0)
        return (context,)


class RewritePrompt:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Understand, then generate: the same Qwen3-VL reads a short request with its images and video and "
        "writes a detailed caption of the output (subjects, look, motion, setting, camera), keeping the input "
        "labels. Feed the caption to Qwen3-VL Interleaved Encode's prompt, with the same inputs."
    )
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("caption",)
    OUTPUT_TOOLTIPS = ("The detailed caption.",)
    FUNCTION = "rewrite"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vino": ("VINO_MODEL", {"tooltip": "From Load VINO."}),
                "request": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "A short request, e.g. \"the cat in Image 1 jumps over the fence\".",
                }),
                "max_new_tokens": ("INT", {
                    "default": 256, "min": 16, "max": 2048, "tooltip": "Longest caption, in tokens.",
                }),
            },
            "optional": reference_inputs(),
        }

    def rewrite(self, vino, request, max_new_tokens, **references):
        images = gather_images(references)
        video, fps = gather_video(references)
        pipeline = vino.load_part(vino.encoder)
        media = pipeline.prepare_media(images, video, fps)
        caption = pipeline.encoder.rewrite(request, media.images, media.video, media.video_fps, max_new_tokens)
        log.info("VINO caption: %s", caption)
        return (caption,)

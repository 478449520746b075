"""VINO Sampler: flow-matching Euler with VINO's text + image guidance; a LATENT that core VAE Decode takes."""

import comfy.model_management as model_management
import comfy.utils
import latent_preview

from ..vino_model.errors import VinoInputError
from ..vino_model.tasks import DEFAULTS, MAX_FRAMES
from ..vino_model.tiny import image_cfg_for

from .vae import LATENT_FORMAT

PREVIEW_FORMAT = "JPEG"


def zero_means(name: str) -> str:
    image, video = DEFAULTS["image"][name], DEFAULTS["video"][name]
    return (f"0 = the model's default for the task: the release's ({image} for images, {video} for videos), or "
            "the embedded default's own (its defaults.json)")


class VinoSampler:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Denoises the output latent with the MMDiT, attending to the wrapped references, with the release's "
        "sampler (flow matching, Euler, shifted schedule) and guidance: text CFG against the negative prompt, "
        "image CFG against the negative prompt without the reference images. Zero in width, height, frames, "
        "steps, text_cfg, image_cfg or shift takes the model's default for the task (the release's; the embedded "
        "default's are its bundle's, the size it was trained at). Decode the LATENT with core VAE Decode."
    )
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("HunyuanVideo latent [1, 16, T, H, W] (ComfyUI's unscaled convention) for VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        size = "Ignored by tasks that take the size of their base image (i2v, ti2i) or video (tv2v, tiv2v, clone)"
        return {"required": {
            "vino": ("VINO_MODEL", {"tooltip": "From Load VINO; the same one the context was encoded with."}),
            "context": ("VINO_CONTEXT", {
                "tooltip": "From Qwen3-VL Interleaved Encode, through Reference Latent Wrap when it has references.",
            }),
            "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                              "tooltip": f"Multiple of 16; {zero_means('width')}. {size}."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                               "tooltip": f"Multiple of 16; {zero_means('height')}. {size}."}),
            "frames": ("INT", {"default": 0, "min": 0, "max": 1025, "step": 4,
                               "tooltip": f"4k+1 frames (the release goes up to {MAX_FRAMES}); 0 = the model's "
                                          f"default (the release's {DEFAULTS['video']['frames']}, or the embedded "
                                          "default's own). Images are 1 frame; video edits take the video's frame "
                                          "count."}),
            "steps": ("INT", {"default": 0, "min": 0, "max": 1000,
                              "tooltip": f"Euler steps; {zero_means('steps')}."}),
            "text_cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                   "tooltip": f"Text guidance; 1 = off; {zero_means('text_cfg')}."}),
            "image_cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                    "tooltip": "Image guidance; 1 = off; 1 to 3 for reference-driven tasks; 0 = the "
                                               "model's default for the task: the release's 1 (off), or the "
                                               "embedded default's own (its defaults.json: 3 for i2v and "
                                               "reference-guided edits)."}),
            "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                "tooltip": f"Schedule shift; {zero_means('shift')}."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the initial noise."}),
        }}

    def sample(self, vino, context, width, height, frames, steps, text_cfg, image_cfg, shift, seed):
        if context.model is not vino:
            raise VinoInputError("the context was encoded with another VINO model; connect the same Load VINO "
                                 "to the encoder and to the sampler")
        if context.branches is None:
            raise VinoInputError("the context has references without latents; pass it through Reference Latent Wrap")
        pipeline = vino.load_part(vino.mmdit)
        defaults = pipeline.output_defaults[context.task.output]
        steps = steps or defaults["steps"]
        image_cfg = image_cfg or image_cfg_for(pipeline.bundle_defaults, context.task.name, context.have_base)
        width, height, frames = pipeline.output_shape(context.task, context.media, width or None, height or None,
                                                      frames or None)
        previewer = latent_preview.get_previewer(pipeline.device, LATENT_FORMAT)
        bar = comfy.utils.ProgressBar(steps)

        def progress(step, total, x0):  # x0: the current estimate of the clean latent, scaled
            preview = previewer.decode_latent_to_preview_image(PREVIEW_FORMAT, x0) if previewer else None
            bar.update_absolute(step, total, preview)

        latents = pipeline.sample(
            context.branches, pipeline.latent_shape(width, height, frames), seed, steps,
            shift or defaults["shift"], text_cfg or defaults["text_cfg"], image_cfg, progress,
            cancel=model_management.throw_exception_if_processing_interrupted,
        )  # [1, 16, T', H', W'], scaled
        return ({"samples": LATENT_FORMAT.process_out(latents.float()).to(model_management.intermediate_device())},)

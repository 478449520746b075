"""Load VINO and Load VINO (embedded default): a VinoPipeline whose parts ComfyUI's model management moves."""

from dataclasses import dataclass

import comfy.model_management as model_management
import comfy.model_patcher
import torch

from ..vino_model.mmdit import ATTENTION_BACKENDS, check_attention
from ..vino_model.pipeline import DTYPES, VinoPipeline
from ..vino_model.tiny import BUNDLE_FILES, bundle_defaults, output_defaults
from ..vino_model.vae import VinoVAE

from . import register
from .vae import EmbeddedVAE

AUTO = "auto"


@dataclass
class VinoModel:
    """What the VINO_MODEL type carries: the pipeline and one ModelPatcher per part.

    The parts are built on the CPU; `load_part` asks ComfyUI to make room and move one of them to the GPU,
    so the Qwen3-VL side and the MMDiT offload like any other model when other nodes need the memory.
    """

    pipeline: VinoPipeline
    encoder: comfy.model_patcher.ModelPatcher  # Qwen3-VL + learnable queries + connectors
    mmdit: comfy.model_patcher.ModelPatcher

    @classmethod
    def load(cls, checkpoint, qwen_folder, dtype: str, attention: str) -> "VinoModel":
        if dtype == AUTO:
            dtype = model_management.unet_dtype(supported_dtypes=[torch.bfloat16, torch.float32])
        device = model_management.get_torch_device()
        check_attention(attention, device)  # the parts are built on the CPU but run on `device`
        # No VAE in the pipeline: references and outputs go through a ComfyUI VAE.
        pipeline = VinoPipeline.load(checkpoint, qwen_folder, None, device="cpu", dtype=dtype)
        pipeline.mmdit.attention_backend = attention
        pipeline.device = device  # where its tensors go; the modules follow in load_part
        patcher = comfy.model_patcher.ModelPatcher
        encoder = patcher(pipeline.encoder, device, offload_device=model_management.text_encoder_offload_device())
        mmdit = patcher(pipeline.mmdit, device, offload_device=model_management.unet_offload_device())
        return cls(pipeline, encoder, mmdit)

    def load_part(self, part: comfy.model_patcher.ModelPatcher) -> VinoPipeline:
        """Move one part to the GPU, whole (VINO's layers cannot run partly offloaded); returns the pipeline."""
        model_management.load_models_gpu([part], force_full_load=True)
        return self.pipeline


def loader_inputs() -> dict:
    return {
        "dtype": ([AUTO, *DTYPES], {
            "default": AUTO,
            "tooltip": "Weight and compute dtype of both the Qwen3-VL and the MMDiT. auto: bfloat16 where the "
                       "device supports it, else float32.",
        }),
        "attention": (list(ATTENTION_BACKENDS), {
            "default": "auto",
            "tooltip": "Attention kernel of the MMDiT. auto lets PyTorch choose; flash4 (FlashAttention-4, "
                       "needs the flash-attn-4 package and a Hopper or Blackwell GPU) is the fastest exact kernel "
                       "on H100/H200, then cudnn.",
        }),
    }


class LoadVino:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Loads VINO: the MMDiT and VINO's learnable queries and connectors from a checkpoint in models/vino "
        "(the official vino.ckpt, read weights-only, or a converted .safetensors), and the frozen Qwen3-VL from "
        "its folder in models/text_encoders. Load the HunyuanVideo VAE with core Load VAE "
        "(hunyuan_video_vae_bf16.safetensors)."
    )
    RETURN_TYPES = ("VINO_MODEL",)
    RETURN_NAMES = ("vino",)
    OUTPUT_TOOLTIPS = ("The VINO model, for Qwen3-VL Interleaved Encode and VINO Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (register.checkpoint_names(), {
                "tooltip": "A VINO checkpoint in models/vino: vino.ckpt from SOTAMak1r/VINO-weight, or the "
                           "safetensors file (or sharded folder) written by python -m vino_model.convert.",
            }),
            "qwen3vl": (register.qwen_folder_names(), {
                "tooltip": "The Qwen3-VL folder VINO was trained with (Qwen3-VL-4B-Instruct, the whole folder) "
                           "in models/text_encoders or models/vino.",
            }),
            **loader_inputs(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint, qwen3vl):  # instead of ComfyUI's bare "value not in list"
        if checkpoint not in register.checkpoint_names():
            return (f"checkpoint {checkpoint} is not in models/vino: put vino.ckpt (SOTAMak1r/VINO-weight) or a "
                    "converted vino.safetensors there, then refresh (R)")
        if qwen3vl not in register.qwen_folder_names():
            return (f"Qwen3-VL folder {qwen3vl} is not in models/text_encoders: put the whole Qwen3-VL-4B-Instruct "
                    "folder there, then refresh (R)")
        return True

    def load(self, checkpoint, qwen3vl, dtype, attention):
        path = register.resolve(register.VINO_FOLDER, checkpoint)
        return (VinoModel.load(path, register.qwen_folder(qwen3vl), dtype, attention),)


class LoadVinoEmbedded:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Loads the embedded default VINO from models/vino/embedded: checkpoint, Qwen3-VL and its own VAE, "
        "nothing else to download. Until the trained default ships this is a tiny RANDOM model whose outputs "
        "are noise: it shows that a workflow runs, not what VINO draws."
    )
    RETURN_TYPES = ("VINO_MODEL", "VAE")
    RETURN_NAMES = ("vino", "vae")
    OUTPUT_TOOLTIPS = (
        "The VINO model, for Qwen3-VL Interleaved Encode and VINO Sampler.",
        "The embedded default's VAE, for Reference Latent Wrap and core VAE Decode / VAE Encode.",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": loader_inputs()}

    def load(self, dtype, attention):
        bundle = register.embedded_bundle()
        checkpoint, qwen_folder, vae = (bundle / part for part in BUNDLE_FILES)
        model = VinoModel.load(checkpoint, qwen_folder, dtype, attention)
        model.pipeline.bundle_defaults = bundle_defaults(bundle)
        model.pipeline.output_defaults = output_defaults(model.pipeline.bundle_defaults)  # the sampler's zeros
        return (model, EmbeddedVAE(VinoVAE.load(vae)))

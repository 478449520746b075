"""VINO: a unified image/video generator with an interleaved omni-modal context.

Pure torch + transformers (+ diffusers for the VAE); never imports ComfyUI.
"""

from .errors import VinoInputError

__all__ = ["VinoInputError"]

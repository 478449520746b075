"""The VINO node pack: thin adapters from ComfyUI's types to `vino_model`'s pipeline stages.

Load VINO -> Qwen3-VL Interleaved Encode -> Reference Latent Wrap -> VINO Sampler -> (core) VAE Decode -> Video Combine
"""

from . import register
from .encode import InterleavedEncode, RewritePrompt
from .loader import LoadVino, LoadVinoEmbedded
from .sampler import VinoSampler
from .video import LoadVideo, VideoCombine
from .wrap import ReferenceLatentWrap

register.register_folders()
try:
    register.install_examples()
except OSError as err:  # a read-only input folder costs the examples, never the pack
    register.log.warning("VINO: could not copy the example inputs into ComfyUI's input folder: %s", err)

NODES = {  # node id (prefixed, never a core id) -> (class, display name)
    "VINO_Load": (LoadVino, "Load VINO"),
    "VINO_LoadEmbedded": (LoadVinoEmbedded, "Load VINO (embedded default)"),
    "VINO_InterleavedEncode": (InterleavedEncode, "Qwen3-VL Interleaved Encode"),
    "VINO_RewritePrompt": (RewritePrompt, "Qwen3-VL Rewrite Prompt (understand, then generate)"),
    "VINO_ReferenceLatentWrap": (ReferenceLatentWrap, "Reference Latent Wrap"),
    "VINO_Sampler": (VinoSampler, "VINO Sampler"),
    "VINO_VideoCombine": (VideoCombine, "Video Combine"),
    "VINO_LoadVideo": (LoadVideo, "Load Video (VINO)"),
}
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODES.items()}

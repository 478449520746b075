"""VinoPipeline: prompt + media -> VLM context -> interleaved sequence -> MMDiT -> sampler -> VAE -> frames.

Each arrow is one method, so the ComfyUI nodes and Python users call the same steps:
`prepare_media`, `encode_context`, `encode_references`, `branches`, `sample`, `decode`; `generate` runs them all.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import preprocess
from .checkpoint import assign_state, load_vino_weights
from .config import VinoConfig
from .encoder import EncodedContext, InterleavedEncoder, MMEncoder, check_labels
from .errors import VinoInputError
from .mmdit import VinoMMDiT, check_attention
from .sampler import Branch, needed_branches
from .sampler import sample as run_sampler
from .tasks import DEFAULTS, EDIT_FRAMES, MAX_FRAMES, Task, check_inputs, get_task, kept_without_references
from .vae import VinoVAE

log = logging.getLogger("vino")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise VinoInputError(f"dtype {name!r} is unknown; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_mmdit(config: VinoConfig, state: dict, dtype, device, what: str) -> VinoMMDiT:
    with torch.device("meta"):
        model = VinoMMDiT(config.mmdit)
    return assign_state(model, state, what, dtype, device).eval().requires_grad_(False)


def build_mm_encoder(config: VinoConfig, state: dict, dtype, device, what: str) -> MMEncoder:
    with torch.device("meta"):
        module = MMEncoder(config.encoder.vlm_hidden, config.encoder.num_queries, config.mmdit.text_dim,
                           config.mmdit.hidden)
    ours = set(module.state_dict())
    extra = sorted(k for k in state if k not in ours and not k.startswith(("metaquery", "connector.", "connector_vae_branch.")))
    if extra:  # the release may bundle the frozen VLM here; it is read from the Qwen3-VL folder instead
        log.info("ignoring %d mm_encoder tensors that are not VINO extras (e.g. %s)", len(extra), extra[0])
        state = {k: v for k, v in state.items() if k not in extra}
    return assign_state(module, state, what, dtype, device).eval()


@dataclass
class Media:
    """References after the release's preprocessing, in prompt order."""

    images: list = field(default_factory=list)  # letterboxed PIL images
    video: list | None = None  # PIL frames, 4k+1 of them, sides multiples of 16
    video_fps: float | None = None


@dataclass
class Contexts:
    """VLM contexts of the guidance branches and which reference images each one shows."""

    contexts: dict[str, EncodedContext]
    images_kept: dict[str, list[int]]


@dataclass
class Generation:
    latents: torch.Tensor  # [1, C, T, H, W]
    frames: object  # uint8 [T, H, W, 3]
    fps: float
    task: str


def check_negative(branch: str, negative: str, n_images: int, has_video: bool) -> None:
    """The negative prompt may only name the inputs its guidance branch shows."""
    try:
        check_labels(negative, n_images, has_video)
    except VinoInputError as err:
        hint = (" The image-free guidance branch (image_cfg > 1) leaves the reference images out: take the"
                " Image labels out of the negative prompt, or set image_cfg to 1.") if branch == "uncond_img" else ""
        raise VinoInputError(f"negative prompt: {err}.{hint}") from err


class VinoPipeline:
    def __init__(self, mmdit: VinoMMDiT, encoder: InterleavedEncoder, vae: VinoVAE, config: VinoConfig,
                 device="cpu", dtype=torch.float32):
        self.mmdit, self.encoder, self.vae, self.config = mmdit, encoder, vae, config
        self.device, self.dtype = torch.device(device), dtype
        self.offload = False
        self.output_defaults = DEFAULTS  # per output kind, what unset sizes, frames, steps, guidance, shift and the
                                         # negative prompt take: the release's, or a bundle's own (tiny.output_defaults)
        self.bundle_defaults = {}  # a bundle's defaults.json (tiny.bundle_defaults), whose image CFG by task kind
                                   # (tiny.image_cfg_for) the sampler node's image_cfg 0 takes; {}: the release's

    @classmethod
    def load(cls, checkpoint, qwen_folder, vae_path, device="cpu", dtype="float32", attention="auto",
             compile: bool = False, fp8: bool = False, max_gpu_memory_gb: float | None = None) -> "VinoPipeline":
        """vae_path None: no VAE; the caller encodes references and decodes latents itself (ComfyUI's VAE nodes)."""
        dtype = parse_dtype(dtype)
        check_attention(attention, device)
        config, transformer, mm_state = load_vino_weights(checkpoint)
        name = Path(checkpoint).name
        if mm_state is None:
            raise VinoInputError(
                f"checkpoint {name} is a plain HunyuanVideo transformer without VINO's mm_encoder "
                "(metaquery, connectors); load vino.ckpt or a VINO safetensors file"
            )
        # Under a memory cap everything starts on the CPU: blocks stream to the GPU, the VLM and the
        # VAE visit it only for their own stage.
        home = "cpu" if max_gpu_memory_gb else device
        mmdit = build_mmdit(config, transformer, dtype, home, f"transformer of {name}")
        mmdit.attention_backend = attention
        mm_encoder = build_mm_encoder(config, mm_state, dtype, home, f"mm_encoder of {name}")
        encoder = InterleavedEncoder.from_folder(qwen_folder, mm_encoder, device=home, dtype=dtype)
        vae = VinoVAE.load(vae_path, device=home, dtype=dtype) if vae_path is not None else None
        pipe = cls(mmdit, encoder, vae, config, device, dtype)
        pipe.speed_up(compile=compile, fp8=fp8, max_gpu_memory_gb=max_gpu_memory_gb)
        return pipe

    def speed_up(self, compile: bool = False, fp8: bool = False, max_gpu_memory_gb: float | None = None) -> None:
        """Opt-in speed and memory options (benchmarks/results say what each costs)."""
        on_gpu = self.device.type == "cuda"
        if (fp8 or max_gpu_memory_gb) and not on_gpu:
            raise VinoInputError("fp8 and max_gpu_memory_gb need a CUDA device")
        if fp8:
            from .speedups import fp8_linears

            fp8_linears(self.mmdit)
        if max_gpu_memory_gb:
            from .offload import BlockSwap

            self.offload = True
            self.block_swap = BlockSwap(self.mmdit, self.device, int(max_gpu_memory_gb * 2**30))
        if compile:
            from .speedups import compile_blocks

            compile_blocks(self.mmdit)

    @contextmanager
    def visiting(self, module):
        """With offload on, `module` (the VLM or the VAE model) sits on the GPU only inside this block."""
        if not self.offload or module is None:
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            torch.cuda.empty_cache()

    # ------------------------------------------------------------ 1. media

    def prepare_media(self, images=(), video=None, video_fps=None, max_video_frames=EDIT_FRAMES) -> Media:
        area = self.config.reference_area
        prepared, frames = [], None
        for i, image in enumerate(images):
            try:
                prepared.append(preprocess.letterbox(image, area))
            except VinoInputError as err:
                raise VinoInputError(f"Image {i + 1}: {err}") from err
        if video is not None:
            try:
                frames = preprocess.prepare_reference_video(list(video), max_video_frames, area)
            except VinoInputError as err:
                raise VinoInputError(f"Video 1: {err}") from err
        return Media(prepared, frames, video_fps)

    # ------------------------------------------------------------ 2. VLM context

    def encode_context(self, task: Task, prompt: str, media: Media, negative_prompt: str | None = None,
                       have_base: bool = False, image_cfg: float = 1.0, text_cfg: float | None = None) -> Contexts:
        """The VLM pass of each guidance branch, each run once per generation."""
        n_images, has_video = len(media.images), media.video is not None
        check_inputs(task, n_images, has_video, have_base)
        check_labels(prompt, n_images, has_video)
        text_cfg = self.output_defaults[task.output]["text_cfg"] if text_cfg is None else text_cfg
        negative = self.output_defaults[task.output]["negative"] if negative_prompt is None else negative_prompt
        all_images = list(range(n_images))
        wanted = {
            "cond": (prompt, all_images),
            "uncond": (negative, all_images),
            "uncond_img": (negative, kept_without_references(n_images, have_base)),
        }
        branches = needed_branches(text_cfg, image_cfg)
        for name in branches:  # before any VLM work: a negative prompt must fit each branch it conditions
            if name != "cond":
                check_negative(name, wanted[name][0], len(wanted[name][1]), has_video)
        contexts, kept = {}, {}
        with self.visiting(self.encoder):
            for name in branches:
                text, indices = wanted[name]
                same = next((done for done in contexts if wanted[done] == wanted[name]), None)  # e.g. nothing to drop
                contexts[name] = contexts[same] if same else self.encoder.encode(
                    text, [media.images[i] for i in indices], media.video, video_fps=media.video_fps
                )
                kept[name] = indices
        return Contexts(contexts, kept)

    # ------------------------------------------------------------ 3. reference latents

    @torch.no_grad()
    def encode_references(self, media: Media, sample_posterior: bool = True, seed: int = 0) -> list[torch.Tensor]:
        """Each image alone as a 1-frame latent, then the whole video: [C, T_r, H_r, W_r] each."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        latents = []
        clips = [[image] for image in media.images] + ([media.video] if media.video is not None else [])
        with self.visiting(self.vae.model):
            for clip in clips:
                pixels = preprocess.frames_to_tensor(clip)[None].to(self.device, self.dtype)  # [1, 3, T, H, W]
                latents.append(self.vae.encode(pixels, sample=sample_posterior, generator=generator)[0])
        return latents

    def branches(self, contexts: Contexts, reference_latents: list[torch.Tensor], num_images: int) -> dict[str, Branch]:
        """Wrap each branch's references in its boundary tokens: the MMDiT's image stream inputs."""
        out = {}
        for name, context in contexts.contexts.items():
            indices = contexts.images_kept[name] + ([num_images] if len(reference_latents) > num_images else [])
            refs = [reference_latents[i].to(self.device, self.dtype) for i in indices]
            boundary = context.boundary_tokens.to(self.device, self.dtype) if refs else None
            if refs and boundary.shape[0] != len(refs):
                raise VinoInputError(
                    f"branch {name}: {len(refs)} references but the VLM context marks {boundary.shape[0]} visual inputs"
                )
            out[name] = Branch(context.text_states.to(self.device, self.dtype), refs, boundary)
        return out

    # ------------------------------------------------------------ 4. output size and sampling

    def output_shape(self, task: Task, media: Media, width=None, height=None, frames=None) -> tuple[int, int, int]:
        """(width, height, frames) of the output, following the task's rule."""
        defaults = self.output_defaults[task.output]
        if task.size_from == "video":
            first = media.video[0]
            return first.width, first.height, len(media.video)
        if task.size_from == "base":
            base = media.images[-1]
            width, height = base.width, base.height
        width = width or defaults["width"]
        height = height or defaults["height"]
        frames = 1 if task.output == "image" else (frames or defaults["frames"])
        preprocess.check_output_size(width, height, frames)
        if frames > MAX_FRAMES:
            log.warning("frames=%d is beyond the %d the release was trained for; quality may drop", frames, MAX_FRAMES)
        return width, height, frames

    def latent_shape(self, width: int, height: int, frames: int) -> tuple[int, ...]:
        vae = VinoVAE  # channels and compression are the HunyuanVideo VAE's, whichever instance (if any) is loaded
        return (1, vae.latent_channels, (frames - 1) // vae.temporal_compression + 1,
                height // vae.spatial_compression, width // vae.spatial_compression)

    def sample(self, branches: dict[str, Branch], shape, seed=0, steps=50, shift=7.0, text_cfg=7.0, image_cfg=1.0,
               callback=None, cancel=None, cache_threshold: float = 0.0) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator).to(self.device)
        parallel = self.mmdit.sequence_parallel
        if parallel is not None:  # every rank samples from rank 0's inputs
            parallel.broadcast([noise] + [t for b in branches.values() for t in b.tensors()])
        return run_sampler(self.mmdit, noise, branches, steps, shift, text_cfg, image_cfg, callback, cancel,
                           cache_threshold)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: bool = False):
        with self.visiting(self.vae.model):
            pixels = self.vae.decode(latents.to(self.device, self.dtype), tiled=tiled or self.offload)
        return preprocess.tensor_to_frames(pixels.float())

    # ------------------------------------------------------------ all of it

    def generate(self, task: str, prompt: str, images=(), video=None, video_fps=None, have_base=False, width=None,
                 height=None, frames=None, steps=None, seed=0, text_cfg=None, image_cfg=1.0, shift=None,
                 negative_prompt=None, sample_posterior=True, tiled_decode=False, callback=None,
                 cancel=None, cache_threshold: float = 0.0) -> Generation:
        task = get_task(task)
        defaults = self.output_defaults[task.output]
        text_cfg = defaults["text_cfg"] if text_cfg is None else text_cfg
        shift = defaults["shift"] if shift is None else shift
        steps = steps or defaults["steps"]
        max_video_frames = frames or EDIT_FRAMES
        check_inputs(task, len(images), video is not None, have_base)
        media = self.prepare_media(images, video, video_fps, max_video_frames)
        width, height, frames = self.output_shape(task, media, width, height, frames)
        contexts = self.encode_context(task, prompt, media, negative_prompt, have_base, image_cfg, text_cfg)
        references = self.encode_references(media, sample_posterior, seed)
        branches = self.branches(contexts, references, len(media.images))
        latents = self.sample(branches, self.latent_shape(width, height, frames), seed, steps, shift, text_cfg,
                              image_cfg, callback, cancel, cache_threshold)
        fps = media.video_fps or 24.0
        return Generation(latents, self.decode(latents, tiled_decode), fps, task.name)

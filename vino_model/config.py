"""One config object per model; presets are data, not code paths."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .errors import VinoInputError


@dataclass(frozen=True)
class MMDiTConfig:
    """HunyuanVideo MMDiT ("HYVideo-T/2-cfgdistill") with VINO's interleaved image stream."""

    in_channels: int = 16
    out_channels: int = 16
    num_heads: int = 24
    head_dim: int = 128
    num_double_blocks: int = 20
    num_single_blocks: int = 40
    num_refiner_blocks: int = 2
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    rope_axes: tuple[int, int, int] = (16, 56, 56)  # sums to head_dim
    rope_theta: float = 256.0
    text_dim: int = 4096  # width of the token refiner's input (the VLM connector's output)
    pooled_dim: int = 768  # CLIP pooled embedder: kept in the weights, not fed by VINO
    guidance_embeds: bool = True

    @property
    def hidden(self) -> int:
        return self.num_heads * self.head_dim

    def __post_init__(self):
        if sum(self.rope_axes) != self.head_dim:
            raise VinoInputError(f"rope_axes {self.rope_axes} must sum to head_dim {self.head_dim}")
        if any(d % 2 for d in self.rope_axes):
            raise VinoInputError(f"rope_axes {self.rope_axes} must be even")


@dataclass(frozen=True)
class EncoderConfig:
    """The VINO extras on the VLM side (`mm_encoder.*`): learnable queries and two connectors."""

    vlm_hidden: int = 2560
    num_queries: int = 256


@dataclass(frozen=True)
class VinoConfig:
    mmdit: MMDiTConfig = field(default_factory=MMDiTConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # Pixel area that reference images/videos are letterboxed to: a property of how the model was
    # trained (the release uses 480x848 whatever the output size).
    reference_area: int = 480 * 848

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "VinoConfig":
        try:
            mmdit = dict(data["mmdit"])
            for key in ("patch_size", "rope_axes"):
                if key in mmdit:
                    mmdit[key] = tuple(mmdit[key])
            extra = {"reference_area": data["reference_area"]} if "reference_area" in data else {}
            return cls(MMDiTConfig(**mmdit), EncoderConfig(**data["encoder"]), **extra)
        except (KeyError, TypeError) as err:
            raise VinoInputError(f"VINO config is malformed ({err}); expected keys 'mmdit' and 'encoder'") from err


PRESETS: dict[str, VinoConfig] = {
    "hunyuanvideo-13b": VinoConfig(),
    # Tiny sizes for tests and CPU demos: same architecture, every code path exercised.
    "tiny": VinoConfig(
        MMDiTConfig(
            num_heads=2,
            head_dim=16,
            num_double_blocks=2,
            num_single_blocks=2,
            num_refiner_blocks=1,
            rope_axes=(4, 6, 6),
            text_dim=32,
            pooled_dim=16,
        ),
        EncoderConfig(vlm_hidden=64, num_queries=8),
        reference_area=64 * 64,
    ),
}


def preset(name: str) -> VinoConfig:
    if name not in PRESETS:
        raise VinoInputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]

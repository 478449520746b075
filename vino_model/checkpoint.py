"""Checkpoint formats: the official vino.ckpt, diffusers and Tencent HunyuanVideo transformers, ours.

Our layout is safetensors with the official key names (`transformer.*`, `mm_encoder.*`) and the
VinoConfig as JSON in the header metadata: one file, or shards with `model.safetensors.index.json`.
Models are built on the meta device and the tensors assigned, so nothing is held twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import EncoderConfig, MMDiTConfig, VinoConfig
from .errors import VinoInputError
from .files import atomic_output

log = logging.getLogger("vino")

CONFIG_KEY = "vino_config"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


# ---------------------------------------------------------------- reading raw state dicts


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors of any supported file or folder, and our config if the file carries one."""
    path = Path(path)
    if not path.exists():
        raise VinoInputError(f"checkpoint {path} does not exist")
    if path.is_dir() or path.suffix == ".safetensors":
        return read_safetensors(safetensors_files(path))
    if path.suffix in PICKLE_SUFFIXES:
        return read_pickle(path), None
    raise VinoInputError(f"checkpoint {path.name} has an unknown extension; expected .safetensors, .ckpt, .pt or a folder")


def read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, foreign pickle, objects outside the safe set
        raise VinoInputError(
            f"checkpoint {path.name} could not be read as a weights-only torch file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); it may be truncated or not a state dict"
        ) from err
    for wrapper in ("module", "state_dict", "model"):  # Tencent keeps its weights under "module"
        if isinstance(data, dict) and wrapper in data and isinstance(data[wrapper], dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise VinoInputError(f"checkpoint {path.name} is not a flat dict of tensors")
    return data


def read_safetensors(files: list[Path]) -> tuple[dict[str, torch.Tensor], dict | None]:
    with open_safetensors(files) as (handles, config):
        return dequantize_rows({key: handle.get_tensor(key) for key, handle in handles.items()}), config


# A matrix stored as int8 rows: KEY (int8 [out, in]) and KEY + SCALE_SUFFIX (float16 [out, 1]), the row's largest
# magnitude / 127. Half of float16's bytes; the embedded bundle's MMDiT (training.bundle --int8).
SCALE_SUFFIX = ".int8_scale"


def quantize_rows(state: dict[str, torch.Tensor], min_numel: int = 4096) -> dict[str, torch.Tensor]:
    """Each floating `.weight` matrix of min_numel elements or more as int8 rows and their scales; the rest as it
    is."""
    out = {}
    for key, value in state.items():
        if not (key.endswith(".weight") and value.is_floating_point() and value.dim() == 2
                and value.numel() >= min_numel):
            out[key] = value
            continue
        rows = value.float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        scale = scale.to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny)
        out[key] = torch.round(rows / scale.float()).clamp(-127, 127).to(torch.int8)
        out[key + SCALE_SUFFIX] = scale
    return out


def dequantize_rows(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """quantize_rows undone (float32 matrices); a state without scales comes back as it is."""
    scales = [key for key in state if key.endswith(SCALE_SUFFIX)]
    if not scales:
        return state
    out = dict(state)
    for key in scales:
        base = key[: -len(SCALE_SUFFIX)]
        rows, scale = out.get(base), out.pop(key)
        if rows is None or rows.dtype != torch.int8 or rows.dim() != 2 or tuple(scale.shape) != (rows.shape[0], 1):
            found = "missing" if rows is None else f"{rows.dtype} {tuple(rows.shape)}"
            raise VinoInputError(f"checkpoint tensor {key} {tuple(scale.shape)} scales int8 rows, but {base} is "
                                 f"{found}; expected int8 [rows, columns] with one scale a row")
        out[base] = rows.float() * scale.float()
    return out


@contextmanager
def open_safetensors(files: list[Path]):
    """({key: the open file that holds it}, our config if a file carries one), each tensor read only when asked
    (`handle.get_tensor(key)`, `handle.get_slice(key).get_shape()`), while the context lasts."""
    handles, config = {}, None
    with ExitStack() as stack:
        for file in files:
            try:
                handle = stack.enter_context(safe_open(file, framework="pt"))
                meta = handle.metadata() or {}
            except Exception as err:
                raise VinoInputError(f"checkpoint {file.name} is not a readable safetensors file ({err})") from err
            if CONFIG_KEY in meta:
                config = json.loads(meta[CONFIG_KEY])
            handles.update({key: handle for key in handle.keys()})
        yield handles, config


def safetensors_files(folder: Path) -> list[Path]:
    """A .safetensors file; our sharded layout or a diffusers model folder (`transformer/` of HunyuanVideo): its
    shards."""
    if not folder.is_dir():
        return [folder]
    index = folder / INDEX_NAME
    diffusers_index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.exists() or diffusers_index.exists():
        weight_map = json.loads((index if index.exists() else diffusers_index).read_text())["weight_map"]
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise VinoInputError(f"checkpoint folder {folder} is missing shards {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise VinoInputError(f"checkpoint folder {folder} holds no .safetensors files")
    return files


# ---------------------------------------------------------------- formats -> our key names


def detect_format(keys) -> str:
    keys = list(keys)
    if any(k.startswith("transformer.") for k in keys):
        return "vino"
    if any(k.startswith("double_blocks.") for k in keys):
        return "tencent"
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers"
    return "unknown"


TENCENT_TOP = {
    "img_in.proj": "x_embedder.proj",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
TENCENT_BLOCKS = {  # block prefix -> (diffusers prefix, sub-module renames, fused qkv -> parts)
    "txt_in.individual_token_refiner.blocks": (
        "context_embedder.token_refiner.refiner_blocks",
        {"norm1": "norm1", "norm2": "norm2", "self_attn_proj": "attn.to_out.0", "mlp.fc1": "ff.net.0.proj",
         "mlp.fc2": "ff.net.2", "adaLN_modulation.1": "norm_out.linear"},
        {"self_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"]},
    ),
    "double_blocks": (
        "transformer_blocks",
        {"img_mod.linear": "norm1.linear", "txt_mod.linear": "norm1_context.linear",
         "img_attn_q_norm": "attn.norm_q", "img_attn_k_norm": "attn.norm_k", "img_attn_proj": "attn.to_out.0",
         "txt_attn_q_norm": "attn.norm_added_q", "txt_attn_k_norm": "attn.norm_added_k",
         "txt_attn_proj": "attn.to_add_out", "img_mlp.fc1": "ff.net.0.proj", "img_mlp.fc2": "ff.net.2",
         "txt_mlp.fc1": "ff_context.net.0.proj", "txt_mlp.fc2": "ff_context.net.2"},
        {"img_attn_qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
         "txt_attn_qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]},
    ),
    "single_blocks": (
        "single_transformer_blocks",
        {"linear2": "proj_out", "q_norm": "attn.norm_q", "k_norm": "attn.norm_k", "modulation.linear": "norm.linear"},
        {"linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]},  # q, k, v, then the MLP input
    ),
}


def tencent_to_diffusers(sd: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """Tencent HunyuanVideo names (fused qkv, `single_blocks.N.linear1`) -> diffusers names."""
    out = {}
    for key, value in sd.items():
        module, param = key.rsplit(".", 1)
        if module == "final_layer.adaLN_modulation.1":  # Tencent (shift, scale) -> diffusers (scale, shift)
            shift, scale = value.chunk(2, dim=0)
            out[f"norm_out.linear.{param}"] = torch.cat([scale, shift])
        elif module in TENCENT_TOP:
            out[f"{TENCENT_TOP[module]}.{param}"] = value
        else:
            match = re.fullmatch(r"(.+)\.(\d+)\.(.+)", module)
            if match is None or match.group(1) not in TENCENT_BLOCKS:
                raise VinoInputError(f"Tencent-format key {key} is not part of HunyuanVideo")
            block, index, sub = match.groups()
            new_block, renames, fused = TENCENT_BLOCKS[block]
            prefix = f"{new_block}.{index}."
            if sub in fused:
                sizes = [hidden] * 3 + ([value.shape[0] - 3 * hidden] if len(fused[sub]) == 4 else [])
                for name, part in zip(fused[sub], torch.split(value, sizes)):
                    out[f"{prefix}{name}.{param}"] = part
            elif sub in renames:
                out[f"{prefix}{renames[sub]}.{param}"] = value
            else:
                raise VinoInputError(f"Tencent-format key {key} is not part of HunyuanVideo")
    return out


def split_vino_state(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(transformer, mm_encoder, other) state dicts with their prefixes removed."""
    transformer, mm_encoder, other = {}, {}, {}
    for key, value in sd.items():
        if key.startswith("transformer."):
            transformer[key[len("transformer."):]] = value
        elif key.startswith("mm_encoder."):
            mm_encoder[key[len("mm_encoder."):]] = value
        else:
            other[key] = value
    return transformer, mm_encoder, other


def join_vino_state(transformer: dict[str, torch.Tensor], mm_encoder: dict[str, torch.Tensor] | None = None) -> dict:
    """Our layout's one state dict (`transformer.*`, `mm_encoder.*`): split_vino_state's inverse."""
    state = {f"transformer.{k}": v for k, v in transformer.items()}
    state.update({f"mm_encoder.{k}": v for k, v in (mm_encoder or {}).items()})
    return state


# ---------------------------------------------------------------- config inference


def infer_mmdit_config(sd: dict[str, torch.Tensor]) -> MMDiTConfig:
    """Architecture from tensor shapes (diffusers names), for files that carry no config."""
    try:
        hidden, in_channels, *patch = sd["x_embedder.proj.weight"].shape
        head_dim = sd["transformer_blocks.0.attn.norm_q.weight"].shape[0]
        count = lambda prefix: len({k.split(".")[1] for k in sd if k.startswith(prefix + ".")})  # noqa: E731
        mlp = sd["transformer_blocks.0.ff.net.0.proj.weight"].shape[0]
        num_heads = hidden // head_dim
        rope_axes = (16, 56, 56) if head_dim == 128 else None
        if rope_axes is None:
            raise VinoInputError(
                f"head_dim {head_dim} has no known RoPE split; use a checkpoint that carries its config"
            )
        return MMDiTConfig(
            in_channels=in_channels,
            out_channels=sd["proj_out.weight"].shape[0] // (patch[0] * patch[1] * patch[2]),
            num_heads=num_heads,
            head_dim=head_dim,
            num_double_blocks=count("transformer_blocks"),
            num_single_blocks=count("single_transformer_blocks"),
            num_refiner_blocks=len({k.split(".")[3] for k in sd if k.startswith("context_embedder.token_refiner.")}),
            mlp_ratio=mlp / hidden,
            patch_size=tuple(patch),
            rope_axes=rope_axes,
            text_dim=sd["context_embedder.proj_in.weight"].shape[1],
            pooled_dim=sd["time_text_embed.text_embedder.linear_1.weight"].shape[1],
            guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in sd,
        )
    except KeyError as err:
        raise VinoInputError(f"checkpoint is not a HunyuanVideo/VINO transformer: key {err} is missing") from err


def infer_encoder_config(mm_encoder: dict[str, torch.Tensor]) -> EncoderConfig | None:
    if "metaquery" not in mm_encoder:
        return None
    num_queries, vlm_hidden = mm_encoder["metaquery"].shape
    return EncoderConfig(vlm_hidden=vlm_hidden, num_queries=num_queries)


# ---------------------------------------------------------------- loading into modules


def check_keys(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Every parameter present with its shape, nothing foreign: else one error listing the problems."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = sorted(f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k])})"
                       for k in set(expected) & set(sd) if sd[k].shape != expected[k])
    if missing or unexpected or misshaped:
        lines = [f"{what} does not match the model:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
                lines.append(f"  {label} keys: {shown}")
        raise VinoInputError("\n".join(lines))


def assign_state(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, dtype=None, device="cpu"):
    """Load into a meta-built module by assignment (no second copy); casts to dtype if given."""
    check_keys(module, sd, what)
    cast = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            for k, v in sd.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    return module


def load_vino_weights(path, dtype=None, device="cpu", config: VinoConfig | None = None):
    """Any supported transformer/VINO file -> (config, transformer state, mm_encoder state or None)."""
    sd, stored = read_state_dict(path)
    name = Path(path).name
    kind = detect_format(sd)
    if kind == "unknown":
        sample = ", ".join(sorted(sd)[:5])
        raise VinoInputError(
            f"checkpoint {name} is not a VINO or HunyuanVideo transformer (first keys: {sample}); expected keys "
            "starting with 'transformer.' (vino.ckpt), 'transformer_blocks.' (diffusers) or 'double_blocks.' (Tencent)"
        )
    if kind == "vino":
        transformer, mm_encoder, other = split_vino_state(sd)
        if other:
            raise VinoInputError(f"checkpoint {name} has keys outside transformer.*/mm_encoder.*: {sorted(other)[:8]}")
    else:
        transformer, mm_encoder = sd, {}
    if kind == "tencent":
        hidden = sd["img_in.proj.weight"].shape[0] if "img_in.proj.weight" in sd else 3072
        transformer = tencent_to_diffusers(transformer, hidden)
    if config is None and stored is not None:
        config = VinoConfig.from_dict(stored)
    if config is None:
        encoder = infer_encoder_config(mm_encoder) or EncoderConfig()
        config = VinoConfig(infer_mmdit_config(transformer), encoder)
    return config, transformer, (mm_encoder or None)


# ---------------------------------------------------------------- writing our layout


def save_vino(path, state: dict[str, torch.Tensor], config: VinoConfig, max_shard_bytes: int | None = None) -> Path:
    """Write our safetensors layout atomically: one file, or shards + index in a folder.

    The final name appears only when everything is written, so a crash never leaves a half file.
    """
    path = Path(path)
    metadata = {CONFIG_KEY: config.to_json(), "format": "pt"}
    state = {k: v.detach().contiguous() for k, v in state.items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None:
        if path.suffix != ".safetensors":
            raise VinoInputError(f"output {path} must end in .safetensors (or give a shard size for a folder)")
        with atomic_output(path) as partial:
            save_file(state, partial, metadata=metadata)
        return path
    if path.exists():
        raise VinoInputError(f"output folder {path} already exists; remove it or choose another name")
    shards, current, size = [], {}, 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = state[key]
        size += nbytes
    shards.append(current)
    weight_map = {}
    with atomic_output(path) as partial:
        partial.mkdir()
        for i, shard in enumerate(shards):
            shard_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, partial / shard_name, metadata=metadata)
            weight_map.update({k: shard_name for k in shard})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (partial / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return path

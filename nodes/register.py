"""The pack's model folders, registered once with ComfyUI's folder_paths, and what the loaders list from them.

    models/vino/            VINO checkpoints: the official vino.ckpt, our .safetensors files, sharded folders;
                            a bundle in models/vino/embedded/ (vino.safetensors, qwen3vl/, vae.safetensors)
                            replaces the embedded default that ships in the pack (vino_model/embedded/)
    models/text_encoders/   Qwen3-VL folders, each the whole folder (Qwen3-VL-4B-Instruct); models/vino/ is searched too

Extra model paths (extra_model_paths.yaml, key `vino`) add folders to `vino` as for any core folder.
"""

import json
import logging
import os
import shutil
from pathlib import Path

import folder_paths

from ..vino_model.checkpoint import INDEX_NAME
from ..vino_model.errors import VinoInputError
from ..vino_model.files import atomic_output
from ..vino_model.tiny import BUNDLE_FILES, SHIPPED_BUNDLE, is_bundle

log = logging.getLogger("vino")

VINO_FOLDER = "vino"
CHECKPOINT_EXTENSIONS = {".safetensors", ".ckpt", ".pt"}
QWEN_FOLDERS = ("text_encoders", VINO_FOLDER)
EMBEDDED = "embedded"


def register_folders() -> None:
    """models/vino first, then any extra path already given for `vino`; the checkpoint extensions added."""
    paths, extensions = folder_paths.folder_names_and_paths.get(VINO_FOLDER, ([], set()))
    default = os.path.join(folder_paths.models_dir, VINO_FOLDER)
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[VINO_FOLDER] = (paths, set(extensions) | CHECKPOINT_EXTENSIONS)
    if not checkpoint_names():
        log.info("VINO: no checkpoint in %s; put vino.ckpt (SOTAMak1r/VINO-weight) or a converted "
                 "vino.safetensors there, or use Load VINO (embedded default)", default)
    if not qwen_folder_names():
        log.info("VINO: no Qwen3-VL folder in models/text_encoders; put the whole Qwen3-VL-4B-Instruct folder there")


EXAMPLE_PREFIX = "vino_demo_"  # the embedded workflows' example inputs, in ComfyUI's input folder


def install_examples() -> list[Path]:
    """Copy the shipped demo's reference images and videos into ComfyUI's input folder (as vino_demo_*),
    where the *_embedded workflows' Load Image / Load Video nodes find them. Existing files are kept.
    Returns the files written."""
    media_folder = SHIPPED_BUNDLE / "demo" / "media"
    if not media_folder.is_dir():
        return []
    target = Path(folder_paths.get_input_directory())
    written = []
    for source in sorted(media_folder.glob("*-image*.png")) + sorted(media_folder.glob("*-video.mp4")):
        path = target / f"{EXAMPLE_PREFIX}{source.name}"
        if not path.exists():
            target.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as partial:
                shutil.copyfile(source, partial)
            written.append(path)
    return written


def _roots(folder_name: str) -> list[Path]:
    if folder_name not in folder_paths.folder_names_and_paths:
        return []
    return [Path(path) for path in folder_paths.get_folder_paths(folder_name)]


def _is_model_folder(folder: Path) -> bool:
    """A Hugging Face / diffusers folder (a Qwen3-VL folder, say): its files are not VINO checkpoints."""
    return (folder / "config.json").is_file()


def checkpoint_names() -> list[str]:
    """Checkpoints in the vino folders: files, and sharded folders listed once by their folder name.

    Files inside Hugging Face folders and the VAE of a bundle (models/vino/embedded) are left out.
    """
    names = set()
    for name in folder_paths.get_filename_list(VINO_FOLDER):
        path = resolve(VINO_FOLDER, name)
        inside = path.parents[: len(Path(name).parts) - 1]
        if any(_is_model_folder(parent) for parent in inside):
            continue
        bundle_part = all((path.parent / part).exists() for part in BUNDLE_FILES) and path.name != BUNDLE_FILES[0]
        if (path.parent / INDEX_NAME).is_file():
            names.add(Path(name).parent.as_posix())
        elif not bundle_part:
            names.add(name)
    return sorted(names)


def qwen_folder_names() -> list[str]:
    """Sub-folders of models/text_encoders (and models/vino) that hold a Qwen3-VL model."""
    names = set()
    for folder_name in QWEN_FOLDERS:
        for root in _roots(folder_name):
            if root.is_dir():
                names.update(entry.name for entry in root.iterdir() if _is_qwen3vl(entry))
    return sorted(names)


def _is_qwen3vl(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == "qwen3_vl"
    except (OSError, ValueError):
        return False


def resolve(folder_name: str, name: str) -> Path:
    """The file or folder `name` in the first of the registered folders that has it."""
    for root in _roots(folder_name):
        if (root / name).exists():
            return root / name
    raise VinoInputError(f"{name} is not in models/{folder_name} (nor in its extra paths); refresh the node list")


def qwen_folder(name: str) -> Path:
    for folder_name in QWEN_FOLDERS:
        for root in _roots(folder_name):
            if _is_qwen3vl(root / name):
                return root / name
    raise VinoInputError(f"Qwen3-VL folder {name} is not in models/text_encoders or models/vino; refresh the node list")


def embedded_bundle() -> Path:
    """models/vino/embedded when it holds a whole bundle (a user's own), else the trained default that ships
    inside the pack (vino_model/embedded)."""
    for root in _roots(VINO_FOLDER):
        if is_bundle(root / EMBEDDED):
            return root / EMBEDDED
    if is_bundle(SHIPPED_BUNDLE):
        return SHIPPED_BUNDLE
    raise VinoInputError(
        f"no embedded default model: neither models/{VINO_FOLDER}/{EMBEDDED} nor the pack's {SHIPPED_BUNDLE} holds "
        f"{', '.join(BUNDLE_FILES)}; restore the pack's copy (git checkout vino_model/embedded)"
    )

"""ComfyUI loads this file as the VINO node pack; the model itself (`vino_model`) never needs ComfyUI.

Outside ComfyUI (no `folder_paths` to import) the pack registers nothing, so importing the package still works.
"""

try:
    import folder_paths  # noqa: F401  (only ComfyUI provides it)
except ImportError:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

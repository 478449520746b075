"""Training side of VINO: data (manifest, procedural world), benchmark, curriculum and engine.

Runs without ComfyUI; stands on `vino_model` for the model itself.
"""

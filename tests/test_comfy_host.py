"""The pinned ComfyUI host runs for real: packs load, graphs execute, progress streams, workflows draw
with the frontend's warnings."""

import json

import pytest
from PIL import Image

from comfy_host import ComfyError, ComfyServer, PromptRejected, screenshot_workflows

PROBE_PACK = '''
import time

from PIL import Image

import comfy.utils


class HarnessProbe:
    """Takes `steps` steps, reporting progress and a red 16x16 preview after each."""

    CATEGORY = "testing"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1}),
                             "seconds_per_step": ("FLOAT", {"default": 0.0, "min": 0.0})}}

    def run(self, steps, seconds_per_step):
        bar = comfy.utils.ProgressBar(steps)
        for step in range(steps):
            time.sleep(seconds_per_step)
            bar.update_absolute(step + 1, steps, ("JPEG", Image.new("RGB", (16, 16), (255, 0, 0)), 16))
        return {"ui": {"steps": [steps]}, "result": (steps,)}


NODE_CLASS_MAPPINGS = {"HarnessProbe": HarnessProbe}
'''

# EmptyImage -> PreviewImage in the frontend's own (UI) format.
UI_WORKFLOW = {
    "last_node_id": 2,
    "last_link_id": 1,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "pos": [100, 100], "size": [315, 130], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "properties": {},
         "widgets_values": [512, 512, 1, 0]},
        {"id": 2, "type": "PreviewImage", "pos": [500, 100], "size": [300, 250], "flags": {}, "order": 1, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [], "properties": {}},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    "groups": [],
    "config": {},
    "extra": {},
    "version": 0.4,
}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    probe = tmp_path_factory.mktemp("harness_probe")
    (probe / "__init__.py").write_text(PROBE_PACK)
    (probe / "example_workflows").mkdir()
    (probe / "example_workflows" / "probe.json").write_text(json.dumps(UI_WORKFLOW))
    empty_pack = tmp_path_factory.mktemp("empty_pack")  # like a pack folder without __init__.py
    models = tmp_path_factory.mktemp("vino_models")
    (models / "tiny.safetensors").write_bytes(b"")
    with ComfyServer(packs={"harness_probe": probe, "empty_pack": empty_pack}, model_folders={"vino": models},
                     root=tmp_path_factory.mktemp("comfy")) as server:
        yield server


def probe_graph(steps, seconds_per_step=0.0):
    return {"1": {"class_type": "HarnessProbe", "inputs": {"steps": steps, "seconds_per_step": seconds_per_step}}}


def test_object_info_lists_core_nodes_and_the_symlinked_pack(comfy):
    info = comfy.object_info()
    assert {"KSampler", "VAEDecode", "SaveImage", "EmptyImage"} <= info.keys()
    assert info["HarnessProbe"]["python_module"] == "custom_nodes.harness_probe"
    assert info["HarnessProbe"]["input"]["required"]["steps"][0] == "INT"
    comfy.assert_packs_imported("harness_probe")
    with pytest.raises(ComfyError, match="pack empty_pack .* failed to import"):
        comfy.assert_packs_imported("empty_pack")


def test_model_folders_and_example_workflows_are_registered(comfy):
    assert comfy.get_json("/models/vino") == ["tiny.safetensors"]
    assert comfy.get_json("/workflow_templates") == {"harness_probe": ["probe"]}
    assert comfy.get_json("/api/workflow_templates/harness_probe/probe.json") == UI_WORKFLOW


def test_core_graph_writes_a_png_of_the_asked_size(comfy):
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0xFF8000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "harness"}},
    }
    history = comfy.wait(comfy.queue(graph))
    (saved,) = history["outputs"]["2"]["images"]
    image = Image.open(comfy.output_dir / saved["subfolder"] / saved["filename"])
    assert image.size == (64, 48)
    assert image.convert("RGB").getpixel((10, 10)) == (255, 128, 0)


def test_missing_required_input_is_rejected_and_the_server_stays_up(comfy):
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue({"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "harness"}}})
    (error,) = rejected.value.response["node_errors"]["1"]["errors"]
    assert error["type"] == "required_input_missing"
    assert error["extra_info"]["input_name"] == "images"
    assert comfy.wait(comfy.queue(probe_graph(steps=1)))["outputs"]["1"]["steps"] == [1]


def test_progress_and_previews_stream_to_the_client(comfy):
    with comfy.listen() as events:
        prompt_id = comfy.queue(probe_graph(steps=3), client_id=events.client_id)
        history = comfy.wait(prompt_id)
        events.wait_for("execution_success")
    assert history["outputs"]["1"]["steps"] == [3]
    progress = [(p["value"], p["max"], p["node"]) for p in events.of_type("progress") if p["prompt_id"] == prompt_id]
    assert progress == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    assert len(events.previews) == 3
    assert events.previews[0][:2] == b"\xff\xd8"  # JPEG


def test_interrupt_stops_a_running_prompt(comfy):
    with comfy.listen() as events:
        prompt_id = comfy.queue(probe_graph(steps=200, seconds_per_step=0.05), client_id=events.client_id)
        events.wait_for("progress")
        comfy.interrupt()
        with pytest.raises(ComfyError, match="execution_interrupted"):
            comfy.wait(prompt_id, timeout=10)


@pytest.fixture(scope="module")
def frontend(comfy, tmp_path_factory):
    """One browser opens, in turn: the core workflow, one with a node type nobody registered, one the
    frontend's schema check refuses (a position that is not [x, y]), a GIF with no workflow in it, and the
    core workflow again, which must come out clean of what the others raised. Returns (warnings, screenshots)."""
    unknown, invalid = json.loads(json.dumps(UI_WORKFLOW)), json.loads(json.dumps(UI_WORKFLOW))
    unknown["nodes"][1]["type"] = "NoSuchVinoNode"
    invalid["nodes"][0]["pos"] = "top left"
    folder = tmp_path_factory.mktemp("frontend")
    workflows = {"core": UI_WORKFLOW, "unknown": unknown, "invalid": invalid, "core_again": UI_WORKFLOW}
    for name, workflow in workflows.items():
        (folder / f"{name}.json").write_text(json.dumps(workflow))
    Image.new("RGB", (8, 8)).save(folder / "no_workflow.gif")
    names = ["core.json", "unknown.json", "invalid.json", "no_workflow.gif", "core_again.json"]
    return screenshot_workflows(comfy.url, [folder / name for name in names], folder / "shots"), folder / "shots"


def test_frontend_draws_a_core_workflow_without_warnings(frontend):
    warnings, screenshots = frontend
    assert warnings["core.json"] == [] and warnings["core_again.json"] == []
    for name in ("core", "core_again"):
        shot = Image.open(screenshots / f"{name}.png").convert("RGB")
        assert shot.size == (1280, 800)
        assert len(shot.getcolors(maxcolors=1 << 20)) > 50  # nodes, widgets and text, not an empty page


def test_frontend_reports_node_types_it_does_not_know(frontend):
    warnings, _ = frontend
    assert "missing node type: NoSuchVinoNode" in warnings["unknown.json"]
    assert any(w.startswith("dialog:") and "NoSuchVinoNode" in w for w in warnings["unknown.json"])


def test_frontend_reports_alert_toasts(frontend):
    warnings, _ = frontend
    (schema,) = warnings["invalid.json"]
    assert schema.startswith("toast: Alert\nInvalid workflow against zod schema") and 'at "nodes[0].pos"' in schema
    assert warnings["no_workflow.gif"] == ["toast: Alert\nUnable to find workflow in no_workflow.gif"]

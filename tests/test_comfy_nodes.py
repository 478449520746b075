"""The node pack on the real ComfyUI host (tests/comfy_host.py, one shared `main.py --cpu` server).

Every node registers with its inputs; every workflow twin runs through POST /prompt on the tiny random
embedded default and writes files of the right kind, frame count and size; Cancel stops sampling and the next
prompt runs; validation refuses a disconnected input and an out-of-range widget; the frontend opens every workflow,
and a WebP that Video Combine wrote, without a warning.
"""

import json
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfy_host import REPO, ComfyError, ComfyServer, PromptRejected, screenshot_workflows
from tiny_demo import demo_media
from training.bundle import DEFAULTS
from vino_model.tiny import DEMO_TASK_FILES, SHIPPED_BUNDLE, TINY_DEFAULTS, make_tiny_bundle

PACK = "ComfyUI-VINO"
WORKFLOWS = REPO / "workflows"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
TASKS = ["t2i", "t2v", "i2v", "ti2v", "ti2i", "ti2i_reference", "tv2v", "tiv2v", "clone"]
FRONTEND_ONLY = {"MarkdownNote", "Note"}  # drawn by the frontend, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SAMPLER, OUTPUT = "22", "24"  # node ids in every workflow

# What each twin writes: (kind, width, height, frames): the size of the bundle's defaults.json (here the tiny
# model's 64x64; the sampler's width and height are 0) and 17 frames; edits keep their 64x64 world references.
TWIN_OUTPUTS = {task: ("png" if task in ("t2i", "ti2i", "ti2i_reference") else "mp4", TINY_DEFAULTS["width"],
                       TINY_DEFAULTS["height"], 1 if task in ("t2i", "ti2i", "ti2i_reference") else 17)
                for task in TASKS}

NODES = {  # node id: (display name, required inputs, optional inputs, outputs)
    "VINO_Load": ("Load VINO", ["checkpoint", "qwen3vl", "dtype", "attention"], [], ["VINO_MODEL"]),
    "VINO_LoadEmbedded": ("Load VINO (embedded default)", ["dtype", "attention"], [], ["VINO_MODEL", "VAE"]),
    "VINO_InterleavedEncode": (
        "Qwen3-VL Interleaved Encode",
        ["vino", "task", "prompt", "use_default_negative", "negative_prompt", "have_base", "max_video_frames"],
        ["image_1", "image_2", "image_3", "image_4", "video", "video_frames", "video_fps"], ["VINO_CONTEXT"]),
    "VINO_RewritePrompt": (
        "Qwen3-VL Rewrite Prompt (understand, then generate)", ["vino", "request", "max_new_tokens"],
        ["image_1", "image_2", "image_3", "image_4", "video", "video_frames", "video_fps"], ["STRING"]),
    "VINO_ReferenceLatentWrap": (
        "Reference Latent Wrap", ["context"],
        ["vae", "latent_image_1", "latent_image_2", "latent_image_3", "latent_image_4", "latent_video"],
        ["VINO_CONTEXT"]),
    "VINO_Sampler": ("VINO Sampler", ["vino", "context", "width", "height", "frames", "steps", "text_cfg",
                                      "image_cfg", "shift", "seed"], [], ["LATENT"]),
    "VINO_VideoCombine": ("Video Combine", ["images", "frame_rate", "loop", "filename_prefix", "format", "quality"],
                          [], ["VIDEO"]),
    "VINO_LoadVideo": ("Load Video (VINO)", ["video", "max_frames"], [], ["VIDEO", "IMAGE", "FLOAT"]),
}


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    bundle = make_tiny_bundle(models / "vino" / "embedded")
    # an image CFG of its own for reference-guided edits, as the embedded default's defaults.json has
    (bundle / "defaults.json").write_text(json.dumps({**TINY_DEFAULTS, "image_cfg_tasks": {"ti2i_ref": 3.0}}))
    # The names the real-weights workflows ask for, here the tiny model's parts.
    (models / "vino" / "vino.safetensors").symlink_to(bundle / "vino.safetensors")
    (models / "text_encoders").mkdir()
    (models / "text_encoders" / "Qwen3-VL-4B-Instruct").symlink_to(bundle / "qwen3vl", target_is_directory=True)
    save_file({"encoder.weight": torch.zeros(2, 2)}, models / "vino" / "not_vino.safetensors")  # a wrong file
    folders = {"vino": models / "vino", "text_encoders": models / "text_encoders"}
    previews = ("--preview-method", "latent2rgb")
    with ComfyServer(packs={PACK: REPO}, model_folders=folders, extra_args=previews) as server:
        for path in demo_media(tmp_path_factory.mktemp("media")).values():  # the workflows' example inputs
            shutil.copy(path, server.input_dir)
        yield server


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.object_info()


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def node_types(workflow: dict, loaders: bool) -> set[tuple[int, str]]:
    """(id, type) of the loader nodes (ids 1 and 2 in every workflow), or of all the others."""
    return {(node["id"], node["type"]) for node in workflow["nodes"] if (node["id"] <= 2) == loaders}


def widgets(workflow: dict, node_id: int) -> list:
    return next(node for node in workflow["nodes"] if node["id"] == node_id)["widgets_values"]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format graph the frontend queues for a UI-format workflow: links by slot, widget values by name.

    widgets_values follow the node's widget inputs in order (required, then optional), with a seed's
    "control after generate" value right after it and an upload button's value after all of them.
    """
    links = {link[0]: link for link in workflow["links"]}
    graph = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        spec = object_info[node["type"]]["input"]
        inputs = {slot["name"]: [str(links[slot["link"]][1]), links[slot["link"]][2]]
                  for slot in node["inputs"] if slot.get("link") is not None}
        values, upload = list(node["widgets_values"]), False
        for name, (kind, *options) in [*spec["required"].items(), *spec.get("optional", {}).items()]:
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                inputs.setdefault(name, values.pop(0))  # a linked widget keeps its link
                options = options[0] if options else {}
                if options.get("control_after_generate"):
                    values.pop(0)
                upload = upload or any(key.endswith("_upload") for key in options)
        if upload:
            assert values.pop(0) == "image", f"node {node['id']}: no upload button value"
        assert not values, f"node {node['id']} ({node['type']}) has extra widget values {values}"
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def run(comfy, graph: dict, timeout: float = 120, workflow: dict | None = None):
    """Queue a graph (with its UI-format workflow for savers to embed, when given), wait for it, and return
    (history entry, the /ws listener's record)."""
    with comfy.listen() as events:
        entry = comfy.wait(comfy.queue(graph, client_id=events.client_id, workflow=workflow), timeout=timeout)
    return entry, events


def output_path(comfy, saved: dict) -> Path:
    assert saved["type"] == "output"
    path = comfy.output_dir / saved["subfolder"] / saved["filename"]
    assert path.resolve().is_relative_to(comfy.output_dir.resolve()) and path.exists()
    return path


def video_facts(path: Path) -> tuple[str, str, int, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height, frames


# ---------------------------------------------------------------- registration


def test_pack_imports_and_every_node_has_its_inputs(comfy, object_info):
    comfy.assert_packs_imported(PACK)
    for node_id, (display, required, optional, outputs) in NODES.items():
        info = object_info[node_id]
        assert info["display_name"] == display and info["category"] == "VINO" and info["description"]
        assert list(info["input"]["required"]) == required
        assert list(info["input"].get("optional", {})) == optional
        assert info["output"] == outputs
    listed = object_info["VINO_Load"]["input"]["required"]
    assert listed["checkpoint"][0] == ["embedded/vino.safetensors", "not_vino.safetensors", "vino.safetensors"]
    assert listed["qwen3vl"][0] == ["Qwen3-VL-4B-Instruct"]


def test_workflows_appear_in_the_template_browser(comfy):
    names = {path.stem for path in WORKFLOWS.glob("*.json")}
    assert names == {*TASKS, *(f"{task}_embedded" for task in TASKS)}
    assert set(comfy.get_json("/workflow_templates")[PACK]) == names
    assert comfy.get_json(f"/api/workflow_templates/{PACK}/t2v.json") == load_workflow("t2v")


# ---------------------------------------------------------------- the workflows


@pytest.mark.parametrize("task", TASKS)
def test_twin_mirrors_its_real_workflow(task):
    """Same graph: only the loaders, the prompt (a held-out one of the embedded default's demo), sizes, steps,
    guidance, frame caps, example inputs, output names and the note differ."""
    real, twin = load_workflow(task), load_workflow(f"{task}_embedded")
    assert node_types(real, loaders=False) == node_types(twin, loaders=False)
    assert node_types(real, loaders=True) == {(1, "VINO_Load"), (2, "VAELoader")}
    assert node_types(twin, loaders=True) == {(1, "VINO_LoadEmbedded")}
    assert widgets(real, 20)[0] == widgets(twin, 20)[0] and widgets(real, 20)[2:5] == widgets(twin, 20)[2:5]
    demo = [e for f in DEMO_TASK_FILES for e in json.loads((SHIPPED_BUNDLE / f).read_text())]
    assert widgets(twin, 20)[1] in {e["caption"] for e in demo}
    kind = "ti2i_ref" if task == "ti2i_reference" else task
    image_cfg = DEFAULTS["image_cfg_tasks"].get(kind, DEFAULTS["image_cfg"])  # what generate gives the same task
    steps = DEFAULTS["steps"] if TWIN_OUTPUTS[task][0] == "png" else DEFAULTS["steps_video"]
    assert widgets(twin, int(SAMPLER))[3:7] == [steps, DEFAULTS["cfg"], image_cfg, DEFAULTS["shift"]]
    assert widgets(real, int(SAMPLER))[7:] == widgets(twin, int(SAMPLER))[7:]  # seed
    assert widgets(twin, int(SAMPLER))[:2] == [0, 0]  # the size of the bundle that Load VINO (embedded) loads


def test_the_pack_copies_the_twins_example_inputs_into_the_input_folder(comfy):
    wanted = {node["widgets_values"][0] for task in TASKS for node in load_workflow(f"{task}_embedded")["nodes"]
              if node["type"] in ("LoadImage", "VINO_LoadVideo")}
    assert len(wanted) >= 10 and all(name.startswith("vino_demo_") for name in wanted)
    assert wanted <= {path.name for path in comfy.input_dir.iterdir()}


@pytest.mark.parametrize("task", TASKS)
def test_embedded_twin_runs_and_writes_its_output(comfy, object_info, task):
    graph = ui_to_api(load_workflow(f"{task}_embedded"), object_info)
    graph[SAMPLER]["inputs"]["steps"] = 2  # the tiny random model here: the path, not the picture
    entry, events = run(comfy, graph)
    kind, width, height, frames = TWIN_OUTPUTS[task]
    saved = entry["outputs"][OUTPUT]["images"]
    assert len(saved) == 1
    path = output_path(comfy, saved[0])
    assert path.suffix == f".{kind}"
    if kind == "png":
        with Image.open(path) as image:
            assert (image.size, getattr(image, "n_frames", 1)) == ((width, height), 1)
    else:
        assert video_facts(path) == ("h264", "yuv420p", width, height, frames)
    sampler_steps = [p for p in events.of_type("progress") if p["node"] == SAMPLER]
    assert [p["value"] for p in sampler_steps] == [1, 2] and events.previews  # progress bar and latent previews


@pytest.mark.parametrize("task", TASKS)
def test_real_workflow_is_valid_but_for_the_missing_vae(comfy, object_info, task):
    """All widget values are accepted; only the HunyuanVideo VAE file is missing on this test host."""
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(ui_to_api(load_workflow(task), object_info))
    failing = {node: errors["errors"] for node, errors in rejected.value.response["node_errors"].items()
               if errors["errors"]}
    assert list(failing) == ["2"] and failing["2"][0]["type"] == "value_not_in_list"


def test_image_cfg_zero_takes_the_bundles_own_for_the_task(comfy, object_info):
    """The sampler's image_cfg 0: the loaded bundle's image CFG for the task kind (ti2i with have_base:
    "ti2i_ref", 3 here), as `python -m vino_model.generate` takes it from defaults.json."""
    graph = ui_to_api(load_workflow("ti2i_reference_embedded"), object_info)
    graph[SAMPLER]["inputs"]["steps"] = 2
    pixels = {}
    for image_cfg in (0.0, 3.0, 1.0):
        graph[SAMPLER]["inputs"]["image_cfg"] = image_cfg
        entry, _ = run(comfy, graph)
        with Image.open(output_path(comfy, entry["outputs"][OUTPUT]["images"][0])) as image:
            pixels[image_cfg] = np.asarray(image.convert("RGB")).astype(int)
    assert np.array_equal(pixels[0.0], pixels[3.0])
    assert np.abs(pixels[0.0] - pixels[1.0]).max() > 0  # image guidance changed the picture: 0 was not 1


def test_load_vino_runs_a_real_workflow_on_files_in_the_model_folders(comfy, object_info):
    graph = ui_to_api(load_workflow("ti2i"), object_info)
    graph["2"] = {"class_type": "VINO_LoadEmbedded", "inputs": {"dtype": "auto", "attention": "auto"}}
    for node in graph.values():  # the embedded default's VAE in place of hunyuan_video_vae_bf16
        node["inputs"] = {k: ["2", 1] if v == ["2", 0] else v for k, v in node["inputs"].items()}
    graph[SAMPLER]["inputs"]["steps"] = 2
    entry, _ = run(comfy, graph)
    with Image.open(output_path(comfy, entry["outputs"][OUTPUT]["images"][0])) as image:
        assert image.size == (64, 64)


def test_load_vino_says_what_is_missing_or_wrong(comfy, object_info):
    graph = ui_to_api(load_workflow("t2i"), object_info)
    graph["1"]["inputs"]["checkpoint"] = "vino.ckpt"
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(graph)
    error = rejected.value.response["node_errors"]["1"]["errors"][0]
    assert "put vino.ckpt (SOTAMak1r/VINO-weight)" in error["details"]
    graph["1"]["inputs"]["checkpoint"] = "not_vino.safetensors"
    graph["2"] = {"class_type": "VINO_LoadEmbedded", "inputs": {"dtype": "auto", "attention": "auto"}}
    graph["23"]["inputs"]["vae"] = ["2", 1]
    with pytest.raises(ComfyError, match="not_vino.safetensors is not a VINO or HunyuanVideo transformer"):
        run(comfy, graph)


def test_reference_latents_can_come_from_core_vae_encode(comfy, object_info):
    """Image 1 of ti2i as a LATENT: core Image Scale to its 64x64 letterboxed size, core VAE Encode; a LATENT
    of another size is refused with the size it should have."""
    graph = ui_to_api(load_workflow("ti2i_embedded"), object_info)
    graph["30"] = {"class_type": "ImageScale", "inputs": {"image": ["10", 0], "upscale_method": "lanczos",
                                                          "width": 64, "height": 64, "crop": "disabled"}}
    graph["31"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["1", 1]}}
    graph["21"]["inputs"] = {"context": ["20", 0], "latent_image_1": ["31", 0]}  # no vae connected
    entry, _ = run(comfy, graph)
    with Image.open(output_path(comfy, entry["outputs"][OUTPUT]["images"][0])) as image:
        assert image.size == (64, 64)
    graph["30"]["inputs"].update(width=128, height=96)
    refused = r"Image 1: latent has shape \(1, 16, 1, 12, 16\); expected \(1, 16, 1, 8, 8\)"
    with pytest.raises(ComfyError, match=refused):
        run(comfy, graph)


def test_prompt_naming_an_unconnected_input_fails_with_a_clear_message(comfy, object_info):
    graph = ui_to_api(load_workflow("t2v_embedded"), object_info)
    graph["20"]["inputs"]["prompt"] = "the cat in Image 2 walks away"
    with pytest.raises(ComfyError, match="prompt mentions Image 2 but no images are connected"):
        run(comfy, graph)


def test_rewrite_prompt_writes_a_caption(comfy, object_info):
    graph = ui_to_api(load_workflow("i2v_embedded"), object_info)
    graph = {key: graph[key] for key in ("1", "10")}
    graph["40"] = {"class_type": "VINO_RewritePrompt", "inputs": {
        "vino": ["1", 0], "request": "make Image 1 move", "max_new_tokens": 16, "image_1": ["10", 0]}}
    graph["41"] = {"class_type": "PreviewAny", "inputs": {"source": ["40", 0]}}
    entry, _ = run(comfy, graph)
    assert isinstance(entry["outputs"]["41"]["text"][0], str)


# ---------------------------------------------------------------- ComfyUI citizenship


def test_cancel_during_sampling_returns_promptly_and_the_next_prompt_runs(comfy, object_info):
    graph = ui_to_api(load_workflow("t2v_embedded"), object_info)
    graph[SAMPLER]["inputs"].update(steps=1000, seed=7)
    with comfy.listen() as events:
        comfy.queue(graph, client_id=events.client_id)
        deadline = time.monotonic() + 60
        while not [p for p in events.of_type("progress") if p["node"] == SAMPLER]:
            assert time.monotonic() < deadline, "sampling never started"
            time.sleep(0.05)
        asked = time.monotonic()
        comfy.interrupt()
        interrupted = events.wait_for("execution_interrupted", timeout=30)
        assert time.monotonic() - asked < 5 and interrupted["node_id"] == SAMPLER
        steps_done = max(p["value"] for p in events.of_type("progress") if p["node"] == SAMPLER)
        assert steps_done < 1000
    graph[SAMPLER]["inputs"].update(steps=2, seed=8)
    entry, _ = run(comfy, graph)
    assert entry["status"]["status_str"] == "success"


def test_validation_refuses_bad_graphs_and_the_server_stays_up(comfy, object_info):
    graph = ui_to_api(load_workflow("t2v_embedded"), object_info)
    disconnected = json.loads(json.dumps(graph))
    del disconnected[SAMPLER]["inputs"]["context"]
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(disconnected)
    assert rejected.value.response["node_errors"][SAMPLER]["errors"][0]["type"] == "required_input_missing"
    graph[SAMPLER]["inputs"]["steps"] = -1
    with pytest.raises(PromptRejected) as rejected:
        comfy.queue(graph)
    assert rejected.value.response["node_errors"][SAMPLER]["errors"][0]["type"] == "value_smaller_than_min"
    assert "VINO_Sampler" in comfy.object_info()


def test_video_combine_writes_every_format_inside_the_output_folder(comfy):
    """Odd-sized frames (a 33x17 crop across the demo clip's moving square) into each format; '..' is dropped.
    Every file carries the graph and the UI workflow sent with it."""
    formats = ["mp4 (H.264)", "webm (VP9)", "gif", "webp (animated)", "png sequence"]
    graph = {
        "1": {"class_type": "VINO_LoadVideo", "inputs": {"video": "clip.mp4", "max_frames": 5}},
        "2": {"class_type": "ImageCrop", "inputs": {"image": ["1", 1], "width": 33, "height": 17, "x": 0, "y": 20}},
        "8": {"class_type": "VINO_VideoCombine", "inputs": {"images": ["1", 1], "frame_rate": 8.0, "loop": 0,
                                                            "filename_prefix": "vino_formats/even", "format": "gif",
                                                            "quality": 80}},
        "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": "vino_formats/core",
                                                    "format": "auto", "codec": "auto"}},
    }
    for k, name in enumerate(formats, 10):
        graph[str(k)] = {"class_type": "VINO_VideoCombine", "inputs": {
            "images": ["2", 0], "frame_rate": ["1", 2], "loop": 0, "filename_prefix": "../../vino_formats/clip",
            "format": name, "quality": 80}}
    workflow = {"version": 0.4, "nodes": []}  # stands in for the UI workflow the frontend sends along
    entry, _ = run(comfy, graph, workflow=workflow)
    saved = {name: entry["outputs"][str(k)]["images"] for k, name in enumerate(formats, 10)}
    assert all(shown["subfolder"].startswith("vino_formats") for shown in sum(saved.values(), []))

    mp4, webm = output_path(comfy, saved["mp4 (H.264)"][0]), output_path(comfy, saved["webm (VP9)"][0])
    assert video_facts(mp4) == ("h264", "yuv420p", 34, 18, 5)  # even sizes for yuv420p
    assert video_facts(webm)[1:] == ("yuv420p", 34, 18, 5)
    embedded = {}
    for name, path in (("mp4 (H.264)", mp4), ("webm (VP9)", webm)):
        with av.open(str(path)) as container:
            embedded[name] = {key.lower(): value for key, value in container.metadata.items()}  # WebM: upper case
    for name in ("gif", "webp (animated)"):
        with Image.open(output_path(comfy, saved[name][0])) as animation:
            assert (animation.size, animation.n_frames) == ((33, 17), 5)
            # GIF: a JSON object in the comment; WebP: "key:value" EXIF entries, read as ComfyUI's frontend does
            embedded[name] = (json.loads(animation.info["comment"]) if name == "gif"
                              else dict(text.split(":", 1) for text in animation.getexif().values()))
    frames = [output_path(comfy, shown) for shown in saved["png sequence"]]
    assert len(frames) == 5
    with Image.open(frames[0]) as frame:
        assert frame.size == (33, 17)
        embedded["png sequence"] = frame.text
    for name, found in embedded.items():
        assert json.loads(found["prompt"])["1"]["class_type"] == "VINO_LoadVideo", name
        assert json.loads(found["workflow"]) == workflow, name
    core = entry["outputs"]["9"]["images"][0]  # the VIDEO output, saved by core Save Video
    assert video_facts(output_path(comfy, core))[2:] == (96, 64, 5)


def test_frontend_opens_every_workflow_and_a_webp_carrying_one(comfy, object_info):
    """Headless Chromium opens the 18 workflows, and the animated WebP that t2v_embedded writes with its workflow
    embedded, as a user dropping each on the canvas: no missing node type, dialog, toast or page error.
    Screenshots in artifacts/screenshots/."""
    workflow = load_workflow("t2v_embedded")
    combine = widgets(workflow, int(OUTPUT))
    combine[combine.index("mp4 (H.264)")] = "webp (animated)"
    entry, _ = run(comfy, ui_to_api(workflow, object_info), workflow=workflow)
    webp = output_path(comfy, entry["outputs"][OUTPUT]["images"][0])
    warnings = screenshot_workflows(comfy.url, [*sorted(WORKFLOWS.glob("*.json")), webp], SCREENSHOTS)
    assert len(warnings) == 19 and {name: found for name, found in warnings.items() if found} == {}

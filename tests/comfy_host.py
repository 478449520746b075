"""A real ComfyUI server for tests: the pinned host in .comfyui/ (scripts/install_comfyui.sh).

    with ComfyServer(packs={"ComfyUI-VINO": REPO}, model_folders={"vino": fixtures}) as comfy:
        comfy.assert_packs_imported()
        with comfy.listen() as events:
            history = comfy.wait(comfy.queue(graph, client_id=events.client_id))
        warnings = screenshot_workflows(comfy.url, ["workflows/t2i.json"], "shots")  # {"t2i.json": [...]}

Each server gets its own input/output/temp/user folders and its own custom_nodes folder (the packs
are symlinked there and handed to ComfyUI through the extra-model-paths YAML), so .comfyui/ is
never changed and several servers can run side by side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import mimetypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
HOST = REPO / ".comfyui"
PYTHON = REPO / ".venv" / "bin" / "python"
CHROMIUM = Path("/usr/bin/chromium")


class ComfyError(RuntimeError):
    """The server failed to start, refused a prompt, failed a run, or did not answer in time."""


class PromptRejected(ComfyError):
    """POST /prompt answered 400; `response` holds ComfyUI's `error` and `node_errors`."""

    def __init__(self, message: str, response: dict):
        super().__init__(message)
        self.response = response


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One `main.py --cpu` process on a free local port; use it as a context manager.

    packs: {folder name in custom_nodes: pack directory} (the directory's `__init__.py` is what
      ComfyUI imports). model_folders: {ComfyUI folder name ("vino", "vae", "text_encoders"): dir}.
    root: where the server's folders go; a temp dir (removed on stop) when None.
    extra_args: more main.py flags, e.g. ("--preview-method", "latent2rgb").
    """

    def __init__(self, packs: dict[str, Path] | None = None, model_folders: dict[str, Path] | None = None,
                 root: Path | None = None, extra_args: tuple[str, ...] = (), start_timeout: float = 120):
        if not (HOST / "main.py").is_file():
            raise ComfyError(f"no ComfyUI host at {HOST}; run: bash scripts/install_comfyui.sh")
        self.packs = {name: Path(path).resolve() for name, path in (packs or {}).items()}
        self.model_folders = {name: Path(path).resolve() for name, path in (model_folders or {}).items()}
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="comfy-")) if root is None else Path(root)
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir, self.output_dir = self.root / "input", self.root / "output"
        self.user_dir, self.custom_nodes_dir = self.root / "user", self.root / "custom_nodes"
        self.log_path = self.root / "comfyui.log"
        self._process: subprocess.Popen | None = None
        self._stopped_log: str | None = None

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for folder in (self.input_dir, self.output_dir, self.user_dir / "default", self.custom_nodes_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for name, pack in self.packs.items():
            (self.custom_nodes_dir / name).symlink_to(pack, target_is_directory=True)
        # A fresh user would get the template browser over the graph on first page load.
        settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
        (self.user_dir / "default" / "comfy.settings.json").write_text(json.dumps(settings))
        paths = {"custom_nodes": str(self.custom_nodes_dir)}
        paths.update({name: str(path) for name, path in self.model_folders.items()})
        config = self.root / "extra_model_paths.yaml"
        config.write_text(yaml.safe_dump({"comfy_test": paths}))
        command = [
            str(PYTHON), str(HOST / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.root), "--user-directory", str(self.user_dir),
            "--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}",
            "--extra-model-paths-config", str(config),
            "--disable-auto-launch", "--disable-api-nodes", *self.extra_args,
        ]
        # Tests run offline: Hugging Face libraries must not try the network for a missing file.
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(command, cwd=HOST, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ComfyError(f"ComfyUI exited with {self._process.returncode} during start-up:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/object_info", timeout=10).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise ComfyError(f"ComfyUI did not answer /object_info within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminates the server (kill after 10 s); the log stays readable through log_text()."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._own_root and self.root.exists():
            self._stopped_log = self.log_text()
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        """Everything the server printed (stdout and stderr)."""
        if self._stopped_log is not None:
            return self._stopped_log
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_packs_imported(self, *names: str) -> None:
        """The named packs (all when none are named) show in ComfyUI's "Import times for custom
        nodes" list without IMPORT FAILED; otherwise ComfyError with the log lines about the pack."""
        lines = self.log_text().splitlines()
        for name in names or self.packs:
            path = str(self.custom_nodes_dir / name)
            listed = [line for line in lines if line.endswith(path)]
            if not listed or "IMPORT FAILED" in listed[0]:
                about_pack = "\n".join(line for line in lines if path in line) or self.log_tail()
                raise ComfyError(f"pack {name} ({self.packs[name]}) failed to import:\n{about_pack}")

    def get_json(self, path: str):
        """GET one of the server's JSON routes, e.g. "/models/vino" or "/workflow_templates"."""
        response = requests.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def object_info(self) -> dict:
        """{node type: definition} for every registered node."""
        return self.get_json("/object_info")

    def queue(self, graph: dict, client_id: str | None = None, workflow: dict | None = None) -> str:
        """POSTs an API-format graph to /prompt and returns its prompt_id; PromptRejected on a 400.
        workflow: the UI-format workflow, sent along as the frontend does (extra_pnginfo) for savers to embed."""
        body = {"prompt": graph, "client_id": client_id or uuid.uuid4().hex}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        response = requests.post(f"{self.url}/prompt", json=body, timeout=30)
        if response.status_code == 400:
            answer = response.json()
            raise PromptRejected(f"ComfyUI rejected the prompt: {json.dumps(answer, indent=1)}", answer)
        response.raise_for_status()
        return response.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 60) -> dict:
        """Polls /history until the prompt is done; returns its entry ({"outputs", "status", ...})."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                if entry["status"]["status_str"] != "success":
                    raise ComfyError(f"prompt {prompt_id} ended with {json.dumps(entry['status'], indent=1)}"
                                     f"\n{self.log_tail()}")
                return entry
            if self._process.poll() is not None:
                raise ComfyError(f"ComfyUI exited while running prompt {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise ComfyError(f"prompt {prompt_id} not done after {timeout:.0f} s:\n{self.log_tail()}")

    def interrupt(self) -> None:
        requests.post(f"{self.url}/interrupt", timeout=30).raise_for_status()

    def listen(self, client_id: str | None = None) -> Listener:
        """A /ws connection that records what the server sends; queue prompts with its client_id."""
        return Listener(self.url, client_id or uuid.uuid4().hex)


class Listener:
    """Records the /ws stream of one client_id: JSON events in `events`, preview images in `previews`.

    ComfyUI sends progress ({"type": "progress", "data": {"value", "max", "node", "prompt_id"}}),
    executing/executed/execution_success/execution_error events, and previews as binary frames
    (event 1 = PREVIEW_IMAGE: 4-byte image format, then JPEG/PNG bytes).
    """

    PREVIEW_IMAGE = 1

    def __init__(self, url: str, client_id: str):
        self.client_id = client_id
        self.events: list[dict] = []
        self.previews: list[bytes] = []
        self._ws_url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
        self._changed = threading.Condition()
        self._ended: str | None = None  # why the socket closed
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        self.wait_for("status")  # the server greets every new socket
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(RuntimeError):  # the server already closed the socket and the loop ended
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._receive())
            ended = "the server closed it"
        except (asyncio.CancelledError, Exception) as failure:
            ended = repr(failure)
        with self._changed:
            self._ended = ended
            self._changed.notify_all()

    async def _receive(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        async with aiohttp.ClientSession() as session, session.ws_connect(self._ws_url, max_msg_size=0) as ws:
            async for message in ws:
                with self._changed:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self.events.append(json.loads(message.data))
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        if int.from_bytes(message.data[:4], "big") == self.PREVIEW_IMAGE:
                            self.previews.append(bytes(message.data[8:]))
                    self._changed.notify_all()

    def of_type(self, event_type: str) -> list[dict]:
        """The `data` of every recorded event of this type, in order."""
        with self._changed:
            return [event["data"] for event in self.events if event["type"] == event_type]

    def wait_for(self, event_type: str, timeout: float = 30) -> dict:
        """Blocks until an event of this type has arrived; returns the first one's data."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.of_type(event_type) or self._ended, timeout):
                raise ComfyError(f"no {event_type!r} event on /ws within {timeout:.0f} s; "
                                 f"got {[event['type'] for event in self.events]}")
            if not self.of_type(event_type):
                raise ComfyError(f"/ws connection {self._ws_url} ended ({self._ended}) before a {event_type!r} event")
            return self.of_type(event_type)[0]


def screenshot_workflows(url: str, files: list[Path | str], screenshot_dir: Path | str,
                         size: tuple[int, int] = (1280, 800), timeout: float = 60) -> dict[str, list[str]]:
    """Opens each file in the ComfyUI frontend at `url` as a user does who drops it on the canvas: a UI- or
    API-format workflow (.json) or an image/video carrying one (.png, .webp, .mp4...). One headless Chromium
    page opens them in turn, each in its own workflow tab, and writes a PNG of the canvas per file to
    `screenshot_dir/<file stem>.png`.

    Returns {file name: warnings} with, for that file only: node types the frontend does not know, the text of
    dialogs it opened (missing nodes/models), of toasts it showed (alerts such as "Invalid workflow against zod
    schema" or "Unable to find workflow in ..."), and console errors or uncaught page errors raised while the
    file loaded and drew. Dialogs and toasts are closed before the next file.
    """
    return asyncio.run(_screenshot_workflows(url, [Path(f) for f in files], Path(screenshot_dir), size, timeout))


# Runs in every new document: records the text of each toast as it appears, however briefly it stays.
_WATCH_TOASTS_JS = """window.toastsSeen = [];
new MutationObserver((changes) => {
    for (const added of changes.flatMap((change) => [...change.addedNodes])) {
        const toasts = added.matches?.('.p-toast-message') ? [added] : added.querySelectorAll?.('.p-toast-message');
        window.toastsSeen.push(...[...(toasts ?? [])].map((toast) => toast.innerText.trim()));
    }
}).observe(document, {childList: true, subtree: true});"""

# Runs in the page: the frontend's own file handler, as when a user drops the file on the canvas.
_OPEN_FILE_JS = """async (name, type, base64) => {
    window.toastsSeen = [];
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    await window.app.handleFile(new File([bytes], name, {type}));
    await new Promise((done) => setTimeout(done, 500));  // let dialogs, toasts and node previews settle
    await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
    const known = window.LiteGraph.registered_node_types;
    return {
        missing: [...new Set(window.app.graph.nodes.map((node) => node.type).filter((type) => !(type in known)))],
        dialogs: [...document.querySelectorAll('[role=dialog]')].map((dialog) => dialog.innerText.trim()),
        toasts: window.toastsSeen,
    };
}"""

_CLOSE_DIALOGS_AND_TOASTS_JS = """(() => {
    document.querySelectorAll('[role=dialog] .p-dialog-close-button').forEach((button) => button.click());
    window.app.extensionManager.toast.removeAll();
})()"""


async def _screenshot_workflows(url: str, files: list[Path], screenshot_dir: Path, size: tuple[int, int],
                                timeout: float) -> dict[str, list[str]]:
    if not CHROMIUM.exists():
        raise ComfyError(f"no {CHROMIUM}; run: bash scripts/install_comfyui.sh")
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    browser = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async with aiohttp.ClientSession() as session:
            page = await _DevTools.open_page(session, profile, browser, timeout)
            try:
                await page.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                                deviceScaleFactor=1, mobile=False)
                for script in ("localStorage.setItem('vueNodesBannerDismissed', 'true')", _WATCH_TOASTS_JS):
                    await page.call("Page.addScriptToEvaluateOnNewDocument", source=script)
                await page.call("Page.navigate", url=url)
                await page.wait_until("window.app?.graph && window.app.canvas && window.LiteGraph"
                                      " && Object.keys(window.LiteGraph.registered_node_types).length > 0", timeout)
                warnings = {}
                for path in files:
                    page.errors.clear()  # this file's only; the frontend also logs a settings error of its own on start
                    arguments = [path.name, mimetypes.guess_type(path.name)[0] or "",
                                 base64.b64encode(path.read_bytes()).decode()]
                    opened = await page.call("Runtime.evaluate", awaitPromise=True, returnByValue=True,
                                             expression=f"({_OPEN_FILE_JS})(...{json.dumps(arguments)})")
                    if "exceptionDetails" in opened:
                        raise ComfyError(f"opening {path} failed in the page: {opened['exceptionDetails']}")
                    found = opened["result"]["value"]
                    shot = await page.call("Page.captureScreenshot", format="png")
                    (screenshot_dir / f"{path.stem}.png").write_bytes(base64.b64decode(shot["data"]))
                    warnings[path.name] = ([f"missing node type: {t}" for t in found["missing"]]
                                           + [f"dialog: {text}" for text in found["dialogs"]]
                                           + [f"toast: {text}" for text in found["toasts"]] + page.errors)
                    await page.evaluate(_CLOSE_DIALOGS_AND_TOASTS_JS)
                    await page.wait_until("!document.querySelector('[role=dialog]')", timeout)
                return warnings
            finally:
                await page.close()
    finally:
        _end_process_group(browser)
        shutil.rmtree(profile, ignore_errors=True)


def _end_process_group(process: subprocess.Popen) -> None:
    """Ends a process started with start_new_session=True together with the helpers it forked."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # helpers that outlived the main process
    process.wait()


class _DevTools:
    """The Chrome DevTools Protocol over aiohttp's websocket client, for one page."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.errors: list[str] = []
        self._replies: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open_page(cls, session: aiohttp.ClientSession, profile: Path, browser: subprocess.Popen,
                        timeout: float) -> _DevTools:
        port_file = profile / "DevToolsActivePort"  # Chromium writes its port here
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if browser.poll() is not None or time.monotonic() > deadline:
                raise ComfyError(f"chromium did not open its DevTools port (exit code {browser.poll()})")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        page = cls(await session.ws_connect(page_url, max_msg_size=0))
        for domain in ("Page", "Runtime"):
            await page.call(f"{domain}.enable")
        return page

    async def _read(self) -> None:
        async for message in self.ws:
            event = json.loads(message.data)
            if "id" in event:
                self._replies.pop(event["id"]).set_result(event)
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                args = event["params"]["args"]
                self.errors.append("console error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in args))
            elif event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                self.errors.append("page error: " + details.get("exception", {}).get("description", details["text"]))

    async def call(self, method: str, **params) -> dict:
        self._next_id += 1
        reply = self._replies[self._next_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": self._next_id, "method": method, "params": params})
        event = await asyncio.wait_for(reply, 60)
        if "error" in event:
            raise ComfyError(f"DevTools {method} failed: {event['error']}")
        return event["result"]

    async def evaluate(self, expression: str):
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    async def wait_until(self, expression: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(ComfyError):  # no context to evaluate in while the page navigates
                if await self.evaluate(f"Boolean({expression})"):
                    return
            if time.monotonic() > deadline:
                raise ComfyError(f"the page never got to `{expression}` within {timeout:.0f} s; errors: {self.errors}")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

"""Training configuration: one TOML (or JSON) file per stage and model size, then `key=value` overrides.

A file may name another with `extends = "base.toml"` (relative to itself); its keys are read first and
the file's own keys replace them, section by section. Overrides use dotted keys (`optim.lr=3e-5`,
`run.steps=10`); a value is read as JSON when it parses (numbers, true/false, lists, null), else as a
string. Relative paths inside the config resolve from the current directory.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vino_model.errors import VinoInputError
from vino_model.preprocess import valid_frame_count

from .manifest import TASKS
from .world import TWIN_KINDS

STAGES = (0, 1, 2, 3)
TIMESTEP_DENSITIES = ("logit_normal", "uniform")
SCHEDULES = ("cosine", "linear", "constant", "wsd")


@dataclass
class RunConfig:
    stage: int = 0
    out: str = "runs/tiny/stage0"  # checkpoints/, logs/, samples/ and export/ go here
    steps: int = 1000  # optimizer steps
    seed: int = 0
    seconds: float = 0.0  # a time budget for this invocation's set-up (model, prefill, the cache's index), steps and
                          # evaluations (0: none): at the first step past it the run saves, evaluates and exports as
                          # at run.steps (the log says where it stopped; run again, and it goes on from there with a
                          # new budget). Read where the steps settle (every log.every steps, and at each checkpoint),
                          # so a run may go up to log.every - 1 steps past it
    fit_decay: bool = False  # with run.seconds: the rate's decay ends where the budget is expected to end (from this
                             # invocation's step rate, re-estimated every log.every steps), or at run.steps if sooner.
                             # For a stage that gets one machine's seconds, whatever its step rate: its export is
                             # annealed and no seconds are left over. Without run.seconds it changes nothing


@dataclass
class ModelConfig:
    # Starting weights: a VINO file (an earlier stage's export), vino.ckpt, or a HunyuanVideo transformer
    # (diffusers folder, Tencent .pt). None: a randomly initialised MMDiT (stage 0 only).
    init: str | None = None
    preset: str = "tiny"  # architecture of a random init (vino_model.config presets) ...
    mmdit: dict = field(default_factory=dict)  # ... with these MMDiTConfig fields replaced
    reference_area: int = 0  # ... and this reference area (pixels; 0: the preset's)
    num_queries: int = 256  # learnable queries of a freshly made mm_encoder (init without one)
    qwen: str = ""  # Qwen3-VL folder: the VLM (stages 1-3) and the native text encoder (stage 0)
    vae: str = ""  # HunyuanVideo VAE: encodes the latent cache and decodes samples
    # Parameters that train, as prefixes of the exported names (`transformer.`, `mm_encoder.connector.`).
    trainable: list = field(default_factory=lambda: ["transformer."])
    native_layer: int = -3  # stage 0 reads the VLM's language model at this hidden state ...
    native_max_tokens: int = 256  # ... over at most this many caption tokens
    # > 0: the native states become unit-RMS(hidden_states[native_layer]) + this x unit-RMS(token embeddings),
    # so each word stays readable at its own token (a small model's layers can fade a word, as the shape word)
    native_embeddings: float = 0.0
    # Stages 1+: weight of the paper's stage-1 alignment, the mean squared distance (relative to the target's
    # mean square) between the text connector's output at the caption's tokens and the native encoder's states
    native_align: float = 0.0
    gradient_checkpointing: bool = True
    attention: str = "auto"  # auto, math, flash, efficient, cudnn (SDPA); flash4 serves no-grad forwards only
    compile: bool = False  # torch.compile each MMDiT block (small models' steps are bound by kernel launches)
    compile_cache: str = ""  # with compile: a file of compiled graphs, read at the start if it is there and written at
                             # the end (vino_model.speedups), so a run on the same kind of GPU and torch compiles only
                             # what earlier runs did not


@dataclass
class DataConfig:
    manifest: list = field(default_factory=list)  # JSON-lines manifests (training.manifest)
    cache: str = "cache/latents"  # latent cache, shared between runs and stages
    area: int = 480 * 848  # pixel area of targets whose size the user picks (t2i, t2v, ti2v)
    aspect_ratios: list = field(
        default_factory=lambda: [9 / 21, 9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9, 21 / 9]
    )
    frames: list = field(default_factory=lambda: [1, 33, 61, 85])  # target frame counts, 4k+1
    batch_size: int = 1  # micro-batch per GPU; a batch holds one bucket (one target shape)
    image_batch_size: int = 0  # micro-batch of single-frame buckets (0: batch_size). An image holds a fifth of a
                               # 17-frame clip's latent frames, so more of them fill the same step
    tasks: dict = field(default_factory=lambda: {"t2i": 1.0, "t2v": 1.0})  # task -> share of batches
    cooldown_tasks: dict = field(default_factory=dict)  # optim.schedule "wsd": shares that replace those of `tasks`
                                                        # from the cooldown's first step (the trunk keeps the mixture)
    long_caption: float = 1.0  # chance of caption_long, else caption_short
    drop_text: float = 0.1  # each condition is dropped on its own (classifier-free guidance)
    drop_images: float = 0.0  # every reference image but the base of an edit
    drop_video: float = 0.0
    vae_dtype: str = "float32"
    cache_batch: int = 16  # media of one pixel shape the VAE encodes at once when filling the cache
    keep_in_memory: bool = False  # latents, fitted references and VLM inputs stay in RAM once made (small models)
    prefill_workers: int = 0  # processes that make the VLM's reading of each reference before step 0 (keep_in_memory)

    def draws(self, task: str) -> bool:
        """Whether batches of `task` are drawn (it has a share above 0): only those tasks' records are cached."""
        return self.tasks.get(task, 0) > 0


@dataclass
class FlowConfig:
    timestep: str = "logit_normal"  # density of t in x_t = (1 - t) x0 + t noise: logit_normal or uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # then t' = s t / (1 + (s - 1) t), as the sampler shifts
    # A contrast term, weight `contrast` (0: off): contrast_samples[kind] samples of each micro-batch whose long caption
    # has a wrong twin (training.world's TWIN_SWAPS: the same words, with two objects' colours, places or sizes
    # exchanged, a count's other number or one object, or a split background's tones exchanged) go through again
    # under the twin, with the same noise and t, and the term is max(0, contrast_margin[kind] - (twin's loss - own
    # loss)): the plain loss barely tells a caption from its twin (session 28: a twin raised it by 7% of what a wrong
    # colour does), so the model never learnt which goes with which. The "motion" twin keeps the caption and takes
    # another sample's reference video of another motion (training.world.MOTION_TWIN_TASKS)
    contrast: float = 0.0
    contrast_margin: dict = field(default_factory=lambda: dict.fromkeys(TWIN_KINDS, 0.005))  # by twin kind
    contrast_samples: dict = field(default_factory=lambda: dict.fromkeys(TWIN_KINDS, 8))  # rows by twin kind
    # by twin kind: only samples at t >= contrast_min_t[kind] take its twins. Below where a kind's words or motion
    # are drawn, x_t already shows them, and a gap forced there costs the sample's own loss (session 44)
    contrast_min_t: dict = field(default_factory=lambda: dict.fromkeys(TWIN_KINDS, 0.0))
    # An edit's positions (where its target differs from its source: training.model.edit_weights) weigh 1 +
    # edit_focus in its training loss (0: off); evaluation's loss stays the plain mean
    edit_focus: float = 0.0

    def __post_init__(self):
        """A twin kind that a config leaves out is off (0 rows, at any t, margin 0.005): configs written before a
        kind existed (session 53's "new_shape", "new_color", "labels", "order") keep their meaning."""
        for kinds, missing in ((self.contrast_margin, 0.005), (self.contrast_samples, 0), (self.contrast_min_t, 0.0)):
            if isinstance(kinds, dict):
                kinds.update({kind: missing for kind in TWIN_KINDS if kind not in kinds})


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0  # on matrices only; norms, biases and the metaquery never decay
    warmup_steps: int = 100
    schedule: str = "cosine"  # after warm-up: cosine, linear, constant, or wsd (warm-up, stable, decay): flat at lr
                              # until the last `cooldown` of the steps, then down as 1 - sqrt(progress). A wsd run
                              # writes export/trunk.safetensors, its weights where the cooldown begins, which the next
                              # run can go on from at the full rate (an annealed export must be re-warmed first)
    cooldown: float = 0.2  # wsd: the share of the run's steps (to its last, run.fit_decay's too) spent cooling down
    min_lr_ratio: float = 0.1  # the decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    accumulation: int = 1  # micro-batches per optimizer step
    zero_stage: int = 2  # DeepSpeed ZeRO: 2 shards gradients and optimizer states over the GPUs
    bf16: bool = True
    # DeepSpeed's inf/NaN test of every gradient tensor before each step, which skips a step that has one. Off
    # (for small models, where its per-tensor ops were 2,771 of DeepSpeed's 4,783 a step), a step whose gradient
    # norm is not finite stops the run before it saves anything, so the last checkpoint holds the last good weights.
    check_overflow: bool = True
    ema: float = 0.0  # EMA decay of the trained weights (0: off)
    offload_optimizer: bool = False  # Adam states and steps in CPU memory (ZeRO-Offload): 13B on 2 GPUs


@dataclass
class CheckpointConfig:
    every: int = 500  # steps between checkpoints (and one at the end)
    enabled: bool = True  # false: no checkpoint and no export (a throughput measurement of a model too large to save)
    keep: int = 3  # the newest N are kept
    resume: bool = True  # continue from out/checkpoints/latest when there is one
    export_dtype: str = "bfloat16"


@dataclass
class LogConfig:
    every: int = 10  # steps between JSON-lines / TensorBoard records
    tensorboard: bool = True
    progress: bool = True
    profile: int = 0  # from this step, `profile_steps` steps under torch.profiler: logs/profile.txt (0: off)
    profile_steps: int = 10


@dataclass
class EvalConfig:
    every: int = 0  # steps between evaluations of the flow-matching loss at fixed noise (0: off)
    samples: int = 8  # the first N samples of the training index (or of `manifest`'s), spread over its tasks
    manifest: list = field(default_factory=list)  # a fixed evaluation world's manifests (a held-out split): the same
    # set whatever run.seed, none of it trained on; empty: the training index's first samples (each seed's own set)


@dataclass
class SamplesConfig:
    every: int = 0  # steps between sample generations (0: off); also written at the end when on
    tasks: str = ""  # a release-format task file (JSON list of {index, task, caption, ...})
    limit: int = 4  # at most this many entries of it
    steps: int = 30
    width: int = 640
    height: int = 640
    frames: int = 33
    seed: int = 0


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_file(path: Path) -> dict:
    """One config file as nested dicts, its `extends` chain merged under it."""
    try:
        text = path.read_text()
    except FileNotFoundError as err:
        raise VinoInputError(f"config {path} does not exist") from err
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise VinoInputError(f"config {path} is not valid {kind}: {err}") from err
    parent = data.pop("extends", None)
    if parent is None:
        return data
    merged = read_file(path.parent / parent)
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def parse_override(text: str) -> tuple[list[str], object]:
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise VinoInputError(f"override {text!r} is not section.key=value (e.g. optim.lr=3e-5)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def build(data: dict) -> TrainConfig:
    """Nested dicts -> TrainConfig; an unknown section or key is an error naming the known ones."""
    sections = {}
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, values in data.items():
        if name not in known:
            raise VinoInputError(f"config has an unknown section [{name}]; expected one of {sorted(known)}")
        if not isinstance(values, dict):
            raise VinoInputError(f"config section [{name}] must be a table of keys")
        section_type = known[name].default_factory
        defaults = section_type()
        fields = {f.name for f in dataclasses.fields(defaults)}
        for key, value in values.items():
            if key not in fields:
                raise VinoInputError(f"config key {name}.{key} is unknown; [{name}] has {', '.join(sorted(fields))}")
            default = getattr(defaults, key)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                values[key] = float(value)
            elif default is not None and not isinstance(value, type(default)):
                raise VinoInputError(f"config key {name}.{key} is {value!r}; expected a {type(default).__name__}")
        sections[name] = section_type(**values)
    return TrainConfig(**sections)


def load(path, overrides=()) -> TrainConfig:
    data = read_file(Path(path))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    cfg = build(data)
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """Errors that would otherwise surface hours into a run."""
    run, data, model = cfg.run, cfg.data, cfg.model
    if run.stage not in STAGES:
        raise VinoInputError(f"run.stage={run.stage}; expected one of {STAGES}")
    if run.stage > 0 and not model.init:
        raise VinoInputError(
            f"stage {run.stage} starts from trained weights; set model.init (the previous stage's export)"
        )
    if model.init and model.mmdit:
        raise VinoInputError("model.mmdit shapes a random init only; model.init brings its own architecture")
    if cfg.optim.offload_optimizer and cfg.optim.zero_stage == 0:
        raise VinoInputError("optim.offload_optimizer needs optim.zero_stage 1 or 2 (the offloaded states are ZeRO's)")
    if cfg.optim.zero_stage not in (0, 1, 2):
        raise VinoInputError(
            f"optim.zero_stage={cfg.optim.zero_stage}; expected 0, 1 or 2 (ZeRO-3 shards the weights the export reads)"
        )
    if cfg.checkpoint.keep < 1 or cfg.checkpoint.every < 1:
        raise VinoInputError("checkpoint.every and checkpoint.keep must be at least 1")
    if run.seconds < 0:
        raise VinoInputError(f"run.seconds={run.seconds}; expected a time budget in seconds, or 0 for none")
    if data.batch_size < 1 or data.image_batch_size < 0:
        raise VinoInputError(f"data.batch_size={data.batch_size} and data.image_batch_size={data.image_batch_size}; "
                             "expected a batch of at least 1 (image_batch_size 0: the same as batch_size)")
    if not data.manifest:
        raise VinoInputError("data.manifest is empty; list at least one manifest.jsonl")
    if data.prefill_workers < 0 or (data.prefill_workers and not (data.keep_in_memory and run.stage > 0)):
        raise VinoInputError(f"data.prefill_workers={data.prefill_workers}; expected 0, or processes that fill what "
                             "data.keep_in_memory = true keeps, in a stage whose VLM reads the references (1-3)")
    for task, share in data.tasks.items():
        if task not in TASKS:
            raise VinoInputError(f"data.tasks names {task!r}; expected tasks among {', '.join(TASKS)}")
        if not isinstance(share, (int, float)) or share < 0:
            raise VinoInputError(f"data.tasks.{task}={share!r}; expected a share >= 0")
    if not any(share > 0 for share in data.tasks.values()):
        raise VinoInputError("data.tasks gives no task a positive share")
    for task, share in data.cooldown_tasks.items():
        if not data.draws(task) or not isinstance(share, (int, float)) or share < 0:
            raise VinoInputError(f"data.cooldown_tasks.{task}={share!r}; expected a share >= 0 for a task with a "
                                 f"positive share in data.tasks (only those are cached): "
                                 f"{', '.join(t for t in TASKS if data.draws(t))}")
    if data.cooldown_tasks and cfg.optim.schedule != "wsd":
        raise VinoInputError(f"data.cooldown_tasks is set but optim.schedule is {cfg.optim.schedule!r}; only a "
                             "\"wsd\" run has a cooldown")
    if not any(share > 0 for share in {**data.tasks, **data.cooldown_tasks}.values()):
        raise VinoInputError("data.cooldown_tasks leaves no task a positive share in the cooldown")
    if run.stage == 0 and any(task not in ("t2i", "t2v") and share > 0 for task, share in data.tasks.items()):
        raise VinoInputError("stage 0 trains text-to-image/video only; give other tasks share 0 in data.tasks")
    bad_frames = [f for f in data.frames if not valid_frame_count(f)]
    if bad_frames or not data.frames:
        raise VinoInputError(f"data.frames={data.frames}; expected frame counts of 4k+1 (1, 5, 9, ...)")
    margins = cfg.flow.contrast_margin
    if set(margins) != set(TWIN_KINDS) or not all(isinstance(m, (int, float)) for m in margins.values()):
        raise VinoInputError(f"flow.contrast_margin={margins!r}; expected a margin for twin kinds among: "
                             f"{', '.join(TWIN_KINDS)}")
    rows = cfg.flow.contrast_samples
    if set(rows) != set(TWIN_KINDS) or not all(isinstance(n, int) and n >= 0 for n in rows.values()):
        raise VinoInputError(f"flow.contrast_samples={rows!r}; expected a count of rows >= 0 for twin kinds among: "
                             f"{', '.join(TWIN_KINDS)}")
    floors = cfg.flow.contrast_min_t
    if set(floors) != set(TWIN_KINDS) or not all(isinstance(f, (int, float)) and 0 <= f <= 1 for f in floors.values()):
        raise VinoInputError(f"flow.contrast_min_t={floors!r}; expected a t in [0, 1] for twin kinds among: "
                             f"{', '.join(TWIN_KINDS)}")
    if cfg.flow.timestep not in TIMESTEP_DENSITIES:
        raise VinoInputError(f"flow.timestep={cfg.flow.timestep!r}; expected one of {TIMESTEP_DENSITIES}")
    if cfg.optim.schedule not in SCHEDULES:
        raise VinoInputError(f"optim.schedule={cfg.optim.schedule!r}; expected one of {SCHEDULES}")
    if not 0 < cfg.optim.cooldown <= 1:
        raise VinoInputError(f"optim.cooldown={cfg.optim.cooldown}; expected a share of the steps in (0, 1]")
    if not 0 <= cfg.optim.ema < 1:
        raise VinoInputError(f"optim.ema={cfg.optim.ema}; expected a decay in [0, 1) (0 turns EMA off)")
    for name in ("long_caption", "drop_text", "drop_images", "drop_video"):
        if not 0 <= getattr(data, name) <= 1:
            raise VinoInputError(f"data.{name}={getattr(data, name)}; expected a probability in [0, 1]")
    if not model.qwen or not model.vae:
        raise VinoInputError("model.qwen and model.vae must name the Qwen3-VL folder and the VAE file")
    if cfg.samples.every and not cfg.samples.tasks:
        raise VinoInputError("samples.every is set but samples.tasks names no task file")

"""One training stage from its config: the index and latent cache, the trainee in its DeepSpeed engine,
then steps with evaluation, samples and checkpoints, and the export at the end.

Every random draw of a step (batch order, captions, dropout, noise, t) comes from generators keyed by
(seed, rank, step, micro-batch) and the sampler's saved position, so a resumed run repeats exactly the
steps an uninterrupted one would take.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vino_model.errors import VinoInputError
from vino_model.offload import copy_ahead, copy_ahead_grouped
from vino_model.pipeline import parse_dtype
from vino_model.speedups import compiled_graphs, save_compile_cache
from vino_model.vae import VinoVAE

from . import checkpoint, engine, model
from .data import MEDIA_ERRORS, Batch, Context, LatentCache, TrainData, build_index, collate
from .logs import Logger, StepClock, StepProfile
from .manifest import read_manifest
from .prefill import prefill, record_contexts
from .samples import write_samples
from .world import MOTION_TWIN_TASKS, reference_motion

log = logging.getLogger("vino.train")


def model_inputs(batch: Batch, noise, t, device) -> tuple:
    """The batch on `device`, copied without waiting for the GPU (`copy_ahead`), the references one copy a shape."""
    moved = iter(copy_ahead_grouped([r for refs in batch.references for r in refs], device))
    references = [[next(moved) for _ in refs] for refs in batch.references]
    return copy_ahead(batch.latents, device), noise.to(device), copy_ahead(t, device), references, batch.contexts


def train_step(ds, data: TrainData, cfg, step: int, rank: int, device, clock: StepClock) -> tuple:
    """One optimizer step over optim.accumulation micro-batches: (mean loss, still on the device: reading it would
    wait for the GPU; tokens; each twin's (kind, gap: its loss minus its sample's, on the device)). Laps `clock` at
    each phase."""
    losses, tokens, gaps = [], 0, []
    for micro in range(cfg.optim.accumulation):
        rng = np.random.default_rng([cfg.run.seed, rank, step, micro])
        batch = data.next_batch(rng)
        seed = int(rng.integers(2**62))
        t = model.sample_timesteps(cfg.flow, len(batch.tasks), torch.Generator().manual_seed(seed))
        # drawn where it is used: a batch of 768 images' noise took 14 ms of the host's step on the CPU
        noise = torch.randn(batch.latents.shape, generator=torch.Generator(device).manual_seed(seed), device=device)
        twinned = []
        if cfg.flow.contrast:
            batch, noise, t, twinned = with_twins(batch, noise, t, cfg.flow.contrast_samples, cfg.flow.contrast_min_t)
        clock.lap("data")
        loss, count = ds(*model_inputs(batch, noise, t, device))
        clock.lap("forward")
        own = loss[:len(loss) - len(twinned)]
        objective = own.mean()
        if twinned:  # each twin's loss should stand its kind's contrast_margin above its sample's
            gap = loss[len(own):] - own[torch.tensor([i for i, _ in twinned], device=own.device)]
            margin = torch.tensor([cfg.flow.contrast_margin[kind] for _, kind in twinned], device=own.device)
            objective = objective + cfg.flow.contrast * torch.relu(margin - gap).mean()
            gaps.append(([kind for _, kind in twinned], gap.detach().float()))
        ds.backward(objective)
        clock.lap("backward")
        ds.step()
        clock.lap("optimizer")
        losses.append(own.detach().float().mean())
        tokens += count
    return torch.stack(losses).mean(), tokens, gaps


def with_twins(batch: Batch, noise, t, rows: dict, min_t: dict | None = None) -> tuple[Batch, torch.Tensor,
                                                                                     torch.Tensor, list]:
    """The batch with sum(`rows`) of its samples appended again under a wrong twin of their context, with the same
    latents, noise and t, and each twin's (its sample's index, its kind); the batch as it is when none has a twin.
    A caption's twins are `Context.twins`; an "order" twin there reads the sample's two images in the other order
    (ti2v: they are its only references); a "motion" twin reads the sample under the reference video of the batch's
    next sample of another motion (`motion_partners`). Each kind takes up to `rows[kind]` twins of its own, from the
    noisiest sample down, where a picture's layout is drawn (session 30: exchanging two objects' places cost 0.000 at
    t <= 0.83 and 0.016-0.067 at t >= 0.95); rows a kind leaves empty go to the noisiest twins not yet taken, of any
    kind with rows (a kind of 0 rows is off), then again from the first taken, so a batch of twins always grows by
    the same count (one size a bucket for compiled blocks). Session 32 took the noisiest twins whatever their kind:
    binding and places, which two-object captions all have, held 55% of t2i's rows, and the sizes twin (17% of
    t2i's) did not move its gap. A motion twin's key names its sample's context and the other's target, so the
    encoder's memo keeps each pairing once.
    A kind's twins come only from samples at t >= `min_t`[kind] (without `min_t`, at any t)."""
    noisiness, floors = t.tolist(), min_t or {}
    pairs = [(i, twin) for i, context in enumerate(batch.contexts) for twin in context.twins]
    pairs += [(i, ("motion", j)) for i, j in motion_partners(batch.contexts)]
    pairs = [(i, twin) for i, twin in pairs if rows.get(twin[0], 0) > 0 and noisiness[i] >= floors.get(twin[0], 0.0)]
    count = sum(rows.values())
    if not pairs or count <= 0:
        return batch, noise, t, []
    pairs.sort(key=lambda pair: -noisiness[pair[0]])  # stable: a sample's twins stay in their order
    chosen = [pair for kind, quota in rows.items() for pair in [p for p in pairs if p[1][0] == kind][:quota]]
    chosen += [pair for pair in pairs if pair not in chosen][:count - len(chosen)]
    chosen = [chosen[k % len(chosen)] for k in range(count)]
    which = [i for i, _ in chosen]
    contexts, references = [], []
    for i, (kind, twin) in chosen:
        own = batch.contexts[i]
        if kind == "motion":
            context, refs = motion_twin(own, batch.references[i], batch.contexts[twin], batch.references[twin])
        elif kind == "order":
            context, refs = order_twin(own, batch.references[i])
        else:
            key = None if own.key is None else (own.key[0], twin, *own.key[2:])
            context, refs = Context(twin, own.images, own.video, own.video_fps, key), batch.references[i]
        contexts.append(context)
        references.append(refs)
    grown = Batch(torch.cat([batch.latents, batch.latents[which]]), batch.references + references,
                  batch.contexts + contexts, batch.tasks + [batch.tasks[i] for i in which])
    index = torch.tensor(which, device=noise.device)
    return grown, torch.cat([noise, noise[index]]), torch.cat([t, t[which]]), [(i, kind) for i, (kind, _) in chosen]


def motion_partners(contexts: list) -> list[tuple[int, int]]:
    """(i, j) for each context i with a reference motion (`Context.motion`): j is the next context after it, going
    round, whose reference video moves another way."""
    moving = [i for i, context in enumerate(contexts) if context.motion is not None]
    pairs = []
    for k, i in enumerate(moving):
        others = (moving[(k + step) % len(moving)] for step in range(1, len(moving)))
        j = next((j for j in others if contexts[j].motion != contexts[i].motion), None)
        if j is not None:
            pairs.append((i, j))
    return pairs


def motion_twin(own: Context, references: list, other: Context, other_references: list) -> tuple[Context, list]:
    """A sample's context and references with the other sample's reference video in place of its own, as the VLM
    and the MMDiT read it (the references' last)."""
    key = None if own.key is None or other.key is None else (*own.key[:3], other.key[0])
    return (Context(own.text, own.images, other.video, other.video_fps, key),
            references[:-1] + other_references[-1:])


def order_twin(own: Context, references: list) -> tuple[Context, list]:
    """A ti2v sample's context and references with its two images (and so their latents) in the other order, as the
    VLM and the MMDiT read them."""
    key = None if own.key is None else (own.key[0], own.key[1], own.key[2][::-1], *own.key[3:])
    return Context(own.text, own.images[::-1], own.video, own.video_fps, key), references[::-1]


class Window:
    """What the steps since the last settled one left on the device: their losses and gradient norms, read back
    together (`settle`), so that a step does not wait for the GPU and the host runs ahead of it."""

    def __init__(self):
        self.losses, self.norms, self.tokens, self.gaps = [], [], 0, []

    def add(self, step: int, loss: torch.Tensor, tokens: int, grad_norm, gaps=()) -> None:
        self.losses.append(loss)
        self.norms.append((step, grad_norm))
        self.tokens += tokens
        self.gaps += gaps

    def settle(self, check_overflow: bool, latest, folder) -> tuple[float, int, int, float | None, dict]:
        """(the steps' summed loss, their count, their tokens, the last step's gradient norm, the mean gap of each
        twin kind's rows as twin_gap_KIND), and a new window; raises at the first step whose norm was not finite
        while optim.check_overflow is off (that update was applied)."""
        total = float(torch.stack(self.losses).sum())  # waits for the GPU
        by_kind = {}
        if self.gaps:
            kinds = [kind for kinds, _ in self.gaps for kind in kinds]
            for kind, gap in zip(kinds, torch.cat([gap for _, gap in self.gaps]).tolist()):
                by_kind.setdefault(f"twin_gap_{kind}", []).append(gap)
        norms = [(step, None if norm is None else float(norm)) for step, norm in self.norms]
        for step, norm in norms:
            if not (check_overflow or norm is None or math.isfinite(norm)):
                raise VinoInputError(
                    f"step {step}: the gradient norm is {norm}, and with optim.check_overflow = false that update "
                    f"was applied: the run stops without saving. Run again to go on from the last checkpoint "
                    f"({latest(folder) or 'none yet'}), with optim.check_overflow = true to skip such steps"
                )
        count, tokens = len(self.losses), self.tokens
        self.losses, self.norms, self.tokens, self.gaps = [], [], 0, []
        return total, count, tokens, norms[-1][1], {name: sum(g) / len(g) for name, g in by_kind.items()}


@torch.no_grad()
def losses_under(trainee, batch: Batch, noise, t, contexts: list, chunk: int, device) -> list[float]:
    """The loss of a one-sample batch under each of `contexts`, at the same noise and t, up to `chunk` contexts
    in one forward."""
    losses = []
    for start in range(0, len(contexts), chunk):
        part = contexts[start:start + chunk]
        n = len(part)
        grouped = Batch(batch.latents.repeat(n, 1, 1, 1, 1), batch.references * n, part, batch.tasks * n)
        loss, _ = trainee(*model_inputs(grouped, noise.repeat(n, 1, 1, 1, 1), t.repeat(n), device))
        losses += loss.float().tolist()
    return losses


def evaluate(trainee, data: TrainData, samples, cfg, rank: int, world: int, device) -> dict[str, float]:
    """Flow-matching loss over a fixed set: no dropout, fixed noise, t spread evenly over (0, 1).

    Also `eval_text_gap`: over the set's text-only samples (t2i, t2v), the loss with another sample's
    caption minus the loss with its own. Near 0, the model ignores its text, however low the loss. And
    `eval_word_gap_NAME` for each caption a record's meta lists under "word_swaps" (`training.world` changes one
    word: the shape, the colour, the size): that caption's loss minus the long caption's, which tells which
    words the model reads. And `eval_motion_gap` (`motion_gap`), where the set has samples whose reference video
    alone sets the target's motion."""
    total, count, gap, gaps = 0.0, 0, 0.0, 0
    text_only = [j for j, s in enumerate(samples) if not s.images and s.video is None]
    words = sorted({name for j in text_only for name in samples[j].record.meta.get("word_swaps", {})})
    word_gap, word_count = dict.fromkeys(words, 0.0), dict.fromkeys(words, 0)
    for i in range(rank, len(samples), world):
        rng = np.random.default_rng([cfg.run.seed, len(samples), i])
        try:
            loaded = data.load(samples[i], rng, dropout=False)
        except MEDIA_ERRORS:
            continue
        batch = collate([loaded])
        noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(i))
        t = torch.tensor([(i + 0.5) / len(samples)])
        contexts = list(batch.contexts)  # the caption drawn (no dropout): the sample's loss
        compare = i in text_only and len(text_only) > 1
        if compare:  # the next text-only sample's caption
            other = samples[text_only[(text_only.index(i) + 1) % len(text_only)]].record
            contexts.append(Context(other.caption_long, [], None, None))
        swaps = samples[i].record.meta.get("word_swaps", {}) if i in text_only else {}
        if swaps:  # the swaps change a word of the long caption: compare with it, whichever caption was drawn
            captions = [samples[i].record.caption_long, *swaps.values()]
            contexts += [Context(caption, [], None, None) for caption in captions]
        losses = losses_under(trainee, batch, noise, t, contexts, cfg.data.batch_size, device)
        total, count = total + losses[0], count + 1
        if compare:
            gap, gaps = gap + losses[1] - losses[0], gaps + 1
        if swaps:
            own = losses[1 + compare]
            for name, swapped in zip(swaps, losses[2 + compare:]):
                word_gap[name], word_count[name] = word_gap[name] + swapped - own, word_count[name] + 1
    motion, _, moved = motion_gap(trainee, data, samples, rank, world, device)
    reduced = engine.mean([total, count, gap, gaps, motion, moved] + [word_gap[w] for w in words] +
                          [word_count[w] for w in words], device)
    total, count, gap, gaps, motion, moved = reduced[:6]
    result = {"eval_loss": total / max(count, 1), "eval_text_gap": gap / max(gaps, 1)}
    if moved:
        result["eval_motion_gap"] = motion / moved
    for name, summed, seen in zip(words, reduced[6:6 + len(words)], reduced[6 + len(words):]):
        result[f"eval_word_gap_{name}"] = summed / max(seen, 1)
    return result


# Where the object's path is drawn: the committed seed's held-out gap was 0.000 at t 0.6 and 0.8, where x_t shows the
# path, 0.008 at 0.9, 0.027 at 0.95, 0.167 at 0.98 and 0.177 at 1 (session 44). Until then it was (0.6, 0.9), whose
# 0.004 read as a model that ignores the video
MOTION_GAP_TIMES = (0.95, 0.98, 1.0)


class Loaded(NamedTuple):
    """A sample as `TrainData.load` gives it, and the sample."""
    sample: object
    x0: torch.Tensor
    references: list
    context: Context
    task: str


def motion_samples(data: TrainData, samples, long_caption: bool = False) -> list[Loaded]:
    """`Loaded` for each of `samples` whose reference video alone sets the target's motion (`MOTION_TWIN_TASKS`; the
    motion twins' samples: `TrainData.load`), loaded without dropout, under its short caption (`long_caption`: its
    long one, the prompt that sampling reads), with the video's motion on the context (`Context.motion`, which
    `motion_partners` pairs by). Samples whose media fail to read are left out."""
    loaded = []
    for sample in samples:
        record = sample.record
        if record.task not in MOTION_TWIN_TASKS or sample.video is None:
            continue
        try:
            x0, references, context, task = data.load(sample, np.random.default_rng(0), dropout=False)
        except MEDIA_ERRORS:
            continue
        caption = record.caption_long if long_caption else record.caption_short
        key = None if context.key is None else (context.key[0], caption, *context.key[2:])
        context = Context(caption, context.images, context.video, context.video_fps, key,
                          motion=reference_motion(record.meta))
        loaded.append(Loaded(sample, x0, references, context, task))
    return loaded


def motion_gap(trainee, data: TrainData, samples, rank: int, world: int, device,
               times=MOTION_GAP_TIMES) -> tuple[float, float, int]:
    """The summed loss increase when a sample of `motion_samples` is read under the next such sample's video of
    another motion instead of its own (`motion_partners`, `motion_twin`), at each of `times`; the summed loss
    under its own video; and the count of those comparisons. The gap is about 0 for a model that does not take the
    motion from the video."""
    loaded = motion_samples(data, samples)
    summed, own_summed, count = 0.0, 0.0, 0
    for n, (i, j) in enumerate(motion_partners([one.context for one in loaded])):
        if n % world != rank:
            continue
        _, x0, references, own, task = loaded[i]
        twin, swapped = motion_twin(own, references, loaded[j].context, loaded[j].references)
        noise = torch.randn((1, *x0.shape), generator=torch.Generator().manual_seed(n))
        for at in times:
            t = torch.tensor([at])
            losses = [losses_under(trainee, Batch(x0[None], [refs], [context], [task]), noise, t, [context], 1,
                                   device)[0] for refs, context in ((references, own), (swapped, twin))]
            summed, own_summed, count = summed + losses[1] - losses[0], own_summed + losses[0], count + 1
    return summed, own_summed, count


def evaluate_in_eval_mode(ds, data: TrainData, samples, cfg, rank: int, world: int, device) -> dict[str, float]:
    """`evaluate` with the trainee in eval mode (training-only terms off), back in train mode after. Compiled
    blocks run eagerly here: the set's one-sample, no-grad forwards would each compile graphs of their own (the
    step-0 evaluation took 63 s of stage 3's 827 in session 22) for a few seconds of use a run."""
    ds.eval()
    try:
        with torch.compiler.set_stance("force_eager"):
            return evaluate(ds.module, data, samples, cfg, rank, world, device)
    finally:
        ds.train()


def peak_memory(device) -> dict:
    """{"gpu_peak_gib": the most this rank's GPU has held since the start} (a host counter: no sync); {} on a CPU."""
    if torch.device(device).type != "cuda":
        return {}
    return {"gpu_peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


class Trunk:
    """optim.schedule = "wsd": the weights where the cooldown begins (export/trunk.safetensors), written once. The
    next run goes on from them at the full rate: from an annealed export, each stage-3 run's re-warm had cost it
    most of its steps (sessions 16-22: the evaluation loss climbed 8-30% and took 500-1,000 steps to come back)."""

    def __init__(self, path: Path, cfg, config, rank: int, logger: Logger):
        self.path, self.cfg, self.config, self.rank, self.logger = path, cfg, config, rank, logger

    def due(self, factor, step: int, ended: bool = False) -> bool:
        """Whether the trunk is to be written now: at the cooldown's first step, or at the end of a run that never
        reached it. Fixes the cooldown's start there, so later estimates of the last step no longer move it."""
        if self.cfg.optim.schedule != "wsd" or factor.cooling_from is not None:
            return False
        if not ended and step < engine.cooldown_start(factor, self.cfg.optim):
            return False
        factor.cooling_from = step
        return True

    def write(self, ds, step: int, state: dict | None = None) -> None:
        """Export the trunk (on rank 0): `state`, when the caller has already taken the weights out, else ds's."""
        if self.rank == 0 and self.cfg.checkpoint.enabled:
            state = ds.module.export_state() if state is None else state
            checkpoint.export(state, self.config, self.path, self.cfg.checkpoint.export_dtype)
            self.logger.write(step, event="trunk")
            self.logger.message(f"step {step}: the trunk, where the cooldown begins: {self.path}")


def train(cfg) -> Path:
    """Run the stage of `cfg` to cfg.run.steps (resuming from its latest checkpoint); returns the export's path
    (written unless checkpoint.enabled is false)."""
    rank, world, device = engine.init_distributed()
    out = Path(cfg.run.out)
    seed = cfg.run.seed
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)

    read = [*cfg.data.manifest, *(cfg.eval.manifest if cfg.eval.every else [])]  # an evaluation that is off reads none
    missing = [m for m in read if not Path(m).is_file()]
    if missing:  # before anything is built or written
        raise VinoInputError(f"manifest(s) {missing} of data.manifest / eval.manifest: no such file; render the world "
                             f"first (python -m training.world; scripts/train_embedded.sh makes the embedded ones)")
    begun = time.monotonic()  # run.seconds count from here: the prefill and the index take steps' time
    trainee, config = model.build(cfg)
    vae = VinoVAE.load(cfg.model.vae, device=device, dtype=parse_dtype(cfg.data.vae_dtype))
    cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, cfg.data.vae_dtype, cfg.data.keep_in_memory)
    records = [record for manifest in cfg.data.manifest for record in read_manifest(manifest)]
    fitted, filled = {}, None
    if cfg.data.prefill_workers:  # before the index, which waits for processes still filling the cache
        contexts = record_contexts(records, cfg.data, config.reference_area)
        filled = prefill(contexts, fitted, trainee.encoder, cfg.model.qwen, config.reference_area,
                         cfg.data.prefill_workers)
    waited = cache.wait_for_fillers(cfg.data.manifest)
    samples, _ = build_index(records, cfg.data, cache, config.reference_area, rank, world, engine.gather)
    data = TrainData(samples, cache, cfg.data, config.reference_area, seed, rank, world, read_media=cfg.run.stage > 0)
    if data.fitted is not None:
        data.fitted.update(fitted)
    log.info("stage %d: %d samples in %d buckets; %s trainable parameters", cfg.run.stage, len(samples),
             len({s.shape for s in samples}), f"{sum(p.numel() for p in trainee.parameters() if p.requires_grad):,}")

    ds = engine.build_engine(cfg, trainee)
    factor = ds.lr_scheduler.lr_lambdas[0]
    ema = engine.EMA(ds.module, cfg.optim.ema) if cfg.optim.ema else None
    folder = out / "checkpoints"
    step = 0
    resume_from = checkpoint.latest(folder) if cfg.checkpoint.resume else None
    resharded_from = 0
    if resume_from is not None:
        trainer, resharded = checkpoint.load(ds, resume_from, ema, rank, world)
        step = trainer["step"]
        data.sampler.state = trainer["sampler"]
        data.skipped = trainer["skipped"] if rank == 0 else 0  # the count over all ranks
        factor.cooling_from = trainer.get("cooling_from")
        if resharded:  # the checkpoint rewritten in the new ranks' cut, and fresh RNG streams for them
            resharded_from = checkpoint.written_by(resume_from)
            fresh = seed + rank + 7919 * step  # none of the streams that a run's start seeds
            torch.manual_seed(fresh)
            np.random.seed(fresh)
            random.seed(fresh)
            checkpoint.save(ds, folder, step, {k: v for k, v in trainer.items() if k != "step"}, ema,
                            cfg.checkpoint.keep, rank)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    logger = Logger(out, cfg, step, enabled=rank == 0)
    eval_set = []
    if cfg.eval.every:
        evaluated = None
        if cfg.eval.manifest:  # its latents are cached here (a few samples), with the training index's
            evaluated, _ = build_index([r for manifest in cfg.eval.manifest for r in read_manifest(manifest)],
                                       cfg.data, cache, config.reference_area, rank, world, engine.gather)
        eval_set = data.eval_samples(cfg.eval.samples, evaluated)
    logger.write(step, event="resume" if resume_from else "start", samples=len(samples), ranks=world,
                 set_up_seconds=round(time.monotonic() - begun, 1), waited_for_fills=round(waited, 1),
                 eval_samples=len(eval_set), **({"resharded_from": resharded_from} if resharded_from else {}))

    ds.train()
    clock, window, values = StepClock(), Window(), {}
    profile = StepProfile(out, cfg.log.profile, cfg.log.profile_steps, enabled=rank == 0)
    out_of_time = False
    if filled:
        logger.write(step, event="prefill", **filled)
        logger.message(f"prefill: the references of {filled['contexts']} contexts, {filled['media']} media read by "
                       f"the vision tower, in {filled['seconds']} s")
    fit = engine.DecayFit(factor, cfg.run, step)
    exported = out / "export" / "vino.safetensors"
    trunk = Trunk(exported.with_name("trunk.safetensors"), cfg, config, rank, logger)
    while step < cfg.run.steps and not out_of_time:
        if eval_set and step % cfg.eval.every == 0:
            logger.write(step, **evaluate_in_eval_mode(ds, data, eval_set, cfg, rank, world, device))
        profile.before(step)
        started = time.perf_counter()
        clock.start()
        loss, tokens, gaps = train_step(ds, data, cfg, step, rank, device, clock)
        if ema is not None:
            ema.update(step)
            clock.lap("ema")
        step += 1
        window.add(step, loss, tokens, ds.get_global_grad_norm(), gaps)
        saving = cfg.checkpoint.enabled and (step % cfg.checkpoint.every == 0 or step == cfg.run.steps)
        if step % cfg.log.every == 0 or step == cfg.run.steps or saving:  # the steps since the last such one settle
            loss, count, tokens, grad_norm, twin_gaps = window.settle(cfg.optim.check_overflow, checkpoint.latest,
                                                                      folder)
            clock.lap("wait")
            # loss, tokens, skipped: ranks' means, so sums below; the ranks' mean time, so that they all stop here
            loss, tokens, skipped, spent = engine.mean([loss, tokens, data.skipped, time.monotonic() - begun], device)
            out_of_time = 0 < cfg.run.seconds <= spent
            logger.settle(loss, round(tokens * world), count)
            prepared = ds.module.encoder.prepared_count  # this rank's, as are the twin gaps
            values = {"grad_norm": grad_norm, "skipped": round(skipped * world), **twin_gaps,
                      "memo_misses": prepared["misses"] / count, "ms_prepare": 1000 * prepared["seconds"] / count}
            prepared.update(misses=0, seconds=0.0)
            decay_end = fit.update(step, spent)
            if decay_end is not None:
                values["decay_end"] = decay_end
            clock.lap("reduce")
        if trunk.due(factor, step):
            trunk.write(ds, step)
            data.sampler.cool()
        logger.step(step, time.perf_counter() - started, clock.phases, lr=ds.get_lr()[0], **values,
                    **peak_memory(device))
        profile.after(step)
        if cfg.samples.every and step % cfg.samples.every == 0 and rank == 0:
            written = write_samples(ds.module, vae, config, cfg.samples, step, out, device)
            logger.message(f"step {step}: {len(written)} samples in {written[0].parent if written else '-'}")
        if saving or (cfg.checkpoint.enabled and out_of_time):
            trainer = {"sampler": data.sampler.state, "skipped": round(skipped * world), "stage": cfg.run.stage,
                       "cooling_from": factor.cooling_from}
            checkpoint.save(ds, folder, step, trainer, ema, cfg.checkpoint.keep, rank)
    if out_of_time and step < cfg.run.steps:
        logger.write(step, event="out of time")
        logger.message(f"run.seconds={cfg.run.seconds:g} spent at step {step} of {cfg.run.steps}: exporting")
    if eval_set:
        logger.write(step, **evaluate_in_eval_mode(ds, data, eval_set, cfg, rank, world, device))

    if rank == 0 and cfg.checkpoint.enabled:
        state = ds.module.export_state()
        checkpoint.export(state, config, exported, cfg.checkpoint.export_dtype)
        if trunk.due(factor, step, ended=True):  # the run never cooled: its last weights are its trunk
            trunk.write(ds, step, state)
        if ema is not None:
            checkpoint.export({**state, **ema.state_dict()}, config, exported.with_name("vino-ema.safetensors"),
                              cfg.checkpoint.export_dtype)
        logger.message(f"exported {exported}")
    profile.write(step)
    if rank == 0 and cfg.model.compile and cfg.model.compile_cache:
        written, graphs = save_compile_cache(cfg.model.compile_cache), compiled_graphs()
        logger.write(step, event="compile cache", bytes=written, **{f"graphs_{k}": v for k, v in graphs.items()})
        logger.message(f"compile cache {cfg.model.compile_cache}: {written / 1e6:.1f} MB written; graphs {graphs}")
    engine.barrier()
    logger.close()
    return exported

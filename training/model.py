"""Model setup: what DeepSpeed wraps in each stage, which parameters train, and the flow-matching loss.

Stage 0 (base): a randomly initialised MMDiT learns text-to-image/video from a native text encoder, the
frozen Qwen3-VL's language model over the bare caption read at hidden_states[-3] (HunyuanVideo reads
its LLaVA the same way), so the MMDiT's text_dim is the VLM's hidden size.
Stages 1-3: the frozen Qwen3-VL reads the interleaved context; the metaquery and the connectors
(`mm_encoder`) turn it into the MMDiT's text tokens and boundary tokens (`vino_model.encoder`).
`model.trainable` names what trains, as prefixes of the exported names.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig

from vino_model.checkpoint import join_vino_state, load_vino_weights
from vino_model.config import EncoderConfig, VinoConfig, preset
from vino_model.encoder import InterleavedEncoder, MMEncoder, right_pad
from vino_model.errors import VinoInputError
from vino_model.mmdit import AdaModulation, VinoMMDiT
from vino_model.pipeline import build_mm_encoder, build_mmdit
from vino_model.sampler import GUIDANCE_INPUT, TIMESTEP_SCALE, shift_time
from vino_model.speedups import compile_blocks, load_compile_cache

EXPORTED = ("transformer.", "mm_encoder.")  # the prefixes of the layout Load VINO reads


class NativeTextEncoder:
    """Stage 0's text encoder: the VLM's language model over the bare caption and its end-of-turn token
    (so an empty caption still has a token), read at hidden_states[layer]. With `embeddings` > 0, each token's
    state is scaled to unit RMS and `embeddings` x its unit-RMS token embedding is added. Frozen; shares the
    VLM's weights."""

    def __init__(self, language_model: nn.Module, tokenizer, layer: int, max_tokens: int, embeddings: float = 0.0):
        self.language_model, self.tokenizer, self.layer, self.max_tokens = language_model, tokenizer, layer, max_tokens
        self.embeddings = embeddings
        self.ids: dict[str, list[int]] = {}  # caption -> its tokens: a run reads the same captions epoch after epoch

    def caption_ids(self, text: str) -> list[int]:
        """The caption's tokens, without the end-of-turn token the encoder appends."""
        if text not in self.ids:
            self.ids[text] = self.tokenizer(text, truncation=True, max_length=self.max_tokens - 1).input_ids
        return self.ids[text]

    def __call__(self, texts: list[str]) -> list[torch.Tensor]:
        """[L_i, hidden] for each caption."""
        states, _, lengths = self.padded(texts)
        return [row[:n] for row, n in zip(states, lengths)]

    @torch.no_grad()
    def padded(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The captions' states [B, L, hidden], read in one batch padded after each caption (so the causal model
        gives its tokens what it gives them alone), their mask [B, L] (bool, on the model's device) and each
        caption's token count (on the host)."""
        rows = [self.caption_ids(t) + [self.tokenizer.eos_token_id] for t in texts]
        ids, mask = right_pad(rows, self.tokenizer.pad_token_id)
        device = self.language_model.device
        mask = mask.to(device)
        hidden = self.language_model(input_ids=ids.to(device), attention_mask=mask,
                                     output_hidden_states=True).hidden_states
        states = hidden[self.layer]
        if self.embeddings:
            unit = [F.rms_norm(h, (h.shape[-1],), eps=1e-6) for h in (states, hidden[0])]
            states = unit[0] + self.embeddings * unit[1]
        return states, mask.bool(), [len(row) for row in rows]


def find_last(sequence: list[int], part: list[int]) -> int | None:
    """Where `part` last starts in `sequence` (None if nowhere or empty)."""
    if not part:
        return None
    for start in range(len(sequence) - len(part), -1, -1):
        if sequence[start: start + len(part)] == part:
            return start
    return None


class Trainee(nn.Module):
    """The MMDiT and the context reader; forward returns the training loss of each sample: flow matching,
    plus `align` x the connector's distance to the native text encoder when that is on (model.native_align).
    In training, an edit's positions weigh 1 + `focus` in its flow-matching loss (`edit_weights`)."""

    def __init__(self, transformer: VinoMMDiT, encoder: InterleavedEncoder, native: NativeTextEncoder | None,
                 teacher: NativeTextEncoder | None = None, align: float = 0.0, focus: float = 0.0):
        super().__init__()
        self.transformer = transformer
        self.encoder = encoder
        self.native = native  # stage 0: feeds the MMDiT
        self.teacher, self.align = teacher, align  # stages 1+: the connector's alignment target
        self.focus = focus

    def alignment(self, contexts, input_ids: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """Per sample: mean squared distance between the text connector's output at the caption's tokens and
        the native encoder's states of the caption, over the states' mean square; 0 without a caption.
        input_ids: each sample's prompt; text: the connector's outputs [B, L, D], each row starting with its prompt.
        One gather for the whole batch."""
        targets, *_ = self.teacher.padded([c.text for c in contexts])  # each row starts with its caption's tokens
        rows, got_at, want_at = [], [], []
        for b, (context, prompt) in enumerate(zip(contexts, input_ids)):
            ids = self.teacher.caption_ids(context.text)
            start = find_last(prompt.tolist(), ids)
            if start is not None:
                rows += [b] * len(ids)
                got_at += range(start, start + len(ids))
                want_at += range(len(ids))
        device = text.device
        rows = torch.tensor(rows, dtype=torch.long, device=device)
        got = text[rows, torch.tensor(got_at, dtype=torch.long, device=device)].float()
        want = targets[rows, torch.tensor(want_at, dtype=torch.long, device=device)].float()

        def per_sample(values):  # the sum over each sample's caption tokens of their mean square
            return torch.zeros(len(contexts), device=device).index_add_(0, rows, values.pow(2).mean(dim=-1))

        return per_sample(got - want) / per_sample(want).clamp_min(1e-6)

    def read(self, contexts) -> tuple[torch.Tensor, torch.Tensor, list[int], list, torch.Tensor | None]:
        """Text tokens [B, L, text_dim] (padded), their mask [B, L], each sample's count of them (known on the
        host: counting the mask would wait for the GPU), per-sample boundary tokens and the per-sample alignment
        term (None when off)."""
        aligned = None
        dtype = self.transformer.proj_out.weight.dtype
        if self.native is not None:
            text, mask, lengths = self.native.padded([c.text for c in contexts])
            return text.to(dtype), mask, lengths, [None] * len(contexts), aligned
        keys = [c.key for c in contexts] if all(c.key is not None for c in contexts) else None
        # The MMDiT reads its text tokens without positions, so the padding may sit between prompt and queries
        encoded = self.encoder.encode_batch([(c.text, c.images, c.video, c.video_fps) for c in contexts], keys)
        text = encoded.text_states.to(dtype)
        boundary = [b if b.shape[0] else None for b in encoded.boundary_tokens]
        if self.teacher is not None and self.align and self.training:  # a training term: not in eval_loss
            aligned = self.alignment(contexts, encoded.input_ids, text)
        queries = self.encoder.mm_encoder.metaquery.shape[0]
        return text, encoded.mask, [len(ids) + queries for ids in encoded.input_ids], boundary, aligned

    def forward(self, x0, noise, t, references, contexts):
        """x0, noise: [B, C, T, H, W]; t: [B] in (0, 1). Returns (loss [B], tokens through the MMDiT)."""
        text, mask, lengths, boundary, aligned = self.read(contexts)
        t5 = t.view(-1, 1, 1, 1, 1)
        noisy = (1 - t5) * x0 + t5 * noise  # x_t
        guidance = torch.full_like(t, GUIDANCE_INPUT)
        padded = len(set(lengths)) > 1
        velocity = self.transformer(noisy, t * TIMESTEP_SCALE, text, mask if padded else None, references, boundary,
                                    guidance, text_padded=padded)
        error = (velocity.float() - (noise - x0)).pow(2).mean(dim=1)  # target v = noise - x0; [B, T, H, W]
        if self.focus and self.training:  # a training term: eval_loss stays the plain mean
            weights = edit_weights(x0, references, self.focus)
            loss = (error * weights).mean(dim=(1, 2, 3)) / weights.mean(dim=(1, 2, 3))
        else:
            loss = error.mean(dim=(1, 2, 3))
        if aligned is not None:
            loss = loss + self.align * aligned
        return loss, image_tokens(self.transformer.cfg.patch_size, x0, references) + sum(lengths)

    def export_state(self) -> dict[str, torch.Tensor]:
        """`transformer.*` and `mm_encoder.*`: the layout Load VINO reads."""
        return join_vino_state(self.transformer.state_dict(), self.encoder.mm_encoder.state_dict())


EDIT_MARGIN = 0.25  # an edit's positions: where the target's latent stands this far above its median distance
                   # from its source's (mean over channels of |x0 - source|)
EDIT_SHARE = 0.5  # a sample is an edit where at most this share of its positions stand EDIT_MARGIN from the source


def edit_weights(x0, references, focus: float) -> torch.Tensor:
    """Per-position loss weights [B, T, H, W]: 1 + `focus` where a sample's target differs from its source, 1
    elsewhere. A sample's source is its last reference of the target's shape (the edited image or video: ti2i's
    image, ti2i_ref's Image 2, tv2v's and tiv2v's video, clone's video); a sample without one, or whose target
    differs from it on more than EDIT_SHARE of the positions (a background changed), weighs 1 throughout.
    Session 54's video replacements kept the old object's shape in the new colour: an object is a tenth of the
    latent and the part of it where two shapes differ a fraction of that, so the plain mean barely paid for it."""
    shape = tuple(x0.shape[1:])
    rows = [b for b, refs in enumerate(references) if any(tuple(r.shape) == shape for r in refs)]
    weights = torch.ones(x0.shape[:1] + x0.shape[2:], device=x0.device, dtype=torch.float32)
    if not rows or not focus:
        return weights
    sources = torch.stack([[r for r in references[b] if tuple(r.shape) == shape][-1] for b in rows])
    distance = (x0[rows].float() - sources.float()).abs().mean(dim=1)  # [n, T, H, W]
    median = distance.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    edit = (distance > EDIT_MARGIN).float().mean(dim=(1, 2, 3), keepdim=True) <= EDIT_SHARE
    edited = (distance > median + EDIT_MARGIN).float() * edit
    weights[rows] = 1 + focus * edited
    return weights


def export_name(name: str) -> str | None:
    """The exported name of a Trainee parameter (None for the frozen VLM)."""
    if name.startswith("encoder.mm_encoder."):
        return name[len("encoder."):]
    return name if name.startswith("transformer.") else None


def image_tokens(patch, x0, references) -> int:
    """Tokens of the image streams: the noisy latents, every reference latent and its two boundary tokens."""
    per_latent = lambda shape: shape[-3] * shape[-2] * shape[-1] // (patch[0] * patch[1] * patch[2])  # noqa: E731
    return per_latent(x0.shape) * x0.shape[0] + sum(per_latent(r.shape) + 2 for refs in references for r in refs)


def sample_timesteps(flow, count: int, generator: torch.Generator) -> torch.Tensor:
    """t in (0, 1) from the configured density, then shifted as the sampler shifts: [count]."""
    if flow.timestep == "logit_normal":
        t = torch.sigmoid(torch.randn(count, generator=generator) * flow.logit_std + flow.logit_mean)
    else:
        t = torch.rand(count, generator=generator)
    return shift_time(t, flow.shift)


def fresh_mmdit(config, seed: int) -> VinoMMDiT:
    """A random MMDiT whose blocks start as identities (adaLN gates and output zero, as in DiT)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mmdit = VinoMMDiT(config)
    for module in [m for m in mmdit.modules() if isinstance(m, AdaModulation)] + [mmdit.proj_out]:
        module = module.linear if isinstance(module, AdaModulation) else module
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
    return mmdit


def fresh_mm_encoder(config: VinoConfig, seed: int) -> MMEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, mmdit = config.encoder, config.mmdit
        return MMEncoder(encoder.vlm_hidden, encoder.num_queries, mmdit.text_dim, mmdit.hidden)


def vlm_hidden(qwen_folder) -> int:
    try:
        return AutoConfig.from_pretrained(qwen_folder).text_config.hidden_size
    except (OSError, ValueError, AttributeError) as err:
        raise VinoInputError(f"model.qwen={qwen_folder} is not a Qwen3-VL folder ({err})") from err


def build(cfg) -> tuple[Trainee, VinoConfig]:
    """The trainee of cfg.run.stage with cfg.model.trainable set to train, and the config to export with."""
    m, stage, seed = cfg.model, cfg.run.stage, cfg.run.seed
    dtype = torch.bfloat16 if cfg.optim.bf16 else torch.float32
    hidden = vlm_hidden(m.qwen)
    mm_state = None
    if m.init:
        config, transformer_state, mm_state = load_vino_weights(m.init)
        mmdit = build_mmdit(config, transformer_state, dtype, "cpu", f"transformer of {m.init}")
    else:
        base = preset(m.preset)
        try:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in m.mmdit.items()}  # TOML lists
            config = dataclasses.replace(base, mmdit=dataclasses.replace(base.mmdit, **fields),
                                         reference_area=m.reference_area or base.reference_area)
        except TypeError as err:
            raise VinoInputError(f"model.mmdit has a key that MMDiTConfig lacks ({err})") from err
        mmdit = fresh_mmdit(config.mmdit, seed)
    if mm_state is None:  # a base model: the VINO extras start fresh
        config = dataclasses.replace(config, encoder=EncoderConfig(vlm_hidden=hidden, num_queries=m.num_queries))
        mm_encoder = fresh_mm_encoder(config, seed)
    else:
        mm_encoder = build_mm_encoder(config, mm_state, dtype, "cpu", f"mm_encoder of {m.init}")
    if stage == 0 and config.mmdit.text_dim != hidden:
        raise VinoInputError(
            f"stage 0 feeds the native text encoder (width {hidden}, the VLM's hidden size) to the MMDiT, whose "
            f"text_dim is {config.mmdit.text_dim}; set model.mmdit.text_dim = {hidden}"
        )
    if stage > 0 and m.native_align and config.mmdit.text_dim != hidden:
        raise VinoInputError(
            f"model.native_align compares the text connector's output (width {config.mmdit.text_dim}) with the native "
            f"text encoder's states (width {hidden}); it needs them equal, or model.native_align = 0"
        )
    mmdit.gradient_checkpointing = m.gradient_checkpointing
    mmdit.attention_backend = m.attention
    if m.compile:
        if m.compile_cache:
            load_compile_cache(m.compile_cache)
        compile_blocks(mmdit, dynamic=True)  # text lengths and buckets vary from batch to batch
        # each structure a block meets (an image stream with or without references, padded or not, text masked or
        # not) is a graph of its own; stage 3's mixture has more than dynamo's default of 8, after which a block
        # would fall back to running eagerly
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    encoder = InterleavedEncoder.from_folder(m.qwen, mm_encoder.to(dtype), dtype=dtype)
    native = None  # stage 0 feeds it to the MMDiT; later stages may align the connector to it
    if stage == 0 or m.native_align:
        native = NativeTextEncoder(encoder.vlm.model.language_model, encoder.processor.tokenizer,
                                   m.native_layer, m.native_max_tokens, m.native_embeddings)
    if cfg.data.keep_in_memory:
        encoder.memo = {}  # the processor runs once per distinct context
    feeds = stage == 0
    trainee = Trainee(mmdit.to(dtype), encoder, native if feeds else None, teacher=None if feeds else native,
                      align=m.native_align, focus=cfg.flow.edit_focus)
    set_trainable(trainee, m.trainable)
    return trainee, config


def set_trainable(trainee: Trainee, prefixes) -> None:
    trainee.requires_grad_(False)
    for prefix in prefixes:
        if not prefix.startswith(EXPORTED):
            raise VinoInputError(
                f"model.trainable names {prefix!r}; expected prefixes of {EXPORTED} (the VLM stays frozen)"
            )
        matched = [p for name, p in trainee.named_parameters() if (export_name(name) or "").startswith(prefix)]
        if not matched:
            raise VinoInputError(f"model.trainable prefix {prefix!r} matches no parameter")
        for p in matched:
            p.requires_grad_(True)

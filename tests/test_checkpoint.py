"""Every checkpoint format loads exactly; bad files get errors that name the problem."""

import json

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers
from safetensors.torch import save_file

from vino_model.checkpoint import (CONFIG_KEY, SCALE_SUFFIX, load_vino_weights, quantize_rows, read_state_dict,
                                   save_vino, tencent_to_diffusers)
from vino_model.config import preset
from vino_model.convert import main as convert_main
from vino_model.errors import VinoInputError
from vino_model.pipeline import build_mm_encoder, build_mmdit
from vino_model.tiny import random_vino_state

CONFIG = preset("tiny")
CFG = CONFIG.mmdit


def diffusers_to_tencent(sd):
    """The inverse mapping, written out by hand from the Tencent layout (fused qkv, linear1, swapped final halves)."""
    out = {}
    names = {
        "x_embedder.proj": "img_in.proj",
        "time_text_embed.timestep_embedder.linear_1": "time_in.mlp.0",
        "time_text_embed.timestep_embedder.linear_2": "time_in.mlp.2",
        "time_text_embed.guidance_embedder.linear_1": "guidance_in.mlp.0",
        "time_text_embed.guidance_embedder.linear_2": "guidance_in.mlp.2",
        "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
        "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
        "context_embedder.proj_in": "txt_in.input_embedder",
        "context_embedder.time_text_embed.timestep_embedder.linear_1": "txt_in.t_embedder.mlp.0",
        "context_embedder.time_text_embed.timestep_embedder.linear_2": "txt_in.t_embedder.mlp.2",
        "context_embedder.time_text_embed.text_embedder.linear_1": "txt_in.c_embedder.linear_1",
        "context_embedder.time_text_embed.text_embedder.linear_2": "txt_in.c_embedder.linear_2",
        "proj_out": "final_layer.linear",
    }
    for param in ("weight", "bias"):
        for new, old in names.items():
            out[f"{old}.{param}"] = sd[f"{new}.{param}"]
        scale, shift = sd[f"norm_out.linear.{param}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{param}"] = torch.cat([shift, scale])
        for i in range(CFG.num_refiner_blocks):
            a, b = f"context_embedder.token_refiner.refiner_blocks.{i}.", f"txt_in.individual_token_refiner.blocks.{i}."
            out[b + f"self_attn_qkv.{param}"] = torch.cat([sd[a + f"attn.to_{x}.{param}"] for x in "qkv"])
            for new, old in [("norm1", "norm1"), ("norm2", "norm2"), ("attn.to_out.0", "self_attn_proj"),
                             ("ff.net.0.proj", "mlp.fc1"), ("ff.net.2", "mlp.fc2"), ("norm_out.linear", "adaLN_modulation.1")]:
                out[b + f"{old}.{param}"] = sd[a + f"{new}.{param}"]
        for i in range(CFG.num_double_blocks):
            a, b = f"transformer_blocks.{i}.", f"double_blocks.{i}."
            out[b + f"img_attn_qkv.{param}"] = torch.cat([sd[a + f"attn.to_{x}.{param}"] for x in "qkv"])
            out[b + f"txt_attn_qkv.{param}"] = torch.cat([sd[a + f"attn.add_{x}_proj.{param}"] for x in "qkv"])
            for new, old in [("norm1.linear", "img_mod.linear"), ("norm1_context.linear", "txt_mod.linear"),
                             ("attn.to_out.0", "img_attn_proj"), ("attn.to_add_out", "txt_attn_proj"),
                             ("ff.net.0.proj", "img_mlp.fc1"), ("ff.net.2", "img_mlp.fc2"),
                             ("ff_context.net.0.proj", "txt_mlp.fc1"), ("ff_context.net.2", "txt_mlp.fc2")]:
                out[b + f"{old}.{param}"] = sd[a + f"{new}.{param}"]
        for i in range(CFG.num_single_blocks):
            a, b = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
            out[b + f"linear1.{param}"] = torch.cat([sd[a + f"attn.to_{x}.{param}"] for x in "qkv"] + [sd[a + f"proj_mlp.{param}"]])
            out[b + f"linear2.{param}"] = sd[a + f"proj_out.{param}"]
            out[b + f"modulation.linear.{param}"] = sd[a + f"norm.linear.{param}"]
    for i in range(CFG.num_double_blocks):
        for new, old in [("norm_q", "img_attn_q_norm"), ("norm_k", "img_attn_k_norm"),
                         ("norm_added_q", "txt_attn_q_norm"), ("norm_added_k", "txt_attn_k_norm")]:
            out[f"double_blocks.{i}.{old}.weight"] = sd[f"transformer_blocks.{i}.attn.{new}.weight"]
    for i in range(CFG.num_single_blocks):
        for x in "qk":
            out[f"single_blocks.{i}.{x}_norm.weight"] = sd[f"single_transformer_blocks.{i}.attn.norm_{x}.weight"]
    return out


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    sd = random_vino_state(CONFIG, seed=3)
    return {k: v.normal_(0, 0.2) if v.is_floating_point() else v for k, v in sd.items()}


def transformer_of(state):
    return {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}


def test_official_pickle_loads_exactly(tmp_path, state):
    path = tmp_path / "vino.ckpt"
    torch.save(state, path)
    config, transformer, mm = load_vino_weights(path, config=CONFIG)
    model = build_mmdit(config, transformer, None, "cpu", "test")
    encoder = build_mm_encoder(config, mm, None, "cpu", "test")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["transformer." + key])
    assert torch.equal(encoder.metaquery, state["mm_encoder.metaquery"])


def test_official_pickle_with_bundled_vlm_tensors_is_accepted(tmp_path, state):
    path = tmp_path / "vino.ckpt"
    torch.save({**state, "mm_encoder.model.language_model.embed_tokens.weight": torch.zeros(4, 4)}, path)
    config, transformer, mm = load_vino_weights(path, config=CONFIG)
    assert build_mm_encoder(config, mm, None, "cpu", "test").metaquery.shape == (8, 64)


def test_diffusers_folder_and_tencent_file_give_the_same_model(tmp_path, state):
    sd = transformer_of(state)
    ref = HunyuanVideoTransformer3DModel(
        num_attention_heads=CFG.num_heads, attention_head_dim=CFG.head_dim, num_layers=CFG.num_double_blocks,
        num_single_layers=CFG.num_single_blocks, num_refiner_layers=CFG.num_refiner_blocks,
        text_embed_dim=CFG.text_dim, pooled_projection_dim=CFG.pooled_dim, rope_axes_dim=CFG.rope_axes)
    ref.load_state_dict(sd)
    ref.save_pretrained(tmp_path / "transformer")
    tencent = diffusers_to_tencent(sd)
    torch.save({"module": tencent}, tmp_path / "mp_rank_00_model_states.pt")

    # diffusers' own converter agrees with ours on every key but the single blocks' linear1 (it assumes hidden 3072)
    theirs = convert_hunyuan_video_transformer_to_diffusers({k: v for k, v in tencent.items() if "linear1" not in k})
    mine = tencent_to_diffusers(tencent, CFG.hidden)
    assert theirs.keys() <= mine.keys()
    assert all(torch.equal(theirs[k], mine[k]) for k in theirs)

    x = torch.randn(1, 16, 2, 4, 4)
    text = torch.randn(1, 5, CFG.text_dim)
    with torch.no_grad():
        want = ref(x, torch.tensor([300.0]), text, torch.ones(1, 5, dtype=torch.bool), torch.zeros(1, CFG.pooled_dim),
                   torch.tensor([1000.0]), return_dict=False)[0]
        for source in (tmp_path / "transformer", tmp_path / "mp_rank_00_model_states.pt"):
            _, transformer, mm = load_vino_weights(source, config=CONFIG)
            assert mm is None
            model = build_mmdit(CONFIG, transformer, None, "cpu", "test").eval()
            got = model(x, torch.tensor([300.0]), text, guidance=torch.tensor([1000.0]), pooled=torch.zeros(1, CFG.pooled_dim))
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_convert_writes_single_and_sharded_safetensors(tmp_path, state):
    torch.save(state, tmp_path / "vino.ckpt")
    # the pickle carries no config: the 13B architecture is inferred from shapes, so give the tiny one explicitly
    single, _ = read_state_dict(tmp_path / "vino.ckpt")
    from vino_model.checkpoint import save_vino

    save_vino(tmp_path / "ref.safetensors", single, CONFIG)
    assert convert_main([str(tmp_path / "ref.safetensors"), str(tmp_path / "out.safetensors"), "--dtype", "bfloat16"]) == 0
    assert convert_main([str(tmp_path / "ref.safetensors"), str(tmp_path / "sharded"), "--shard-size", "40KB"]) == 0
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    for path, dtype in ((tmp_path / "out.safetensors", torch.bfloat16), (tmp_path / "sharded", torch.float32)):
        loaded, stored = read_state_dict(path)
        assert json.loads(json.dumps(stored)) == CONFIG.to_dict() | {"mmdit": stored["mmdit"]}
        assert loaded.keys() == state.keys()
        assert all(loaded[k].dtype == dtype and torch.allclose(loaded[k].float(), state[k], atol=1e-2) for k in state)
    with pytest.raises(VinoInputError):
        from vino_model.convert import convert
        convert(tmp_path / "ref.safetensors", tmp_path / "sharded", shard_size="40KB")  # exists: never overwritten
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]  # nothing half-written left behind


def test_inferred_config_of_a_config_less_file(tmp_path, state):
    # a head_dim other than 128 has no known RoPE split: the error says so instead of guessing
    torch.save(state, tmp_path / "vino.ckpt")
    with pytest.raises(VinoInputError, match="head_dim 16 has no known RoPE split"):
        load_vino_weights(tmp_path / "vino.ckpt")


def test_bad_checkpoints_name_the_problem(tmp_path, state):
    torch.save(state, tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(VinoInputError, match="truncated.ckpt could not be read"):
        load_vino_weights(tmp_path / "truncated.ckpt")

    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    with pytest.raises(VinoInputError, match="not a VINO or HunyuanVideo transformer"):
        load_vino_weights(tmp_path / "foreign.ckpt")

    (tmp_path / "garbage.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(VinoInputError, match="not a readable safetensors"):
        load_vino_weights(tmp_path / "garbage.safetensors")

    broken = dict(state)
    del broken["transformer.proj_out.weight"]
    broken["transformer.norm_out.linear.bias"] = torch.zeros(3)
    torch.save(broken, tmp_path / "broken.ckpt")
    config, transformer, _ = load_vino_weights(tmp_path / "broken.ckpt", config=CONFIG)
    with pytest.raises(VinoInputError) as err:
        build_mmdit(config, transformer, None, "cpu", "transformer of broken.ckpt")
    assert "missing keys: proj_out.weight" in str(err.value)
    assert "norm_out.linear.bias (3,) (expected (64,))" in str(err.value)

    with pytest.raises(VinoInputError, match="does not exist"):
        load_vino_weights(tmp_path / "nothing.safetensors")


def test_config_travels_in_the_safetensors_metadata(tmp_path, state):
    from safetensors import safe_open

    from vino_model.checkpoint import save_vino

    path = save_vino(tmp_path / "v.safetensors", state, CONFIG)
    with safe_open(path, "pt") as f:
        assert json.loads(f.metadata()[CONFIG_KEY])["reference_area"] == CONFIG.reference_area
    config, _, _ = load_vino_weights(path)
    assert config == CONFIG


def test_int8_rows_read_back_within_half_a_step_at_a_byte_an_element(tmp_path, state):
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
    save_vino(tmp_path / "half.safetensors", half, CONFIG)
    save_vino(tmp_path / "int8.safetensors", quantize_rows(half), CONFIG)
    loaded, stored = read_state_dict(tmp_path / "int8.safetensors")
    assert set(loaded) == set(half) and stored == json.loads(CONFIG.to_json())
    quantized, saved = 0, 0
    for key, value in half.items():
        back = loaded[key]
        if key.endswith(".weight") and value.dim() == 2 and value.numel() >= 4096:
            quantized += 1
            saved += value.numel() - 2 * value.shape[0]  # a byte an element, not two, and a float16 scale a row
            step = value.float().abs().amax(dim=1, keepdim=True) / 127  # one int8 step of each row
            assert back.dtype == torch.float32 and ((back - value.float()).abs() <= 0.51 * step + 1e-6).all(), key
        else:
            assert torch.equal(back, value), key
    assert quantized > 10
    sizes = [(tmp_path / name).stat().st_size for name in ("half.safetensors", "int8.safetensors")]
    assert abs(sizes[0] - sizes[1] - saved) < 16384, (sizes, saved)  # the rest: the scales' header entries


def test_convert_int8_writes_the_rows_the_loader_reads_back(tmp_path, state):
    save_vino(tmp_path / "export.safetensors", state, CONFIG)
    assert convert_main([str(tmp_path / "export.safetensors"), str(tmp_path / "int8"), "--shard-size", "1MB",
                         "--int8"]) == 0
    config, transformer, _ = load_vino_weights(tmp_path / "int8")
    assert config == CONFIG
    for key, value in transformer_of(state).items():
        step = value.abs().max() / 127
        assert (transformer[key].float() - value.float()).abs().max() <= 0.51 * step + 1e-6, key
    assert sum(f.stat().st_size for f in (tmp_path / "int8").glob("*.safetensors")) < \
        0.6 * (tmp_path / "export.safetensors").stat().st_size, "float32 rows become int8 ones"


def test_int8_scales_that_do_not_fit_their_rows_are_named(tmp_path):
    rows = torch.ones(4, 8, dtype=torch.int8)
    for state, found in (({"a.weight" + SCALE_SUFFIX: torch.ones(4, 1, dtype=torch.float16)}, "missing"),
                         ({"a.weight": rows, "a.weight" + SCALE_SUFFIX: torch.ones(3, 1, dtype=torch.float16)},
                          r"torch.int8 \(4, 8\)"),
                         ({"a.weight": rows.float(), "a.weight" + SCALE_SUFFIX: torch.ones(4, 1)}, "torch.float32")):
        save_file(state, str(tmp_path / "bad.safetensors"))
        with pytest.raises(VinoInputError, match=rf"a\.weight\.int8_scale .* but a\.weight is {found}"):
            read_state_dict(tmp_path / "bad.safetensors")

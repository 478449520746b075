"""The opt-in FlashAttention-4 backend: where it runs, what it falls back to, and that it stays one op.

The kernels need a Hopper or Blackwell GPU (benchmarks/speed.py --phase flash4 measures them there); here a
stand-in `flash_attn.cute` module computes the same attention, so the routing around it is what is tested.
"""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from vino_model.config import preset
from vino_model.errors import VinoInputError
from vino_model.flash4 import flash4_attention, unavailable
from vino_model.mmdit import VinoMMDiT, attention, check_attention
from vino_model.pipeline import VinoPipeline


@pytest.fixture
def stand_in(monkeypatch):
    """A flash_attn.cute whose flash_attn_func is SDPA on [B, S, H, D], counting its calls."""
    calls = []

    def flash_attn_func(q, k, v):
        calls.append(q.shape)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2).contiguous(), None

    package, cute = types.ModuleType("flash_attn"), types.ModuleType("flash_attn.cute")
    cute.flash_attn_func = flash_attn_func
    package.cute = cute
    monkeypatch.setitem(sys.modules, "flash_attn", package)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    return calls


def qkv(batch=2, tokens=9, heads=2, dim=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, tokens, heads, dim, generator=g) for _ in range(3)]


def test_unmasked_inference_attention_goes_through_flash4_and_the_rest_through_sdpa(stand_in):
    q, k, v = qkv()
    with torch.no_grad():
        expected = attention(q, k, v)
        assert not stand_in
        torch.testing.assert_close(attention(q, k, v, flash4=True), expected)
        assert stand_in == [q.shape]
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, -3:] = False
        masked = attention(q, k, v, mask, flash4=True)  # padded batches keep SDPA
    assert len(stand_in) == 1
    torch.testing.assert_close(masked[0], expected[0])
    assert not torch.allclose(masked[1], expected[1])
    q.requires_grad_(True)
    attention(q, k, v, flash4=True).sum().backward()  # training keeps SDPA, which has a backward
    assert len(stand_in) == 1 and q.grad is not None


def test_the_op_has_a_fake_for_compile_and_a_schema_torch_accepts(stand_in):
    torch.library.opcheck(flash4_attention, qkv(), test_utils=("test_schema", "test_faketensor"))


def test_a_forward_with_flash4_matches_the_default_kernel(stand_in):
    torch.manual_seed(0)
    model = VinoMMDiT(preset("tiny").mmdit).eval()
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(1, 16, 3, 8, 12, generator=g), torch.randn(1, 7, preset("tiny").mmdit.text_dim, generator=g)
    t, guidance = torch.tensor([500.0]), torch.tensor([1000.0])
    with torch.no_grad():
        expected = model(x, t, text, guidance=guidance)
        model.attention_backend = "flash4"
        out = model(x, t, text, guidance=guidance)
    blocks = len(model.transformer_blocks) + len(model.single_transformer_blocks)
    assert len(stand_in) == blocks
    torch.testing.assert_close(out, expected)


def test_flash4_where_it_cannot_run_is_refused_by_name_before_anything_loads(tmp_path):
    assert "CUDA" in unavailable("cpu")
    with pytest.raises(VinoInputError, match="attention 'flash4' cannot be used: it runs on CUDA GPUs only"):
        check_attention("flash4", "cpu")
    with pytest.raises(VinoInputError, match="attention backend 'flash5' is unknown"):
        check_attention("flash5", "cpu")
    check_attention("cudnn", "cpu")  # SDPA's names are torch's to check when they run
    with pytest.raises(VinoInputError, match="flash4"):  # not a missing-file error: the check comes first
        VinoPipeline.load(tmp_path / "absent.safetensors", tmp_path, None, attention="flash4")

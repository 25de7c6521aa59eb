"""LoRALinear: the paper's equation, peft's init, merge/unmerge, dtypes and shapes, and clear errors."""
import math

import pytest
import torch
from torch import nn

from lora.layer import LoRALinear


def _layer(d_in=12, d_out=10, r=4, alpha=8, bias=True, dtype=torch.float64, **kwargs):
    layer = LoRALinear(nn.Linear(d_in, d_out, bias=bias, dtype=dtype), r=r, alpha=alpha, **kwargs)
    with torch.no_grad():  # non-zero B so the update is visible
        layer.lora_B.normal_()
    return layer


def test_init_follows_peft_a_kaiming_uniform_b_zero_so_output_equals_base():
    base = nn.Linear(256, 64)
    layer = LoRALinear(base, r=8, alpha=16)
    assert layer.lora_A.shape == (8, 256) and layer.lora_B.shape == (64, 8)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(256)  # kaiming_uniform_(a=sqrt(5)) draws from U(-1/sqrt(d_in), 1/sqrt(d_in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert abs(layer.lora_A.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    x = torch.randn(3, 5, 256)
    assert torch.equal(layer(x), base(x))


def test_base_is_frozen_and_only_a_and_b_train():
    layer = LoRALinear(nn.Linear(6, 5), r=2, alpha=4)
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    assert layer.base.weight.requires_grad is False and layer.base.bias.requires_grad is False


@pytest.mark.parametrize("use_rslora, expected", [(False, 16 / 8), (True, 16 / math.sqrt(8))])
def test_scaling_is_alpha_over_r_or_over_sqrt_r_with_rslora(use_rslora, expected):
    assert LoRALinear(nn.Linear(4, 4), r=8, alpha=16, use_rslora=use_rslora).scaling == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(2, 7, 12), (12,), (3, 2, 4, 12)])
def test_forward_is_w_x_plus_scaled_b_a_x_for_any_leading_dims(shape):
    layer = _layer(use_rslora=True)
    x = torch.randn(shape, dtype=torch.float64)
    W, b, A, B = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    expected = torch.einsum("oi,...i->...o", W + layer.scaling * B @ A, x) + b
    out = layer(x)
    assert out.shape == shape[:-1] + (10,)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_delta_weight_is_the_change_the_adapter_makes_to_the_output():
    layer = _layer()
    x = torch.randn(5, 12, dtype=torch.float64)
    delta = layer.delta_weight()
    assert delta.shape == layer.base.weight.shape
    torch.testing.assert_close(layer(x) - layer.base(x), x @ delta.T, rtol=1e-12, atol=1e-12)


def test_dropout_applies_to_the_adapter_input_only_and_only_in_training():
    layer = _layer(dropout=0.5)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    torch.testing.assert_close(out, layer.base(x) + dropped @ layer.delta_weight().T)
    assert not torch.allclose(out, layer.base(x) + x @ layer.delta_weight().T)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base(x) + x @ layer.delta_weight().T)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_merged_forward_equals_unmerged_and_unmerge_restores_the_weight(dtype, rtol):
    layer = _layer(d_in=64, d_out=48, r=8, alpha=16, dtype=dtype)
    x = torch.randn(3, 64, dtype=dtype)
    before, w0 = layer(x).detach(), layer.base.weight.detach().clone()
    layer.merge()
    assert layer.merged and not torch.equal(layer.base.weight, w0)
    after = layer(x).detach()
    assert torch.equal(after, layer.base(x))  # merged forward is the base Linear alone
    assert (after - before).abs().max() <= rtol * before.abs().max()
    layer.unmerge()
    assert not layer.merged
    assert (layer.base.weight - w0).abs().max() <= 1e-6 * w0.abs().max()


def test_merging_twice_and_unmerging_an_unmerged_layer_raise():
    layer = _layer()
    with pytest.raises(ValueError, match="not merged"):
        layer.unmerge()
    layer.merge()
    w = layer.base.weight.clone()
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    assert torch.equal(layer.base.weight, w)


def test_autocast_bf16_runs_and_returns_bf16():
    layer = LoRALinear(nn.Linear(16, 8), r=4, alpha=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(2, 3, 16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 8)
    out.float().sum().backward()
    assert layer.lora_B.grad is not None and layer.lora_B.grad.dtype == torch.float32


def test_a_and_b_follow_the_base_dtype_unless_told_otherwise():
    bf16 = LoRALinear(nn.Linear(16, 8, dtype=torch.bfloat16), r=4, alpha=8)
    assert bf16.lora_A.dtype == bf16.lora_B.dtype == torch.bfloat16
    assert bf16(torch.randn(5, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
    fp32_adapter = LoRALinear(nn.Linear(16, 8, dtype=torch.bfloat16), r=4, alpha=8, dtype=torch.float32)
    assert fp32_adapter.lora_A.dtype == torch.float32
    assert fp32_adapter(torch.randn(5, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_extra_repr_shows_the_settings():
    text = repr(LoRALinear(nn.Linear(16, 8), r=4, alpha=8, use_rslora=True))
    for piece in ("d_in=16", "d_out=8", "r=4", "alpha=8", "scaling=4", "alpha/sqrt(r)", "merged=False"):
        assert piece in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "r=0"), (dict(r=-2), "r=-2"), (dict(r=2.5), "r=2.5"),
    (dict(alpha=0), "alpha=0"), (dict(alpha=-1.0), "alpha=-1.0"),
    (dict(dropout=1.0), r"dropout=1.0"), (dict(dropout=-0.1), "dropout=-0.1"),
])
def test_bad_hyperparameters_raise_naming_the_argument(kwargs, message):
    settings = dict(r=4, alpha=8) | kwargs
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(4, 4), **settings)


def test_only_an_nn_linear_can_be_wrapped():
    with pytest.raises(ValueError, match="nn.Linear, got Embedding"):
        LoRALinear(nn.Embedding(4, 4), r=2, alpha=2)

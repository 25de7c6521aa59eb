"""train_loop/cpu_speed.py: the same dropout as nn.Dropout (keep rate, scaling, gradient), and a model whose
dropout, attention and GELU were swapped computes what transformers' T5 computes."""
import copy

import pytest
import torch
from torch import nn
from transformers.activations import NewGELUActivation

from lora.layer import LoRAConfig, add_lora
from tests.train_helpers import random_batches, tiny_model
from train_loop.cpu_speed import ATTENTION, FastDropout, fast_dropout, keep_mask, use_cpu_kernels
from train_loop.step import token_loss_sum

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_keeps_one_minus_p_in_both_halves_of_every_64_bit_draw(p):
    n = 2_000_000
    keep = keep_mask(torch.Size([n]), p, CPU)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    sigma = (p * (1 - p) / (n / 2)) ** 0.5
    for half in (keep[0::2], keep[1::2]):  # the low and the high 32 bits of each word
        assert abs(half.float().mean().item() - (1 - p)) < 5 * sigma
    # Neighbours are independent: P(both kept) = (1 - p)^2, not 1 - p (a repeated half would give that).
    both = (keep[0::2] & keep[1::2]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * sigma


def test_odd_sizes_and_shapes_are_filled():
    keep = keep_mask(torch.Size([3, 5, 7]), 0.5, CPU)
    assert keep.shape == (3, 5, 7) and 0 < keep.sum() < 105


def test_output_is_x_times_mask_over_one_minus_p_and_gradient_is_the_same_mask():
    p = 0.1
    x = (torch.rand(64, 33) + 0.5).requires_grad_()  # no zeros, so a zero in y means dropped
    y = fast_dropout(x, p)
    kept = y != 0
    assert 0.8 < kept.float().mean() < 0.97
    assert torch.equal(y[kept], (x * (1 / (1 - p)))[kept])
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, g * kept / (1 - p), rtol=1e-6, atol=0)


def test_eval_mode_and_p_zero_return_the_input_itself():
    x = torch.randn(4, 8)
    assert fast_dropout(x, 0.1, training=False) is x
    assert fast_dropout(x, 0.0) is x
    module = FastDropout(0.3).eval()
    assert module(x) is x


def test_bf16_stays_bf16_and_seed_repeats_the_mask():
    x = torch.randn(16, 16, dtype=torch.bfloat16)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.2)
    torch.manual_seed(3)
    b = fast_dropout(x, 0.2)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


def test_impossible_probability_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        fast_dropout(torch.ones(3), 1.0)


def test_swap_reaches_every_dropout_and_gelu_of_t5_and_lora_and_routes_attention():
    model = tiny_model(dropout_rate=0.1)
    add_lora(model, LoRAConfig(targets=("q", "v"), r=4, alpha=8, dropout=0.05))
    dropouts = sum(type(m) is nn.Dropout for m in model.modules())
    gelus = sum(type(m) is NewGELUActivation for m in model.modules())
    assert use_cpu_kernels(model, CPU) == {"dropout": dropouts, "gelu": gelus} and dropouts > 0 and gelus == 4
    assert not any(type(m) in (nn.Dropout, NewGELUActivation) for m in model.modules())
    assert {m.p for m in model.modules() if isinstance(m, FastDropout)} == {0.1, 0.05}
    assert model.config._attn_implementation == ATTENTION


def test_training_on_cuda_is_left_alone():
    model = tiny_model(dropout_rate=0.1)
    assert use_cpu_kernels(model, torch.device("cuda")) == {"dropout": 0, "gelu": 0}
    assert any(type(m) is nn.Dropout for m in model.modules())
    assert any(type(m) is NewGELUActivation for m in model.modules())
    assert model.config._attn_implementation != ATTENTION


def test_swapped_model_computes_what_transformers_t5_computes_loss_and_gradients():
    """Dropout 0 (so no randomness): our attention function must equal transformers' default attention."""
    theirs = tiny_model(dropout_rate=0.0).double()  # float64: differences would be real, not rounding
    ours = copy.deepcopy(theirs)
    use_cpu_kernels(ours, CPU)
    for batch in random_batches(2):
        losses = []
        for model in (theirs, ours):
            model.zero_grad()
            loss = token_loss_sum(model, batch, "fp32", CPU)
            loss.backward()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
        for (name, a), b in zip(theirs.named_parameters(), ours.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-13), name


def test_swapped_model_in_eval_mode_generates_the_same_tokens():
    theirs = tiny_model(dropout_rate=0.1).eval()
    ours = copy.deepcopy(theirs)
    use_cpu_kernels(ours, CPU)
    ids = torch.randint(2, 128, (3, 9))
    kwargs = dict(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    assert torch.equal(theirs.generate(input_ids=ids, **kwargs), ours.eval().generate(input_ids=ids, **kwargs))

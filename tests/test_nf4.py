"""The 4-bit base (lora/nf4.py): NF4's 16 values are the QLoRA paper's, quantising equals bitsandbytes' nf4
value for value, the block absmax and the round-trip error are what they must be, the memory ledger counts 4 bits,
and a LoRA on it trains, generates and merges into the dequantised base."""
import copy

import bitsandbytes.functional as bnb
import pytest
import torch
from torch import nn

from lora.layer import LoRAConfig, add_lora, lora_layers
from lora.merge import lora_parameters, merge_lora
from lora.nf4 import (NF4_CODE, NF4Linear, QuantConfig, dequantize_absmax, dequantize_base, dequantize_nf4,
                      quantize_absmax, quantize_base, quantize_nf4)
from model.device import MemoryLedger
from model.load import build_from_config
from tests.conftest import tiny_t5_config
from tests.test_lora_peft import _rel

# Dettmers et al. 2023 (arXiv:2305.14314), appendix E, as printed there (bitsandbytes' get_4bit_type("nf4")).
PAPER_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
             1.0]


def test_the_16_code_values_are_the_papers_and_bitsandbytes():
    assert list(NF4_CODE) == PAPER_NF4
    assert bnb.get_4bit_type("nf4", device="cpu").tolist() == PAPER_NF4


def test_quantise_and_dequantise_equal_bitsandbytes_nf4():
    W = torch.randn(384, 512) * 0.05
    packed, absmax = quantize_nf4(W)
    theirs, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=False)
    assert packed.dtype == torch.uint8 and packed.shape == (384 * 512 // 2,)
    assert torch.equal(packed, theirs.reshape(-1))  # every 4-bit code, packed the same way
    assert torch.equal(absmax, state.absmax)
    ours = dequantize_nf4(packed, absmax, W.shape, torch.float32)
    assert torch.equal(ours, bnb.dequantize_4bit(theirs, state))


def test_block_absmax_and_the_round_trip_of_a_known_tensor():
    """Block 0 holds 64 code values times 3 (each comes back exactly), block 1 a ramp up to -2, block 2 zeros."""
    values = torch.tensor(PAPER_NF4).repeat(4) * 3.0  # (64,), absmax 3
    ramp = torch.linspace(-2.0, 1.0, 64)  # absmax 2
    W = torch.cat([values, ramp, torch.zeros(64)]).reshape(3, 64)
    packed, absmax = quantize_nf4(W)
    assert absmax.tolist() == [3.0, 2.0, 0.0]
    back = dequantize_nf4(packed, absmax, W.shape, torch.float32)
    assert torch.equal(back[0], W[0]) and torch.equal(back[2], W[2])
    # the ramp: at most half the widest gap between neighbouring code values (between 0.7230 and 1), times 2
    half_gap = max(b - a for a, b in zip(PAPER_NF4, PAPER_NF4[1:])) / 2
    error = (back[1] - W[1]).abs().max().item()
    assert 0.02 < error <= 2 * half_gap + 1e-6
    assert back[1, 0] == -2.0 and back[1, -1] == pytest.approx(2 * 0.44070982933044434)  # 1.0 / 2 -> nearest 0.4407


def test_double_quantisation_keeps_absmax_within_half_a_step():
    absmax = torch.rand(1000) * 0.1 + 0.01
    codes, scale, mean = quantize_absmax(absmax)
    assert codes.dtype == torch.int8 and scale.shape == (4,) and mean.shape == ()
    back = dequantize_absmax(codes, scale, mean)
    steps = scale.repeat_interleave(256)[:1000]
    assert ((back - absmax).abs() <= steps / 2 + 1e-7).all()


@pytest.mark.parametrize("double_quant, expected", [
    (False, 256 * 128 // 2 + 256 * 128 // 64 * 4),  # 4 bits a weight + one float32 per 64: 4.5 bits
    (True, 256 * 128 // 2 + 256 * 128 // 64 + 2 * 4 + 4),  # + int8 absmax, float32 per 256 absmax, the mean
])
def test_the_ledger_counts_four_bit_weights(double_quant, expected):
    model = nn.Sequential(nn.Linear(128, 256, bias=False)).requires_grad_(False)
    full = 256 * 128 * 4
    quantize_base(model, QuantConfig(double_quant=double_quant))
    assert isinstance(model[0], NF4Linear)
    with MemoryLedger(model, torch.device("cpu")) as ledger:
        pass
    assert ledger.result()["weights_bytes"] == expected < full / 7


@pytest.fixture
def qlora():
    """A tiny T5 with LoRA on q, v and every frozen Linear in NF4, and the same model with W dequantised, float64."""
    base = build_from_config(tiny_t5_config(), dtype=torch.float64).eval()
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.2)
    names = quantize_base(model)
    assert len(names) == 2 * 7 + 2 * 11 and "lm_head" not in names  # q k v o wi_0 wi_1 wo, + EncDec q k v o
    plain = copy.deepcopy(model)
    dequantize_base(plain)
    return base, model, plain


def test_qlora_computes_with_the_dequantised_weights_forward_and_backward(qlora):
    base, model, plain = qlora
    ids, labels = torch.randint(2, 128, (2, 7)), torch.randint(2, 128, (2, 4))
    out, ref = model(input_ids=ids, labels=labels), plain(input_ids=ids, labels=labels)
    assert _rel(out.logits, ref.logits) <= 1e-12
    with torch.no_grad():
        assert 1e-3 < _rel(out.logits, base(input_ids=ids, labels=labels).logits)  # 4 bits: not W itself
    out.loss.backward()
    ref.loss.backward()
    assert max(_rel(a.grad, b.grad) for a, b in zip(lora_parameters(model), lora_parameters(plain))) <= 1e-10
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_qlora_trains_generates_and_merges_into_the_dequantised_base(qlora):
    _, model, _ = qlora
    ids, labels = torch.randint(2, 128, (2, 7)), torch.randint(2, 128, (2, 4))
    with pytest.raises(ValueError, match="dequantize_base"):
        merge_lora(model)
    optimizer = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, labels=labels).logits
        generated = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
        dequantize_base(model)
        merge_lora(model)
        assert all(layer.merged for _, layer in lora_layers(model))
        assert _rel(model(input_ids=ids, labels=labels).logits, before) <= 1e-10
        assert torch.equal(model.generate(input_ids=ids, max_new_tokens=3, do_sample=False), generated)

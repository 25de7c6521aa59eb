"""Our LoRA against peft's: the same A and B in both give the same logits and the same gradients (float64)."""
import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora.layer import LoRAConfig, add_lora, lora_layers
from lora.merge import lora_parameters
from model.load import build_from_config, build_random_init
from tests.conftest import SMALL_DIR, tiny_t5_config

CASES = [(8, 16, False), (32, 32, True)]  # (r, alpha, use_rslora): the flan-t5-small seed and rsLoRA at the base seed's r


@pytest.fixture(scope="module")
def bases():
    """Float64 so that any difference above rounding is a real difference in the math."""
    return {"tiny": build_from_config(tiny_t5_config(), dtype=torch.float64).eval(),
            "flan-t5-small": build_random_init(SMALL_DIR, dtype=torch.float64).eval()}


def _rel(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def _ours_and_peft(base, r, alpha, use_rslora):
    """Our LoRA and peft's on two deep copies of `base`, holding identical non-zero A and B."""
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(targets=("q", "v"), r=r, alpha=alpha, use_rslora=use_rslora, dropout=0.0))
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["q", "v"], lora_dropout=0.0,
                        use_rslora=use_rslora, task_type="SEQ_2_SEQ_LM")
    theirs = get_peft_model(copy.deepcopy(base), config)
    peft_names = [n.removeprefix("base_model.model.") for n, m in theirs.named_modules() if hasattr(m, "lora_A")]
    assert peft_names == [name for name, _ in lora_layers(ours)]  # both adapt exactly the same modules
    pairs = []
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            layer.lora_A.normal_(std=layer.lora_A.shape[1] ** -0.5)
            layer.lora_B.normal_(std=0.1)
            peft_layer = theirs.base_model.model.get_submodule(name)
            assert peft_layer.scaling["default"] == pytest.approx(layer.scaling)
            peft_A, peft_B = peft_layer.lora_A["default"].weight, peft_layer.lora_B["default"].weight
            assert peft_A.shape == layer.lora_A.shape and peft_B.shape == layer.lora_B.shape
            assert peft_A.dtype == layer.lora_A.dtype == torch.float64
            peft_A.copy_(layer.lora_A)
            peft_B.copy_(layer.lora_B)
            pairs += [(layer.lora_A, peft_A), (layer.lora_B, peft_B)]
    return ours, theirs, pairs


@pytest.mark.parametrize("r, alpha, use_rslora", CASES)
@pytest.mark.parametrize("which", ["tiny", "flan-t5-small"])
def test_same_a_b_give_peft_logits_and_gradients(bases, which, r, alpha, use_rslora):
    base = bases[which]
    ours, theirs, pairs = _ours_and_peft(base, r, alpha, use_rslora)
    vocab = base.config.vocab_size
    ids, labels = torch.randint(2, vocab, (2, 8)), torch.randint(2, vocab, (2, 5))
    out_ours = ours(input_ids=ids, labels=labels)
    out_theirs = theirs(input_ids=ids, labels=labels)
    with torch.no_grad():
        base_logits = base(input_ids=ids, labels=labels).logits
    assert _rel(out_ours.logits, base_logits) > 1e-3  # the adapters matter, so agreeing with peft means something
    assert _rel(out_ours.logits, out_theirs.logits) <= 1e-9
    out_ours.loss.backward()
    out_theirs.loss.backward()
    assert len(pairs) == len(lora_parameters(ours))
    for ours_p, theirs_p in pairs:
        assert ours_p.grad is not None and theirs_p.grad is not None
        assert _rel(ours_p.grad, theirs_p.grad) <= 1e-9
    assert sum(p.grad is not None for p in theirs.parameters()) == len(pairs)  # peft also trains only A and B

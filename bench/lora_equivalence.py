"""How close is our LoRA to peft's, and merged to unmerged? Prints the largest relative differences.

    python bench/lora_equivalence.py

Relative difference = max |ours - reference| / max |reference|, over all logits or all A/B gradients.
Models: a tiny T5 and flan-t5-small's architecture (random weights: no weights are downloaded).
The tests (tests/test_lora_peft.py, tests/test_lora_inject.py) assert these stay below 1e-9 (float64) and
1e-5 (float32); this script shows how far below.
"""
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peft import LoraConfig, get_peft_model  # noqa: E402

from lora.layer import LoRAConfig, add_lora, lora_layers  # noqa: E402
from lora.merge import merge_lora, unmerge_lora  # noqa: E402
from model.load import build_from_config, build_random_init  # noqa: E402
from model.device import describe_machine  # noqa: E402

SMALL_DIR = Path(__file__).resolve().parents[1] / "models" / "flan-t5-small"


def tiny_t5_config():
    """A T5 small enough for exact float64 checks (the tests build the same one)."""
    from transformers import T5Config

    return T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                    feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def adapted(base, r, alpha, use_rslora, b_std=0.1):
    """A and B drawn at random; with B ~ N(0, 0.1^2) the update B A is ~4x the random W of flan-t5-small."""
    model = copy.deepcopy(base)
    add_lora(model, LoRAConfig(r=r, alpha=alpha, use_rslora=use_rslora, dropout=0.0))
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_A.normal_(std=layer.lora_A.shape[1] ** -0.5)
            layer.lora_B.normal_(std=b_std)
    return model


def against_peft(base, r, alpha, use_rslora, ids, labels):
    ours = adapted(base, r, alpha, use_rslora)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["q", "v"], use_rslora=use_rslora,
                        task_type="SEQ_2_SEQ_LM")
    theirs = get_peft_model(copy.deepcopy(base), config)
    pairs = []
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            peft_layer = theirs.base_model.model.get_submodule(name)
            for mine, other in ((layer.lora_A, peft_layer.lora_A["default"].weight),
                                (layer.lora_B, peft_layer.lora_B["default"].weight)):
                other.copy_(mine)
                pairs.append((mine, other))
    out_ours, out_theirs = ours(input_ids=ids, labels=labels), theirs(input_ids=ids, labels=labels)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    grad = max(rel(mine.grad, other.grad) for mine, other in pairs)
    return rel(out_ours.logits.detach(), out_theirs.logits.detach()), grad


@torch.no_grad()
def merge_round_trip(base, ids, labels, b_std):
    model = adapted(base, 8, 16, False, b_std)
    unmerged = model(input_ids=ids, labels=labels).logits
    originals = {name: layer.base.weight.clone() for name, layer in lora_layers(model)}
    merge_lora(model)
    merged = model(input_ids=ids, labels=labels).logits
    unmerge_lora(model)
    restore = max(rel(layer.base.weight, originals[name]) for name, layer in lora_layers(model))
    return rel(merged, unmerged), restore


def main():
    torch.manual_seed(0)
    builders = {"tiny T5": lambda dtype: build_from_config(tiny_t5_config(), dtype=dtype),
                "flan-t5-small": lambda dtype: build_random_init(SMALL_DIR, dtype=dtype)}
    print(f"machine: {describe_machine('cpu')}; precision: each line names it (peft and ours alike)")
    print(f"{'model':<14}{'comparison':<58}{'max relative difference':>24}")
    for label, build in builders.items():
        base = build(torch.float64).eval()
        vocab = base.config.vocab_size
        ids, labels = torch.randint(2, vocab, (2, 8)), torch.randint(2, vocab, (2, 5))
        for r, alpha, rs in ((8, 16, False), (32, 32, True)):
            logits, grads = against_peft(base, r, alpha, rs, ids, labels)
            setting = f"r={r}, alpha={alpha}{', rsLoRA' if rs else ''}"
            print(f"{label:<14}{'peft vs ours, logits, float64, ' + setting:<58}{logits:>24.3e}")
            print(f"{label:<14}{'peft vs ours, A/B grads, float64, ' + setting:<58}{grads:>24.3e}")
        for dtype in (torch.float32, torch.float64):
            for b_std in (0.1, 0.01):  # float32 rounding in W + B A grows with the size of the update
                merged, restore = merge_round_trip(base.to(dtype), ids, labels, b_std)
                name = f"{str(dtype).removeprefix('torch.')}, B std {b_std}"
                print(f"{label:<14}{'merged vs unmerged logits, ' + name:<58}{merged:>24.3e}")
                print(f"{label:<14}{'unmerge restores W, ' + name:<58}{restore:>24.3e}")
        del base


if __name__ == "__main__":
    main()

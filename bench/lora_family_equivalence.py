"""How close are DoRA and PiSSA to peft's, and our NF4 to bitsandbytes'? Prints the largest differences.

    python bench/lora_family_equivalence.py

Relative difference = max |ours - reference| / max |reference| (as bench/lora_equivalence.py). DoRA: float64, the
same A, B and m in both, logits and the gradients of A, B, m. PiSSA: both initialised in float32 (peft refuses
float64), A, B and the residual W compared, then both models in float64. NF4: a (384, 512) normal weight, our
codes, absmax and dequantised W against bitsandbytes' `quantize_4bit`/`dequantize_4bit` (nf4, blocksize 64); with
double quantisation the two differ by design (bitsandbytes' 8-bit dynamic code, ours int8), shown for scale.
tests/test_lora_family.py and tests/test_nf4.py assert the bounds; this script shows how far below them.
"""
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peft import LoraConfig, get_peft_model  # noqa: E402

from bench.lora_equivalence import SMALL_DIR, rel, tiny_t5_config  # noqa: E402
from lora.layer import LoRAConfig, add_lora, lora_layers  # noqa: E402
from lora.nf4 import dequantize_absmax, dequantize_nf4, quantize_absmax, quantize_nf4  # noqa: E402
from model.device import describe_machine  # noqa: E402
from model.load import build_from_config, build_random_init  # noqa: E402


def ours_and_peft(base, variant, **peft_kwargs):
    ours = copy.deepcopy(base)
    add_lora(ours, LoRAConfig(r=4, alpha=8, dropout=0.0, variant=variant))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                                            lora_dropout=0.0, task_type="SEQ_2_SEQ_LM", **peft_kwargs))
    pairs = []
    for name, layer in lora_layers(ours):
        peft_layer = theirs.base_model.model.get_submodule(name)
        for matrix in ("lora_A", "lora_B", "lora_magnitude_vector"):
            if hasattr(layer, matrix):
                pairs.append((getattr(layer, matrix), getattr(peft_layer, matrix)["default"].weight))
    return ours, theirs, pairs


def logits_and_grads(ours, theirs, pairs):
    with torch.no_grad():
        for a, b in pairs:
            a.add_(0.1 * torch.randn_like(a))
            b.copy_(a)
    vocab = ours.config.vocab_size
    ids, labels = torch.randint(2, vocab, (1, 6)), torch.randint(2, vocab, (1, 4))
    out_a, out_b = ours(input_ids=ids, labels=labels), theirs(input_ids=ids, labels=labels)
    out_a.loss.backward()
    out_b.loss.backward()
    return rel(out_a.logits, out_b.logits), max(rel(a.grad, b.grad) for a, b in pairs)


def main():
    torch.manual_seed(0)
    print(describe_machine("cpu"))
    bases = {"tiny": build_from_config(tiny_t5_config(), dtype=torch.float32).eval(),  # eval: no dropout masks
             "flan-t5-small": build_random_init(SMALL_DIR, dtype=torch.float32).eval()}
    for which, base in bases.items():
        logits, grads = logits_and_grads(*ours_and_peft(base.double(), "dora", use_dora=True))
        print(f"DoRA  {which:<14} float64: logits {logits:.1e}, gradients of A, B, m {grads:.1e}")
        ours, theirs, pairs = ours_and_peft(base.float(), "pissa", init_lora_weights="pissa")
        init = max((a - b).abs().max().item() for a, b in pairs)
        residual = max((layer.base.weight - theirs.base_model.model.get_submodule(name).base_layer.weight)
                       .abs().max().item() for name, layer in lora_layers(ours))
        logits, grads = logits_and_grads(ours.double(), theirs.double(), pairs)
        print(f"PiSSA {which:<14} float32 init: A, B max |diff| {init:.1e}, W_res {residual:.1e}; then float64: "
              f"logits {logits:.1e}, gradients {grads:.1e}")
    import bitsandbytes.functional as bnb

    W = torch.randn(384, 512) * 0.05
    packed, absmax = quantize_nf4(W)
    theirs, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=False)
    ours_w, their_w = dequantize_nf4(packed, absmax, W.shape, torch.float32), bnb.dequantize_4bit(theirs, state)
    print(f"NF4   (384, 512): codes differing {(packed != theirs.reshape(-1)).sum().item()} of {packed.numel()} bytes, "
          f"absmax max |diff| {(absmax - state.absmax).abs().max().item():.1e}, dequantised W max |diff| "
          f"{(ours_w - their_w).abs().max().item():.1e}; round trip max |W - W~| {(ours_w - W).abs().max().item():.2e}")
    theirs, state = bnb.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours_dq = dequantize_nf4(packed, dequantize_absmax(*quantize_absmax(absmax)), W.shape, torch.float32)
    print(f"NF4 + double quantisation: ours vs bitsandbytes' dequantised W, relative {rel(ours_dq, bnb.dequantize_4bit(theirs, state)):.1e} "
          f"(different 8-bit codes for the absmax); round trip max |W - W~| {(ours_dq - W).abs().max().item():.2e}")


if __name__ == "__main__":
    main()

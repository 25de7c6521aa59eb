"""LoRA+: B learns lambda times faster than A (Hayou et al. 2024, arXiv:2402.12354).

The paper's section 3 shows, in the limit of wide layers, that one learning rate for A and B is inefficient: with
B = 0 at the start and A random, the update of B must be larger than that of A for features to be learned at the
best speed. LoRA+ keeps everything of LoRA and sets

    eta_B = lambda * eta_A                          lambda = `--loraplus-lr-ratio`, the paper's default 2^4 = 16

The optimiser's parameter groups are those of peft 0.21's `create_loraplus_optimizer`
(`optimizers/loraplus.py`), in its order: A (lr, `loraplus_weight_decay`), LoRA on embeddings (none here;
lr 1e-6), B and every 1-D trainable parameter such as DoRA's magnitude (lr * lambda, with weight decay), and
those of them that take no decay (lr * lambda, 0). The schedule multiplies every group's rate by the same factor,
so the ratio holds at every step. Proved equal to peft by tests/test_lora_family.py.
"""
from __future__ import annotations

from torch import nn

PAPER_RATIO = 16.0  # 2^4, the paper's recommendation for the ratio lambda (section 4)
EMBEDDING_LR = 1e-6  # peft's `loraplus_lr_embedding` default: LoRA on an embedding (never here, group left empty)


def decays(model: nn.Module, name: str) -> bool:
    """peft's rule (transformers' `get_parameter_names(model, ALL_LAYERNORM_LAYERS)` minus "bias"): every
    parameter decays but those of an nn.LayerNorm and those named "bias"."""
    owner = model.get_submodule(name.rpartition(".")[0])
    return not isinstance(owner, nn.LayerNorm) and "bias" not in name


def check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"--loraplus-lr-ratio {ratio!r}: lambda = lr_B / lr_A must be a positive number "
                         f"(the paper uses {PAPER_RATIO:g}; 1 is plain LoRA)")


def loraplus_groups(model: nn.Module, lr: float, ratio: float, weight_decay: float) -> list[dict]:
    """The four parameter groups of `create_loraplus_optimizer(model, ..., lr=lr, loraplus_lr_ratio=ratio,
    loraplus_weight_decay=weight_decay)`, over the trainable parameters; each group has its "lr"."""
    check_ratio(ratio)
    A, B, B_no_decay = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_B" in name or param.ndim == 1:  # B, and DoRA's magnitude m: (d_out,)
            (B if decays(model, name) else B_no_decay).append(param)
        else:
            A.append(param)
    return [{"params": A, "weight_decay": weight_decay, "lr": lr},
            {"params": [], "weight_decay": weight_decay, "lr": EMBEDDING_LR},
            {"params": B, "weight_decay": weight_decay, "lr": lr * ratio},
            {"params": B_no_decay, "weight_decay": 0.0, "lr": lr * ratio}]

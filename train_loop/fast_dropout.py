"""Dropout with a cheaper random mask, for training on CPU.

Dropout (Srivastava et al. 2014, in its "inverted" form) keeps each element with probability 1 - p and scales
what it keeps by 1 / (1 - p), so that the expected output equals the input:

    y = x * m / (1 - p),   m ~ Bernoulli(1 - p), one independent draw per element;   dy/dx = m / (1 - p).

T5 applies it everywhere: after the embeddings, after every attention and feed-forward block, inside the gated
feed-forward, and on the attention probabilities (B, H, T, S); LoRA applies it once more to the input of every
adapter. On one CPU thread, drawing those masks is the largest single operator of a LoRA step (about a quarter
of it) and about 14% of a full step (`python bench/profile_train.py`, `aten::bernoulli_`): torch's CPU dropout
draws one 32-bit number from its Mersenne Twister per element, turns the draws into a float mask (4 bytes per
element, kept for the backward), divides the mask by 1 - p, and only then multiplies.

`fast_dropout` below computes the same formula with less work around the random numbers:

* one 64-bit draw gives two 32-bit numbers u (a 64-bit draw costs about what a 32-bit one does: measured,
  drawing the words for 1.2M elements takes 1.2 ms where torch.rand takes 3.6 ms and bernoulli_ 7 ms);
* m = (u >= p * 2**32), compared as signed integers: Bernoulli(1 - p) up to 2**-32 (torch.rand's floats resolve
  2**-24);
* the mask m / (1 - p) is made once in x's dtype and kept for the backward, which is dy * mask, as torch's.

The random numbers come from torch's default generator, so `torch.manual_seed` makes runs repeatable and a
checkpoint's saved generator state makes a resumed run continue the same masks. They are *different* numbers
from the ones `nn.Dropout` would draw: a run with this dropout is a different sample of the same training, not
the same run bit for bit (tests/test_fast_dropout.py pins the formula, the keep rate and the gradient).

Attention goes through `t5_attention`, transformers' eager attention with this dropout on the weights, instead
of the default SDPA: on CPU, with a learned position bias and dropout, SDPA falls back to its unfused "math"
path, which does eager's work plus a masked copy of the position bias per layer and a NaN-safe softmax, and was
the slower of the two (python bench/profile_train.py --attention sdpa|eager).

On CUDA, torch's dropout is already one fused kernel on a counter-based generator and SDPA has fused kernels,
so `use_fast_dropout` leaves training on a GPU alone.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "eager_fast_dropout"  # the name our attention function is registered under in transformers


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean (shape) mask, True with probability 1 - p, from half as many 64-bit random draws as elements."""
    n = math.prod(shape)
    words = torch.randint(torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max, ((n + 1) // 2,),
                          dtype=torch.int64, device=device)          # (ceil(n/2),) uniform 64-bit words
    u = words.view(torch.int32)[:n].view(shape)                       # (shape) uniform in [-2**31, 2**31)
    return u >= round(p * 2**32) - 2**31                              # P(keep) = 1 - p (to 2**-32)


class _Dropout(torch.autograd.Function):
    """y = x * mask with mask = m / (1 - p) in x's dtype, kept for the backward: dy/dx = mask."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        mask = keep.to(x.dtype).mul_(scale)                           # (shape) 0 or 1 / (1 - p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)`, computed as the module docstring says."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return _Dropout.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Module):
    """A drop-in `nn.Dropout` that calls `fast_dropout` above."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def t5_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, position_bias=None, **kwargs):
    """T5's attention as transformers' `eager_attention_forward` computes it, with our dropout on the weights.

    query (B, H, T, d_kv); key, value (B, H, S, d_kv); position_bias (1, H, T, S), learned; attention_mask
    (B, 1, T, S), 0 where attending and a large negative number where not. T5 does not scale q k^T by 1/sqrt(d_kv)
    (scaling = 1.0: its initialisation folds the factor into the weights)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * (1.0 if scaling is None else scaling)  # (B, H, T, S)
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)                                          # (B, H, T, S)
    weights = fast_dropout(weights, dropout, module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()                       # (B, T, H, d_kv)
    return output, weights


AttentionInterface.register(ATTENTION, t5_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # the same additive float mask eager attention gets


def use_fast_dropout(model: nn.Module, device: torch.device) -> int:
    """When training on the CPU, swap every `nn.Dropout` of `model` (T5's and LoRA's) for `FastDropout` and route
    attention through `t5_attention`. Returns how many dropout modules were swapped (0 on CUDA: nothing changes)."""
    if torch.device(device).type != "cpu":
        return 0
    swapped = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Dropout:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, FastDropout(module.p))
            swapped += 1
    model.set_attn_implementation(ATTENTION)
    return swapped

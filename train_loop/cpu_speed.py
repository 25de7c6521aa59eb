"""Faster T5 training on CPU: three kernel swaps and a memory setting, applied in one call, `speed_up_on_cpu`.

A layer around the loop, complete without it: modes/train.py and modes/pretrain.py apply it under `--cpu-kernels`
(on by default: 1.25x for LoRA in fp32, bench/RESULTS.md) when training on a CPU, so a CPU run loads this file and
a CUDA run does not. The swaps compute the same formulas, not the same bits: other dropout masks (another sample
of the same training), other rounding in GELU and attention. Weights, config, adapter file (LoRA records
`dropout_p`), checkpoints and outputs are unchanged. On one CPU thread (`python bench/profile_train.py --variant
sdpa`) matrix products are about a fifth of a step; most of the rest is element-wise passes over activations.

1. **Dropout** (Srivastava et al. 2014, "inverted"): y = x * m / (1 - p), m ~ Bernoulli(1 - p), dy/dx = m / (1 - p).
   torch's CPU dropout draws one 32-bit number per element (`bernoulli_`); `fast_dropout` takes two from each 64-bit
   draw of torch's default generator (1.2M elements: 2.6 ms against 7.0 ms, `python bench/bench_dropout.py`), keeps
   where u >= p * 2**32 and saves the mask m / (1 - p) in x's dtype for the backward. `torch.manual_seed` and a
   checkpoint's saved state repeat it.
2. **Attention.** SDPA has no fused CPU kernel for a learned position bias with dropout (its "math" fallback adds a
   masked copy of the bias per layer); `t5_attention` is transformers' eager attention with `fast_dropout`.
3. **GELU.** FLAN-T5's `gelu_new` is seven tensor operations over (B, T, d_ff); `nn.GELU(approximate="tanh")` is
   the same formula (Hendrycks & Gimpel 2016) as one kernel.
4. **Memory** (`keep_freed_memory`). glibc's malloc hands large blocks back to the kernel, and fresh pages cost a
   fault per 4 KiB on first touch. `mallopt` (man 3 mallopt) with M_MMAP_MAX 0 and a 1 GiB trim threshold keeps
   them: 134,000-143,000 minor faults per step instead of 333,000-343,000 (flan-t5-small, full, batch 8, `python
   bench/profile_train.py --mode full --steps 4 --rows 0 --keep-freed-memory on|off`), about the same peak.

tests/test_cpu_kernels.py pins the dropout formula, keep rate and gradient, and that a swapped model at dropout 0
gives transformers' T5 loss, gradients (float64) and generated tokens.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "eager_fast_dropout"  # the name our attention function is registered under in transformers
GELU_NEW = "NewGELUActivation"  # transformers.activations' class for gelu_new
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's malloc.h
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 2**30), (M_TOP_PAD, 64 * 2**20), (M_MMAP_MAX, 0))


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean (shape) mask, True with probability 1 - p, from half as many 64-bit random draws as elements."""
    n = math.prod(shape)
    words = torch.randint(torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max, ((n + 1) // 2,),
                          dtype=torch.int64, device=device)          # (ceil(n/2),) uniform 64-bit words
    u = words.view(torch.int32)[:n].view(shape)                       # (shape) uniform in [-2**31, 2**31)
    return u >= round(p * 2**32) - 2**31                              # P(keep) = 1 - p (to 2**-32)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout(x, p, training)`, computed as the module docstring says: y = x * mask with
    mask = m / (1 - p) in x's dtype, which autograd keeps (and not x: the mask needs no gradient), dy/dx = mask."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return x * keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))  # (shape) 0 or 1 / (1 - p)


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


def use_cpu_kernels(model: nn.Module, device: torch.device) -> dict[str, int]:
    """Swaps 1-3 on `model` (T5's and LoRA's dropout); returns how many modules of each kind (none off the CPU)."""
    swapped = {"dropout": 0, "gelu": 0}
    if torch.device(device).type != "cpu":
        return swapped
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        if type(module) is nn.Dropout:
            setattr(model.get_submodule(parent_name), child, FastDropout(module.p))
            swapped["dropout"] += 1
        elif type(module).__name__ == GELU_NEW:
            setattr(model.get_submodule(parent_name), child, nn.GELU(approximate="tanh"))
            swapped["gelu"] += 1
    model.set_attn_implementation(ATTENTION)
    return swapped


def keep_freed_memory() -> bool:
    """Heap instead of mmap, and no trimming, for this process (item 4 above). True when glibc accepted it all."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return all(mallopt(option, value) == 1 for option, value in MALLOC_SETTINGS)


def speed_up_on_cpu(model: nn.Module) -> None:
    """The one call, for a model trained on the CPU: the kernel swaps on `model`, the memory setting for the process."""
    use_cpu_kernels(model, torch.device("cpu"))
    keep_freed_memory()

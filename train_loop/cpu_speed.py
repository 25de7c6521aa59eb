"""Faster T5 training on CPU: three kernel swaps and a memory setting, applied in one call, `speed_up_on_cpu`.

An optional chapter: the training loop is complete without it, and run.py applies it only with `--cpu-kernels`
on a CPU. The swaps compute the same formulas, but not the same bits: the dropout masks are other random numbers
(a different sample of the same training), and the fused GELU and eager attention round differently from
transformers' defaults. Nothing a user keeps changes: the model's weights and config, the adapter file (LoRA's
`dropout_p` records the probability whatever module draws the masks), checkpoints and output files.

A profile of one training step on one CPU thread (`python bench/profile_train.py --variant sdpa`, flan-t5-small,
bf16 autocast) puts the matrix products at only about a fifth of the time; most of the rest is element-wise work
that reads and writes whole activation tensors. Three pieces of it do more passes over memory than their math
needs, and `use_cpu_kernels` swaps each for the same math in fewer passes:

1. **Dropout masks** (the largest single operator after the matrix products). Dropout (Srivastava et al. 2014,
   "inverted") keeps each element with probability 1 - p and scales it by 1 / (1 - p):

       y = x * m / (1 - p),   m ~ Bernoulli(1 - p), one independent draw per element;   dy/dx = m / (1 - p).

   T5 applies it after the embeddings, after every attention and feed-forward block, inside the gated
   feed-forward and on the attention probabilities (B, H, T, S); LoRA once more on the input of every adapter.
   torch's CPU dropout draws one 32-bit number from its Mersenne Twister per element (`bernoulli_`), makes a
   float mask, divides it by 1 - p, then multiplies. `fast_dropout` computes the same formula with less work
   around the random numbers (`python bench/bench_dropout.py` times both):
   * one 64-bit draw gives two 32-bit numbers u (for 1.2M elements: 2.6 ms of 64-bit draws, 7.0 ms of
     bernoulli_, on this project's machine);
   * m = (u >= p * 2**32), compared as signed integers: Bernoulli(1 - p) up to 2**-32 (torch.rand's floats
     resolve 2**-24);
   * the mask m / (1 - p) is made once in x's dtype and kept for the backward, which is dy * mask, as torch's.
   The random numbers come from torch's default generator, so `torch.manual_seed` makes runs repeatable and a
   checkpoint's saved generator state makes a resumed run continue the same masks. They are *different* numbers
   from the ones `nn.Dropout` would draw: a different sample of the same training, not the same run bit for bit.

2. **Attention.** transformers' default, SDPA, has no fused CPU kernel for a learned position bias with dropout;
   its "math" fallback does eager attention's work plus a masked copy of the position bias per layer and a
   NaN-safe softmax. `t5_attention` is transformers' eager attention, with `fast_dropout` on the weights.

3. **GELU.** FLAN-T5's gated feed-forward uses `gelu_new`, which transformers writes as seven tensor operations
   (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), each a pass over (B, T, d_ff) kept for the backward.
   `nn.GELU(approximate="tanh")` is the same formula (Hendrycks & Gimpel 2016) as one kernel, forward and
   backward (transformers itself calls it `gelu_pytorch_tanh`, "a faster version of gelu_new").

tests/test_cpu_kernels.py pins the dropout formula, keep rate and gradient, and that a swapped model at dropout 0
gives transformers' T5 loss and gradients (float64) and the same generated tokens. On CUDA, dropout is already
one fused kernel, SDPA has fused kernels and the GELU is one kernel either way: `use_cpu_kernels` leaves a model
that trains on a GPU alone.

4. **Memory** (`keep_freed_memory`). Every step of eager PyTorch allocates and frees the same large activation
   tensors (a (8, 6, 300, 300) fp32 attention tensor is 17 MB). glibc's malloc serves blocks above its mmap
   threshold straight from the kernel with mmap and trims freed memory at the top of its heap; memory fresh from
   the kernel costs a page fault per 4 KiB page on first touch. `mallopt` (man 3 mallopt) with M_MMAP_MAX 0 and a
   1 GiB trim threshold keeps freed pages for the next step: 134,000-143,000 minor page faults per step instead
   of 333,000-343,000 on flan-t5-small, full fine-tuning, batch 8 (`python bench/profile_train.py --mode full
   --steps 4 --rows 0 --keep-freed-memory on|off`). Peak memory stays about the same; memory freed at the end is
   kept until the process exits. Linux with glibc only; elsewhere it does nothing.
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


def use_cpu_kernels(model: nn.Module, device: torch.device) -> dict[str, int]:
    """When training on the CPU, swap every `nn.Dropout` of `model` (T5's and LoRA's) for `FastDropout`, route
    attention through `t5_attention`, and swap `gelu_new` for `nn.GELU(approximate="tanh")`. Returns how many
    modules of each kind were swapped (none on CUDA, where nothing changes)."""
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
    """The one call: the kernel swaps on `model` and the memory setting for this process. For a model trained on
    the CPU; run.py calls it under `--cpu-kernels`, bench/train_sides.py and bench/profile_train.py too."""
    use_cpu_kernels(model, torch.device("cpu"))
    keep_freed_memory()

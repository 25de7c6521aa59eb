"""One LoRA layer: a frozen `nn.Linear` plus a trainable low-rank update, written as the paper's equation.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685, section 4.1)
keeps a pretrained weight W (d_out, d_in) frozen and learns its update as a product of two thin matrices:

    h = W x + (alpha / r) * B A x          A: (r, d_in), B: (d_out, r), r << min(d_in, d_out)

Only A and B train: r * (d_in + d_out) numbers instead of d_in * d_out. B starts at zero, so at step 0 the
adapted model is exactly the pretrained one. Dividing by r (section 4.1) means that changing r does not force
re-tuning the learning rate much. rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for
Fine-Tuning with LoRA", arXiv:2312.03732) shows that alpha / r shrinks the update too much at large ranks and
that alpha / sqrt(r) keeps its size stable; `use_rslora=True` picks that.

Initialisation and dropout follow the reference library (peft 0.21, `tuners/lora/layer.py`): A is drawn as
`nn.Linear` draws its weight (kaiming_uniform_ with a=sqrt(5), i.e. uniform in +-1/sqrt(d_in)), B is zeros,
and dropout is applied to the input of A only; the frozen path W x never sees it.

Because the update is linear, it can be folded into W for inference: `merge()` adds (alpha / r) * B A to W, so
a merged layer costs exactly what the original Linear costs; `unmerge()` subtracts it again.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def check_hyperparameters(r, alpha, dropout) -> None:
    """Raise a ValueError naming the bad argument; called before anything in a model is changed."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got r={r!r} (--lora-r)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive number, got alpha={alpha!r} (--lora-alpha)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got dropout={dropout!r} (--lora-dropout)")


class LoRALinear(nn.Module):
    """`base(x) + scaling * B A dropout(x)`, with `base` a frozen `nn.Linear` (Hu et al. 2021, eq. 3).

    A and B take the device and dtype of `base.weight` unless `device` / `dtype` say otherwise (e.g. keep
    float32 adapters on a bfloat16 model). `merged` says whether W currently holds the update.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_hyperparameters(r, alpha, dropout)
        self.base = base.requires_grad_(False)  # W (and its bias) stay as pretrained
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        # Hu et al. 2021 sec. 4.1: alpha / r; rsLoRA (Kalajdzievski 2023): alpha / sqrt(r).
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        # The probability is kept apart from the module: a CPU speed-up swaps nn.Dropout for another module
        # (train_loop/cpu_speed.py), and the adapter file must still record what was trained (lora/checkpoint.py).
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = dict(device=device if device is not None else base.weight.device,
                       dtype=dtype if dtype is not None else base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))   # (r, d_in)
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))  # (d_out, r)
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """peft's default init: A as nn.Linear's weight (kaiming_uniform_, a=sqrt(5)), B = 0 so B A = 0."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in), any number of leading dims
        h = self.base(x)  # (..., d_in) -> (..., d_out): the frozen W x (+ b)
        if self.merged:
            return h  # W already holds W + scaling * B A
        x = self.dropout(x).to(self.lora_A.dtype)  # (..., d_in); dropout only on the adapter's path
        down = x @ self.lora_A.T  # (..., d_in) -> (..., r)
        up = down @ self.lora_B.T  # (..., r) -> (..., d_out)
        return h + (up * self.scaling).to(h.dtype)  # (..., d_out)

    def delta_weight(self) -> torch.Tensor:
        """The update LoRA adds to W: scaling * B A, shape (d_out, d_in), like `base.weight`."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (d_out, r) @ (r, d_in) -> (d_out, d_in)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scaling * B A: the merged layer is a plain Linear in cost; forward then uses `base` alone."""
        if self.merged:
            raise ValueError("this LoRALinear is already merged; merging twice would add B A to W twice")
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scaling * B A: gives back the frozen weight (up to rounding) so A and B can train again."""
        if not self.merged:
            raise ValueError("this LoRALinear is not merged; call merge() before unmerge()")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        rule = "alpha/sqrt(r)" if self.use_rslora else "alpha/r"
        return (f"d_in={self.base.in_features}, d_out={self.base.out_features}, r={self.r}, alpha={self.alpha}, "
                f"scaling={self.scaling:.4g} ({rule}), dropout={self.dropout_p:g}, merged={self.merged}")

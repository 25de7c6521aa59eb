"""DoRA: LoRA's update split into a magnitude and a direction (Liu et al. 2024, arXiv:2402.09353).

The paper's section 3 decomposes a weight into the norm of each of its columns and the direction of that column:
W = m (V / ||V||_c), and finds that full fine-tuning changes the two in proportions LoRA cannot reach. DoRA (its
equation 5) lets the magnitude train on its own and gives the direction to LoRA:

    W' = m * (W + s B A) / ||W + s B A||_c          m: (d_out,), one magnitude per output feature

`||.||_c` is the norm of each column of the paper's W (d_in, d_out), that is of each *row* of torch's
`nn.Linear.weight` (d_out, d_in): one number per output feature. m starts as ||W||_c, so with B = 0 the layer is
exactly W. Section 4.3 treats the norm as a constant in the backward pass (`.detach()`): the gradient is cheaper
and, the paper measures, as good. This is peft 0.21's `DoraLinearLayer` (`tuners/lora/dora.py`) and its file
format: m saved as `<module>.lora_magnitude_vector`, `use_dora: true` in adapter_config.json.

With dropout on the adapter's input, peft applies it to the whole DoRA correction, not to the base path:

    h = W x + b + (m / ||W + s B A||_c - 1) * W dropout(x) + (m / ||W + s B A||_c) * s B A dropout(x)

which is W' x + b when there is no dropout (or in eval mode). Proved equal to peft by tests/test_lora_family.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lora.layer import LoRALinear


class DoRALinear(LoRALinear):
    """LoRALinear plus a trainable magnitude m (d_out,), the weight normalised row by row (equation 5)."""

    variant = "dora"

    def __init__(self, base: nn.Linear, *args, **kwargs):
        super().__init__(base, *args, **kwargs)
        # m = ||W + s B A||_c at the start, with B = 0: the row norms of W. A parameter; add_lora makes it trainable.
        self.lora_magnitude_vector = nn.Parameter(self.column_norm().to(self.lora_A.dtype))  # (d_out,)
        self.merged_norm: torch.Tensor | None = None  # ||W + s B A||_c when merged, to unmerge exactly

    def column_norm(self) -> torch.Tensor:
        """||W + s B A||_c, one value per output feature, with B A detached (section 4.3). Shape: (d_out,)."""
        W = self.base.weight  # (d_out, d_in)
        V = W + self.delta_weight().detach().to(W.dtype)  # (d_out, d_in)
        return torch.linalg.norm(V, dim=1)  # (d_out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in)
        h = self.base(x)  # (..., d_out): W x + b
        if self.merged:
            return h  # W already holds m * (W + s B A) / ||W + s B A||_c
        scale = self.lora_magnitude_vector / self.column_norm().detach()  # (d_out,): m / ||W + s B A||_c
        if isinstance(self.dropout, nn.Identity) or not self.training:
            dx = x
            Wx = h if self.base.bias is None else h - self.base.bias  # (..., d_out): W x, already computed
        else:
            dx = self.dropout(x)  # (..., d_in)
            Wx = F.linear(dx, self.base.weight)  # (..., d_out): W dropout(x)
        dx = dx.to(self.lora_A.dtype)
        BAx = (dx @ self.lora_A.T) @ self.lora_B.T  # (..., d_in) -> (..., r) -> (..., d_out)
        return h + ((scale - 1) * Wx + scale * self.scaling * BAx).to(h.dtype)  # (..., d_out)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- m * (W + s B A) / ||W + s B A||_c, each row of W scaled by its factor (peft's `merge`)."""
        self.check_mergeable()
        W = self.base.weight  # (d_out, d_in)
        self.merged_norm = self.column_norm()  # (d_out,): kept, the merged W no longer tells it
        factor = (self.lora_magnitude_vector / self.merged_norm).to(W.dtype)  # (d_out,)
        W.copy_(factor[:, None] * (W + self.delta_weight().to(W.dtype)))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W' * ||W + s B A||_c / m - s B A: the frozen W back (up to rounding)."""
        if not self.merged:
            raise ValueError("this DoRALinear is not merged; call merge() before unmerge()")
        W = self.base.weight
        factor = (self.lora_magnitude_vector / self.merged_norm).to(W.dtype)  # (d_out,)
        W.copy_(W / factor[:, None] - self.delta_weight().to(W.dtype))
        self.merged, self.merged_norm = False, None

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().adapter_tensors(), "lora_magnitude_vector": self.lora_magnitude_vector}  # m: (d_out,)

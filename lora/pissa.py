"""PiSSA: LoRA started on W's principal singular directions (Meng et al. 2024, arXiv:2404.02948).

LoRA starts with B = 0, so its first steps move in random directions. PiSSA (section 3) starts A and B on the
top-r singular triplets of W instead, and freezes what they do not hold, the residual:

    W = U S V^T                                     the SVD; U: (d_out, k), S: (k,), V^T: (k, d_in)
    A = diag(sqrt(S_r / s)) V^T_r                   (r, d_in)
    B = U_r diag(sqrt(S_r / s))                     (d_out, r)
    W_res = W - s B A                               (d_out, d_in), frozen in W's place

so W_res + s B A = W: the model starts exactly as the base (s = alpha / r divides S_r, as peft 0.21's
`pissa_init` does, so that s B A is exactly the top-r part U_r S_r V^T_r). This is the exact SVD variant
(`init_lora_weights="pissa"`), computed in float32 or wider, as peft computes it.

Saving (peft's `save_pretrained(path_initial_model_for_weight_conversion=...)`, `subtract_mutated_init`): after
training W_res + s B A = W + delta W, so delta W = s (B A - B_0 A_0) = s [B | -B_0] [A ; A_0]: a plain LoRA adapter
of rank 2r on the *original* W, with alpha doubled so that the scaling stays s (rsLoRA: alpha times sqrt(2)).
That is what lora/adapter_file.py writes for a PiSSA layer, so anyone can load it as LoRA on the untouched base.
Unloading without merging leaves W_res in place, as peft's `unload` does.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lora.layer import LoRALinear


class PiSSALinear(LoRALinear):
    """LoRALinear whose A and B start on W's top-r singular directions and whose base holds the residual."""

    variant = "pissa"

    def __init__(self, base: nn.Linear, *args, **kwargs):
        super().__init__(base, *args, **kwargs)  # calls reset_lora_parameters: the SVD below
        self.register_buffer("initial_A", self.lora_A.detach().clone(), persistent=False)  # A_0: (r, d_in)
        self.register_buffer("initial_B", self.lora_B.detach().clone(), persistent=False)  # B_0: (d_out, r)

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        W = self.base.weight  # (d_out, d_in)
        dtype = W.dtype if W.dtype == torch.float64 else torch.float32  # peft's SVD runs in float32
        U, S, Vh = torch.linalg.svd(W.to(dtype), full_matrices=False)  # (d_out, k), (k,), (k, d_in)
        U_r, S_r, Vh_r = U[:, :self.r], S[:self.r] / self.scaling, Vh[:self.r]  # the top-r triplets, S_r / s
        A = torch.diag(torch.sqrt(S_r)) @ Vh_r  # (r, r) @ (r, d_in) -> (r, d_in)
        B = U_r @ torch.diag(torch.sqrt(S_r))  # (d_out, r) @ (r, r) -> (d_out, r)
        self.lora_A.copy_(A)
        self.lora_B.copy_(B)
        W.copy_(W.to(dtype) - self.scaling * B @ A)  # W_res = W - s B A

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """delta W as plain LoRA on the original W: A' = [A ; A_0] (2r, d_in), B' = [B | -B_0] (d_out, 2r)."""
        return {"lora_A": torch.cat([self.lora_A, self.initial_A], dim=0),
                "lora_B": torch.cat([self.lora_B, -self.initial_B], dim=1)}

    def saved_r_alpha(self) -> tuple[int, float]:
        """Rank 2r at the same scaling: alpha * 2 (alpha / r), or alpha * sqrt(2) (rsLoRA, alpha / sqrt(r))."""
        return 2 * self.r, self.alpha * (math.sqrt(2) if self.use_rslora else 2)

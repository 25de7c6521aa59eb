"""How a fine-tuned weight moved, split into magnitude and direction: the DoRA paper's own analysis
(Liu et al. 2024, arXiv:2402.09353, section 3, equations 2-4, Figure 2).

The paper writes a weight as W = m (V / ||V||_c), m the norm of each column and V / ||V||_c its direction, and
measures for the weight W_t at a training checkpoint against the pretrained W_0, over the k columns:

    Delta M_t = sum_n |m_t^n - m_0^n| / k                        (eq. 3) how far the magnitudes moved
    Delta D_t = sum_n (1 - cos(W_t^n, W_0^n)) / k                (eq. 4) how far the directions turned

Its Figure 2 plots (Delta D, Delta M) at several checkpoints for full fine-tuning, LoRA and DoRA: full fine-tuning's
points slope negatively (large turns come with small magnitude changes), LoRA's positively (the two move together),
DoRA's like full fine-tuning's. A column of the paper's W (d_in, d_out) is a row of torch's `nn.Linear.weight`
(d_out, d_in): one per output feature, as in lora/dora.py. `adapted_weight` gives W_t of a LoRA or DoRA checkpoint,
`weight_at` that of any of the three from a layer's saved tensors (train_loop/snapshots.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def magnitude_direction_change(W0: torch.Tensor, Wt: torch.Tensor) -> tuple[float, float]:
    """(Delta M, Delta D) of Wt against W0, both (d_out, d_in), over the d_out output features (eq. 3, 4)."""
    if W0.shape != Wt.shape:
        raise ValueError(f"magnitude_direction_change: W0 {tuple(W0.shape)} and Wt {tuple(Wt.shape)} differ")
    W0, Wt = W0.double(), Wt.double()
    delta_m = (Wt.norm(dim=1) - W0.norm(dim=1)).abs().mean()  # (d_out,) -> ()
    delta_d = (1 - F.cosine_similarity(Wt, W0, dim=1)).mean()  # (d_out,) -> ()
    return delta_m.item(), delta_d.item()


def adapted_weight(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float,
                   magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """W0 + s B A (LoRA), or m * (W0 + s B A) / ||W0 + s B A||_c (DoRA, with its magnitude m (d_out,))."""
    V = W0 + scaling * (B @ A)  # (d_out, r) @ (r, d_in) -> (d_out, d_in)
    if magnitude is None:
        return V
    return magnitude[:, None] * V / V.norm(dim=1, keepdim=True)  # each row to length m


def weight_at(W0: torch.Tensor, tensors: dict[str, torch.Tensor], method: str, scaling: float | None) -> torch.Tensor:
    """W_t of one layer at a checkpoint, from its saved tensors by their last name: full fine-tuning's `weight` is
    W_t itself; LoRA's `lora_A`, `lora_B` (and DoRA's `lora_magnitude_vector`) go on top of the pretrained W0."""
    if method == "full":
        return tensors["weight"]
    if method not in ("lora", "dora"):
        raise ValueError(f"method {method!r}: W_t is rebuilt for full, lora and dora (a PiSSA run's frozen W is "
                         f"its residual, not the pretrained W)")
    return adapted_weight(W0.to(tensors["lora_A"].dtype), tensors["lora_A"], tensors["lora_B"], scaling,
                          tensors.get("lora_magnitude_vector") if method == "dora" else None)

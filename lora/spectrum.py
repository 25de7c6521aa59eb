"""What a weight update looks like: its singular values, its effective rank, and how it relates to W.

Hu et al. 2021 (arXiv:2106.09685) build LoRA on the hypothesis that the update a fine-tune makes, delta W, has a
low "intrinsic rank" (section 4.1), and test it in section 7:

* **Spectrum.** delta W = scaling * B A (d_out, d_in) has at most r non-zero singular values. How many of them
  matter? The *effective rank* here is the number of singular values that hold a share `energy` (90%) of
  ||delta W||_F^2 = sum of sigma_k^2. A full fine-tune's update W_full - W_base has no such limit: its effective
  rank says how low-rank full fine-tuning's update really is.
* **delta W against W** (section 7.3, Table 7). Project W onto the r-dimensional subspaces of delta W:
  ||U^T W V^T||_F with U (d_out, r) and V^T (r, d_in) the top-r singular vectors of delta W. Compared with the
  same for W's own top-r directions (= the root of the sum of W's r largest sigma^2) and for random directions,
  it says whether delta W amplifies directions W already emphasises (large) or ones W barely uses (near random).
  The *amplification factor* ||delta W||_F / ||U^T W V^T||_F is how much the update enlarges those directions
  (the paper: 21.5 for r=4 on GPT-3's W_q, layer 48).
* **Capture.** How much of a matrix M (e.g. the full fine-tune's update) lies in the subspace pair (U, V^T):
  ||U^T M V^T||_F^2 / ||M||_F^2; at most the share of M's own top-r singular values (Eckart-Young).
"""
from __future__ import annotations

import torch


def delta_weight(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """scaling * B A in float64: (d_out, r) @ (r, d_in) -> (d_out, d_in), the update LoRA adds to W."""
    return scaling * (B.double() @ A.double())


def numerical_rank(singular_values: torch.Tensor, shape: tuple[int, int]) -> int:
    """Singular values above rounding: sigma > sigma_max * max(shape) * eps (numpy.linalg.matrix_rank's rule)."""
    if singular_values.numel() == 0 or singular_values[0] == 0:
        return 0
    tolerance = singular_values[0] * max(shape) * torch.finfo(singular_values.dtype).eps
    return int((singular_values > tolerance).sum())


def effective_rank(singular_values: torch.Tensor, energy: float = 0.9) -> int:
    """The fewest singular values (largest first) whose squares hold `energy` of the total; 0 for a zero matrix."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy {energy}: must be in (0, 1]")
    squares = singular_values.double() ** 2
    total = squares.sum()
    if total == 0:
        return 0
    share = squares.cumsum(0) / total  # share[k-1] = energy in the top k
    return int((share < energy - 1e-12).sum()) + 1


def spectrum(M: torch.Tensor, energy: float = 0.9, keep: int | None = None) -> dict:
    """Singular values (the first `keep`, all if None), numerical rank, effective rank and norms of M."""
    s = torch.linalg.svdvals(M.double())
    return {"singular_values": s[:keep].tolist(), "rank": numerical_rank(s, tuple(M.shape)),
            "effective_rank": effective_rank(s, energy), "frobenius_norm": float(s.norm()),
            "spectral_norm": float(s[0]) if s.numel() else 0.0}


def top_directions(M: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V^T) of M's r largest singular values: (d_out, r) and (r, d_in)."""
    U, _, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    return U[:, :r], Vh[:r]


def projection_norm(W: torch.Tensor, U: torch.Tensor, Vh: torch.Tensor) -> float:
    """||U^T W V^T||_F: (r, d_out) @ (d_out, d_in) @ (d_in, r) -> (r, r)."""
    return float((U.T @ W.double() @ Vh.T).norm())


def random_directions(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """r orthonormal columns in R^d, uniformly random (QR of a Gaussian matrix): (d, r)."""
    Q, R = torch.linalg.qr(torch.randn(d, r, dtype=torch.float64, generator=generator))
    return Q * torch.sign(torch.diagonal(R))  # sign fix: makes the distribution uniform (Mezzadri 2007)


def table7(W: torch.Tensor, delta: torch.Tensor, r: int, generator: torch.Generator) -> dict:
    """Section 7.3 / Table 7 for one layer: ||U^T W V^T||_F for delta W's top-r directions, W's own and random
    ones, the norms of W and delta W, and the amplification factor ||delta W||_F / ||U^T W V^T||_F."""
    if W.shape != delta.shape:
        raise ValueError(f"table7: W {tuple(W.shape)} and delta W {tuple(delta.shape)} differ in shape")
    U, Vh = top_directions(delta, r)
    Uw, Vhw = top_directions(W, r)
    U_random = random_directions(W.shape[0], r, generator)
    V_random = random_directions(W.shape[1], r, generator).T
    on_delta = projection_norm(W, U, Vh)
    delta_norm = float(delta.double().norm())
    return {"r": r, "w_norm": float(W.double().norm()), "delta_norm": delta_norm,
            "w_on_delta_directions": on_delta, "w_on_own_directions": projection_norm(W, Uw, Vhw),
            "w_on_random_directions": projection_norm(W, U_random, V_random),
            "amplification": delta_norm / on_delta if on_delta > 0 else float("inf")}


def captured_energy(M: torch.Tensor, U: torch.Tensor, Vh: torch.Tensor) -> float:
    """||U^T M V^T||_F^2 / ||M||_F^2: the share of M inside the subspace pair (U (d_out, r), V^T (r, d_in))."""
    total = float(M.double().norm()) ** 2
    return projection_norm(M, U, Vh) ** 2 / total if total > 0 else 0.0


def best_rank_energy(M: torch.Tensor, r: int) -> float:
    """The most any r-dimensional pair can capture: M's top-r sigma^2 over the total (Eckart-Young)."""
    s2 = torch.linalg.svdvals(M.double()) ** 2
    return float(s2[:r].sum() / s2.sum()) if s2.sum() > 0 else 0.0


def cosine(X: torch.Tensor, Y: torch.Tensor) -> float:
    """<X, Y>_F / (||X||_F ||Y||_F): do two updates point the same way? 0 for zero matrices."""
    denominator = float(X.double().norm() * Y.double().norm())
    return float((X.double() * Y.double()).sum()) / denominator if denominator > 0 else 0.0

"""How much two LoRA adapters learned the same directions: the subspace similarity of Hu et al. 2021, section 7.2.

For two adapters a and b of ranks r_a and r_b on the same layer, take the right-singular vectors of their A
matrices (A: (r, d_in), so A = U S V^T with V^T: (r, d_in); the paper calls these rows U_A, ordered by singular
value). The paper's equation 4 is a normalised subspace similarity based on the Grassmann distance:

    phi(a, b, i, j) = || V_a[:i] V_b[:j]^T ||_F^2 / min(i, j)        1 <= i <= r_a, 1 <= j <= r_b

It lies in [0, 1]: 1 when the smaller of the two subspaces (the top-i directions of a, the top-j of b) lies inside
the other, 0 when they are orthogonal. Figure 3 of the paper draws it as a heatmap (i down, j across) for
r_a = 8 and r_b = 64 and finds that the top direction of the r=8 adapter is largely contained in the r=64 one,
while the rest is closer to noise: the argument that a very small rank is enough.

What to compare against: for two *independent random* subspaces of dimensions i and j in R^d, the expected
squared overlap E||V_i V_j^T||_F^2 is i * j / d (each of the i unit vectors keeps j/d of its length in the other
subspace), so phi is about max(i, j) / d: near 0 for d = 512 and small ranks. d is the layer's own d_in, and an
A of rank r > d_in has only d_in directions, so phi and its random value are (min(r_a, d), min(r_b, d)).
Adapters whose A's started from one random draw share directions before any training: the fair baseline is
then phi of the two *initial* A's, which a trained pair must beat (lora/analysis.py reports both).
"""
from __future__ import annotations

import torch


def right_singular_vectors(A: torch.Tensor) -> torch.Tensor:
    """The rows V^T of A = U S V^T, ordered by decreasing singular value: (r, d_in) for A: (r, d_in)."""
    _, _, Vh = torch.linalg.svd(A.double(), full_matrices=False)  # Vh: (min(r, d_in), d_in)
    return Vh


def subspace_similarity(A_a: torch.Tensor, A_b: torch.Tensor) -> torch.Tensor:
    """phi(a, b, i, j) for every 1 <= i <= r_a, 1 <= j <= r_b, as a (r_a, r_b) tensor: phi[i-1, j-1] (an A of
    rank r > d_in has d_in directions: min(r, d_in) rows or columns).

    ||V_a[:i] V_b[:j]^T||_F^2 is the sum of the squared entries of the top-left (i, j) block of one (r_a, r_b)
    matrix of inner products, so all of phi comes from one matrix product and two cumulative sums.
    """
    if A_a.shape[1] != A_b.shape[1]:
        raise ValueError(f"subspace_similarity: A matrices of different input sizes {tuple(A_a.shape)} and "
                         f"{tuple(A_b.shape)}: the adapters are not on the same layer")
    Va, Vb = right_singular_vectors(A_a), right_singular_vectors(A_b)  # (r_a, d_in), (r_b, d_in)
    overlap = (Va @ Vb.T) ** 2  # (r_a, r_b): squared cosine between direction i of a and direction j of b
    block_sums = overlap.cumsum(0).cumsum(1)  # [i-1, j-1] = ||Va[:i] Vb[:j]^T||_F^2
    i = torch.arange(1, Va.shape[0] + 1, dtype=overlap.dtype)[:, None]  # (r_a, 1)
    j = torch.arange(1, Vb.shape[0] + 1, dtype=overlap.dtype)[None, :]  # (1, r_b)
    return (block_sums / torch.minimum(i, j)).clamp(0.0, 1.0)  # clamp: rounding only


def random_expectation(r_a: int, r_b: int, d: int) -> torch.Tensor:
    """E phi for independent uniformly random subspaces in R^d: max(i, j) / d, as a (min(r_a, d), min(r_b, d))
    tensor, the shape `subspace_similarity` gives for A's (r_a, d) and (r_b, d)."""
    i = torch.arange(1, min(r_a, d) + 1, dtype=torch.float64)[:, None]  # (min(r_a, d), 1)
    j = torch.arange(1, min(r_b, d) + 1, dtype=torch.float64)[None, :]  # (1, min(r_b, d))
    return torch.maximum(i, j) / d

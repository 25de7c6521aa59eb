"""The LoRA paper's section 7 math on cases whose answer is known: subspace similarity (eq. 4), the spectrum of a
constructed update, Table 7's amplification factor, and the capture of one update by another's directions."""
import math

import pytest
import torch

from lora import spectrum as sp
from lora.subspace import random_expectation, subspace_similarity


def orthonormal_rows(k, d, seed=0):
    """k orthonormal rows in R^d: (k, d)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, dtype=torch.float64, generator=g))[0].T


def test_same_row_space_gives_phi_one():
    g = torch.Generator().manual_seed(1)
    A_a = torch.randn(4, 64, dtype=torch.float64, generator=g)
    Q = torch.randn(4, 4, dtype=torch.float64, generator=g) + 4 * torch.eye(4, dtype=torch.float64)  # invertible
    phi = subspace_similarity(A_a, Q @ A_a)
    # i = j = r: the whole spaces coincide; and any i against the whole of the other space is contained in it
    assert phi[-1, -1] == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(phi[:, -1], torch.ones(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(phi[-1, :], torch.ones(4, dtype=torch.float64), atol=1e-10)


def test_orthogonal_row_spaces_give_phi_zero():
    rows = orthonormal_rows(12, 64)
    phi = subspace_similarity(3 * rows[:4], rows[4:12])
    assert phi.shape == (4, 8) and phi.abs().max() < 1e-12


def test_independent_random_subspaces_give_about_max_i_j_over_d():
    d = 256
    g = torch.Generator().manual_seed(2)
    phis = torch.stack([subspace_similarity(torch.randn(8, d, generator=g), torch.randn(32, d, generator=g))
                        for _ in range(40)]).mean(0)  # (8, 32), averaged over 40 independent pairs
    expected = random_expectation(8, 32, d)
    assert torch.allclose(phis, expected, rtol=0.25, atol=0.01)
    assert phis[7, 31] == pytest.approx(32 / d, rel=0.1)  # the paper's "j / d" for i <= j
    assert phis.max() < 0.25  # far from the shared-direction value 1


def test_phi_is_symmetric_under_swapping_the_adapters():
    g = torch.Generator().manual_seed(3)
    A_a, A_b = torch.randn(4, 32, generator=g), torch.randn(6, 32, generator=g)
    assert torch.allclose(subspace_similarity(A_a, A_b), subspace_similarity(A_b, A_a).T, atol=1e-12)


def test_phi_follows_singular_value_order():
    """A_b holds a's strongest direction as its own strongest: phi(1, 1) = 1, while a's weakest one is absent."""
    rows = orthonormal_rows(6, 40)
    A_a = torch.diag(torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64)) @ rows[:3]
    A_b = torch.diag(torch.tensor([9.0, 1.0], dtype=torch.float64)) @ torch.stack([rows[0], rows[5]])
    phi = subspace_similarity(A_a, A_b)
    assert phi[0, 0] == pytest.approx(1.0) and phi[2, 1] == pytest.approx(0.5)  # 1 of min(3, 2) directions shared


def test_different_input_sizes_are_refused():
    with pytest.raises(ValueError, match="not on the same layer"):
        subspace_similarity(torch.randn(2, 8), torch.randn(2, 9))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_a_rank_k_update_has_k_singular_values_and_effective_rank_k(k):
    r, d_out, d_in = 16, 48, 40
    g = torch.Generator().manual_seed(k)
    B = torch.zeros(d_out, r, dtype=torch.float64)
    B[:, :k] = orthonormal_rows(k, d_out, seed=k).T  # (d_out, k) orthonormal columns; the other r - k are zero
    A = torch.randn(r, d_in, dtype=torch.float64, generator=g)
    A[:k] = orthonormal_rows(k, d_in, seed=10 + k)  # so B A = sum of k equal-sized rank-one terms
    result = sp.spectrum(sp.delta_weight(A, B, scaling=2.0), energy=0.9)
    s = torch.tensor(result["singular_values"])
    assert result["rank"] == k and (s[:k] > 1.0).all() and (s[k:] < 1e-12).all()
    assert s[:k] == pytest.approx([2.0] * k)  # scaling x orthonormal factors
    assert result["effective_rank"] == k  # k equal values: k - 1 of them hold (k - 1)/k < 90%
    assert result["frobenius_norm"] == pytest.approx(2.0 * math.sqrt(k))


def test_effective_rank_counts_the_energy_share():
    assert sp.effective_rank(torch.tensor([3.0, 1.0, 1.0]), energy=0.9) == 2  # 9/11 < 0.9 <= 10/11
    assert sp.effective_rank(torch.tensor([3.0, 1.0, 1.0]), energy=0.8) == 1
    assert sp.effective_rank(torch.zeros(4)) == 0


def test_amplification_factor_of_a_constructed_case_is_its_closed_form():
    """W = P diag(s) Q^T; delta W = c p_2 q_2^T amplifies W's second direction: U^T W V^T = s_2, factor c / s_2."""
    d_out, d_in = 24, 20
    P, Qt = orthonormal_rows(d_out, d_out, seed=4).T, orthonormal_rows(d_in, d_in, seed=5)
    s = torch.linspace(10.0, 1.0, d_in, dtype=torch.float64)
    W = P[:, :d_in] @ torch.diag(s) @ Qt  # (d_out, d_in) with singular values s
    c = 7.0
    delta = c * torch.outer(P[:, 1], Qt[1])
    row = sp.table7(W, delta, r=1, generator=torch.Generator().manual_seed(0))
    assert row["w_on_delta_directions"] == pytest.approx(s[1].item())
    assert row["amplification"] == pytest.approx(c / s[1].item())
    assert row["w_on_own_directions"] == pytest.approx(s[0].item())  # W's top direction: its largest value
    assert row["w_norm"] == pytest.approx(float(s.norm())) and row["delta_norm"] == pytest.approx(c)
    assert row["w_on_random_directions"] < s[0].item()


def test_an_update_captures_itself_as_well_as_any_rank_r_pair_can():
    g = torch.Generator().manual_seed(6)
    M = torch.randn(30, 20, dtype=torch.float64, generator=g)
    U, Vh = sp.top_directions(M, 5)
    assert sp.captured_energy(M, U, Vh) == pytest.approx(sp.best_rank_energy(M, 5))
    other_U, other_Vh = sp.top_directions(torch.randn(30, 20, dtype=torch.float64, generator=g), 5)
    assert sp.captured_energy(M, other_U, other_Vh) < sp.best_rank_energy(M, 5)
    assert sp.cosine(M, 3 * M) == pytest.approx(1.0) and sp.cosine(M, -M) == pytest.approx(-1.0)


def test_the_random_baseline_of_phi_uses_each_targets_own_width(tmp_path):
    """T5's o reads the heads' width (d_kv * heads), q reads d_model: each target's random phi is max(i, j) / its
    own d_in, over i <= min(r_a, d_in) and j <= min(r_b, d_in), the shape phi itself has. Here r_b = 8 > d_in = 6."""
    from statistics import mean

    from eval.analysis_report import write_analysis
    from lora.analysis import analyse
    from lora.factors import AdapterFactors

    g = torch.Generator().manual_seed(0)
    base = {"block.q": torch.randn(16, 16, generator=g), "block.o": torch.randn(16, 6, generator=g)}

    def factors(r, folder):
        layers = {name: (torch.randn(r, W.shape[1], generator=g), torch.randn(W.shape[0], r, generator=g))
                  for name, W in base.items()}
        return AdapterFactors(tmp_path / folder, {"r": r, "lora_alpha": r, "target_modules": ["o", "q"]}, 1.0, layers)

    result = analyse(base, [factors(4, "a"), factors(8, "b")])
    expected = {"q": [[max(i, j) / 16 for j in range(1, 9)] for i in range(1, 5)],
                "o": [[max(i, j) / 6 for j in range(1, 7)] for i in range(1, 5)]}  # phi on o is (4, 6)
    lines = write_analysis({"model": "toy", **result}, tmp_path / "out").read_text().splitlines()
    for target, grid in expected.items():
        row = next(line for line in lines if line.startswith(f"| {target} | 1 |"))
        assert row.endswith(f"| {mean(v for r in grid for v in r):.3f} |"), row  # the 'random: mean' column
    pair = result["subspace_similarity"][0]
    for name, target in (("block.q", "q"), ("block.o", "o")):
        random = torch.tensor(pair["random"][target], dtype=torch.float64)
        assert random.shape == torch.tensor(pair["layers"][name]).shape
        assert torch.allclose(random, torch.tensor(expected[target], dtype=torch.float64))

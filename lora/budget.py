"""Equal parameter budgets for different target sets (Hu et al. 2021, section 7.1, Table 5).

A LoRA layer on an nn.Linear (d_in -> d_out) has r * (d_in + d_out) parameters. The paper compares adapting
W_q alone, W_q and W_v, all four attention projections, ... at the same number of trainable parameters: r = 8 on
one type of matrix, r = 4 on two, r = 2 on four. Here the budget is that of `r` on the first target set, and each
other set gets the rank that spends the same budget.
"""
from __future__ import annotations

from torch import nn

from lora.inject import find_targets


def params_per_rank(model: nn.Module, targets) -> int:
    """LoRA parameters per unit of rank on these targets: the sum of d_in + d_out over the adapted Linears."""
    return sum(model.get_submodule(name).in_features + model.get_submodule(name).out_features
               for name in find_targets(model, targets))


def equal_budget_ranks(model: nn.Module, target_sets: list[str], r: int) -> list[int]:
    """The rank of each target set that spends what `r` spends on the first one; raises if one is not whole."""
    budget = r * params_per_rank(model, target_sets[0])
    ranks = []
    for targets in target_sets:
        per_rank = params_per_rank(model, targets)
        if budget % per_rank:
            raise ValueError(f"--target-sets: {budget:,} parameters (r={r} on {target_sets[0]!r}) is no whole "
                             f"rank on {targets!r} ({per_rank:,} per rank); choose --lora-r as a multiple of "
                             f"the number of target types, e.g. 8 for sets of 1, 2 and 4 types")
        ranks.append(budget // per_rank)
    return ranks

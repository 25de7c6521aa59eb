"""The LoRA paper's section 7 on a set of adapters, as numbers: one function from weights to a JSON-ready dict.

Inputs are plain tensors: the base model's weights W of the adapted layers, each adapter's A and B
(lora/factors.py), and optionally a fully fine-tuned model's weights of the same layers. For every adapter and
layer: the spectrum of delta W = scaling * B A (lora/spectrum.py), Table 7's projections of W onto it, and,
given a full fine-tune, how much of W_full - W_base lies in delta W's top directions. For every pair of adapters
and every layer both adapt: the subspace similarity phi of equation 4 (lora/subspace.py), with two baselines:
random subspaces of each target's own width, and, given the A's as initialised, phi of those initial A's (what
the two shared before training: training learned only what phi adds to it).
"""
from __future__ import annotations

import itertools

import torch

from lora import spectrum as sp
from lora.factors import AdapterFactors
from lora.subspace import random_expectation, subspace_similarity

# However far a fine-tune moves W (the shipped baby model's q by 118% of its norm on average at lr 1e-3, README's
# study), W_full stays aligned with W_base (a cosine of at least 0.60 on every q and v there); independent random
# matrices have a cosine of about 1 / sqrt(numel), i.e. 0.
UNRELATED_COSINE = 0.3


def adapted_layers(base: dict[str, torch.Tensor], adapter: AdapterFactors) -> list[str]:
    """The adapter's layers in the model's order (that of `base`); every one must be in `base` with W's shape."""
    for name, (A, B) in adapter.layers.items():
        if name not in base:
            raise ValueError(f"adapter {adapter.folder}: layer {name} is not a Linear layer of the base model "
                             f"(another model? its layers look like {next(iter(base))})")
        if tuple(base[name].shape) != (B.shape[0], A.shape[1]):
            raise ValueError(f"adapter {adapter.folder}: layer {name} has B A of shape {(B.shape[0], A.shape[1])} "
                             f"but the base model's W is {tuple(base[name].shape)} (another model size?)")
    return [name for name in base if name in adapter.layers]


def full_updates(base: dict[str, torch.Tensor], full: dict[str, torch.Tensor], layers: list[str]) -> dict:
    """W_full - W_base per layer; refuses a full model that does not look fine-tuned from this base."""
    updates = {}
    for name in layers:
        if name not in full or full[name].shape != base[name].shape:
            raise ValueError(f"--full-model: layer {name} is missing or has another shape than in the base model")
        updates[name] = full[name].double() - base[name].double()
        cosine = float(torch.nn.functional.cosine_similarity(full[name].double().flatten(),
                                                             base[name].double().flatten(), dim=0))
        if cosine < UNRELATED_COSINE:
            raise ValueError(f"--full-model: on {name} its cosine with the base's W is {cosine:.2f}, as unrelated "
                             f"weights have; was it fine-tuned from this --model (with --random-init: built with "
                             f"this --seed)?")
    return updates


def analyse_adapter(base: dict, adapter: AdapterFactors, full: dict | None, energy: float,
                    generator: torch.Generator) -> dict:
    layers = {}
    for name in adapted_layers(base, adapter):
        A, B = adapter.layers[name]
        delta = sp.delta_weight(A, B, adapter.scaling)  # (d_out, d_in)
        entry = {"spectrum": sp.spectrum(delta, energy, keep=adapter.r),
                 "table7": sp.table7(base[name], delta, adapter.r, generator)}
        if full is not None and name in full:
            U, Vh = sp.top_directions(delta, adapter.r)
            entry["full_update"] = {"captured": sp.captured_energy(full[name], U, Vh),
                                    "best_rank_r": sp.best_rank_energy(full[name], adapter.r),
                                    "cosine": sp.cosine(delta, full[name])}
        layers[name] = entry
    return {"dir": str(adapter.folder), "r": adapter.r, "alpha": adapter.config["lora_alpha"],
            "use_rslora": bool(adapter.config.get("use_rslora", False)), "scaling": adapter.scaling,
            "targets": adapter.config["target_modules"], "layers": layers}


def target_of(layer: str) -> str:
    return layer.rsplit(".", 1)[-1]  # "encoder.block.0.layer.0.SelfAttention.q" -> "q"


def random_baselines(a: AdapterFactors, b: AdapterFactors, layers: list[str]) -> dict[str, list]:
    """E phi for random subspaces per target (q, v, ...): max(i, j) / d_in, each target with its own d_in
    (T5's o reads n_heads * d_kv, q reads d_model)."""
    widths: dict[str, int] = {}
    for name in layers:
        d_in = a.layers[name][0].shape[1]  # A: (r, d_in)
        if widths.setdefault(target_of(name), d_in) != d_in:
            raise ValueError(f"the {target_of(name)} layers differ in width ({widths[target_of(name)]} and {d_in} "
                             f"at {name}): one random baseline per target needs one d_in")
    return {target: random_expectation(a.r, b.r, d_in).tolist() for target, d_in in widths.items()}


def similarity_pairs(base: dict, adapters: list[AdapterFactors], initial: list[dict | None] | None = None) -> list:
    """phi for every pair of adapters (in the order given) on every layer both adapt, as nested lists; `initial`
    gives each adapter's A's as initialised (layer -> A (r, d_in)) or None where unknown: where both are known,
    "init" holds phi of the two initial A's."""
    initial = initial if initial is not None else [None] * len(adapters)
    pairs = []
    for (a, init_a), (b, init_b) in itertools.combinations(zip(adapters, initial), 2):
        common = [name for name in adapted_layers(base, a) if name in b.layers]
        pair = {"a": str(a.folder), "b": str(b.folder), "r_a": a.r, "r_b": b.r,
                "layers": {name: subspace_similarity(a.layers[name][0], b.layers[name][0]).tolist()
                           for name in common},
                "random": random_baselines(a, b, common)}
        if init_a is not None and init_b is not None:
            pair["init"] = {name: subspace_similarity(init_a[name], init_b[name]).tolist() for name in common}
        pairs.append(pair)
    return pairs


def analyse(base: dict[str, torch.Tensor], adapters: list[AdapterFactors], full: dict[str, torch.Tensor] | None = None,
            energy: float = 0.9, seed: int = 0, initial: list[dict | None] | None = None) -> dict:
    """Everything analysis.json holds. `base` maps layer names (module paths) to W (d_out, d_in), in the model's
    order; `full` the same for a fully fine-tuned model; `initial` each adapter's A's as initialised, or None
    (`similarity_pairs`). `seed` fixes Table 7's random directions."""
    if not adapters:
        raise ValueError("give at least one adapter folder (--adapters DIR [DIR ...])")
    generator = torch.Generator().manual_seed(seed)
    updates = None
    result = {"energy": energy}
    if full is not None:
        layers = [n for n in base if any(n in a.layers for a in adapters)]
        updates = full_updates(base, full, layers)
        result["full_update"] = {name: {**sp.spectrum(delta, energy), "shape": list(delta.shape),
                                        "relative_change": float(delta.norm() / base[name].double().norm())}
                                 for name, delta in updates.items()}
    result["adapters"] = [analyse_adapter(base, a, updates, energy, generator) for a in adapters]
    result["subspace_similarity"] = similarity_pairs(base, adapters, initial)
    return result

"""Putting LoRA into a model: swap chosen `nn.Linear` layers for `LoRALinear`, freeze the rest, and undo it.

Which layers? Hu et al. 2021 (arXiv:2106.09685, sections 4.2 and 7.1) adapt only the attention projections and
find that W_q and W_v together work best for a fixed budget; the seeds do the same on FLAN-T5 (targets "q", "v").
T5 names them `...SelfAttention.q`, `...EncDecAttention.v` and so on (transformers' `modeling_t5.py`), so a target
is matched against the *last* component of a module's name, exactly: "v" must never match
`relative_attention_bias`, which a substring test would.

Everything is checked before the model is touched, so a failing call leaves the model as it was.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from lora.layer import LoRALinear, check_hyperparameters


@dataclass(frozen=True)
class LoRAConfig:
    """`add_lora`'s settings as one value (run.py's --lora-* flags), checked when it is made."""
    targets: tuple[str, ...] = ("q", "v")
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    use_rslora: bool = False

    def __post_init__(self):
        check_hyperparameters(self.r, self.alpha, self.dropout)


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRALinear in `model`, in `named_modules()` order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable A and B of every LoRA layer: what the optimiser gets."""
    return [p for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


def _as_target_tuple(targets: str | Iterable[str]) -> tuple[str, ...]:
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
    if not names:
        raise ValueError(f"LoRA targets must name at least one nn.Linear (e.g. 'q,v'), got {targets!r}")
    return names


def find_targets(model: nn.Module, targets: str | Iterable[str]) -> list[str]:
    """Names of the nn.Linear modules whose last name component is one of `targets`; changes nothing.

    Raises a ValueError for a target that matches no nn.Linear, listing the Linear names there are.
    """
    targets = _as_target_tuple(targets)
    linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    last_components = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
    for target in targets:
        if target not in last_components:
            # "query" or "q_proj" (other models' names) -> "q"; "wi" -> "wi_0", "wi_1"; typos -> difflib
            close = [name for name in last_components if target.startswith(name) or name.startswith(target)]
            close = close or difflib.get_close_matches(target, last_components, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"LoRA target {target!r} matches no nn.Linear in {type(model).__name__}.{hint} "
                             f"The Linear layers' names (last component) are: {', '.join(last_components)}")
    return [name for name in linear_names if name.rsplit(".", 1)[-1] in targets]


def add_lora(model: nn.Module, targets: str | Iterable[str] = ("q", "v"), r: int = 8, alpha: float = 16,
             dropout: float = 0.0, use_rslora: bool = False) -> list[str]:
    """Replace every targeted nn.Linear by a LoRALinear around it (in place), freeze all other parameters,
    and return the replaced module names. `targets` are last name components, as a tuple or as one
    comma-separated string like run.py's `--lora-targets q,v`. Validates everything first: on error the
    model is unchanged."""
    check_hyperparameters(r, alpha, dropout)
    already = lora_layers(model)
    if already:
        raise ValueError(f"the model already has LoRA layers (e.g. {already[0][0]}); adding LoRA twice would "
                         "wrap a LoRALinear in another. Call unload_lora(model) first")
    names = find_targets(model, targets)
    for name in names:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, LoRALinear(getattr(parent, child_name), r, alpha, dropout, use_rslora))
    for param in model.parameters():
        param.requires_grad_(False)
    for param in lora_parameters(model):
        param.requires_grad_(True)
    return names


def _require_lora(model: nn.Module, action: str) -> list[tuple[str, LoRALinear]]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{action}: the model has no LoRA layers; call add_lora(model) first")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight (W <- W + scaling * B A) for inference at base cost."""
    layers = _require_lora(model, "merge_lora")
    merged = [name for name, layer in layers if layer.merged]
    if merged:
        raise ValueError(f"merge_lora: {merged[0]} is already merged; merging twice would add B A to W twice")
    for _, layer in layers:
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take every LoRA update out of its base weight again (W <- W - scaling * B A)."""
    layers = _require_lora(model, "unmerge_lora")
    unmerged = [name for name, layer in layers if not layer.merged]
    if unmerged:
        raise ValueError(f"unmerge_lora: {unmerged[0]} is not merged; call merge_lora(model) first")
    for _, layer in layers:
        layer.unmerge()


def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put the plain nn.Linear layers back (in place) and return the model: with `merge`, W + scaling * B A
    (the fine-tuned model, saveable with `save_pretrained`); without, the untouched base weights.
    Parameters stay frozen as add_lora left them; `model.requires_grad_(True)` makes them trainable again."""
    layers = _require_lora(model, "unload_lora")
    for name, layer in layers:
        if merge and not layer.merged:
            layer.merge()
        elif not merge and layer.merged:
            layer.unmerge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, layer.base)
    return model


def parameter_report(model: nn.Module) -> str:
    """A small table of LoRA parameters per target, then peft's one-line summary, e.g.
    `trainable params: 3,538,944 || all params: 251,116,800 || trainable%: 1.41` (flan-t5-base, r=32, q and v).
    "all params" includes the adapter, as in peft's `print_trainable_parameters`; the last line gives the
    adapter's size relative to the base model alone (0.447% for flan-t5-small at r=8, whose "trainable%" is
    0.445). Shared tensors (T5's tied embeddings) count once, as in `model.parameters()`."""
    per_target: dict[str, list[int]] = {}
    for name, layer in lora_layers(model):
        row = per_target.setdefault(name.rsplit(".", 1)[-1], [0, 0])
        row[0] += 1
        row[1] += layer.lora_A.numel() + layer.lora_B.numel()
    params = list(model.parameters())  # each shared tensor once
    trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    lines = [f"{'target':<10}{'layers':>8}{'LoRA params':>14}{'% of all':>10}"]
    for target, (n_layers, n_params) in per_target.items():
        lines.append(f"{target:<10}{n_layers:>8}{n_params:>14,}{100 * n_params / total:>10.3g}")
    n_layers, n_params = sum(r[0] for r in per_target.values()), sum(r[1] for r in per_target.values())
    lines.append(f"{'total':<10}{n_layers:>8}{n_params:>14,}{100 * n_params / total:>10.3g}")
    percent = 100 * trainable / total
    lines.append(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {percent:.3g}")
    base = total - n_params
    lines.append(f"LoRA adds {n_params:,} params = {100 * n_params / base:.3g}% of the {base:,} in the base model")
    return "\n".join(lines)

"""Using a trained adapter inside a model: fold every update into its base weight for inference
(W <- W + scaling * B A, Hu et al. 2021, section 4.1: no extra latency), take it out again, or put the plain
`nn.Linear` layers back; and a table of what LoRA adds. Reading and writing adapter files is lora/adapter_file.py.
"""
from __future__ import annotations

from torch import nn

from lora.layer import LoRALinear, lora_layers


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable A and B of every LoRA layer (and DoRA's magnitude m, lora/dora.py)."""
    return [p for _, layer in lora_layers(model) for name, p in layer.named_parameters() if name.startswith("lora_")]


def _require_lora(model: nn.Module, action: str) -> list[tuple[str, LoRALinear]]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{action}: the model has no LoRA layers; call add_lora(model, config) first")
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
    (the fine-tuned model, saveable with `save_pretrained`); without, the base weights the layers hold (the
    untouched W; PiSSA's residual W - s B_0 A_0, as peft's `unload` leaves it, lora/pissa.py).
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
        row[1] += sum(p.numel() for name, p in layer.named_parameters() if name.startswith("lora_"))
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

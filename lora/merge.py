"""Using a trained adapter: read it back (ours or peft's, lora/checkpoint.py's format) into a model, fold every
update into its base weight for inference (W <- W + scaling * B A, Hu et al. 2021, section 4.1: no extra latency),
take it out again, or put the plain `nn.Linear` layers back; and a table of what LoRA adds. Loading checks every
key and shape before touching the model, so a failing load leaves it as it was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lora.checkpoint import CONFIG_NAME, WEIGHTS_NAME, adapter_key
from lora.layer import LoRALinear, add_lora, check_hyperparameters, find_targets, lora_layers


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable A and B of every LoRA layer."""
    return [p for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


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


# ---- reading an adapter back ---------------------------------------------------------------------------------------

def read_adapter_config(directory: str | os.PathLike) -> dict:
    """The parsed `adapter_config.json`, with a FileNotFoundError / ValueError that names what is wrong."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {folder} does not exist")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"adapter folder {folder} has no {CONFIG_NAME}; save one with save_adapter()")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    for field in ("peft_type", "r", "lora_alpha", "target_modules"):
        if field not in config:
            raise ValueError(f"{path} has no {field!r} field")
    if config["peft_type"] != "LORA":
        raise ValueError(f"{path}: peft_type is {config['peft_type']!r}; only 'LORA' adapters can be loaded")
    if not isinstance(config["target_modules"], list) or not config["target_modules"]:
        raise ValueError(f"{path}: target_modules must be a non-empty list of module names (a regex string "
                         f"is not supported), got {config['target_modules']!r}")
    try:
        check_hyperparameters(config["r"], config["lora_alpha"], config.get("lora_dropout", 0.0))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    # peft features this small implementation does not have: refuse rather than load something different.
    plain_values = {"use_dora": (False, None), "fan_in_fan_out": (False, None), "bias": ("none",),
                    "modules_to_save": (None, []), "layers_to_transform": (None, []),
                    "rank_pattern": ({}, None), "alpha_pattern": ({}, None)}
    for field, accepted in plain_values.items():
        if config.get(field, accepted[0]) not in accepted:
            raise ValueError(f"{path}: {field}={config[field]!r} is not supported here (only {accepted[0]!r})")
    return config


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> list[str]:
    """Load an adapter (ours or peft's) into `model`; returns the adapted module names.

    A plain model first gets LoRA layers as the config says (targets, r, alpha, dropout, rsLoRA); a model that
    already has matching LoRA layers just receives the weights. Nothing changes unless everything fits.
    """
    config = read_adapter_config(directory)
    weights_path = Path(directory) / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"adapter folder {directory} has no {WEIGHTS_NAME} (only safetensors adapters load)")
    tensors = load_file(str(weights_path))
    r, alpha, use_rslora = config["r"], config["lora_alpha"], config.get("use_rslora", False)

    existing = lora_layers(model)
    if existing:  # the model's LoRA layers must match the file
        names = [name for name, _ in existing]
        for name, layer in existing:
            if layer.merged:
                raise ValueError(f"load_adapter: {name} is merged; call unmerge_lora(model) before loading new A and B")
            if (layer.alpha, layer.use_rslora) != (alpha, use_rslora):
                raise ValueError(f"load_adapter: {name} has alpha={layer.alpha}, use_rslora={layer.use_rslora} but "
                                 f"{Path(directory) / CONFIG_NAME} says lora_alpha={alpha}, use_rslora={use_rslora}")
        shapes = {adapter_key(n, "lora_A"): tuple(l.lora_A.shape) for n, l in existing}
        shapes.update({adapter_key(n, "lora_B"): tuple(l.lora_B.shape) for n, l in existing})
    else:  # the layers add_lora would create, without creating them yet
        names = find_targets(model, config["target_modules"])
        shapes = {}
        for name in names:
            linear = model.get_submodule(name)
            shapes[adapter_key(name, "lora_A")] = (r, linear.in_features)
            shapes[adapter_key(name, "lora_B")] = (linear.out_features, r)
    _check_keys_and_shapes(shapes, tensors, weights_path)

    if not existing:
        add_lora(model, config["target_modules"], r=r, alpha=alpha, dropout=config.get("lora_dropout", 0.0),
                 use_rslora=use_rslora)
    with torch.no_grad():
        for name, layer in lora_layers(model):
            layer.lora_A.copy_(tensors[adapter_key(name, "lora_A")])  # copy_ converts dtype and device
            layer.lora_B.copy_(tensors[adapter_key(name, "lora_B")])
    return names


def _check_keys_and_shapes(expected: dict[str, tuple], tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every expected key present with its shape, and no key in the file that the model has no place for."""
    for key, shape in expected.items():
        if key not in tensors:
            raise ValueError(f"{path} has no tensor {key!r}, which the model's LoRA layers need "
                             "(was the adapter trained with other target_modules or on another model?)")
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: {key!r} has shape {tuple(tensors[key].shape)} but the model expects {shape} "
                             "(another rank r, or another model size?)")
    for key in tensors:
        if key not in expected:
            raise ValueError(f"{path}: tensor {key!r} has no matching LoRA layer in the model "
                             "(was the adapter trained with other target_modules or on another model?)")

"""Saving and loading LoRA adapters in peft's file format, so our adapters and peft's are interchangeable.

An adapter is two files in a folder (peft 0.21, `PeftModel.save_pretrained`):

* `adapter_config.json`: `peft_type: "LORA"`, `task_type`, `r`, `lora_alpha`, `lora_dropout`,
  `target_modules`, `use_rslora`, `base_model_name_or_path`, ... (peft fills absent fields with defaults).
* `adapter_model.safetensors`: only A and B, keyed by module path as peft names them inside its wrapper:
  `base_model.model.<module path>.lora_A.weight` (r, d_in) and `....lora_B.weight` (d_out, r).

A few megabytes instead of the whole model: the base weights come from `base_model_name_or_path`.
Loading checks every key and shape before touching the model, so a failing load leaves it as it was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lora.inject import add_lora, find_targets, lora_layers
from lora.layer import check_hyperparameters

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the transformers model


def _key(module_name: str, matrix: str) -> str:
    return f"{KEY_PREFIX}{module_name}.{matrix}.weight"


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write `adapter_config.json` and `adapter_model.safetensors` for the LoRA layers of `model`.

    Returns the folder. `base_model_name_or_path` (e.g. "google/flan-t5-base") tells peft which model to load."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA layers; call add_lora(model) first")
    first = layers[0][1]
    settings = (first.r, first.alpha, first.dropout_p, first.use_rslora)
    for name, layer in layers:
        if (layer.r, layer.alpha, layer.dropout_p, layer.use_rslora) != settings:
            raise ValueError(f"save_adapter: {name} has r={layer.r}, alpha={layer.alpha}, dropout={layer.dropout_p}, "
                             f"rslora={layer.use_rslora} but {layers[0][0]} has {settings}; one adapter file holds "
                             f"one setting")
    config = {
        "peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": first.r, "lora_alpha": first.alpha, "lora_dropout": first.dropout_p, "use_rslora": first.use_rslora,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name, _ in layers}),
        "bias": "none", "fan_in_fan_out": False, "use_dora": False, "init_lora_weights": True,
        "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
        "inference_mode": True,
    }
    tensors = {}
    for name, layer in layers:
        tensors[_key(name, "lora_A")] = layer.lora_A.detach().cpu().contiguous()  # (r, d_in)
        tensors[_key(name, "lora_B")] = layer.lora_B.detach().cpu().contiguous()  # (d_out, r)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


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
        shapes = {_key(n, "lora_A"): tuple(l.lora_A.shape) for n, l in existing}
        shapes.update({_key(n, "lora_B"): tuple(l.lora_B.shape) for n, l in existing})
    else:  # the layers add_lora would create, without creating them yet
        names = find_targets(model, config["target_modules"])
        shapes = {}
        for name in names:
            linear = model.get_submodule(name)
            shapes[_key(name, "lora_A")] = (r, linear.in_features)
            shapes[_key(name, "lora_B")] = (linear.out_features, r)
    _check_keys_and_shapes(shapes, tensors, weights_path)

    if not existing:
        add_lora(model, config["target_modules"], r=r, alpha=alpha, dropout=config.get("lora_dropout", 0.0),
                 use_rslora=use_rslora)
    with torch.no_grad():
        for name, layer in lora_layers(model):
            layer.lora_A.copy_(tensors[_key(name, "lora_A")])  # copy_ converts dtype and device
            layer.lora_B.copy_(tensors[_key(name, "lora_B")])
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

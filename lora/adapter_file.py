"""peft's adapter format, written and read: the one place that knows its file names and tensor keys, so our
adapters and peft's are interchangeable.

An adapter is two files in a folder (peft 0.21, `PeftModel.save_pretrained`):

* `adapter_config.json`: `peft_type: "LORA"`, `task_type`, `r`, `lora_alpha`, `lora_dropout`,
  `target_modules`, `use_rslora`, `base_model_name_or_path`, ... (peft fills absent fields with defaults).
* `adapter_model.safetensors`: only A and B, keyed by module path as peft names them inside its wrapper:
  `base_model.model.<module path>.lora_A.weight` (r, d_in) and `....lora_B.weight` (d_out, r); with DoRA
  (`use_dora: true`) also `....lora_magnitude_vector` (d_out,), no `.weight` after it.

Each layer gives its own tensors (`LoRALinear.adapter_tensors`): a PiSSA layer gives its update converted to a plain
LoRA of rank 2r on the original W (lora/pissa.py), which is why it loads back as plain LoRA. An adapter trained on
a 4-bit base (lora/nf4.py) is plain LoRA too, as peft saves QLoRA's.

A few megabytes instead of the whole model: the base weights come from `base_model_name_or_path`. `save_adapter`
writes one; `read_adapter_config` and `read_adapter_weights` read one without a model (lora/factors.py builds the
analysis's view on them); `load_adapter` puts one into a model, checking every key and shape first, so a failing
load leaves the model as it was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lora.layer import LoRAConfig, add_lora, check_hyperparameters, find_targets, lora_layers

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the transformers model
MATRICES = ("lora_A", "lora_B", "lora_magnitude_vector")  # the last one only with DoRA


def adapter_key(module_name: str, matrix: str) -> str:
    suffix = "" if matrix == "lora_magnitude_vector" else ".weight"  # peft saves the magnitude without ".weight"
    return f"{KEY_PREFIX}{module_name}.{matrix}{suffix}"


# ---- writing -------------------------------------------------------------------------------------------------------

def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write `adapter_config.json` and `adapter_model.safetensors` for the LoRA layers of `model`.

    Returns the folder. `base_model_name_or_path` (e.g. "google/flan-t5-base") tells peft which model to load."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA layers; call add_lora(model, config) first")
    def settings(layer):  # what the config records: (r, alpha) as saved, dropout, rsLoRA, the variant
        return (*layer.saved_r_alpha(), layer.dropout_p, layer.use_rslora, layer.variant)
    first = settings(layers[0][1])
    for name, layer in layers:
        if settings(layer) != first:
            raise ValueError(f"save_adapter: {name} has (r, alpha, dropout, rslora, variant) = {settings(layer)} but "
                             f"{layers[0][0]} has {first}; one adapter file holds one setting")
    r, alpha, dropout, use_rslora, variant = first
    config = {
        "peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": use_rslora,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name, _ in layers}),
        "bias": "none", "fan_in_fan_out": False, "use_dora": variant == "dora", "init_lora_weights": True,
        "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
        "inference_mode": True,
    }
    tensors = {}
    for name, layer in layers:  # A (r, d_in), B (d_out, r), DoRA's m (d_out,)
        for matrix, tensor in layer.adapter_tensors().items():
            tensors[adapter_key(name, matrix)] = tensor.detach().cpu().contiguous()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


# ---- reading, without a model --------------------------------------------------------------------------------------

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
    plain_values = {"use_dora": (False, None, True), "fan_in_fan_out": (False, None), "bias": ("none",),
                    "modules_to_save": (None, []), "layers_to_transform": (None, []),
                    "rank_pattern": ({}, None), "alpha_pattern": ({}, None)}
    for field, accepted in plain_values.items():
        if config.get(field, accepted[0]) not in accepted:
            raise ValueError(f"{path}: {field}={config[field]!r} is not supported here (only {accepted[0]!r})")
    return config


def read_adapter_weights(directory: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of `adapter_model.safetensors` by module path and matrix: {"encoder...q": {"lora_A": A,
    "lora_B": B}}, in the file's order (DoRA's "lora_magnitude_vector" too); raises for a key that is not peft's
    `<prefix><module>.lora_A/B.weight` or `<prefix><module>.lora_magnitude_vector`."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"adapter folder {directory} has no {WEIGHTS_NAME} (only safetensors adapters load)")
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path)).items():
        module, _, matrix = key.removesuffix(".weight").rpartition(".")
        if not (key.startswith(KEY_PREFIX) and matrix in MATRICES and key == adapter_key(module.removeprefix(
                KEY_PREFIX), matrix)):
            raise ValueError(f"{path}: tensor {key!r} is not a LoRA weight ({adapter_key('<module>', 'lora_A')} "
                             f"or lora_B)")
        found.setdefault(module.removeprefix(KEY_PREFIX), {})[matrix] = tensor
    return found


# ---- reading into a model ------------------------------------------------------------------------------------------

def load_adapter(model: nn.Module, directory: str | os.PathLike) -> list[str]:
    """Load an adapter (ours or peft's) into `model`; returns the adapted module names.

    A plain model first gets LoRA layers as the config says (targets, r, alpha, dropout, rsLoRA); a model that
    already has matching LoRA layers just receives the weights. Nothing changes unless everything fits.
    """
    config = read_adapter_config(directory)
    found = read_adapter_weights(directory)
    r, alpha, use_rslora = config["r"], config["lora_alpha"], config.get("use_rslora", False)
    variant = "dora" if config.get("use_dora") else "lora"

    existing = lora_layers(model)
    if existing:  # the model's LoRA layers must match the file
        names = [name for name, _ in existing]
        for name, layer in existing:
            if layer.merged:
                raise ValueError(f"load_adapter: {name} is merged; call unmerge_lora(model) before loading new A and B")
            if (layer.alpha, layer.use_rslora, layer.variant) != (alpha, use_rslora, variant):
                raise ValueError(f"load_adapter: {name} has alpha={layer.alpha}, use_rslora={layer.use_rslora}, "
                                 f"variant {layer.variant} but {Path(directory) / CONFIG_NAME} says lora_alpha={alpha}"
                                 f", use_rslora={use_rslora}, variant {variant}")
        shapes = {name: {matrix: tuple(t.shape) for matrix, t in layer.adapter_tensors().items()}
                  for name, layer in existing}
    else:  # the layers add_lora would create, without creating them yet
        names = find_targets(model, config["target_modules"])
        linears = {name: model.get_submodule(name) for name in names}
        shapes = {name: {"lora_A": (r, linear.in_features), "lora_B": (linear.out_features, r),
                         **({"lora_magnitude_vector": (linear.out_features,)} if variant == "dora" else {})}
                  for name, linear in linears.items()}
    _check_keys_and_shapes(shapes, found, Path(directory) / WEIGHTS_NAME)

    if not existing:
        add_lora(model, LoRAConfig(config["target_modules"], r, alpha, config.get("lora_dropout", 0.0), use_rslora,
                                   variant=variant))
    with torch.no_grad():
        for name, layer in lora_layers(model):
            for matrix, tensor in found[name].items():  # lora_A, lora_B (, lora_magnitude_vector)
                getattr(layer, matrix).copy_(tensor)  # copy_ converts dtype and device
    return names


def _check_keys_and_shapes(expected: dict[str, dict[str, tuple]], found: dict[str, dict[str, torch.Tensor]],
                           path: Path) -> None:
    """Every expected tensor present with its shape, and none in the file that the model has no place for."""
    for name, matrices in expected.items():
        for matrix, shape in matrices.items():
            tensor = found.get(name, {}).get(matrix)
            if tensor is None:
                raise ValueError(f"{path} has no tensor {adapter_key(name, matrix)!r}, which the model's LoRA layers "
                                 "need (was the adapter trained with other target_modules or on another model?)")
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{path}: {adapter_key(name, matrix)!r} has shape {tuple(tensor.shape)} but the "
                                 f"model expects {shape} (another rank r, or another model size?)")
    for name, matrices in found.items():
        for matrix in matrices:
            if matrix not in expected.get(name, {}):
                raise ValueError(f"{path}: tensor {adapter_key(name, matrix)!r} has no matching LoRA layer in the "
                                 "model (was the adapter trained with other target_modules or on another model?)")

"""Saving and loading LoRA adapters in peft's file format, so our adapters and peft's are interchangeable.

An adapter is two files in a folder (peft 0.21, `PeftModel.save_pretrained`):

* `adapter_config.json`: `peft_type: "LORA"`, `task_type`, `r`, `lora_alpha`, `lora_dropout`,
  `target_modules`, `use_rslora`, `base_model_name_or_path`, ... (peft fills absent fields with defaults).
* `adapter_model.safetensors`: only A and B, keyed by module path as peft names them inside its wrapper:
  `base_model.model.<module path>.lora_A.weight` (r, d_in) and `....lora_B.weight` (d_out, r).

A few megabytes instead of the whole model: the base weights come from `base_model_name_or_path`. Reading an
adapter back (ours or peft's) is lora/merge.py's `load_adapter`, for the modes that use a trained one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from lora.layer import lora_layers

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the transformers model


def adapter_key(module_name: str, matrix: str) -> str:
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
        tensors[adapter_key(name, "lora_A")] = layer.lora_A.detach().cpu().contiguous()  # (r, d_in)
        tensors[adapter_key(name, "lora_B")] = layer.lora_B.detach().cpu().contiguous()  # (d_out, r)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder

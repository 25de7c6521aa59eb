"""An adapter folder read as tensors, without a model: for each adapted layer its A (r, d_in), B (d_out, r), and
the adapter's scaling. Works on this project's adapters and on peft's (the same files, lora/checkpoint.py).

peft names tensors `base_model.model.<module path>.lora_A.weight`; the module path (e.g.
`encoder.block.0.layer.0.SelfAttention.q`) is what the analysis calls a layer, as `model.named_modules()` does.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lora.checkpoint import KEY_PREFIX, WEIGHTS_NAME, read_adapter_config


@dataclass
class AdapterFactors:
    folder: Path
    config: dict                                               # adapter_config.json
    scaling: float                                             # alpha / r, or alpha / sqrt(r) with rsLoRA
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]       # module path -> (A (r, d_in), B (d_out, r))

    @property
    def r(self) -> int:
        return int(self.config["r"])


def read_factors(directory: str | os.PathLike) -> AdapterFactors:
    """A and B of every layer in the folder, checked for pairs and shapes; raises naming the file at fault."""
    config = read_adapter_config(directory)
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"adapter folder {directory} has no {WEIGHTS_NAME}")
    r, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / math.sqrt(r) if config.get("use_rslora", False) else alpha / r
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path)).items():
        for matrix in ("lora_A", "lora_B"):
            suffix = f".{matrix}.weight"
            if key.endswith(suffix):
                found.setdefault(key.removeprefix(KEY_PREFIX).removesuffix(suffix), {})[matrix] = tensor
                break
        else:
            raise ValueError(f"{path}: tensor {key!r} is neither a lora_A nor a lora_B weight")
    layers = {}
    for name, pair in found.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise ValueError(f"{path}: layer {name} has {', '.join(pair)} but not both lora_A and lora_B")
        A, B = pair["lora_A"], pair["lora_B"]
        if A.shape[0] != r or B.shape[1] != r:
            raise ValueError(f"{path}: layer {name} has A {tuple(A.shape)}, B {tuple(B.shape)}; "
                             f"adapter_config.json says r={r}")
        layers[name] = (A, B)
    if not layers:
        raise ValueError(f"{path} holds no LoRA weights")
    return AdapterFactors(Path(directory), config, scaling, layers)

"""An adapter folder read as tensors, without a model: for each adapted layer its A (r, d_in), B (d_out, r), and
the adapter's scaling. Works on this project's adapters and on peft's (the same files, read by lora/adapter_file.py).

The module path (e.g. `encoder.block.0.layer.0.SelfAttention.q`) is what the analysis calls a layer, as
`model.named_modules()` does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lora.adapter_file import WEIGHTS_NAME, read_adapter_config, read_adapter_weights
from lora.layer import lora_scaling


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
    path, r = Path(directory) / WEIGHTS_NAME, config["r"]
    layers = {}
    for name, pair in read_adapter_weights(directory).items():
        if not {"lora_A", "lora_B"} <= set(pair):  # DoRA's magnitude may be there too; the analysis reads B A
            raise ValueError(f"{path}: layer {name} has {', '.join(pair)} but not both lora_A and lora_B")
        A, B = pair["lora_A"], pair["lora_B"]
        if A.shape[0] != r or B.shape[1] != r:
            raise ValueError(f"{path}: layer {name} has A {tuple(A.shape)}, B {tuple(B.shape)}; "
                             f"adapter_config.json says r={r}")
        layers[name] = (A, B)
    if not layers:
        raise ValueError(f"{path} holds no LoRA weights")
    scaling = lora_scaling(r, config["lora_alpha"], config.get("use_rslora", False))
    return AdapterFactors(Path(directory), config, scaling, layers)

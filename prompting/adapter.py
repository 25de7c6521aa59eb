"""Summarising with a trained LoRA adapter: the base model from `--model`, the adapter from `--adapter DIR`.

An adapter folder (saved by `run.py --mode lora` as RUN/adapter, or by `peft`'s `save_pretrained`; the format is
the same, see lora/checkpoint.py) holds only the low-rank matrices A and B. To summarise with it we

1. load the base model the adapter was trained on (`--model`, with `--random-init` the same seeded random
   weights the training run started from);
2. check every key and shape in `adapter_model.safetensors` against the model *before* changing it, so an
   adapter for another model is one line naming the first mismatching key and both shapes;
3. add LoRA layers and load A and B (`lora.merge.load_adapter`);
4. merge: W <- W + (alpha / r) B A in every adapted Linear and put the plain `nn.Linear` back
   (`lora.merge.unload_lora`), so generation runs at the base model's speed with no extra matmuls
   (Hu et al. 2021, "LoRA", section 4.1: "no additional inference latency").

A fully fine-tuned or merged model needs none of this: pass its folder to `--model`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from lora.checkpoint import CONFIG_NAME
from lora.merge import load_adapter, read_adapter_config, unload_lora

log = logging.getLogger(__name__)


def check_adapter_folder(folder: str | os.PathLike) -> Path:
    """The folder exists and holds adapter_config.json: checked before the base model loads, to fail at once."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"--adapter {path}: no such folder")
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"--adapter {path}: no {CONFIG_NAME} in it; pass the adapter folder a LoRA run "
                                f"saved (e.g. runs/lora/adapter), or a folder peft's save_pretrained wrote")
    return path


def apply_adapter(model: nn.Module, folder: str | os.PathLike, base_model: str | None = None) -> dict:
    """Load the adapter in `folder` into `model` and merge it in place; returns what metrics.json records.

    `base_model` (the --model given) is compared with the adapter's `base_model_name_or_path`; a different name
    is only a warning, because a local copy of the same model has another name. Shapes decide: a mismatch raises.
    """
    path = check_adapter_folder(folder)
    try:
        config = read_adapter_config(path)
        names = load_adapter(model, path)
    except ValueError as err:
        raise ValueError(f"--adapter: {err}") from None
    unload_lora(model, merge=True)
    trained_on = config.get("base_model_name_or_path")
    if base_model and trained_on and Path(str(trained_on)).name != Path(str(base_model)).name:
        log.warning("--adapter %s was trained on %s; the base model here is %s (fine if it is a copy of it)",
                    path, trained_on, base_model)
    return {"adapter": str(path), "adapter_r": config["r"], "adapter_alpha": config["lora_alpha"],
            "adapter_targets": config["target_modules"], "adapted_layers": len(names)}

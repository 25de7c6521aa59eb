"""The adapted layers' weights at several steps of a run, for the DoRA paper's analysis (Liu et al. 2024, section 3,
Figure 2; `python run.py --mode analyse --snapshots RUN ...`, lora/decomposition.py).

A checkpoint (checkpoint.py) holds all the next step needs, and only the newest KEEP stay: Figure 2 needs W at
several steps and nothing else. `--snapshot-every N` writes, after every N-th optimiser step,
`snapshots/step-00000020.safetensors`: the trainable parameters of the target layers (`--lora-targets`, the last
name component, as add_lora matches it), as the model holds them after that step:

    --mode full:           <module>.weight                          W_t itself, (d_out, d_in)
    --mode lora:           <module>.lora_A, <module>.lora_B          (r, d_in), (d_out, r): a few KiB per layer
    --lora-variant dora:   and <module>.lora_magnitude_vector        m, (d_out,)

The frozen W_0 is not written: it is `--model`'s (or, with --random-init, rebuilt from `--seed`). The file's
metadata (`snapshot`, JSON) names the step, the method (full, lora, dora, pissa), the LoRA scaling and the model,
so that each file alone says how to rebuild W_t. Files are written as `*.tmp` and renamed, as checkpoints are.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

SNAPSHOT_DIR = "snapshots"
NAME = re.compile(r"^step-(\d{8})\.safetensors$")


@dataclass(frozen=True)
class SnapshotConfig:
    every: int                       # --snapshot-every N: after steps N, 2N, ...
    targets: tuple[str, ...]         # the layers recorded: --lora-targets (in --mode full too)

    def __post_init__(self):
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"--snapshot-every {self.every!r}: must be a whole number >= 1 (0 or left out: none)")


def snapshot_tensors(model: nn.Module, targets: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The trainable parameters of the modules whose last name component is a target, by parameter name, as copies
    on the CPU in float32 (what safetensors writes; a bf16 autocast run still keeps fp32 weights)."""
    chosen = {}
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if p.requires_grad and module.rsplit(".", 1)[-1] in targets:
            chosen[name] = p.detach().to("cpu", torch.float32).clone()
    if not chosen:
        raise ValueError(f"--snapshot-every: no trainable parameter in a layer named {', '.join(targets)}; "
                         f"check --lora-targets")
    return chosen


def snapshot_path(folder: Path, step: int) -> Path:
    return Path(folder) / SNAPSHOT_DIR / f"step-{step:08d}.safetensors"


def save_snapshot(folder: Path, model: nn.Module, step: int, targets: tuple[str, ...], info: dict) -> Path:
    """Write the target layers' trainable tensors after `step`, with `info` (method, scaling, model) and the step."""
    path = snapshot_path(folder, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(snapshot_tensors(model, targets), str(tmp), metadata={"snapshot": json.dumps({**info, "step": step})})
    os.replace(tmp, path)
    return path


def snapshot_writer(folder: Path, model: nn.Module, config: SnapshotConfig, info: dict, main: bool = True):
    """An `on_step(record)` for train_loop/loop.py's `train`: a snapshot after every `config.every`-th step, written
    by the main process only (under torchrun every process holds the same weights)."""
    def on_step(record: dict) -> None:
        if main and record["step"] % config.every == 0:
            save_snapshot(folder, model, record["step"], config.targets, info)

    return on_step


@dataclass(frozen=True)
class Snapshot:
    step: int
    info: dict                       # the file's metadata: method, scaling, model, random_init, seed, step
    tensors: dict[str, torch.Tensor]


def read_snapshots(run_folder: Path) -> list[Snapshot]:
    """A run folder's snapshots, by step; raises if it has none."""
    folder = Path(run_folder) / SNAPSHOT_DIR
    found = sorted((int(m.group(1)), p) for p in folder.glob("step-*.safetensors") if (m := NAME.match(p.name)))
    if not found:
        raise FileNotFoundError(f"--snapshots {run_folder}: no {SNAPSHOT_DIR}/step-*.safetensors; train the run with "
                                f"--snapshot-every N")
    snapshots = []
    for step, path in found:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("snapshot", "null") or "null")
            if not isinstance(info, dict):
                raise ValueError(f"{path}: no 'snapshot' metadata; not a file --snapshot-every wrote")
            snapshots.append(Snapshot(step, info, {key: f.get_tensor(key) for key in f.keys()}))
    return snapshots

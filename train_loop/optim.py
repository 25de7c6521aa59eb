"""AdamW with the weight-decay split every transformers fine-tune uses, and the learning-rate schedule.

Both pieces copy what `Seq2SeqTrainer` (transformers 5.23) builds, so our loop can be checked against it step by step:

* `Trainer.create_optimizer` makes two parameter groups: weight decay for every trainable parameter except biases
  and normalisation weights (`Trainer.get_decay_parameter_names`: parameters inside `nn.LayerNorm`, or whose name
  matches `bias`, `layernorm`, `rmsnorm`, `norm` or `_norm`), and no decay for those. In T5 that exempts the
  `T5LayerNorm` weights (`...layer_norm.weight`, `final_layer_norm.weight`); T5 has no biases. LoRA's A and B get decay.
  Decay is decoupled (Loshchilov & Hutter 2019): `p <- p - lr * wd * p`, applied by `torch.optim.AdamW` itself.
* `get_linear_schedule_with_warmup`: the factor rises linearly from 0 (the very first step runs at lr 0) to 1 over
  `warmup` steps, then falls linearly to 0 at `total` steps. `get_cosine_schedule_with_warmup` (half a cosine
  period) is the `cosine` option. The scheduler steps once per optimiser step, after `optimizer.step()`.

Only parameters with `requires_grad` enter the optimiser: in LoRA mode that is A and B alone, so the frozen
weights get no optimiser state at all (two fp32 moments per parameter: 8 bytes each, the bulk of full fine-tuning).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

# Trainer.get_decay_parameter_names, transformers 5.23 (matched on the lower-cased full parameter name).
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    lr: float | None                 # None: not chosen yet (run.py's default depends on the model)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "linear"

    def __post_init__(self):
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"--lr {self.lr}: the learning rate must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay {self.weight_decay}: must be >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"--adam-beta1/--adam-beta2 {self.betas}: each must be in [0, 1)")
        if not self.eps > 0:
            raise ValueError(f"--adam-eps {self.eps}: must be positive")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps {self.warmup_steps}: must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--lr-schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")


def decays(model: nn.Module, name: str) -> bool:
    """Whether parameter `name` gets weight decay (the Trainer's rule, see the module docstring)."""
    owner = model.get_submodule(name.rpartition(".")[0])
    if isinstance(owner, nn.LayerNorm):
        return False
    return not any(re.search(pattern, name.lower()) for pattern in NO_DECAY_PATTERNS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into [with decay, without decay]; frozen ones are left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if decays(model, n)], "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if not decays(model, n)], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, as one fused kernel (CUDA and CPU; the Trainer's default optimiser,
    `adamw_torch_fused`, is the same). The fused kernel reads and writes each parameter, gradient and moment
    once; `foreach` makes a pass over all of them per elementwise op. On flan-t5-small (77M parameters, one CPU
    thread) an update takes about 0.15 s fused against 0.8 s foreach (bench/RESULTS.md, "Training")."""
    if config.lr is None:
        raise ValueError("OptimConfig.lr is None: choose a learning rate before building the optimiser")
    groups = parameter_groups(model, config.weight_decay)
    if not any(group["params"] for group in groups):
        raise ValueError("the model has no trainable parameters (did LoRA injection freeze everything?)")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "linear") -> float:
    """The multiplier of the peak lr used by optimiser step `step` (0-based), as transformers' schedules define it."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, (total - step) / max(1, total - warmup))


def build_scheduler(optimizer, config: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; its state (the step count) goes into every checkpoint."""
    warmup, schedule = config.warmup_steps, config.schedule
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps, schedule))
